"""The console's stores, one contract on memory, SQLite and PostgreSQL: pending sign-ins expire,
are taken once (also by racing threads), keep no password in the clear and refuse a tampered
row; exposure counts live on the session row; preferences are upserted."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select, update

from tests.safety.conftest import BACKENDS, backend_db, pg_safety_db, sqlite_template  # noqa: F401  (fixtures)
from tidings.console.security import PENDING_TTL_MS
from tidings.console.state import ConsoleState, Preferences
from tidings.console.state_sql import sql_state
from tidings.safety.sql import SafetyDatabase, SqlStaffRepository
from tidings.safety.staff_model import StaffSession, token_digest
from tidings.storage.safety_schema import safety_console_pending

NOW = 1_800_000_000_000
SECRET = "correct horse battery staple"


@pytest.fixture(params=BACKENDS)
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SafetyDatabase | None]:
    """None (in memory), or a clean SQL database (SQLite, PostgreSQL)."""
    yield from backend_db(request, tmp_path)


def state_on(db: SafetyDatabase | None) -> ConsoleState:
    return ConsoleState.memory() if db is None else sql_state(db)


def test_pending_sign_in_expires_and_is_taken_once(db: SafetyDatabase | None) -> None:
    pending = state_on(db).pending
    handle = pending.put("rita", SECRET, NOW)
    seen = pending.peek(handle, NOW + 1000)
    assert seen is not None and (seen.username, seen.password) == ("rita", SECRET)
    assert SECRET not in repr(seen)
    assert pending.peek("not-the-handle", NOW) is None
    assert pending.peek(handle, NOW + PENDING_TTL_MS) is None  # expired
    taken = pending.take(handle, NOW + 2000)
    assert taken is not None and taken.password == SECRET
    assert pending.take(handle, NOW + 2000) is None  # single use
    assert pending.peek(handle, NOW + 2000) is None
    late = pending.put("rita", SECRET, NOW)
    assert pending.take(late, NOW + PENDING_TTL_MS) is None


def test_racing_takes_hand_the_step_to_one_caller(db: SafetyDatabase | None) -> None:
    pending = state_on(db).pending
    handle = pending.put("rita", SECRET, NOW)
    got: list[object] = []
    start = threading.Barrier(6)

    def take() -> None:
        start.wait()
        got.append(pending.take(handle, NOW + 1))

    threads = [threading.Thread(target=take) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(1 for g in got if g is not None) == 1


@pytest.mark.parametrize("db", ["sqlite", "postgresql"], indirect=True)
def test_the_stored_row_holds_no_password_and_refuses_tampering(
    db: SafetyDatabase,
) -> None:
    pending = sql_state(db).pending
    handle = pending.put("rita", SECRET, NOW)
    t = safety_console_pending.c
    with db.read() as c:
        row = c.execute(select(safety_console_pending)).one()
    assert row.handle_hash == token_digest(handle) and handle not in row.handle_hash
    assert SECRET.encode() not in row.password_sealed
    with db.write() as c:  # the row re-pointed at another account does not open
        c.execute(
            update(safety_console_pending)
            .where(t.handle_hash == row.handle_hash)
            .values(username="admin")
        )
    assert pending.peek(handle, NOW) is None and pending.take(handle, NOW) is None


def test_exposure_counts_per_session(db: SafetyDatabase | None) -> None:
    state = state_on(db)
    if db is not None:  # on SQL the count is a column of the session row
        repo = SqlStaffRepository(db, b"k" * 32)
        for sid in ("s1", "s2"):
            repo.add_session(StaffSession(sid, "staff_1", NOW, NOW + 3600_000, NOW))
    exposure = state.exposure
    assert exposure.get("s1") == 0
    assert [exposure.add("s1"), exposure.add("s1", 2), exposure.add("s2")] == [1, 3, 1]
    assert exposure.add("s1", -5) == 3  # never goes down
    exposure.forget("s1")
    assert (exposure.get("s1"), exposure.get("s2")) == (0, 1)


def test_preferences_are_upserted(db: SafetyDatabase | None) -> None:
    rows = state_on(db).preferences
    assert rows.get("staff_1") == Preferences()
    rows.put("staff_1", Preferences(blur=False))
    rows.put("staff_1", Preferences(blur=True, greyscale=False))
    rows.put("staff_2", Preferences(greyscale=True))
    assert rows.get("staff_1") == Preferences(blur=True, greyscale=False)
    assert rows.get("staff_2") == Preferences(greyscale=True)
