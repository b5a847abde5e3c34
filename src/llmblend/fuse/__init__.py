"""GenFuser (LLM-Blender §4): fuse the top-K ranked candidates into one better answer.

:class:`Fuser` is the protocol; :class:`FuseItem` one request, :class:`Fused` one answer (or why there
is none). The implementations load on use, so importing this package stays light:
``llmblend.fuse.trained.TrainedFuser`` (a fine-tuned seq2seq or causal LM, e.g.
``llm-blender/gen_fuser_3b`` or a LoRA adapter trained by ``llmblend train fuser``) and
``llmblend.fuse.prompted`` (an instruction-following LLM asked to fuse). ``llmblend.fuse.inputs``
builds what a trained fuser reads.
"""

from llmblend.fuse.base import Fused, FuseItem, Fuser

__all__ = ["FuseItem", "Fused", "Fuser"]
