"""Fuzz targets: one per decoder of untrusted bytes.

Each target feeds arbitrary bytes to one decoder. The contract under test: the decoder either
returns a value or raises a `tidings.errors.TidingsError`; any other exception is a bug that
atheris reports as a crash. Run one target:

    .venv/bin/python fuzz/targets.py NAME [libFuzzer options, e.g. -max_total_time=60]

`fuzz/run.py` runs every target for a few seconds (part of `make test`).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable

Target = Callable[[bytes], object]
Registry = tuple[dict[str, Target], dict[str, list[bytes]]]


def build() -> Registry:
    """Import the decoders and return (targets by name, seed inputs by name).

    Imports happen here, not at module level, so that `main` can instrument exactly the
    `tidings` package for coverage feedback (instrumenting everything costs ~20 s a process).
    """
    from fuzz_client import client_targets
    from fuzz_crypto import crypto_targets
    from fuzz_kt import kt_auditor_targets, kt_directory_targets, kt_targets
    from fuzz_media import media_targets
    from fuzz_psi import psi_targets
    from fuzz_safety import cybertip_targets, lawful_package_targets, safety_targets
    from fuzz_server import server_targets
    from fuzz_wire import detection_targets, wire_targets

    targets: dict[str, Target] = {}
    seeds: dict[str, list[bytes]] = {}
    for register in (
        wire_targets,
        crypto_targets,
        media_targets,
        psi_targets,
        safety_targets,
        cybertip_targets,
        lawful_package_targets,
        server_targets,
        detection_targets,
        client_targets,
        kt_targets,
        kt_directory_targets,
        kt_auditor_targets,
    ):
        for name, target, target_seeds in register():
            targets[name] = target
            seeds[name] = list(target_seeds)
    return targets, seeds


def guarded(target: Target) -> Callable[[bytes], None]:
    """``target`` with the typed errors that are its documented answer swallowed."""
    from tidings.errors import TidingsError

    def call(data: bytes) -> None:
        with contextlib.suppress(TidingsError):
            target(data)

    return call


def main() -> None:
    import atheris

    name = sys.argv[1]
    with atheris.instrument_imports(include=["tidings"]):
        targets, _ = build()
    atheris.Setup([sys.argv[0], *sys.argv[2:]], guarded(targets[name]))
    atheris.Fuzz()


if __name__ == "__main__":
    main()
