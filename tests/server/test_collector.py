"""`CollectorPacer`: full collections leave the survivors of the previous one frozen, and a
whole collection (frozen objects included) runs once the reclaim interval has passed."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from tidings.server.collector import CollectorPacer


class Node:
    """A GC-tracked object that can sit in a reference cycle."""

    def __init__(self) -> None:
        self.other: Node | None = None


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def pacer() -> Iterator[tuple[CollectorPacer, FakeClock]]:
    clock = FakeClock()
    pacer = CollectorPacer(reclaim_interval_s=60.0, clock=clock)
    pacer.install()
    try:
        yield pacer, clock
    finally:
        pacer.uninstall()
        assert gc.get_freeze_count() == 0
        assert pacer._on_collection not in gc.callbacks


def _cycle(holder: list[Node]) -> weakref.ref[Node]:
    """Two nodes referring to each other, the first also held by ``holder``."""
    a, b = Node(), Node()
    a.other, b.other = b, a
    holder.append(a)
    return weakref.ref(a)


def test_a_full_collection_freezes_its_survivors(
    pacer: tuple[CollectorPacer, FakeClock],
) -> None:
    frozen_at_install = gc.get_freeze_count()
    assert frozen_at_install > 0  # the start-up objects
    survivors = [Node() for _ in range(1000)]
    gc.collect()
    assert gc.get_freeze_count() >= frozen_at_install + len(survivors)
    # Nothing is left in generation 2 for the next full collection to rescan.
    assert not any(o is survivors[0] for o in gc.get_objects(generation=2))


def test_a_cycle_frozen_before_it_died_waits_for_the_reclaim(
    pacer: tuple[CollectorPacer, FakeClock],
) -> None:
    paced, clock = pacer
    holder: list[Node] = []
    ref = _cycle(holder)
    gc.collect()  # the cycle is live: frozen with the survivors
    holder.clear()  # now garbage, but frozen
    gc.collect()
    assert ref() is not None
    assert paced.reclaims == 0
    clock.now += 61.0  # the reclaim interval has passed: the next full collection is whole
    gc.collect()
    assert ref() is None
    assert paced.reclaims == 1
    assert paced.reclaimed >= 2
    assert gc.get_freeze_count() > 0  # the survivors frozen again
    gc.collect()
    assert paced.reclaims == 1  # not again before the next interval


def test_a_cycle_that_dies_before_a_full_collection_is_collected_as_usual(
    pacer: tuple[CollectorPacer, FakeClock],
) -> None:
    holder: list[Node] = []
    ref = _cycle(holder)
    holder.clear()
    gc.collect()
    assert ref() is None


def test_install_twice_refused_and_uninstall_restores_the_stock_collector() -> None:
    pacer = CollectorPacer()
    pacer.install()
    try:
        with pytest.raises(RuntimeError):
            pacer.install()
    finally:
        pacer.uninstall()
    pacer.uninstall()  # nothing installed: nothing to do
    assert gc.get_freeze_count() == 0
    survivor = Node()
    gc.collect()
    assert any(o is survivor for o in gc.get_objects(generation=2))
