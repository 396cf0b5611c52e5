"""`make test` on a fresh machine: it brings what the suite needs itself, or stops at once with
the one command to run (scripts/test_prereqs.sh), and `.ci/run` is only a wrapper around it."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "test_prereqs.sh"


def test_make_test_runs_the_prerequisites_first() -> None:
    plan = subprocess.run(
        ["make", "-n", "test"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    lines = [line for line in plan.splitlines() if line.strip()]
    first_suite_step = next(i for i, line in enumerate(lines) if "ruff" in line)
    assert any("test_prereqs.sh" in line for line in lines[:first_suite_step])


def test_ci_run_is_a_thin_wrapper_around_make_test() -> None:
    text = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    commands = [
        line.strip()
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert commands[-1] == "make test"
    assert not any("apt-get" in c or "redis-server" in c or "pg_ctl" in c for c in commands)


def test_without_root_a_missing_chromium_stops_with_the_command(tmp_path: Path) -> None:
    # A non-root user: `id -u` answers 1000.
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    fake_id = fake_bin / "id"
    fake_id.write_text("#!/bin/sh\necho 1000\n", encoding="utf-8")
    fake_id.chmod(0o755)
    env = dict(os.environ)
    env["PATH"] = f"{fake_bin}:{env['PATH']}"
    env["TIDINGS_CHROMIUM"] = str(tmp_path / "no-such-chromium")
    done = subprocess.run(
        ["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1
    assert "sudo apt-get install -y chromium" in done.stderr
