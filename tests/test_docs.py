"""The documentation is self-contained: README.md and docs/*.md link only to files of this
repository (no web links, nothing outside the checkout), and every such link resolves."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# Markdown links and images: [text](target) / ![alt](target).
LINK = re.compile(r"\]\(([^)\s]+)\)")
# A path that climbs out of the checkout, in a link or in code: `../shared/...`.
OUTSIDE = re.compile(r"(?<![\w.])\.\./[\w.-]+/")


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_links_stay_inside_the_repository(doc: Path) -> None:
    text = doc.read_text(encoding="utf-8")
    problems = []
    for target in LINK.findall(text):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):
            problems.append(f"external link {target}")
            continue
        path = target.split("#", 1)[0]
        if path and not (doc.parent / path).resolve().is_relative_to(ROOT):
            problems.append(f"link outside the repository {target}")
        elif path and not (doc.parent / path).exists():
            problems.append(f"broken link {target}")
    problems += [f"path outside the repository {m.group(0)}" for m in OUTSIDE.finditer(text)]
    assert not problems, problems
