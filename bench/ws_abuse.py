"""Resident memory of a real `tidings server` process under WebSocket frame abuse.

    PYTHONPATH=src .venv/bin/python bench/ws_abuse.py                  # 30 sockets x 15 MiB
    PYTHONPATH=/path/to/other/src .venv/bin/python bench/ws_abuse.py   # another tree, same test

Method: start ``tidings server`` as a subprocess (a fresh data directory, a free port, the
tree on ``PYTHONPATH``), register accounts over HTTP, open ``--sockets`` authenticated
WebSockets (spread over accounts so the per-account connection limit is not what refuses
them), and have every socket send one ``--frame-mib`` MiB text frame at once. The server's
RSS (``/proc/<pid>/status`` VmRSS) is printed before, right after, and ``--settle`` seconds
after the sockets are gone. Linux only.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from websockets.asyncio.client import connect
from websockets.exceptions import WebSocketException

from tidings.crypto.device_prekeys import DevicePrekeys
from tidings.crypto.identity import IdentityKeyPair
from tidings.wire import codec
from tidings.wire.base64url import b64e

PER_ACCOUNT = 10  # below the per-account connection limit


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def device_keys(secret: bytes) -> dict[str, object]:
    identity = IdentityKeyPair.generate()
    p = DevicePrekeys.generate(identity, now_ms=int(time.time() * 1000), one_time_count=1)
    return {
        "name": "bench",
        "registration_id": 1234,
        "identity_key": b64e(identity.public.encode()),
        "signed_prekey": b64e(codec.encode(p.signed_prekey.to_wire())),
        "last_resort_kem_prekey": b64e(codec.encode(p.last_resort_kem_prekey.to_wire())),
        "one_time_prekeys": [b64e(codec.encode(k.to_wire())) for k in p.one_time_prekeys],
        "kem_prekeys": [b64e(codec.encode(k.to_wire())) for k in p.kem_prekeys],
        "secret": b64e(secret),
    }


async def abuse(url: str, ws_url: str, sockets: int, frame_bytes: int) -> tuple[int, int]:
    """Returns (frames sent in full, connections the server closed or refused)."""
    headers = []
    async with httpx.AsyncClient(base_url=url) as http:
        for n in range((sockets + PER_ACCOUNT - 1) // PER_ACCOUNT):
            secret = os.urandom(32)
            r = await http.post(
                "/v1/accounts", json={"username": f"bench{n}", "device": device_keys(secret)}
            )
            r.raise_for_status()
            token = base64.b64encode(f"bench{n}.1:{b64e(secret)}".encode()).decode()
            headers.append({"Authorization": f"Basic {token}"})
    payload = "x" * frame_bytes
    sent = closed = 0

    async def one(i: int) -> None:
        nonlocal sent, closed
        try:
            async with connect(
                ws_url, additional_headers=headers[i // PER_ACCOUNT], max_size=None
            ) as ws:
                await ws.send(payload)
                sent += 1
                with contextlib.suppress(asyncio.TimeoutError):
                    while True:  # until the server closes (or stays silent for 3 s)
                        await asyncio.wait_for(ws.recv(), 3)
        except (WebSocketException, OSError):
            closed += 1

    await asyncio.gather(*(one(i) for i in range(sockets)))
    return sent, closed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sockets", type=int, default=30)
    parser.add_argument("--frame-mib", type=float, default=15)
    parser.add_argument("--settle", type=float, default=10, help="seconds before the last RSS")
    args = parser.parse_args()

    port = free_port()
    with tempfile.TemporaryDirectory() as data:
        env = {**os.environ, "TIDINGS_RATE_REGISTRATIONS_PER_HOUR": "1000"}
        proc = subprocess.Popen(
            [sys.executable, "-c", "from tidings.cli import cli; cli()", "server",
             "--port", str(port), "--data-dir", data],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 30
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(url + "/healthz").status_code == 200:
                        break
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise SystemExit("the server did not start")
                time.sleep(0.2)
            before = rss_mb(proc.pid)
            frame = int(args.frame_mib * 1024 * 1024)
            ws_url = f"ws://127.0.0.1:{port}/v1/websocket"
            sent, closed = asyncio.run(abuse(url, ws_url, args.sockets, frame))
            after = rss_mb(proc.pid)
            time.sleep(args.settle)
            settled = rss_mb(proc.pid)
        finally:
            proc.terminate()
            proc.wait(timeout=20)
    print(
        f"{args.sockets} sockets x {args.frame_mib:g} MiB frames: frames sent {sent}, "
        f"connections closed by the server {closed}\n"
        f"server RSS: before {before:.0f} MB, after {after:.0f} MB, "
        f"{args.settle:g} s later {settled:.0f} MB"
    )


if __name__ == "__main__":
    main()
