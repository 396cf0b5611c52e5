"""The safety package stays readable: no hand-written module over `MAX_MODULE_LINES` lines
(issue 8: case lifecycle, model and appeals apart; SQL repositories split by aggregate)."""

from __future__ import annotations

from pathlib import Path

import tidings.safety

MAX_MODULE_LINES = 900


def test_no_safety_module_is_over_the_limit() -> None:
    root = Path(tidings.safety.__file__).parent
    sizes = {
        str(path.relative_to(root)): len(path.read_text(encoding="utf-8").splitlines())
        for path in root.rglob("*.py")
    }
    assert sizes, "no modules found"
    assert {p: n for p, n in sizes.items() if n > MAX_MODULE_LINES} == {}
