"""Generation backends: N LLMs behind one async protocol (LLM-Blender §2).

:class:`Backend` is the protocol; the implementations import their heavy libraries only when used:
``openai_http.OpenAIBackend`` (any OpenAI-compatible server), ``llama_cpp.LlamaCppBackend`` (GGUF
models in-process, the embedded default) and ``hf_local.HFBackend`` (transformers, batched).
``config`` reads ``models.yaml``; ``fanout`` asks every model at once.
"""

from llmblend.backends.base import Backend, Generation, GenerationParams

__all__ = ["Backend", "Generation", "GenerationParams"]
