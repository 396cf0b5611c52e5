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


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
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
