from __future__ import annotations

import subprocess
import sys

HEAVY = ("torch", "transformers", "datasets", "pyarrow", "ray", "onnxruntime")


def test_core_import_does_not_load_heavy_extras() -> None:
    """``import llmblend`` (and the CLI, and the engines package) pays for none of the extras."""
    code = (
        "import sys, llmblend, llmblend.data, llmblend.data.stats, llmblend.cli, llmblend.engines; "
        f"heavy = [m for m in {HEAVY!r} if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""


def test_torch_is_installed_so_the_check_above_means_something() -> None:
    import torch

    assert torch.__version__.startswith("2.13.0")


def test_public_api() -> None:
    import llmblend

    for name in llmblend.__all__:
        assert hasattr(llmblend, name), name
