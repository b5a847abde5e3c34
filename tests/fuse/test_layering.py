"""The fuse package sits below the Blender: nothing in llmblend/fuse imports llmblend.blender."""

from __future__ import annotations

import ast
from pathlib import Path

import llmblend.fuse

FUSE_DIR = Path(llmblend.fuse.__file__).parent


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports (TYPE_CHECKING and function-level imports too), relative ones
    resolved against the ``llmblend.fuse`` package; ``from a import b`` gives ``a`` and ``a.b``."""
    package = ["llmblend", "fuse"]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package[: len(package) - (node.level - 1)]
                base = ".".join([*parent, *([base] if base else [])])
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def test_no_fuse_module_imports_the_blender() -> None:
    paths = sorted(FUSE_DIR.glob("*.py"))
    assert FUSE_DIR / "fuse_file.py" in paths
    offenders = {
        path.name: sorted(
            m for m in imported_modules(path) if m == "llmblend.blender" or m.startswith("llmblend.blender.")
        )
        for path in paths
    }
    assert {name: modules for name, modules in offenders.items() if modules} == {}


def test_the_check_sees_every_way_of_importing_it(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    for line in (
        "import llmblend.blender",
        "from llmblend.blender import Blender",
        "from llmblend import blender",
        "from .. import blender",
        "from ..blender import Blender",
        "if TYPE_CHECKING:\n    from llmblend.blender import Blender",
        "def f():\n    from llmblend.blender import Blender",
    ):
        module.write_text(line + "\n", encoding="utf-8")
        assert "llmblend.blender" in imported_modules(module), line
    module.write_text("from llmblend.blend.pipeline import RankAndFuse\n", encoding="utf-8")
    assert not any(m.startswith("llmblend.blender") for m in imported_modules(module))
