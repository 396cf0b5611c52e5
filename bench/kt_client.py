"""What key transparency adds to a client's first send to a contact (docs/performance.md,
"Key transparency: the client's cost").

    .venv/bin/python bench/kt_client.py [--contacts 30]

One Tidings node (SQLite, in a temporary data directory, 1 s epochs) in this process's
background thread; real SDK clients. A sender registers, then for each of ``--contacts``
fresh contacts (registered, their list published) measures:

- the first send to the contact, end to end (device lookup, bundle fetch, PQXDH, encrypt,
  upload), which now includes the contact's key-transparency check;
- that check alone: ``GET /v1/kt/lookup/{contact}``, the head check, `verify_lookup` (VRF
  included), `check_device_list` and the chain check (`_kt_vouched`, run again on a contact
  already seen: the same requests and checks);
- the pure verification of the lookup (no I/O): `verify_lookup` + `check_device_list`.

Medians and 90th percentiles over the contacts, in milliseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import threading
import time
from pathlib import Path

import uvicorn

from tidings.app import create_app
from tidings.client.sdk import Client
from tidings.client.store import KdfParams
from tidings.client.transport import b64d
from tidings.crypto.kt_device_list import decode_device_list
from tidings.crypto.kt_proofs import check_device_list, decode_head, verify_lookup
from tidings.server.config import ServerConfig
from tidings.server.serving import uvicorn_config

PASS = "bench passphrase"


def _start(data_dir: Path, port: int) -> uvicorn.Server:
    config = ServerConfig(
        data_dir=data_dir, rate_registrations_per_hour=1_000_000, kt_epoch_seconds=1.0,
        rate_prekey_fetches_per_minute=1_000_000,
    )
    server = uvicorn.Server(uvicorn_config(create_app(config), config, host="127.0.0.1",
                                           port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.02)
    return server


def _ms(values: list[float]) -> str:
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
    return f"{statistics.median(ordered) * 1000:.1f} ms median, {p90 * 1000:.1f} ms p90"


async def _run(url: str, root: Path, contacts: int) -> None:
    kdf = KdfParams.fast_for_tests()
    sender = await Client.register(root / "s", PASS, "sender", url, kdf=kdf, prekey_count=5)
    others = [
        await Client.register(root / f"c{i}", PASS, f"contact{i}", url, kdf=kdf, prekey_count=5)
        for i in range(contacts)
    ]
    while True:  # every contact's version 1 published
        signed = await sender._kt_lookup(others[-1].account.username)
        if signed is not None:
            break
        await asyncio.sleep(0.2)
    first, check, pure = [], [], []
    for contact in others:
        name = contact.account.username
        start = time.perf_counter()
        await sender.send_text(name, "hello")
        first.append(time.perf_counter() - start)
        start = time.perf_counter()
        await sender._kt_vouched(name)
        check.append(time.perf_counter() - start)
        body = await sender._transport.kt_lookup(name)
        assert body is not None
        head = decode_head(b64d(body["head"]["server_key"]), b64d(body["head"]["head"]))
        start = time.perf_counter()
        found = verify_lookup(b64d(body["head"]["vrf_key"]), name, head.root,
                              b64d(body["proof"]))
        assert found.entry is not None
        check_device_list(found.entry, decode_device_list(b64d(body["device_list"])))
        pure.append(time.perf_counter() - start)
    print(f"contacts: {contacts}")
    print(f"first send to a contact (KT check included): {_ms(first)}")
    print(f"KT check of a contact (lookup + verification): {_ms(check)}")
    print(f"pure verification of the lookup (no I/O): {_ms(pure)}")
    for c in (sender, *others):
        await c.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=30)
    parser.add_argument("--port", type=int, default=18571)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "server").mkdir()
        server = _start(root / "server", args.port)
        try:
            asyncio.run(_run(f"http://127.0.0.1:{args.port}", root, args.contacts))
        finally:
            server.should_exit = True


if __name__ == "__main__":
    main()
