"""Adapters from llmblend to other libraries' interfaces (TRL judges and reward functions)."""
