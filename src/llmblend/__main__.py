"""``python -m llmblend`` runs the CLI (the same as the ``llmblend`` command)."""

from llmblend.cli import app

app(prog_name="llmblend")
