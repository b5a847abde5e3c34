"""Evaluation (LLM-Blender §5).

* :mod:`llmblend.eval.ranking` — rankers: selection quality (Table 2), correlation with the oracle
  (Table 3) and pairwise accuracy; ``llmblend eval ranker`` on the command line.
"""
