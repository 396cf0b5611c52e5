"""Every error code names one error class, and every HTTP surface answers it with one status.

A client (or an operator reading logs) acts on ``code``; if two classes share one, or the API
and the staff console answer one class with different statuses, the code no longer says what
happened. The HTTP status table is `tidings.errors.HTTP_STATUS`, used by both surfaces.
"""

from __future__ import annotations

import pytest

import tidings.app
import tidings.cli
import tidings.client.errors  # noqa: F401  (the SDK's own errors share the code space)
from tidings import errors as e
from tidings.console import web
from tidings.server import errors as server_errors
from tidings.server import openapi


def _all_error_classes() -> list[type[e.TidingsError]]:
    found: list[type[e.TidingsError]] = []
    pending: list[type[e.TidingsError]] = [e.TidingsError]
    while pending:
        kind = pending.pop()
        found.append(kind)
        pending.extend(kind.__subclasses__())
    return found


ERROR_CLASSES = _all_error_classes()


def test_every_error_class_defines_its_own_code() -> None:
    inherited = [k.__qualname__ for k in ERROR_CLASSES if "code" not in vars(k)]
    assert inherited == []


def test_every_code_names_one_class() -> None:
    owners: dict[str, list[str]] = {}
    for kind in ERROR_CLASSES:
        owners.setdefault(kind.code, []).append(f"{kind.__module__}.{kind.__qualname__}")
    shared = {code: names for code, names in owners.items() if len(names) > 1}
    assert shared == {}


def test_every_code_has_one_status_on_every_surface() -> None:
    statuses: dict[str, set[int]] = {}
    for kind in ERROR_CLASSES:
        api = server_errors.status_of(kind)
        console = web._status_for(kind.__new__(kind))
        assert api == console == e.http_status(kind), kind.__qualname__
        statuses.setdefault(kind.code, set()).add(api)
    # Codes the app writes for routing failures (no route, wrong method) are the same codes.
    for status, code in openapi.HTTP_ERROR_CODES.items():
        statuses.setdefault(code, set()).add(status)
    assert {code: s for code, s in statuses.items() if len(s) > 1} == {}


@pytest.mark.parametrize(
    ("kind", "status"),
    [
        (e.InvalidCaseStateError, 409),  # the API said 400, the console 409
        (e.EnrolmentTokenError, 410),
        (e.CaseLockedError, 409),
        (e.CsrfError, 403),
        (e.AccountBannedError, 403),  # inherits ForbiddenError's
        (e.AttachmentTooLargeError, 413),  # inherits OversizedError's
        (e.DecodeError, 400),  # not listed: bad input
    ],
)
def test_status_table(kind: type[e.TidingsError], status: int) -> None:
    assert e.http_status(kind) == status

