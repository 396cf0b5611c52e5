"""`tidings audit kt URL` and `tidings audit kt witness URL --key FILE`: a server's key
directory checked from outside (`tidings.client.kt_audit`), over HTTP with httpx. Registered
on the ``audit`` group by `tidings.cli`. Exit 0 when everything checked holds, 1 at the first
inconsistency (printed: epoch, error code, message) or when the server cannot be read."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from tidings.cli._common import JsonOpt, UsageError, emit, fail
from tidings.errors import TidingsError

TIMEOUT_S = 60.0
MAX_ANSWER_BYTES = 512 * 1024 * 1024
"""An audit proof of a very large epoch is tens of megabytes; nothing legitimate is larger."""


class _HttpFetch:
    """`tidings.client.kt_audit.Fetch` over one httpx client."""

    def __init__(self, url: str) -> None:
        import httpx

        self._http = httpx.Client(base_url=url.rstrip("/"), timeout=TIMEOUT_S)

    def _answer(self, response: Any) -> tuple[int, Any]:
        if len(response.content) > MAX_ANSWER_BYTES:
            return response.status_code, None
        try:
            return response.status_code, json.loads(response.content)
        except ValueError:
            return response.status_code, None

    def get(self, path: str) -> tuple[int, Any]:
        return self._send("GET", path, None)

    def post(self, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        return self._send("POST", path, body)

    def _send(self, method: str, path: str, body: dict[str, Any] | None) -> tuple[int, Any]:
        import httpx

        from tidings.client.kt_audit import KtServerError

        try:
            return self._answer(self._http.request(method, path, json=body))
        except httpx.HTTPError as exc:
            raise KtServerError(f"{method} {path} failed ({type(exc).__name__})") from None

    def close(self) -> None:
        self._http.close()


def audit_kt(
    target: Annotated[
        list[str],
        typer.Argument(help="The server's base URL; or `witness URL` to co-sign as a witness."),
    ],
    from_epoch: Annotated[
        int | None,
        typer.Option("--from", min=1, help="First epoch to check (default 1, or after --state)."),
    ] = None,
    witness_key: Annotated[
        list[str] | None,
        typer.Option("--witness-key", help="A trusted witness's public key (base64url); repeat."),
    ] = None,
    min_witnesses: Annotated[
        int, typer.Option("--min-witnesses", min=0, help="Co-signatures each head needs.")
    ] = 0,
    server_key: Annotated[
        str | None,
        typer.Option("--server-key", help="Pin the server's KT public key (base64url)."),
    ] = None,
    state: Annotated[
        Path | None,
        typer.Option("--state", help="Remember the last verified head here; check it next run."),
    ] = None,
    key: Annotated[
        Path | None,
        typer.Option("--key", help="witness: the witness's Ed25519 key file (created if missing)."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Check a server's key-transparency log: every signed head from --from to the newest
    chains to its predecessor, every audit proof rebuilds the previous root into the next,
    the newest head is the one served for its epoch (no fork), and with --min-witnesses k
    each head carries k co-signatures of the --witness-key witnesses. Prints the FIRST
    inconsistency and exits 1.

    `tidings audit kt witness URL --key FILE` verifies the heads after the last one this
    witness co-signed (state: FILE.state, or --state), refuses a head more than 24 h from this
    machine's clock, and posts a co-signature of each."""
    from tidings.client.kt_audit import AuditResult, audit_log, load_state, save_state
    from tidings.client.kt_audit import witness_round as witness_round_
    from tidings.clock import now_ms
    from tidings.storage.files import load_key_file
    from tidings.wire.base64url import b64d, b64e

    witness_mode = len(target) == 2 and target[0] == "witness"
    try:
        if len(target) != 1 and not witness_mode:
            raise UsageError("give one URL, or `witness URL`")
        url = target[-1]
        pinned = None if server_key is None else b64d(server_key, what="--server-key", max_len=32)
        if witness_mode:
            if key is None:
                raise UsageError("witness mode needs --key FILE")
            state = state or key.with_name(key.name + ".state")
            seed = load_key_file(key, 32)
        trusted = {b64d(k, what="--witness-key", max_len=32) for k in witness_key or []}
        known = load_state(state)
        fetch = _HttpFetch(url)
        try:
            result: AuditResult = (
                witness_round_(fetch, seed, now_ms(), state=known, server_key=pinned)
                if witness_mode
                else audit_log(
                    fetch, from_epoch=from_epoch, server_key=pinned, witnesses=trusted,
                    min_witnesses=min_witnesses, state=known,
                )
            )
        finally:
            fetch.close()
        save_state(state, result.server_key, result.head)
    except TidingsError as exc:
        fail(exc, as_json)
        return
    data = result.to_json()
    if witness_mode:
        from tidings.crypto.primitives import ed25519_public

        data["witness_key"] = b64e(ed25519_public(seed))
    if result.failure is not None:
        f = result.failure
        emit(as_json, data, f"FAILED at epoch {f.epoch}: {f.code}: {f.message}")
        raise typer.Exit(code=1)
    checked = f"epochs {result.first}..{result.last}" if result.last else "no new epoch"
    if witness_mode:
        text = f"co-signed {len(result.signed)} head(s) ({checked}) as {data['witness_key']}"
    else:
        text = f"key directory consistent: {checked}, server key {data['server_key']}"
    emit(as_json, data, text)

