"""Shared constants have one home (issue 8 item 6): time in `tidings.clock`, the injectable
random source in `tidings.crypto.identity`, big-endian integer codecs in `tidings.wire.binary`,
the report request's categories and limits (client and server) in `tidings.wire.report`.
A module that defines its own copy drifts (two different DAY_MS, two RNG type names, a client
that accepts a category the server refuses)."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "tidings"

# Owned by helpers working in parallel on issue 8 (client package split, case lifecycle split);
# drop each entry once that work has landed.
NOT_YET: tuple[str, ...] = ()

HOMES = {
    "DAY_MS": "clock.py",
    "now_ms": "clock.py",
    "Clock": "clock.py",
    "RandomSource": "crypto/identity.py",
    "Rng": "crypto/identity.py",
    "ReportCategory": "wire/report.py",
    "Category": "wire/report.py",
    "REPORT_CATEGORIES": "wire/report.py",
    "MAX_REPORT_NOTE_CHARS": "wire/report.py",
    "MAX_COMMENT_CHARS": "wire/report.py",
    "MAX_REPORTED_ATTACHMENTS": "wire/report.py",
}
# Category ids (not also queue ids) that only their home may spell out, whatever the name of
# the list or enum a copy would hide in.
HOME_LITERALS = {
    "child_sexual_exploitation": "wire/report.py",
    "violent_threat": "wire/report.py",
}
INT_CODECS = {">B", ">H", ">I", ">Q"}


def _copies() -> list[str]:
    found: list[str] = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        if rel.startswith(NOT_YET) or rel.endswith("_pb2.py"):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in tree.body:
            names: list[str] = []
            if isinstance(node, ast.FunctionDef | ast.ClassDef):
                names = [node.name]
            elif isinstance(node, ast.Assign):
                names = [t.id for t in node.targets if isinstance(t, ast.Name)]
                call = node.value
                if (
                    isinstance(call, ast.Call)
                    and isinstance(call.func, ast.Attribute)
                    and call.func.attr == "Struct"
                    and call.args
                    and isinstance(call.args[0], ast.Constant)
                    and call.args[0].value in INT_CODECS
                    and rel != "wire/binary.py"
                ):
                    found.append(f"{rel}: {names} is a wire.binary integer codec")
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                names = [node.target.id]
            found += [f"{rel}: defines {n}" for n in names if HOMES.get(n, rel) != rel]
        found += [
            f"{rel}: spells out {node.value!r}"
            for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str)
            and HOME_LITERALS.get(node.value, rel) != rel
        ]
    return found


def test_shared_constants_are_defined_once() -> None:
    assert _copies() == []
