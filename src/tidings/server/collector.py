"""How a node's garbage collector is paced: full collections scan only what is new, so they
do not stall the event loop in proportion to every object the node holds.

Why (issue 9, docs/performance.md "Idle WebSockets"): a node holding 10,000 idle WebSockets
keeps about 2 million long-lived, GC-tracked objects (transports, protocol state, tasks and
their frames). CPython's collector rescans all of them on every full (generation-2)
collection, and one is due whenever the objects promoted since the last one reach a quarter of
the survivors; keep-alive timers and other short-lived-but-not-instant objects keep promoting,
so a full collection came about once a minute, and each held the one event loop for 1-3 s
(every request, ping and handshake waited). Those objects die by reference counting when
their socket closes: the full collections over them found about a thousand cyclic garbage
objects among 2 million.

What `CollectorPacer` does, once installed (`tidings server` installs it; tests and embedders
keep the stock collector unless they install it themselves):

- At install: one full collection, then ``gc.freeze()``: the start-up objects (modules,
  schemas, the app) are left out of every later collection.
- After every full collection: ``gc.freeze()`` again, so the survivors (live objects, checked
  by the collection that just ended) join the permanent generation, and the next full
  collection scans only what was promoted since. Frozen objects are still freed by reference
  counting as usual; only a reference cycle among frozen objects waits.
- Every ``reclaim_interval_s`` (default `RECLAIM_INTERVAL_S`, an hour), the next full
  collection is a whole one: its start unfreezes everything, so cycles among formerly frozen
  objects are collected, and its end freezes the survivors again. That one collection costs
  what every full collection cost before (about 1-3 s with 10,000 sockets), once an hour
  instead of about once a minute.

Nothing here allocates in the collector's callback beyond a float (the callback runs inside
whatever allocation triggered the collection)."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from typing import Any

__all__ = ["RECLAIM_INTERVAL_S", "CollectorPacer"]

RECLAIM_INTERVAL_S = 3600.0
"""How often a full collection also scans the frozen objects, reclaiming reference cycles
among them: the bound on how long such garbage is kept."""


class CollectorPacer:
    """`install` once per process (it changes the process-wide collector); `uninstall`
    returns the collector to its stock behaviour (everything unfrozen)."""

    def __init__(
        self,
        *,
        reclaim_interval_s: float = RECLAIM_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``clock``: monotonic seconds (a test's stand-in)."""
        self.reclaim_interval_s = reclaim_interval_s
        self._clock = clock
        self._last_reclaim = 0.0
        self._installed = False
        self.reclaims = 0
        """Whole collections run so far (the frozen objects scanned too)."""
        self.reclaimed = 0
        """Objects the last whole collection found to be garbage."""
        self._reclaiming = False

    @property
    def installed(self) -> bool:
        return self._installed

    def install(self) -> None:
        """Collect, freeze the survivors, and pace every later full collection.

        Raises:
            RuntimeError: already installed.
        """
        if self._installed:
            raise RuntimeError("the collector pacer is already installed")
        gc.collect()
        gc.freeze()
        self._last_reclaim = self._clock()
        gc.callbacks.append(self._on_collection)
        self._installed = True

    def uninstall(self) -> None:
        """Stop pacing and unfreeze everything (nothing when not installed)."""
        if not self._installed:
            return
        gc.callbacks.remove(self._on_collection)
        gc.unfreeze()
        self._installed = False

    def _on_collection(self, phase: str, info: dict[str, Any]) -> None:
        # Only full collections matter: the younger ones never scan generation 2.
        if info["generation"] != 2:
            return
        if phase == "start":
            if self._clock() - self._last_reclaim >= self.reclaim_interval_s:
                # Before the collection merges its lists: this one scans the frozen too.
                gc.unfreeze()
                self._reclaiming = True
            return
        if self._reclaiming:
            self._reclaiming = False
            self._last_reclaim = self._clock()
            self.reclaims += 1
            self.reclaimed = info["collected"]
        # After the collection: everything left is live (a plain list merge, no allocation).
        gc.freeze()
