"""The audit log: hash chain, anchors, checkpoints, and a verifier that finds the first bad
entry for any edit, removal, insertion or reordering."""

from __future__ import annotations

import dataclasses
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tidings.errors import AuditChainError, ConflictError, SafetyInputError
from tidings.safety.audit import (
    GENESIS_HASH,
    AuditAction,
    AuditCheckpoint,
    AuditEntry,
    AuditFault,
    AuditLog,
    InMemoryAuditRepository,
    canonical_details,
    compute_anchor,
    compute_entry_hash,
    verify_chain,
)

ANCHOR = os.urandom(32)


def make_log(n: int = 6, anchor: bytes | None = None) -> tuple[AuditLog, InMemoryAuditRepository]:
    repo = InMemoryAuditRepository()
    log = AuditLog(repo, anchor_key=anchor)
    for i in range(n):
        log.append(
            actor=f"staff_{i % 3}",
            action=AuditAction.EVIDENCE_VIEW,
            target=f"evidence:{i}",
            now_ms=1000 + i,
            details={"i": i, "why": "review"},
        )
    return log, repo


def rehash(entry: AuditEntry, prev: bytes, anchor: bytes | None = None) -> AuditEntry:
    """What a database administrator can do: recompute an entry's hash (not its anchor)."""
    entry = dataclasses.replace(entry, prev_hash=prev)
    entry_hash = compute_entry_hash(
        entry.seq,
        entry.time_ms,
        entry.actor,
        entry.action,
        entry.target,
        entry.details,
        entry.prev_hash,
    )
    anchor_value = compute_anchor(anchor, entry_hash) if anchor else entry.anchor
    return dataclasses.replace(entry, entry_hash=entry_hash, anchor=anchor_value)


def test_intact_log_verifies_and_reports_its_head() -> None:
    log, repo = make_log()
    result = log.verify()
    assert result.ok and result.checked == 6
    assert result.head == AuditCheckpoint(6, repo.rows[-1].entry_hash)
    assert repo.rows[0].prev_hash == GENESIS_HASH
    assert repo.rows[0].details == '{"i":0,"why":"review"}'
    result.raise_for_fault()


def test_edited_entry_is_found() -> None:
    log, repo = make_log()
    repo.rows[3] = dataclasses.replace(repo.rows[3], actor="someone_else")
    result = log.verify()
    assert (result.fault, result.first_bad_seq) == (AuditFault.EDITED, 4)
    with pytest.raises(AuditChainError, match="edited at seq 4"):
        result.raise_for_fault()


def test_edited_details_are_found() -> None:
    log, repo = make_log()
    repo.rows[0] = dataclasses.replace(repo.rows[0], details='{"i":0,"why":"curiosity"}')
    assert (log.verify().fault, log.verify().first_bad_seq) == (AuditFault.EDITED, 1)


def test_edited_and_rehashed_entry_breaks_the_next_link() -> None:
    log, repo = make_log()
    repo.rows[2] = rehash(
        dataclasses.replace(repo.rows[2], target="evidence:other"), repo.rows[1].entry_hash
    )
    result = log.verify()
    assert (result.fault, result.first_bad_seq) == (AuditFault.BROKEN_LINK, 4)


def test_removed_entry_is_found() -> None:
    log, repo = make_log()
    del repo.rows[2]
    result = log.verify()
    assert (result.fault, result.first_bad_seq) == (AuditFault.REMOVED, 3)


def test_reordered_entries_are_found() -> None:
    log, repo = make_log()
    repo.rows[1], repo.rows[2] = repo.rows[2], repo.rows[1]
    result = log.verify()
    assert (result.fault, result.first_bad_seq) == (AuditFault.REORDERED, 2)


def test_inserted_entry_is_found() -> None:
    log, repo = make_log()
    forged = rehash(dataclasses.replace(repo.rows[2], actor="ghost"), repo.rows[2].entry_hash)
    repo.rows.insert(3, forged)
    result = log.verify()
    assert (result.fault, result.first_bad_seq) == (AuditFault.INSERTED, 3)


def test_bad_genesis_is_found() -> None:
    log, repo = make_log(2)
    repo.rows[0] = rehash(repo.rows[0], os.urandom(32))
    assert log.verify().fault is AuditFault.BAD_GENESIS


def test_a_fully_recomputed_chain_fools_the_bare_hashes_but_not_the_anchor() -> None:
    log, repo = make_log(5, anchor=ANCHOR)
    assert log.verify().ok
    # The DBA rewrites entry 2 and recomputes every hash after it, without the anchor key.
    rows = list(repo.rows)
    rows[1] = dataclasses.replace(rows[1], target="evidence:hidden")
    prev = rows[0].entry_hash
    for i in range(1, len(rows)):
        rows[i] = rehash(rows[i], prev)
        prev = rows[i].entry_hash
    repo.rows[:] = rows
    assert verify_chain(repo.rows).ok  # undetectable without the key: that is the threat model
    result = log.verify()
    assert (result.fault, result.first_bad_seq) == (AuditFault.ANCHOR_MISMATCH, 2)


def test_truncation_is_caught_by_an_external_checkpoint() -> None:
    log, repo = make_log(6)
    checkpoint = log.checkpoint()
    assert checkpoint is not None
    del repo.rows[4:]
    assert log.verify().ok  # a shorter chain is still a chain
    result = log.verify(checkpoint)
    assert (result.fault, result.first_bad_seq) == (AuditFault.TRUNCATED, 5)


def test_rewritten_history_is_caught_by_a_checkpoint() -> None:
    log, repo = make_log(4)
    checkpoint = log.checkpoint()
    assert checkpoint is not None
    rows = list(repo.rows)
    prev = GENESIS_HASH
    for i, row in enumerate(rows):
        rows[i] = rehash(dataclasses.replace(row, actor="x") if i == 0 else row, prev)
        prev = rows[i].entry_hash
    repo.rows[:] = rows
    result = log.verify(checkpoint)
    assert (result.fault, result.first_bad_seq) == (AuditFault.CHECKPOINT_MISMATCH, 4)


def test_repository_refuses_a_stale_head() -> None:
    _, repo = make_log(2)
    with pytest.raises(ConflictError):
        repo.append(repo.rows[0])


def test_canonical_details() -> None:
    assert canonical_details({"b": 1, "a": ["x", None, True]}) == '{"a":["x",null,true],"b":1}'
    assert canonical_details({"é": "ü"}) == '{"é":"ü"}'
    deep: object = 1
    for _ in range(20):
        deep = [deep]
    for bad in ({"f": 1.5}, {"b": b"raw"}, {1: "x"}, {"deep": deep}):
        with pytest.raises(SafetyInputError):
            canonical_details(bad)  # type: ignore[arg-type]


MUTATIONS = ("edit", "remove", "swap", "duplicate", "rehash_edit")


@settings(max_examples=150, deadline=None)
@given(
    n=st.integers(2, 12),
    where=st.integers(0, 100),
    how=st.sampled_from(MUTATIONS),
    anchored=st.booleans(),
)
def test_any_single_tampering_is_detected(n: int, where: int, how: str, anchored: bool) -> None:
    log, repo = make_log(n, anchor=ANCHOR if anchored else None)
    i = where % n
    rows = repo.rows
    if how == "edit":
        rows[i] = dataclasses.replace(rows[i], time_ms=rows[i].time_ms + 1)
    elif how == "remove":
        del rows[i]
        if i == n - 1:
            return  # tail truncation needs a checkpoint (tested above)
    elif how == "swap":
        j = (i + 1) % n
        if i == j:
            return
        rows[i], rows[j] = rows[j], rows[i]
    elif how == "duplicate":
        rows.insert(i, rows[i])
    else:
        prev = rows[i - 1].entry_hash if i else GENESIS_HASH
        rows[i] = rehash(dataclasses.replace(rows[i], action="case.decision"), prev)
        if i == n - 1 and not anchored:
            return  # rewriting the head without the key: only a checkpoint catches it
    result = log.verify()
    assert not result.ok
    assert result.first_bad_seq is not None and result.first_bad_seq <= i + 2
