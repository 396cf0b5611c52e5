"""The case lifecycle table (`tidings.safety.case_lifecycle`): its shape, its typed refusal,
and that every state change the service makes is a move of the table that drops the lock."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tidings.errors import InvalidCaseStateError
from tidings.safety.case_lifecycle import (
    TRANSITIONS,
    CaseAction,
    final_action,
    next_state,
)
from tidings.safety.case_model import OPEN_STATES, CaseRecord, CaseState, DecisionKind
from tidings.safety.staff import Principal

from .conftest import World
from .test_cases import report, staff

__all__ = ["staff"]  # the fixture, re-used

TERMINAL = {CaseState.DISMISSED, CaseState.VOIDED, CaseState.OVERTURNED}


def test_terminal_states_have_no_moves_and_every_state_is_reachable() -> None:
    assert {state for state, _ in TRANSITIONS} == set(CaseState) - TERMINAL
    reached = {CaseState.OPEN}
    frontier = [CaseState.OPEN]
    while frontier:
        state = frontier.pop()
        for (source, _), target in TRANSITIONS.items():
            if source is state and target not in reached:
                reached.add(target)
                frontier.append(target)
    assert reached == set(CaseState)


def test_open_states_are_exactly_those_that_can_be_voided() -> None:
    assert {s for (s, a) in TRANSITIONS if a is CaseAction.VOID} == OPEN_STATES


def test_a_move_not_in_the_table_is_a_typed_refusal() -> None:
    for state in CaseState:
        for action in CaseAction:
            if (state, action) in TRANSITIONS:
                assert next_state(state, action) is TRANSITIONS[(state, action)]
            else:
                with pytest.raises(InvalidCaseStateError):
                    next_state(state, action)


def test_final_actions_of_decision_kinds() -> None:
    assert final_action(DecisionKind.DISMISS) is CaseAction.DISMISS
    assert final_action(DecisionKind.ESCALATE_REFERRAL) is CaseAction.REFER
    for kind in (DecisionKind.WARN, DecisionKind.RESTRICT, DecisionKind.SUSPEND, DecisionKind.BAN):
        assert final_action(kind) is CaseAction.ENFORCE
    # A dismissal cannot be appealed, so an upheld appeal never dismisses.
    assert (CaseState.APPEALED, CaseAction.DISMISS) not in TRANSITIONS


@pytest.fixture
def moves(world: World, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[CaseRecord]]:
    """Every state-changing `update_case` the service makes: (old, new) recorded as new
    records, checked against the table as they happen."""
    repo = world.case_repo
    original = repo.update_case
    seen: list[CaseRecord] = []

    def update_case(case: CaseRecord, expected_version: int) -> None:
        old = repo.get_case(case.case_id)
        assert old is not None
        if old.state is not case.state:
            assert case.state in {t for (s, _), t in TRANSITIONS.items() if s is old.state}
            assert case.lock_holder is None and case.lock_expires_ms == 0
            seen.append(case)
        original(case, expected_version)

    monkeypatch.setattr(repo, "update_case", update_case)
    yield seen


def test_every_state_change_is_a_table_move_that_drops_the_lock(
    world: World, staff: dict[str, Principal], moves: list[CaseRecord]
) -> None:
    rita, rob, lee, t = staff["rita"], staff["rob"], staff["lee"], world.now
    # OPEN -> PENDING (proposal) -> OPEN (rejected) -> PENDING (escalated) -> ACTIONED
    case_id = report(world, "bob")
    world.cases.claim(rita, case_id, now_ms=t)
    world.cases.decide(
        rita, case_id, kind=DecisionKind.BAN, policy_id="HAR-1", reason="r", now_ms=t
    )
    world.cases.claim(lee, case_id, now_ms=t + 1)
    world.cases.reject(lee, case_id, reason="too harsh", now_ms=t + 1)
    world.cases.claim(rita, case_id, now_ms=t + 2)
    world.cases.escalate(rita, case_id, reason="unsure", now_ms=t + 2)
    world.cases.claim(lee, case_id, now_ms=t + 3)
    outcome = world.cases.decide(
        lee, case_id, kind=DecisionKind.RESTRICT, policy_id="HAR-1", reason="r", now_ms=t + 3
    )
    # ACTIONED -> APPEALED -> ACTIONED (upheld)
    appeal = world.cases.file_appeal(
        "alice", outcome.decision.decision_id, statement="no", now_ms=t + 4
    )
    world.cases.claim(rob, case_id, now_ms=t + 5)
    world.cases.decide_appeal(rob, appeal.appeal_id, overturn=False, reason="r", now_ms=t + 5)
    # OPEN -> VOIDED
    other = report(world, "carol", subject="mallory")
    world.cases.claim(rita, other, now_ms=t + 6)
    world.cases.void_reporter(lee, "carol", reason="bad faith", now_ms=t + 7)
    assert [m.state for m in moves] == [
        CaseState.PENDING_SECOND_REVIEW,
        CaseState.OPEN,
        CaseState.PENDING_SECOND_REVIEW,
        CaseState.ACTIONED,
        CaseState.APPEALED,
        CaseState.ACTIONED,
        CaseState.VOIDED,
    ]
