"""Tidings' PDQ hashes beside Meta's reference hashes for Meta's reference images.

    .venv/bin/python bench/pdq_reference.py [--fixtures ../shared/fixtures/pdq]

The fixtures (Meta's `pdq/data/bridge-mods` images and the hashes its reference Python
implementation prints, in `reference-hashes.csv`) live beside the checkout, not in it: they
come from another repository. Prints the Hamming distance of each image's hash to Meta's and
to the original photograph's, and exits 1 if any differs from Meta's by more than
`REFERENCE_TOLERANCE` bits or any edit does not match the original (distance > 31).
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

from tidings.media.pdq import PDQ_MATCH_DISTANCE, PdqHash, hash_image

DEFAULT_FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "pdq"
REFERENCE_TOLERANCE = 4
"""Bits by which a hash may differ from Meta's for the same file (implementations resample
differently)."""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fixtures", type=Path, default=DEFAULT_FIXTURES)
    args = parser.parse_args()
    table = args.fixtures / "reference-hashes.csv"
    if not table.is_file():
        print(f"no reference table at {table} (pass --fixtures DIR)", file=sys.stderr)
        return 2
    with table.open(encoding="utf-8") as f:
        rows = [
            (r["file"], PdqHash.from_hex(r["pdq_hex"], int(r["quality"])))
            for r in csv.DictReader(f)
        ]
    original = hash_image((args.fixtures / rows[0][0]).read_bytes())
    worst_reference = worst_edit = 0
    for name, expected in rows:
        got = hash_image((args.fixtures / name).read_bytes())
        to_meta, to_original = got.distance(expected), got.distance(original)
        worst_reference, worst_edit = max(worst_reference, to_meta), max(worst_edit, to_original)
        print(
            f"{name:40} quality {got.quality} (Meta {expected.quality})  "
            f"to Meta's hash {to_meta:2d} bits  to the original {to_original:2d} bits"
        )
    ok = worst_reference <= REFERENCE_TOLERANCE and worst_edit <= PDQ_MATCH_DISTANCE
    print(
        f"{len(rows)} images: at most {worst_reference} bits from Meta's hashes, every edit "
        f"within {worst_edit} bits of the original: {'ok' if ok else 'FAIL'}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
