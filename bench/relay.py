"""Relay benchmark: 1 KiB end-to-end encrypted messages through Tidings servers, beside a bare
WebSocket relay on the same stack, at a fixed arrival rate.

    .venv/bin/python bench/relay.py            # full run (about 6-8 minutes)
    .venv/bin/python bench/relay.py --quick    # coarse, about 60-80 s
    .venv/bin/python bench/relay.py --json     # machine-readable, every step
    .venv/bin/python bench/relay.py --only sqlite,bare --clients 100
    .venv/bin/python bench/relay.py --quick --only sqlite,sqlite-ws,bare

Systems, each measured in the same run, one after the other (a system's servers are stopped
before the next one starts, so idle servers do not take CPU from the one measured):

- ``sqlite``: one Tidings node in embedded mode (SQLite, WAL, in a temporary data directory).
- ``cluster``: two Tidings nodes on PostgreSQL (a fresh schema in database ``test`` on
  127.0.0.1:5432, dropped at the end) and Redis (127.0.0.1:6379, a fresh key prefix): senders
  talk to node A, receivers are connected to node B, so every message crosses nodes through
  the shared queue and a Redis "has mail" hint.
- ``sqlite-ws``, ``cluster-ws``: the same, with the Tidings senders sending ``send`` frames
  on their own authenticated WebSocket (docs/api.md) instead of ``PUT /v1/messages`` requests.
- ``bare``: a bare WebSocket relay on the same stack (Starlette + uvicorn with uvicorn's
  defaults: uvloop, httptools, `websockets`, one worker; see `bench/_relay_server.py`). No
  storage, no authentication, no franking: it parses a frame's JSON to find the target and
  forwards the text. This is the ceiling of the stack, not a competing product.

Every server is a separate process started exactly like `tidings server` (same `create_app`,
JSON logs, one uvicorn worker); rate limits are raised so that they never trigger.

Load (one client process, asyncio on uvloop): ``--clients`` N WebSocket clients (default 200):
N/2 senders and N/2 receivers, sender i always writing to receiver i. Every client is a real
account registered through ``POST /v1/accounts`` with its own identity key and signed prekeys
(one one-time X25519 and one ML-KEM prekey each), and every client holds a WebSocket
(``/v1/websocket``; senders' sockets stay idle, as a phone's would while it sends). A message
is a real `RatchetMessage` encoding: a 1 KiB plaintext encrypted once with a real `Session`
and reused (the server never decrypts), with a fresh 32-byte commitment per message whose
first 8 bytes carry the message's sequence number. Tidings sends are ``PUT
/v1/messages/{username}`` over keep-alive HTTP/1.1 connections (a pool of up to N/2, written
directly on asyncio streams so that the generator's own cost stays small); delivery is the
envelope arriving on the receiver's WebSocket, which then acks it (the server deletes it). The
bare relay gets the same body bytes (base64 in a JSON frame, as Tidings' JSON carries them)
over the sender's WebSocket.

Open loop: a scheduler fixes every message's send time in advance (evenly spaced at the
offered rate, round-robin over the senders) and issues each send at its time whether or not
earlier ones completed, so queueing anywhere (client pool, server, database, hint) shows up as
latency instead of lowering the offered rate. Latency = receive time - scheduled send time,
both `time.monotonic()` of the one client process. A message not delivered by the end of the
drain period (or whose send failed) counts as infinitely late in the percentiles.

Procedure per system: warm-up, then steps of 5 s (--quick: 2 s) at offered rates doubling from
``--start-rate`` until a step is not sustained, then refinement steps between the last
sustained and the first failed rate. A step is *sustained* when ≥ 99 % of its messages arrive,
the delivered rate (delivered / (last arrival - first scheduled send)) is ≥ 95 % of the
offered rate, and p99 ≤ 500 ms. Between steps the generator waits (bounded) until nothing is
in flight. Then 3 runs (--quick: 1) of 8 s (3 s) at half the sustained maximum give
the reported delivered rate, p50/p99 and server memory (medians over the repeats). CPU is
read from /proc for every server process, for the database processes (``postgres``,
``redis-server``, whoever they serve), for the generator itself and for the whole machine, so
that the reader can see which one was the bottleneck.

Fairness notes: the same generator, the same connection counts and the same WebSocket client
settings (the library defaults, which Tidings' own client transport also uses) for every
system. The bare relay receives sends over a WebSocket, while Tidings' contract sends over
HTTP (docs/api.md); that difference is part of what the ratio measures. Everything runs on
127.0.0.1 on one machine: generator, servers and databases share its cores.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import math
import os
import platform
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
SERVER_SCRIPT = Path(__file__).resolve().parent / "_relay_server.py"
PG_DSN = os.environ.get("TIDINGS_BENCH_PG", "postgresql://127.0.0.1:5432/test")
REDIS_URL = os.environ.get("TIDINGS_BENCH_REDIS", "redis://127.0.0.1:6379/0")
PLAINTEXT_BYTES = 1024
P99_LIMIT_S = 0.5
RATE_TRACKING = 0.95
DELIVERED_FRACTION = 0.99
MAX_DOUBLINGS = 12
SETTLE_LIMIT_S = 60.0
"""How long a step waits for the previous steps' messages to arrive before it starts (an
overloaded step can leave a queue behind that takes longer than its drain period)."""
CLK_TCK = os.sysconf("SC_CLK_TCK")
SYSTEMS = ("sqlite", "sqlite-ws", "cluster", "cluster-ws", "bare")
"""``-ws``: the Tidings senders send ``send`` frames on their WebSocket instead of HTTP PUTs."""


@dataclass(frozen=True)
class Profile:
    step_s: float
    half_s: float
    repeats: int
    refinements: int
    drain_s: float


FULL = Profile(step_s=5.0, half_s=8.0, repeats=3, refinements=2, drain_s=8.0)
QUICK = Profile(step_s=2.0, half_s=3.0, repeats=1, refinements=1, drain_s=4.0)


# --- /proc readings -----------------------------------------------------------------------------


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields_ = stat[stat.rindex(")") + 2 :].split()
    return (int(fields_[11]) + int(fields_[12])) / CLK_TCK


def proc_rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def db_pids() -> list[int]:
    """PostgreSQL and Redis server processes (every backend, whoever it serves)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                comm = (entry / "comm").read_text().strip()
            except OSError:
                continue
            if comm.startswith(("postgres", "redis-server")):
                found.append(int(entry.name))
    return found


def machine_busy() -> tuple[float, float]:
    """(busy jiffies, total jiffies) over all CPUs, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]
    total = sum(values[:8])
    return total - idle, total


@dataclass
class CpuWindow:
    """CPU used between `start` and `stop`, in cores (1.0 = one core busy the whole time)."""

    server_pids: list[int]
    t0: float = 0.0
    server0: list[float] = field(default_factory=list)
    db0: dict[int, float] = field(default_factory=dict)
    client0: float = 0.0
    machine0: tuple[float, float] = (0.0, 0.0)

    def start(self) -> None:
        self.t0 = time.monotonic()
        self.server0 = [proc_cpu_s(p) for p in self.server_pids]
        self.db0 = {p: proc_cpu_s(p) for p in db_pids()}
        self.client0 = time.process_time()
        self.machine0 = machine_busy()

    def stop(self) -> dict[str, Any]:
        wall = max(time.monotonic() - self.t0, 1e-9)
        servers = [(proc_cpu_s(p) - c) / wall for p, c in zip(self.server_pids, self.server0,
                                                                strict=True)]
        db = sum(proc_cpu_s(p) - self.db0.get(p, 0.0) for p in db_pids()) / wall
        busy, total = machine_busy()
        machine = (busy - self.machine0[0]) / max(total - self.machine0[1], 1) * (os.cpu_count()
                                                                                   or 1)
        client = (time.process_time() - self.client0) / wall
        return {
            "server_cores": [round(s, 2) for s in servers],
            "db_cores": round(db, 2),
            "client_cores": round(client, 2),
            "machine_cores": round(machine, 2),
            # Everything else on the (shared) machine: other people's work, the kernel.
            "other_cores": round(max(0.0, machine - sum(servers) - db - client), 2),
        }


# --- message material ---------------------------------------------------------------------------


def ratchet_body() -> bytes:
    """A real `RatchetMessage` encoding of a 1 KiB plaintext (second message of a live session,
    so a ratchet message rather than a prekey message)."""
    from tidings.crypto.device_prekeys import DevicePrekeys
    from tidings.crypto.identity import IdentityKeyPair
    from tidings.crypto.session import Session
    from tidings.wire import codec, pb

    alice_identity = IdentityKeyPair.generate()
    bob_identity = IdentityKeyPair.generate()
    bob_prekeys = DevicePrekeys.generate(bob_identity, now_ms=0, one_time_count=1, kem_count=1)
    bundle = bob_prekeys.bundle(1, 2, bob_prekeys.one_time_prekeys[0].id,
                                bob_prekeys.kem_prekeys[0].id)
    alice = Session.initiate(alice_identity, bundle, local_registration_id=1)
    c1, c2, c3 = (os.urandom(32) for _ in range(3))
    first = alice.encrypt(b"hello", c1)
    bob, _ = Session.accept(bob_identity, bob_prekeys, codec.decode(pb.PrekeyMessage, first.body),
                            c1)
    reply = bob.encrypt(b"reply", c2)
    alice.decrypt(codec.decode(pb.RatchetMessage, reply.body), c2)
    body = bytes(alice.encrypt(os.urandom(PLAINTEXT_BYTES), c3).body)
    codec.decode(pb.RatchetMessage, body)  # what the server checks
    return body


@dataclass(frozen=True)
class Device:
    username: str
    registration_id: int
    secret: bytes

    def authorization(self) -> str:
        token = base64.b64encode(f"{self.username}.1:{b64e(self.secret)}".encode())
        return "Basic " + token.decode("ascii")


def b64e(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64d(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def device_keys(name: str) -> tuple[dict[str, Any], Device]:
    """Registration material for one fresh device (own identity, 1 + 1 one-time prekeys)."""
    from tidings.crypto.device_prekeys import DevicePrekeys
    from tidings.crypto.identity import IdentityKeyPair
    from tidings.wire import codec

    identity = IdentityKeyPair.generate()
    prekeys = DevicePrekeys.generate(identity, now_ms=int(time.time() * 1000), one_time_count=1,
                                     kem_count=1)
    registration_id = 1 + secrets.randbelow(2**31 - 2)
    secret = secrets.token_bytes(32)
    keys = {
        "name": "bench",
        "registration_id": registration_id,
        "identity_key": b64e(identity.public.encode()),
        "signed_prekey": b64e(codec.encode(prekeys.signed_prekey.to_wire())),
        "last_resort_kem_prekey": b64e(codec.encode(prekeys.last_resort_kem_prekey.to_wire())),
        "one_time_prekeys": [b64e(codec.encode(k.to_wire())) for k in prekeys.one_time_prekeys],
        "kem_prekeys": [b64e(codec.encode(k.to_wire())) for k in prekeys.kem_prekeys],
        "secret": b64e(secret),
    }
    return keys, Device(name, registration_id, secret)


# --- the generator's bookkeeping ----------------------------------------------------------------


class Ledger:
    """Scheduled and receive times by sequence number (one process, one monotonic clock)."""

    def __init__(self) -> None:
        self.scheduled: list[float] = []
        self.received: list[float] = []
        self.failed: set[int] = set()
        self.errors: dict[str, int] = {}
        self.duplicates = 0
        self.done = 0  # delivered + failed, all steps

    def reserve(self, times: Sequence[float]) -> int:
        base = len(self.scheduled)
        self.scheduled.extend(times)
        self.received.extend([0.0] * len(times))
        return base

    def deliver(self, seq: int, now: float) -> None:
        if 0 <= seq < len(self.received) and seq not in self.failed:
            if self.received[seq]:
                self.duplicates += 1
                return
            self.received[seq] = now
            self.done += 1

    def fail(self, seq: int, why: str) -> None:
        self.errors[why] = self.errors.get(why, 0) + 1
        if seq not in self.failed and not self.received[seq]:
            self.failed.add(seq)
            self.done += 1

    def in_flight(self) -> int:
        return len(self.scheduled) - self.done


def percentile(sorted_values: Sequence[float], q: float) -> float:
    if not sorted_values:
        return math.inf
    index = min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))
    return sorted_values[index]


@dataclass
class Step:
    system: str
    phase: str
    offered: float
    seconds: float
    messages: int
    delivered: int
    failed: int
    delivered_rate: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    sustained: bool
    cpu: dict[str, Any]
    rss_mb: list[float]
    errors: dict[str, int]
    backlog_at_start: int = 0
    """Messages of earlier steps still in flight when this one began (after `settle`): a step
    that starts behind measures the backlog's drain, not its own rate."""


# --- systems --------------------------------------------------------------------------------------


class HttpConnection:
    """One keep-alive HTTP/1.1 connection; enough of the protocol for uvicorn's answers."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def request(self, data: bytes) -> int:
        self.writer.write(data)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        lower = head.lower()
        at = lower.find(b"content-length:")
        if at < 0:
            raise ConnectionError("no content-length")
        length = int(lower[at + 15 : lower.index(b"\r\n", at)])
        await self.reader.readexactly(length)
        return status


class HttpPool:
    """Keep-alive connections, most recently used first. A connection idle for longer than
    `MAX_IDLE_S` is closed instead of reused: uvicorn closes keep-alive connections after 5 s,
    and a request written into one that the server is closing fails (not idempotent: no retry).
    """

    MAX_IDLE_S = 3.0

    def __init__(self, port: int, size: int) -> None:
        self.port = port
        self.idle: list[tuple[float, HttpConnection]] = []
        self.slots = asyncio.Semaphore(size)

    async def request(self, data: bytes) -> int:
        async with self.slots:
            conn = None
            while self.idle and conn is None:
                used, candidate = self.idle.pop()
                if time.monotonic() - used < self.MAX_IDLE_S:
                    conn = candidate
                else:
                    candidate.writer.close()
            if conn is None:
                conn = HttpConnection(*await asyncio.open_connection("127.0.0.1", self.port))
            try:
                status = await conn.request(data)
            except BaseException:
                conn.writer.close()
                raise
            self.idle.append((time.monotonic(), conn))
            return status

    async def close(self) -> None:
        for _, conn in self.idle:
            conn.writer.close()
        self.idle.clear()


class System:
    """A system under test: its server processes, its clients, and how to send message seq."""

    name = ""
    label = ""

    def __init__(self, ledger: Ledger, clients: int, body: bytes, workdir: Path) -> None:
        self.ledger = ledger
        self.pairs = clients // 2
        self.body_b64 = b64e(body)
        self.workdir = workdir
        self.procs: list[subprocess.Popen[bytes]] = []
        self.tasks: set[asyncio.Task[Any]] = set()
        self.receivers: list[asyncio.Task[None]] = []
        self.sockets: list[Any] = []
        self.salt = os.urandom(24)

    def commitment(self, seq: int) -> str:
        return b64e(seq.to_bytes(8, "big") + self.salt)

    @property
    def server_pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def spawn(self, kind: str, port: int, env: dict[str, str], tag: str) -> None:
        log = (self.workdir / f"{tag}.log").open("wb")
        full_env = {**os.environ, "PYTHONPATH": str(REPO / "src"), **env}
        self.procs.append(subprocess.Popen(
            [PYTHON, str(SERVER_SCRIPT), kind, str(port)],
            stdout=log, stderr=subprocess.STDOUT, env=full_env, cwd=self.workdir,
        ))

    async def wait_listening(self, port: int, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(p.poll() is not None for p in self.procs):
                raise RuntimeError(f"{self.name}: a server process exited; see {self.workdir}")
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                return
            await asyncio.sleep(0.1)
        raise RuntimeError(f"{self.name}: server on port {port} did not start")

    def fire(self, seq: int) -> None:
        task = asyncio.ensure_future(self.send(seq))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def send(self, seq: int) -> None:
        raise NotImplementedError

    async def start(self) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        for task in self.receivers:
            task.cancel()
        for ws in self.sockets:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), 2.0)
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)

    async def _connect_all(self, opener: Callable[[int], Awaitable[Any]], count: int) -> list[Any]:
        out: list[Any] = [None] * count
        gate = asyncio.Semaphore(20)

        async def one(i: int) -> None:
            async with gate:
                out[i] = await opener(i)

        await asyncio.gather(*(one(i) for i in range(count)))
        self.sockets.extend(out)
        return out


class BareRelay(System):
    name = "bare"
    label = "bare WebSocket relay (Starlette + uvicorn, no storage)"

    async def start(self) -> None:
        from websockets.asyncio.client import connect

        port = free_port()
        self.spawn("bare", port, {}, "bare")
        await self.wait_listening(port)

        async def open_(i: int, role: str) -> Any:
            return await connect(f"ws://127.0.0.1:{port}/ws/{role}{i}", proxy=None,
                                 max_size=4 * 1024 * 1024)

        self.senders = await self._connect_all(lambda i: open_(i, "s"), self.pairs)
        receivers = await self._connect_all(lambda i: open_(i, "r"), self.pairs)
        self.receivers = [asyncio.ensure_future(self.receive(ws)) for ws in receivers]

    async def send(self, seq: int) -> None:
        pair = seq % self.pairs
        text = (f'{{"to":"r{pair}","seq":{seq},"commitment":"{self.commitment(seq)}",'
                f'"body":"{self.body_b64}"}}')
        try:
            await self.senders[pair].send(text)
        except Exception as exc:
            self.ledger.fail(seq, type(exc).__name__)

    async def receive(self, ws: Any) -> None:
        deliver, loads, now = self.ledger.deliver, json.loads, time.monotonic
        with contextlib.suppress(Exception):
            async for frame in ws:
                t = now()
                deliver(loads(frame)["seq"], t)


class TidingsSystem(System):
    """One node (SQLite) or two nodes (PostgreSQL + Redis; senders on A, receivers on B)."""

    def __init__(self, ledger: Ledger, clients: int, body: bytes, workdir: Path,
                 cluster: bool, ws_sends: bool = False) -> None:
        super().__init__(ledger, clients, body, workdir)
        self.cluster = cluster
        self.ws_sends = ws_sends
        self.name = ("cluster" if cluster else "sqlite") + ("-ws" if ws_sends else "")
        self.label = ("Tidings, 2 nodes, PostgreSQL + Redis" if cluster
                      else "Tidings, 1 node, SQLite (embedded)")
        self.label += ", sends over the WebSocket" if ws_sends else ", sends over HTTP"
        self.schema = f"relaybench_{os.urandom(4).hex()}"
        self.prefix = f"tidings-relaybench-{os.urandom(4).hex()}"
        self.pool: HttpPool | None = None

    def env(self, node: str) -> dict[str, str]:
        env = {
            "TIDINGS_DATA_DIR": str(self.workdir / node),
            "TIDINGS_RATE_SENDS_PER_MINUTE": "100000000",
            "TIDINGS_RATE_REGISTRATIONS_PER_HOUR": "100000000",
            "TIDINGS_RATE_PREKEY_FETCHES_PER_MINUTE": "100000000",
            "TIDINGS_NODE_NAME": node,
        }
        if self.cluster:
            key = self.workdir / "franking.key"
            if not key.exists():
                key.write_bytes(os.urandom(32))
                key.chmod(0o600)
            env.update({
                "TIDINGS_DATABASE_URL": PG_DSN,
                "TIDINGS_DATABASE_SCHEMA": self.schema,
                "TIDINGS_REDIS_URL": REDIS_URL,
                "TIDINGS_REDIS_PREFIX": self.prefix,
                "TIDINGS_FRANKING_KEY_FILE": str(key),
            })
        return env

    async def start(self) -> None:
        from websockets.asyncio.client import connect

        from tidings.client.transport import Transport

        send_port = free_port()
        self.spawn("tidings", send_port, self.env("node-a"), "node-a")
        await self.wait_listening(send_port)  # node A migrates the schema before listening
        recv_port = send_port
        if self.cluster:
            recv_port = free_port()
            self.spawn("tidings", recv_port, self.env("node-b"), "node-b")
            await self.wait_listening(recv_port)
        self.send_port = send_port

        material = await asyncio.to_thread(
            lambda: [device_keys(f"{role}{i:04d}{os.urandom(3).hex()}")
                     for role in ("snd", "rcv") for i in range(self.pairs)])
        gate = asyncio.Semaphore(8)
        async with Transport(f"http://127.0.0.1:{send_port}", timeout=60) as transport:

            async def register(keys: dict[str, Any], device: Device) -> None:
                async with gate:
                    await transport.create_account(device.username, keys)

            await asyncio.gather(*(register(k, d) for k, d in material))
        devices = [d for _, d in material]
        self.senders, self.receiver_devices = devices[: self.pairs], devices[self.pairs :]

        async def open_(device: Device, port: int) -> Any:
            ws = await connect(f"ws://127.0.0.1:{port}/v1/websocket", proxy=None,
                               additional_headers={"Authorization": device.authorization()},
                               max_size=4 * 1024 * 1024, open_timeout=60)
            frame = await asyncio.wait_for(ws.recv(), 30)
            if "queue_empty" not in str(frame):
                raise RuntimeError(f"{self.name}: unexpected first frame")
            return ws

        self.sender_sockets = await self._connect_all(
            lambda i: open_(self.senders[i], send_port), self.pairs)
        if self.ws_sends:
            self.receivers.extend(asyncio.ensure_future(self.results(ws))
                                  for ws in self.sender_sockets)
        receivers = await self._connect_all(
            lambda i: open_(self.receiver_devices[i], recv_port), self.pairs)
        self.receivers += [asyncio.ensure_future(self.receive(ws)) for ws in receivers]
        self.pool = HttpPool(send_port, self.pairs)
        self.frames = [
            (f'"destination":"{r.username}","messages":[{{"device_id":1,'
             f'"registration_id":{r.registration_id},"type":2,"body":"{self.body_b64}",'
             f'"commitment":"')
            for r in self.receiver_devices
        ]
        self.requests = [
            (f"PUT /v1/messages/{r.username} HTTP/1.1\r\nHost: 127.0.0.1:{send_port}\r\n"
             f"Authorization: {s.authorization()}\r\nContent-Type: application/json\r\n",
             f'{{"messages":[{{"device_id":1,"registration_id":{r.registration_id},"type":2,'
             f'"body":"{self.body_b64}","commitment":"')
            for s, r in zip(self.senders, self.receiver_devices, strict=True)
        ]

    async def send(self, seq: int) -> None:
        if self.ws_sends:
            # A `send` frame on the sender's own WebSocket; the answer comes to `results`.
            pair = seq % self.pairs
            text = (f'{{"type":"send","id":{seq},{self.frames[pair]}'
                    f'{self.commitment(seq)}"}}]}}')
            try:
                await self.sender_sockets[pair].send(text)
            except Exception as exc:
                self.ledger.fail(seq, type(exc).__name__)
            return
        head, body_start = self.requests[seq % self.pairs]
        body = f'{body_start}{self.commitment(seq)}"}}]}}'.encode()
        data = f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body
        assert self.pool is not None
        try:
            status = await self.pool.request(data)
        except Exception as exc:
            self.ledger.fail(seq, type(exc).__name__)
            return
        if status != 200:
            self.ledger.fail(seq, f"http_{status}")

    async def receive(self, ws: Any) -> None:
        from tidings.wire import tidings_pb2 as pb

        deliver, loads, now = self.ledger.deliver, json.loads, time.monotonic
        parse = pb.Envelope.FromString
        with contextlib.suppress(Exception):
            async for frame in ws:
                t = now()
                data = loads(frame)
                if data.get("type") != "envelope":
                    continue
                envelope = parse(b64d(data["envelope"]))
                deliver(int.from_bytes(envelope.commitment[:8], "big"), t)
                await ws.send(f'{{"type":"ack","message_id":"{b64e(envelope.message_id)}"}}')

    async def results(self, ws: Any) -> None:
        """A sender's WebSocket: a failed send (an ``error`` frame) fails its message."""
        with contextlib.suppress(Exception):
            async for frame in ws:
                if '"error"' in frame[:20]:
                    data = json.loads(frame)
                    if "id" in data:
                        self.ledger.fail(int(data["id"]), f"ws_{data.get('code')}")

    async def stop(self) -> None:
        if self.pool is not None:
            await self.pool.close()
        await super().stop()
        if self.cluster:
            await drop_cluster_state(self.schema, self.prefix)


async def drop_cluster_state(schema: str, prefix: str) -> None:
    import asyncpg
    import redis.asyncio as redis

    with contextlib.suppress(Exception):
        conn = await asyncpg.connect(PG_DSN)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()
    with contextlib.suppress(Exception):
        client = redis.from_url(REDIS_URL)
        try:
            keys = [k async for k in client.scan_iter(match=f"{prefix}:*", count=1000)]
            if keys:
                await client.delete(*keys)
        finally:
            await client.aclose()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- the open-loop driver -----------------------------------------------------------------------


async def settle(system: System, limit_s: float) -> bool:
    """Wait (bounded) until nothing is in flight; True when settled."""
    deadline = time.monotonic() + limit_s
    while system.ledger.in_flight() > 0 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return system.ledger.in_flight() == 0


async def run_step(system: System, rate: float, seconds: float, phase: str,
                   profile: Profile) -> Step:
    ledger = system.ledger
    await settle(system, SETTLE_LIMIT_S)
    backlog = ledger.in_flight()
    count = max(1, round(rate * seconds))
    t0 = time.monotonic() + 0.02
    base = ledger.reserve([t0 + k / rate for k in range(count)])
    errors_before = dict(ledger.errors)
    cpu = CpuWindow(system.server_pids)
    rss: list[list[float]] = []

    async def sample_rss() -> None:
        while True:
            rss.append([proc_rss_mb(p) for p in system.server_pids])
            await asyncio.sleep(0.5)

    sampler = asyncio.ensure_future(sample_rss())
    cpu.start()
    scheduled, fire, monotonic = ledger.scheduled, system.fire, time.monotonic
    k = 0
    while k < count:
        now = monotonic()
        while k < count and scheduled[base + k] <= now:
            fire(base + k)
            k += 1
        if k < count:
            delay = scheduled[base + k] - monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
    end_of_sends = monotonic()
    deadline = end_of_sends + profile.drain_s
    while monotonic() < deadline and ledger.in_flight() > 0:
        await asyncio.sleep(0.02)
    usage = cpu.stop()
    sampler.cancel()

    received = ledger.received[base : base + count]
    latencies = sorted(r - s for r, s in zip(received, scheduled[base : base + count],
                                              strict=True) if r)
    delivered = len(latencies)
    failed = sum(1 for i in range(base, base + count) if i in ledger.failed)
    tail = [math.inf] * (count - delivered)
    everything = latencies + tail
    last = max(received) if delivered else t0
    rate_out = delivered / max(last - t0, 1e-9) if delivered else 0.0
    p99 = percentile(everything, 0.99)
    sustained = (delivered >= DELIVERED_FRACTION * count and rate_out >= RATE_TRACKING * rate
                 and p99 <= P99_LIMIT_S)
    errors = {k_: v - errors_before.get(k_, 0) for k_, v in ledger.errors.items()
              if v - errors_before.get(k_, 0)}
    peak = [max(col) for col in zip(*rss, strict=True)] if rss else []
    return Step(system.name, phase, round(rate, 1), seconds, count, delivered, failed,
                round(rate_out, 1), ms(percentile(everything, 0.50)), ms(p99),
                ms(everything[-1]), sustained, usage, [round(x, 1) for x in peak], errors,
                backlog)


def ms(seconds: float) -> float:
    return round(seconds * 1000, 2) if math.isfinite(seconds) else math.inf


def show(step: Step, quiet: bool) -> None:
    if quiet:
        return
    cpu = step.cpu
    print(f"  {step.system:8} {step.phase:6} offered {step.offered:8.1f}/s  delivered "
          f"{step.delivered_rate:8.1f}/s ({step.delivered}/{step.messages})  p50 "
          f"{step.p50_ms:8.1f} ms  p99 {step.p99_ms:8.1f} ms  "
          f"{'ok  ' if step.sustained else 'FAIL'}  cpu srv {cpu['server_cores']} db "
          f"{cpu['db_cores']} gen {cpu['client_cores']} other {cpu['other_cores']}"
          + (f"  errors {step.errors}" if step.errors else "")
          + (f"  BEHIND by {step.backlog_at_start}" if step.backlog_at_start else ""),
          file=sys.stderr, flush=True)


@dataclass
class Outcome:
    system: str
    label: str
    sustained_max: float
    max_step: Step | None
    half: list[Step]
    steps: list[Step]

    def median(self, key: str) -> float:
        values = [getattr(s, key) for s in self.half]
        return statistics.median(values) if values else math.nan


async def measure(system: System, start_rate: float, profile: Profile, quiet: bool,
                  py_spy: Path | None = None) -> Outcome:
    steps: list[Step] = []

    async def step(rate: float, seconds: float, phase: str) -> Step:
        spies: list[subprocess.Popen[bytes]] = []
        if phase == "py-spy" and py_spy is not None:
            py_spy.mkdir(parents=True, exist_ok=True)
            for i, pid in enumerate(system.server_pids):
                out = py_spy / f"{system.name}-{i}.txt"
                spies.append(subprocess.Popen(
                    [str(Path(PYTHON).parent / "py-spy"), "record", "--pid", str(pid),
                     "--duration", str(int(seconds)), "--rate", "200", "--threads",
                     "--format", "raw", "--output", str(out)],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            await asyncio.sleep(0.5)  # attached before the first send
        result = await run_step(system, rate, seconds, phase, profile)
        for spy in spies:
            await asyncio.to_thread(spy.wait, 30)
        show(result, quiet)
        steps.append(result)
        return result

    await step(start_rate / 2, min(2.0, profile.step_s), "warmup")
    best: Step | None = None
    failed_rate = math.inf
    rate = start_rate
    for _ in range(MAX_DOUBLINGS):
        result = await step(rate, profile.step_s, "search")
        if result.sustained:
            best = result
            if math.isfinite(failed_rate):  # came down from a failed start rate
                break
            rate *= 2
            continue
        failed_rate = rate
        if best is not None:
            break
        rate /= 2  # even the start rate is too much: halve (bounded)
        if rate < 5:
            break
    low = best.offered if best is not None else 0.0
    high = failed_rate
    for _ in range(profile.refinements):
        if best is None or not math.isfinite(high):
            break
        mid = math.sqrt(low * high)
        result = await step(mid, profile.step_s, "refine")
        if result.sustained:
            best, low = result, mid
        else:
            high = mid
    sustained_max = best.offered if best is not None else 0.0
    half: list[Step] = []
    if sustained_max:
        for _ in range(profile.repeats):
            half.append(await step(sustained_max / 2, profile.half_s, "half"))
        if py_spy is not None:  # an extra step, so the profiler does not touch the figures
            await step(sustained_max / 2, max(profile.half_s, 6.0), "py-spy")
    return Outcome(system.name, system.label, sustained_max, best, half, steps)


# --- report -------------------------------------------------------------------------------------


def machine_facts() -> dict[str, Any]:
    import starlette
    import uvicorn
    import uvloop
    import websockets

    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    facts: dict[str, Any] = {
        "nproc": os.cpu_count(),
        "cpu": model,
        "python": platform.python_version(),
        "uvicorn": uvicorn.__version__,
        "starlette": starlette.__version__,
        "websockets": websockets.__version__,
        "uvloop": uvloop.__version__,
        "load_avg_at_start": [round(x, 2) for x in os.getloadavg()],
    }
    return facts


async def service_versions() -> dict[str, str]:
    out: dict[str, str] = {}
    with contextlib.suppress(Exception):
        import asyncpg

        conn = await asyncpg.connect(PG_DSN)
        out["postgresql"] = str(await conn.fetchval("SHOW server_version"))
        await conn.close()
    with contextlib.suppress(Exception):
        import redis.asyncio as redis

        client = redis.from_url(REDIS_URL)
        out["redis"] = str((await client.info("server"))["redis_version"])
        await client.aclose()
    return out


def fmt(value: float, digits: int = 1) -> str:
    return "∞" if not math.isfinite(value) else f"{value:,.{digits}f}"


def per_message_ms(o: Outcome) -> float:
    """Server CPU (all nodes) per delivered message at half the sustained maximum."""
    values = [sum(s.cpu["server_cores"]) / s.delivered_rate * 1000 for s in o.half
              if s.delivered_rate]
    return statistics.median(values) if values else math.nan


def render(outcomes: list[Outcome], args: argparse.Namespace) -> str:
    lines = [
        "| system | sustained max (offered msg/s) | delivered at max | half rate (offered) | "
        "delivered msg/s | p50 ms | p99 ms | server RSS MiB | server CPU (cores) | "
        "server CPU ms/msg | db CPU | generator CPU |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for o in outcomes:
        cpu = [s.cpu for s in o.half]
        srv = " + ".join(fmt(statistics.median(c["server_cores"][i] for c in cpu), 2)
                         for i in range(len(cpu[0]["server_cores"]))) if cpu else "-"
        rss = " + ".join(fmt(statistics.median(s.rss_mb[i] for s in o.half), 0)
                         for i in range(len(o.half[0].rss_mb))) if o.half else "-"
        lines.append(
            f"| {o.label} | {fmt(o.sustained_max)} | "
            f"{fmt(o.max_step.delivered_rate) if o.max_step else '-'} | "
            f"{fmt(o.sustained_max / 2)} | {fmt(o.median('delivered_rate'))} | "
            f"{fmt(o.median('p50_ms'), 1)} | {fmt(o.median('p99_ms'), 1)} | {rss} | {srv} | "
            f"{fmt(per_message_ms(o), 2)} | "
            f"{fmt(statistics.median(c['db_cores'] for c in cpu), 2) if cpu else '-'} | "
            f"{fmt(statistics.median(c['client_cores'] for c in cpu), 2) if cpu else '-'} |")
    by = {o.system: o for o in outcomes}
    bare = by.get("bare")
    lines.append("")
    for name in SYSTEMS[:-1]:
        o = by.get(name)
        if o is None:
            continue
        target = 0.3 if name.startswith("cluster") else 0.5
        if bare is not None and bare.max_step is not None and o.max_step is not None:
            ratio = o.max_step.delivered_rate / bare.max_step.delivered_rate
            verdict = "PASS" if ratio >= target else "MISS"
            lines.append(f"- {o.label}: durable / bare delivered throughput at the sustained "
                         f"maximum = {ratio:.3f}x (target >= {target}x): {verdict}")
        if not name.startswith("cluster") and o.max_step is not None:
            rate = o.max_step.delivered_rate
            verdict = "PASS" if rate >= 2500 else "MISS"
            lines.append(f"- {o.label}: delivered at the sustained maximum = {fmt(rate)} msg/s "
                         f"(target >= 2,500): {verdict}")
        p99s = [s.p99_ms for s in o.half]
        if p99s:
            p99 = statistics.median(p99s)
            verdict = "PASS" if p99 < 100 else "MISS"
            lines.append(f"- {o.label}: p99 at half the sustained maximum = {fmt(p99)} ms "
                         f"(runs: {', '.join(fmt(p) for p in p99s)}; target < 100 ms): {verdict}")
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    profile = QUICK if args.quick else FULL
    body = ratchet_body()
    ledger = Ledger()
    outcomes: list[Outcome] = []
    started = time.monotonic()
    facts = machine_facts() | await service_versions()
    root = Path(tempfile.mkdtemp(prefix="tidings-relay-"))
    try:
        for name in args.only:
            workdir = root / name
            workdir.mkdir()
            system: System
            if name == "bare":
                system = BareRelay(ledger, args.clients, body, workdir)
            else:
                system = TidingsSystem(ledger, args.clients, body, workdir,
                                       name.startswith("cluster"), name.endswith("-ws"))
            if not args.quiet:
                print(f"{system.label}: starting", file=sys.stderr, flush=True)
            try:
                t = time.monotonic()
                await system.start()
                if not args.quiet:
                    print(f"  ready in {time.monotonic() - t:.1f} s ({args.clients} clients)",
                          file=sys.stderr, flush=True)
                start_rate = args.start_rate * (4 if name == "bare" else 1)
                outcomes.append(await measure(system, start_rate, profile, args.quiet,
                                              args.py_spy))
            finally:
                await settle(system, profile.drain_s)
                await system.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return {
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "machine": facts,
        "wall_s": round(time.monotonic() - started, 1),
        "clients": args.clients,
        "body_bytes": len(body),
        "profile": asdict(profile),
        "duplicates": ledger.duplicates,
        "outcomes": outcomes,
    }


def finite(value: Any) -> Any:
    """JSON-safe: dataclasses as dicts, infinite latencies (never delivered) as null."""
    if hasattr(value, "__dataclass_fields__"):
        value = asdict(value)
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="short steps, one repeat")
    parser.add_argument("--json", action="store_true", help="print JSON (every step)")
    parser.add_argument("--clients", type=int, default=200, help="WebSocket clients (even)")
    parser.add_argument("--start-rate", type=float, default=100.0,
                        help="first search rate for Tidings, msg/s (the bare relay: 4x)")
    parser.add_argument("--only", type=lambda s: s.split(","),
                        default=list(SYSTEMS),
                        help="comma-separated subset of " + ",".join(SYSTEMS))
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    parser.add_argument("--py-spy", type=Path, default=None, metavar="DIR",
                        help="after the measurements, one more half-rate step with py-spy "
                             "recording every server process (raw stacks into DIR)")
    args = parser.parse_args(argv)
    if args.clients < 2 or args.clients % 2:
        parser.error("--clients must be an even number >= 2")
    if set(args.only) - set(SYSTEMS):
        parser.error(f"--only takes {', '.join(SYSTEMS)}")
    try:
        import uvloop
    except ImportError:
        result = asyncio.run(main_async(args))
    else:
        result = uvloop.run(main_async(args))
    if args.json:
        print(json.dumps(finite(result), indent=1))
    else:
        f = result["machine"]
        print(f"relay benchmark: {result['clients']} clients, {result['body_bytes']}-byte "
              f"RatchetMessage bodies, wall {result['wall_s']} s; {f['nproc']} x {f['cpu']}, "
              f"Python {f['python']}, load at start {f['load_avg_at_start']}")
        print(render(result["outcomes"], args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
