"""The architecture's arrows point downward only (ARCHITECTURE.md, "Layers"): each package
imports only the packages listed for it here, including imports inside functions."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "tidings"

# Besides itself, what each layer may import from tidings ("" is the package root, for
# __version__; "errors" is the typed errors every layer raises; "clock" the one time source).
ALLOWED: dict[str, set[str]] = {
    "wire": {"", "errors", "clock"},
    "crypto": {"", "errors", "clock", "wire"},
    "storage": {"", "errors", "clock", "wire"},
    "server": {"", "errors", "clock", "wire", "crypto", "storage"},
    "safety": {"", "errors", "clock", "wire", "crypto", "storage"},
    "console": {"", "errors", "clock", "wire", "crypto", "storage", "safety"},
    "client": {"", "errors", "clock", "wire", "crypto"},
}


def _package_of(path: Path, src: Path) -> list[str]:
    """The dotted package a module file belongs to, e.g. ["tidings", "client"]."""
    parts = [src.name, *path.relative_to(src).with_suffix("").parts]
    # Both "pkg/__init__.py" and "pkg/mod.py" resolve relative imports against pkg.
    return parts[:-1]


def _imports(path: Path, src: Path = SRC) -> set[str]:
    """The top-level tidings packages ``path`` imports ("" for the root itself), relative
    imports resolved against the file's own package. A relative import that climbs above
    the ``tidings`` package is reported as ``"<escapes tidings>"``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = _package_of(path, src)
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level > 0:
            if node.level > len(package):
                found.add("<escapes tidings>")
                continue
            base = package[: len(package) - node.level + 1]
            if node.module:
                names = [".".join([*base, node.module])]
            else:  # `from .. import x`: each x may be a module of the base package
                names = [".".join([*base, alias.name]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "tidings":
                found.add(parts[1] if len(parts) > 1 else "")
    return found


def test_relative_imports_are_resolved(tmp_path: Path) -> None:
    """A relative import counts as the absolute import it resolves to, so it cannot slip a
    forbidden arrow past the layer check (nor climb out of the package)."""
    src = tmp_path / "tidings"
    sample = src / "client" / "sub" / "mod.py"
    sample.parent.mkdir(parents=True)
    sample.write_text(
        "from . import sibling\n"  # tidings.client.sub.sibling
        "from ..store import Store\n"  # tidings.client.store
        "from ...server import app\n"  # tidings.server
        "from ... import errors\n"  # tidings.errors
        "from ....elsewhere import x\n",  # above tidings
        encoding="utf-8",
    )
    assert _imports(sample, src) == {"client", "server", "errors", "<escapes tidings>"}
    init = src / "client" / "__init__.py"
    init.write_text("from .sdk import Client\nfrom ..console import web\n", encoding="utf-8")
    assert _imports(init, src) == {"client", "console"}


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_layer_imports_only_what_is_below_it(layer: str) -> None:
    root = SRC / layer
    assert root.is_dir()
    offenders = {
        f"{path.relative_to(SRC)} imports tidings.{target}"
        for path in root.rglob("*.py")
        for target in _imports(path) - ALLOWED[layer] - {layer}
    }
    assert not offenders, sorted(offenders)
