"""The queue list queries bounded in SQL: a page is ORDER BY + LIMIT/OFFSET in queue order,
stepping is one keyset row, the counts are one GROUP BY; each answers what sorting every case
in Python answers (on memory, SQLite and PostgreSQL: the `world` fixture)."""

from __future__ import annotations

import random

import pytest

from tidings.errors import ChildSafetyPermissionError, PermissionDeniedError
from tidings.safety.case_model import LOCKABLE_STATES, QueueCounts, queue_order
from tidings.safety.cases import CaseRecord, CaseState
from tidings.safety.categories import Category, QueueId, Severity
from tidings.safety.staff import Role

from .conftest import World

NOW = 1_800_000_000_000
STATES = [CaseState.OPEN, CaseState.PENDING_SECOND_REVIEW, CaseState.APPEALED, CaseState.DISMISSED]


def seed(world: World, n: int, queue: str = QueueId.HARASSMENT) -> list[CaseRecord]:
    """``n`` cases in ``queue`` with many ties in priority and deadline (so the later sort
    keys decide), a quarter of them closed, some locked (live or expired)."""
    rng = random.Random(n)
    cases = []
    for i in range(n):
        state = STATES[i % 4]
        holder = "staff_x" if i % 5 == 0 else None
        case = CaseRecord(
            case_id=f"case_{queue}_{rng.randrange(10**6):06d}_{i}",
            subject=f"{queue}-subject-{i}",
            queue_id=queue,
            category=Category.HARASSMENT,
            severity=Severity.MEDIUM,
            base_priority=100,
            priority=rng.choice([100, 125, 150]),
            state=state,
            created_ms=NOW - rng.choice([1, 2]) * 1000,
            updated_ms=NOW,
            sla_due_ms=NOW + rng.choice([-3600_000, 0, 3600_000]),
            report_count=1,
            reporter_count=1,
            lock_holder=holder,
            lock_expires_ms=NOW + (60_000 if i % 10 == 0 else -60_000) if holder else 0,
        )
        world.case_repo.add_case(case)
        cases.append(case)
    return cases


def listed(cases: list[CaseRecord]) -> list[str]:
    return [c.case_id for c in sorted(cases, key=queue_order) if c.state in LOCKABLE_STATES]


def test_pages_are_the_queue_order_cut_into_slices(world: World) -> None:
    expected = listed(seed(world, 40))
    seed(world, 5, QueueId.VIOLENCE)  # another queue's cases never show up
    repo = world.case_repo
    pages = [
        [c.case_id for c in repo.queue_page(QueueId.HARASSMENT, LOCKABLE_STATES, limit=7, offset=o)]
        for o in range(0, 35, 7)
    ]
    assert [len(p) for p in pages] == [7, 7, 7, 7, 2]
    assert [case_id for page in pages for case_id in page] == expected


def test_stepping_walks_the_whole_queue_both_ways(world: World) -> None:
    expected = listed(seed(world, 30))
    repo = world.case_repo
    walked: list[str] = []
    current = None
    while (
        current := repo.queue_neighbour(QueueId.HARASSMENT, LOCKABLE_STATES, current, forward=True)
    ) is not None:
        walked.append(current.case_id)
    assert walked == expected
    back: list[str] = []
    current = None
    while (
        current := repo.queue_neighbour(QueueId.HARASSMENT, LOCKABLE_STATES, current, forward=False)
    ) is not None:
        back.append(current.case_id)
    assert back == expected[::-1]


def test_counts_are_one_grouped_answer(world: World) -> None:
    cases = seed(world, 24)
    seed(world, 8, QueueId.VIOLENCE)
    counts = world.case_repo.queue_counts(
        [QueueId.HARASSMENT, QueueId.VIOLENCE, QueueId.FRAUD_SPAM], LOCKABLE_STATES, NOW
    )
    live = [c for c in cases if c.state in LOCKABLE_STATES]
    assert counts[QueueId.HARASSMENT] == QueueCounts(
        total=len(live),
        overdue=sum(1 for c in live if c.sla_due_ms < NOW),
        locked=sum(1 for c in live if c.lock_holder and c.lock_expires_ms > NOW),
        next_due_ms=min(c.sla_due_ms for c in live),
    )
    assert counts[QueueId.VIOLENCE].total == 6
    assert QueueId.FRAUD_SPAM not in counts  # no case there


def test_service_checks_access_and_steps_from_nowhere(world: World) -> None:
    expected = listed(seed(world, 12))
    other = seed(world, 4, QueueId.VIOLENCE)
    rita = world.make_staff("rita", Role.REVIEWER, queues=(QueueId.HARASSMENT,))
    cases = world.cases
    counts = cases.queue_counts(rita, [QueueId.HARASSMENT], now_ms=NOW)
    assert counts[QueueId.HARASSMENT].total == len(expected)
    page = cases.list_queue(rita, QueueId.HARASSMENT, now_ms=NOW, limit=5, offset=5)
    assert [s.case.case_id for s in page] == expected[5:10]
    assert cases.queue_neighbour(rita, QueueId.HARASSMENT, "", forward=True) == expected[0]
    assert cases.queue_neighbour(rita, QueueId.HARASSMENT, "", forward=False) == expected[-1]
    # A case of another queue (or none at all) counts as "nowhere": the first case.
    first = cases.queue_neighbour(rita, QueueId.HARASSMENT, other[0].case_id, forward=True)
    assert first == expected[0]
    assert cases.queue_neighbour(rita, QueueId.HARASSMENT, expected[-1], forward=True) is None
    assert (
        cases.queue_neighbour(rita, QueueId.HARASSMENT, expected[3], forward=False) == (expected[2])
    )
    with pytest.raises(PermissionDeniedError):
        cases.queue_counts(rita, [QueueId.HARASSMENT, QueueId.VIOLENCE], now_ms=NOW)
    with pytest.raises(ChildSafetyPermissionError):
        cases.queue_neighbour(rita, QueueId.CHILD_SAFETY, "", forward=True)
