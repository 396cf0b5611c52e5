"""The fuzz harness itself: every target accepts its seeds (so fuzzing starts from valid inputs
deep inside each format) and answers mutated seeds only with typed errors."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fuzz"))
from targets import build

from tidings.errors import TidingsError

TARGETS, SEEDS = build()


def test_every_decoder_kind_has_a_target() -> None:
    assert len(TARGETS) >= 23
    assert all(SEEDS[name] for name in TARGETS)


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_seeds_decode_and_mutations_give_typed_errors(name: str) -> None:
    target = TARGETS[name]
    rng = random.Random(name)
    for seed in SEEDS[name]:
        if name != "crypto.session_decrypt":  # that seed decrypts once, then is a duplicate
            target(seed)
        for _ in range(200):
            mutated = bytearray(seed)
            for _ in range(rng.randint(1, 3)):
                mutated[rng.randrange(len(mutated))] ^= 1 << rng.randrange(8)
            cut = rng.choice([len(mutated), rng.randrange(len(mutated) + 1)])
            try:
                target(bytes(mutated[:cut]))
            except TidingsError:
                pass
