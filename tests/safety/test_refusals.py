"""Refused-report counts on memory, SQLite and PostgreSQL: one count per (UTC day, reason),
concurrent increments all land, a period counts the days within it, and a failing counter
never replaces the refusal's own error."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.safety.conftest import World, submission
from tidings.clock import DAY_MS
from tidings.errors import InvalidReportError
from tidings.safety.refusals import REFUSAL_REASONS, InMemoryRefusalCounter, day_of
from tidings.safety.sql import SafetyDatabase, SqlRefusalCounter
from tidings.storage.refusals_schema import safety_report_refusals

DAY0 = 20_600 * DAY_MS  # 2026-05-26T00:00:00Z


def _counter(db: SafetyDatabase | None) -> Any:
    return InMemoryRefusalCounter() if db is None else SqlRefusalCounter(db)


def test_counts_are_per_day_and_reason_and_periods_take_whole_days(
    safety_db: SafetyDatabase | None,
) -> None:
    counter = _counter(safety_db)
    for at, reason in [(DAY0, "invalid_report"), (DAY0 + DAY_MS - 1, "invalid_report"),
                       (DAY0 + 5, "report_replayed"), (DAY0 + DAY_MS, "invalid_report"),
                       (DAY0 - 1, "commitment_mismatch")]:
        counter.increment(at, reason)
    assert counter.count_refused(DAY0, DAY0 + DAY_MS) == {
        ("invalid_report",): 2, ("report_replayed",): 1}
    assert counter.count_refused(DAY0 - DAY_MS, DAY0 + 2 * DAY_MS) == {
        ("invalid_report",): 3, ("report_replayed",): 1, ("commitment_mismatch",): 1}
    assert counter.count_refused(DAY0 + 2 * DAY_MS, DAY0 + 3 * DAY_MS) == {}
    if safety_db is not None:  # one row per day and reason, holding only the count
        with safety_db.read() as c:
            rows = c.execute(safety_report_refusals.select()).all()
        assert len(rows) == 4 and set(rows[0]._mapping) == {"day", "reason", "count"}


def test_concurrent_increments_all_count(safety_db: SafetyDatabase | None) -> None:
    counter = _counter(safety_db)
    threads, each = 4, 10
    start = threading.Barrier(threads)

    def refuse() -> None:
        start.wait()
        for _ in range(each):
            counter.increment(DAY0, "invalid_report")

    workers = [threading.Thread(target=refuse) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert counter.count_refused(DAY0, DAY0 + DAY_MS) == {("invalid_report",): threads * each}


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5 * DAY_MS), st.sampled_from(REFUSAL_REASONS)),
                max_size=30))
def test_the_memory_counter_adds_up(events: list[tuple[int, str]]) -> None:
    counter = InMemoryRefusalCounter()
    for at, reason in events:
        counter.increment(at, reason)
    assert sum(counter.count_refused(0, 6 * DAY_MS).values()) == len(events)
    first = counter.count_refused(0, DAY_MS)
    assert sum(first.values()) == sum(1 for at, _ in events if day_of(at) == 0)


class _Broken:
    def increment(self, now_ms: int, reason: str) -> None:
        raise OSError("the counter's database went away")


def test_a_failing_counter_never_replaces_the_refusal(world: World) -> None:
    world.intake.refusals = _Broken()  # type: ignore[assignment]
    with pytest.raises(InvalidReportError):
        world.intake.submit(submission(("mallory", 1), []), now_ms=world.now)
