"""The console's own state between requests: pending sign-ins, exposure counts, preferences.

One interface per store, two implementations: in memory (this module: tests, the in-memory
demo service, one process) and in the shared database (`tidings.console.state_sql`: every SQL
deployment, so any node behind a load balancer serves any request without sticky sessions).
`ConsoleState` bundles the three; `tidings.console.web.build_console` picks the SQL one when
the safety service runs on SQL repositories.

- `PendingLoginStore`: the first sign-in step's credentials under a random handle (the login
  cookie), for at most `PENDING_TTL_MS`, usable once: `take` hands a row to exactly one
  caller, so one password entry buys one TOTP attempt, on whichever node.
- `ExposureStore`: per session (SHA-256 of the token, the staff session id), how many media
  items the reviewer revealed (wellbeing).
- `PreferenceRows`: each staff member's media overrides; `PreferenceStore` adds the
  organisation's defaults.
"""

from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass, field
from typing import Protocol

from tidings.safety.staff_model import token_digest

from .security import PENDING_TTL_MS

__all__ = [
    "MAX_PENDING",
    "ConsoleState",
    "ExposureCounter",
    "ExposureStore",
    "InMemoryPreferences",
    "PendingLogin",
    "PendingLoginStore",
    "PendingLogins",
    "PreferenceRows",
    "PreferenceStore",
    "Preferences",
    "new_handle",
]

MAX_PENDING = 10_000
"""Most pending sign-ins kept at once; past it the one expiring first is dropped."""


def new_handle() -> tuple[str, str]:
    """A fresh pending sign-in handle (for the cookie) and its key (SHA-256, hex: stored)."""
    handle = secrets.token_urlsafe(32)
    return handle, token_digest(handle)


@dataclass(frozen=True, slots=True)
class PendingLogin:
    username: str
    password: str = field(repr=False)
    expires_ms: int


class PendingLoginStore(Protocol):
    def put(self, username: str, password: str, now_ms: int) -> str:
        """Keep the credentials for `PENDING_TTL_MS`; returns the handle for the cookie."""
        ...

    def peek(self, handle: str | None, now_ms: int) -> PendingLogin | None:
        """The unexpired pending sign-in of ``handle``, left in place (None if none)."""
        ...

    def take(self, handle: str | None, now_ms: int) -> PendingLogin | None:
        """The unexpired pending sign-in of ``handle``, removed; of concurrent callers (on
        any node) at most one gets it."""
        ...


class ExposureStore(Protocol):
    def get(self, session_id: str) -> int: ...

    def add(self, session_id: str, n: int = 1) -> int:
        """Count ``n`` (≥ 0) more revealed items; returns the session's new total."""
        ...

    def forget(self, session_id: str) -> None: ...


@dataclass(frozen=True, slots=True)
class Preferences:
    """Media display: ``None`` follows the organisation default."""

    blur: bool | None = None
    greyscale: bool | None = None


class PreferenceRows(Protocol):
    def get(self, staff_id: str) -> Preferences: ...

    def put(self, staff_id: str, prefs: Preferences) -> None: ...


class PendingLogins:
    """`PendingLoginStore` in memory, keyed by SHA-256 of the handle."""

    def __init__(self) -> None:
        self._rows: dict[str, PendingLogin] = {}
        self._lock = threading.Lock()

    def put(self, username: str, password: str, now_ms: int) -> str:
        handle, key = new_handle()
        with self._lock:
            for old in [k for k, v in self._rows.items() if v.expires_ms <= now_ms]:
                del self._rows[old]
            if len(self._rows) >= MAX_PENDING:
                self._rows.pop(next(iter(self._rows)))
            self._rows[key] = PendingLogin(username, password, now_ms + PENDING_TTL_MS)
        return handle

    def peek(self, handle: str | None, now_ms: int) -> PendingLogin | None:
        if not handle:
            return None
        row = self._rows.get(token_digest(handle))
        return row if row is not None and row.expires_ms > now_ms else None

    def take(self, handle: str | None, now_ms: int) -> PendingLogin | None:
        if not handle:
            return None
        with self._lock:
            row = self._rows.pop(token_digest(handle), None)
        return row if row is not None and row.expires_ms > now_ms else None


class ExposureCounter:
    """`ExposureStore` in memory."""

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()

    def get(self, session_id: str) -> int:
        return self._counts.get(session_id, 0)

    def add(self, session_id: str, n: int = 1) -> int:
        with self._lock:
            value = self._counts.get(session_id, 0) + max(0, n)
            self._counts[session_id] = value
            return value

    def forget(self, session_id: str) -> None:
        self._counts.pop(session_id, None)


class InMemoryPreferences:
    """`PreferenceRows` in memory."""

    def __init__(self) -> None:
        self._rows: dict[str, Preferences] = {}

    def get(self, staff_id: str) -> Preferences:
        return self._rows.get(staff_id, Preferences())

    def put(self, staff_id: str, prefs: Preferences) -> None:
        self._rows[staff_id] = prefs


class PreferenceStore:
    """Personal overrides (``rows``) of the organisation's media defaults."""

    def __init__(
        self,
        rows: PreferenceRows | None = None,
        *,
        blur_default: bool = True,
        greyscale_default: bool = True,
    ) -> None:
        self.rows: PreferenceRows = rows if rows is not None else InMemoryPreferences()
        self.blur_default = blur_default
        self.greyscale_default = greyscale_default

    def effective(self, staff_id: str) -> tuple[bool, bool]:
        """(blur, greyscale) for this staff member: their choice, else the default."""
        prefs = self.get(staff_id)
        blur = self.blur_default if prefs.blur is None else prefs.blur
        grey = self.greyscale_default if prefs.greyscale is None else prefs.greyscale
        return blur, grey

    def get(self, staff_id: str) -> Preferences:
        return self.rows.get(staff_id)

    def put(self, staff_id: str, prefs: Preferences) -> None:
        self.rows.put(staff_id, prefs)


@dataclass(frozen=True, slots=True)
class ConsoleState:
    """The three stores one console uses (`memory`, or `tidings.console.state_sql.sql_state`)."""

    pending: PendingLoginStore
    exposure: ExposureStore
    preferences: PreferenceRows

    @classmethod
    def memory(cls) -> ConsoleState:
        return cls(PendingLogins(), ExposureCounter(), InMemoryPreferences())
