"""Checking a server's key directory from outside (docs/key-transparency.md "Publication"):
the auditor behind `tidings audit kt` and the witness behind `tidings audit kt witness`.

`audit_log` walks the published epochs ``from .. newest``: each head must carry the server's
signature (under the key pinned by the caller or by an earlier run's state), be its
predecessor's successor (`check_successor`: next epoch, commits to its hash, time does not
run backwards), have an audit proof that rebuilds the previous root into its own
(`verify_audit`; epoch 1 starts from the empty tree) and, when a quorum is asked for, be
co-signed by k of the trusted witnesses (`verify_witnesses`). The newest head served at
``/v1/kt/head`` must be the head served for its epoch, and a head remembered from an earlier
run the head served now (`check_no_fork`). It stops at the FIRST inconsistency and returns it.

`witness_round` does the same for the epochs after the last one the witness co-signed,
refuses a head whose time is more than `MAX_SKEW_MS` from the witness's clock, and posts a
co-signature (`witness_sign`) of each head it verified, remembering the last one.

I/O goes through a `Fetch` (``GET``/``POST`` of JSON, the CLI's over httpx); everything else is
the pure core. Failures are values (`Failure`: epoch, code, message), not exceptions: an audit
reports what it found.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from tidings.clock import DAY_MS
from tidings.crypto.kt_proofs import (
    EpochHead,
    check_no_fork,
    check_successor,
    decode_cosignatures,
    decode_head,
    verify_audit,
    verify_witnesses,
    witness_sign,
)
from tidings.crypto.kt_tree import EMPTY_ROOT
from tidings.errors import DecodeError, TidingsError
from tidings.wire.base64url import b64d, b64e

__all__ = [
    "MAX_SKEW_MS",
    "AuditResult",
    "Failure",
    "Fetch",
    "KtHeadTimeError",
    "KtServerError",
    "audit_log",
    "load_state",
    "save_state",
    "witness_round",
]

MAX_SKEW_MS = DAY_MS
"""A witness co-signs a head whose time is at most this far from its own clock (either way)."""
MAX_EPOCHS_PER_RUN = 100_000
"""Epochs one audit run walks at most (the rest are for the next run, from its state)."""


class KtHeadTimeError(TidingsError):
    """The epoch head's time is more than 24 hours from the witness's clock: not co-signed."""

    code = "kt_head_time_skew"


class KtServerError(TidingsError):
    """The server's answer is missing, not JSON of the documented shape, or an error."""

    code = "kt_server_answer"


class Fetch(Protocol):
    """HTTP for the auditor: (status, JSON body or None) of a GET or a JSON POST."""

    def get(self, path: str) -> tuple[int, Any]: ...

    def post(self, path: str, body: dict[str, Any]) -> tuple[int, Any]: ...


@dataclass(frozen=True, slots=True)
class Failure:
    """The first inconsistency: at which epoch, its error code and one line for people."""

    epoch: int
    code: str
    message: str

    def to_json(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "code": self.code, "message": self.message}


@dataclass
class AuditResult:
    """What a run checked: epochs ``first .. last`` (0, 0: none), the newest verified head,
    the co-signed epochs (witness), and the first failure if any."""

    server_key: bytes = b""
    first: int = 0
    last: int = 0
    head: EpochHead | None = None
    signed: list[int] = field(default_factory=list)
    failure: Failure | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "ok": self.failure is None,
            "server_key": b64e(self.server_key),
            "from": self.first,
            "to": self.last,
        }
        if self.signed:
            out["cosigned"] = self.signed
        if self.failure is not None:
            out["failure"] = self.failure.to_json()
        return out


def load_state(path: Path | None) -> dict[str, Any]:
    """An auditor's or witness's state file (``{}`` when there is none yet).

    Raises:
        DecodeError: the file is not a state file.  OSError: it cannot be read.
    """
    if path is None or not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError
        return data
    except (ValueError, UnicodeDecodeError):
        raise DecodeError(f"{path} is not a key-transparency state file") from None


def save_state(path: Path | None, server_key: bytes, head: EpochHead | None) -> None:
    """Remember the newest verified (or co-signed) head, written atomically."""
    if path is None or head is None:
        return
    body = {"server_key": b64e(server_key), "epoch": head.epoch, "head": b64e(head.encode())}
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(body) + "\n", encoding="utf-8")
    temporary.replace(path)


def _json(fetch: Fetch, path: str) -> dict[str, Any]:
    status, body = fetch.get(path)
    if status != 200 or not isinstance(body, dict):
        code = ""
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            code = str(body["error"].get("code", ""))
        raise KtServerError(f"GET {path} answered {status} {code}".rstrip())
    return body


def _field(body: dict[str, Any], name: str) -> bytes:
    value = body.get(name)
    if not isinstance(value, str):
        raise KtServerError(f"the answer has no {name}")
    return b64d(value, what=name, max_len=512 * 1024 * 1024)


class _Walk:
    """One run's state: the pinned key, the previous verified head, the result."""

    def __init__(self, fetch: Fetch, server_key: bytes, result: AuditResult) -> None:
        self.fetch = fetch
        self.server_key = server_key
        self.result = result

    def head(self, epoch: int) -> tuple[EpochHead, dict[str, Any]]:
        body = _json(self.fetch, f"/v1/kt/head/{epoch}")
        head = decode_head(self.server_key, _field(body, "head"))
        if head.epoch != epoch:
            raise KtServerError(f"the server answered epoch {head.epoch} for epoch {epoch}")
        return head, body

    def step(self, previous: EpochHead | None, epoch: int) -> tuple[EpochHead, dict[str, Any]]:
        head, body = self.head(epoch)
        if previous is not None:
            check_successor(previous, head)
        proof = _field(_json(self.fetch, f"/v1/kt/audit/{epoch}"), "proof")
        verify_audit(EMPTY_ROOT if previous is None else previous.root, head.root, epoch, proof)
        return head, body


def _start(
    fetch: Fetch, state: dict[str, Any], server_key: bytes | None
) -> tuple[_Walk, EpochHead, EpochHead | None]:
    """(walk, newest head served, head remembered from the state or None), after checking
    the remembered head and the newest head against the ones served for their epochs."""
    latest = _json(fetch, "/v1/kt/head")
    pinned = server_key
    if pinned is None and isinstance(state.get("server_key"), str):
        pinned = b64d(state["server_key"], what="state server_key", max_len=32)
    served_key = _field(latest, "server_key")
    key = served_key if pinned is None else pinned
    walk = _Walk(fetch, key, AuditResult(server_key=key))
    newest = decode_head(key, _field(latest, "head"))
    check_no_fork(walk.head(newest.epoch)[0], newest)
    remembered = None
    if isinstance(state.get("head"), str):
        remembered = decode_head(key, b64d(state["head"], what="state head", max_len=1024))
        if remembered.epoch > newest.epoch:
            raise KtServerError(
                f"the newest head is epoch {newest.epoch}; epoch {remembered.epoch} was seen"
            )
        check_no_fork(walk.head(remembered.epoch)[0], remembered)
    return walk, newest, remembered


Begin = Callable[
    [_Walk, EpochHead, EpochHead | None], tuple[int, EpochHead | None, EpochHead | None]
]
"""Where a run starts, from the walk, the newest head and the remembered one (None on a first
run): the first epoch, the head it must succeed (None: the empty tree), and the result's
``head`` until an epoch is verified."""
Visit = Callable[[AuditResult, int, EpochHead, Any], None]
"""What a run does with one verified epoch (number, head, body), beyond recording the head;
raises a `TidingsError` to stop the run there."""


def _run(
    fetch: Fetch,
    state: dict[str, Any] | None,
    server_key: bytes | None,
    begin: Begin,
    visit: Visit,
) -> AuditResult:
    """The one frame of `audit_log` and `witness_round`: start (`_start`), walk the epochs
    from ``begin``'s first to the newest (at most `MAX_EPOCHS_PER_RUN`), each checked against
    its predecessor and handed to ``visit``. Never raises: the first `TidingsError` is the
    result's ``failure``, at the epoch being checked (0 before any)."""
    epoch = 0
    result = AuditResult(server_key=server_key or b"")
    try:
        walk, newest, remembered = _start(fetch, state or {}, server_key)
        result = walk.result
        start, previous, result.head = begin(walk, newest, remembered)
        result.first = start
        for epoch in range(start, min(newest.epoch, start + MAX_EPOCHS_PER_RUN - 1) + 1):
            head, body = walk.step(previous, epoch)
            visit(result, epoch, head, body)
            previous = result.head = head
        return result
    except TidingsError as exc:
        result.failure = Failure(epoch, exc.code, exc.message)
        return result


def audit_log(
    fetch: Fetch,
    *,
    from_epoch: int | None = None,
    server_key: bytes | None = None,
    witnesses: Collection[bytes] = (),
    min_witnesses: int = 0,
    state: dict[str, Any] | None = None,
) -> AuditResult:
    """Check the published epochs ``from_epoch`` (default: after the state's head, else 1)
    to the newest (module docstring). ``server_key`` pins the server's KT key (default: the
    state's, else the key the server names). Never raises: the first inconsistency is the
    result's ``failure`` (``epoch`` 0 when it is not about one epoch)."""

    def begin(
        walk: _Walk, newest: EpochHead, remembered: EpochHead | None
    ) -> tuple[int, EpochHead | None, EpochHead | None]:
        start = from_epoch
        if start is None:
            start = 1 if remembered is None else remembered.epoch + 1
        previous = walk.head(start - 1)[0] if start > 1 else None
        return start, previous, previous

    def visit(result: AuditResult, epoch: int, head: EpochHead, body: Any) -> None:
        if min_witnesses > 0:
            pairs = decode_cosignatures(_field(body, "cosignatures"))
            verify_witnesses(head, pairs, witnesses, min_witnesses)
        result.last = epoch

    return _run(fetch, state, server_key, begin, visit)


def witness_round(
    fetch: Fetch,
    witness_key: bytes,
    now_ms: int,
    *,
    state: dict[str, Any] | None = None,
    server_key: bytes | None = None,
) -> AuditResult:
    """Verify and co-sign the heads after the last one this witness co-signed (from the
    state; on a first run, the newest head only, its audit proof checked from its
    predecessor, which is taken on trust). Never raises (see `audit_log`); the result's
    ``head`` is the last head co-signed, for the state."""

    def begin(
        walk: _Walk, newest: EpochHead, remembered: EpochHead | None
    ) -> tuple[int, EpochHead | None, EpochHead | None]:
        start = newest.epoch if remembered is None else remembered.epoch + 1
        previous = remembered
        if previous is None and start > 1:
            previous = walk.head(start - 1)[0]
        return start, previous, remembered

    def visit(result: AuditResult, epoch: int, head: EpochHead, _body: Any) -> None:
        if abs(head.time_ms - now_ms) > MAX_SKEW_MS:
            raise KtHeadTimeError(
                f"epoch {epoch}'s head is {abs(head.time_ms - now_ms) // 3_600_000} h "
                "from this witness's clock"
            )
        cosignature = witness_sign(witness_key, head)
        status, answer = fetch.post(f"/v1/kt/cosign/{epoch}", {"cosignature": b64e(cosignature)})
        if status != 200:
            code = ""
            if isinstance(answer, dict) and isinstance(answer.get("error"), dict):
                code = str(answer["error"].get("code", ""))
            raise KtServerError(f"the server refused the co-signature: {status} {code}")
        result.signed.append(epoch)

    return _run(fetch, state, server_key, begin, visit)
