"""Run every fuzz target for a short time (used by `make test`; longer runs by hand).

    .venv/bin/python fuzz/run.py --seconds 3            # all targets
    .venv/bin/python fuzz/run.py --seconds 600 Envelope # one target, longer

Each target runs in its own atheris process, seeded with a valid encoding of its input, so the
mutations start from deep inside the format. Exit status is non-zero if any target crashed.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from targets import build  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=3, help="time per target")
    parser.add_argument("names", nargs="*", help="targets to run (default: all)")
    args = parser.parse_args()
    targets, seeds = build()
    names = args.names or sorted(targets)
    unknown = [n for n in names if n not in targets]
    if unknown:
        print(f"unknown fuzz target(s): {', '.join(unknown)}; known: {', '.join(sorted(targets))}")
        return 2
    failed: list[str] = []
    for index, name in enumerate(names, 1):
        with tempfile.TemporaryDirectory(prefix=f"fuzz-{name}-") as tmp:
            corpus = Path(tmp) / "corpus"
            corpus.mkdir()
            for i, seed in enumerate(seeds.get(name, [])):
                (corpus / f"seed{i}").write_bytes(seed)
            started = time.monotonic()
            proc = subprocess.run(
                [
                    sys.executable,
                    str(HERE / "targets.py"),
                    name,
                    f"-max_total_time={args.seconds}",
                    "-rss_limit_mb=2048",
                    f"-artifact_prefix={tmp}/",
                    str(corpus),
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            elapsed = time.monotonic() - started
            runs = [ln for ln in proc.stderr.splitlines() if "Done " in ln and " runs " in ln]
            summary = runs[-1].split("Done ", 1)[1] if runs else "no summary"
            status = "ok" if proc.returncode == 0 else "CRASH"
            print(f"[{index}/{len(names)}] {name:28s} {status:5s} {elapsed:5.1f}s  {summary}")
            if proc.returncode != 0:
                failed.append(name)
                print(proc.stderr[-4000:])
    if failed:
        print(f"fuzz: {len(failed)} target(s) crashed: {', '.join(failed)}")
        return 1
    print(f"fuzz: {len(names)} targets, 0 crashes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
