"""Idle WebSockets on one node (issue 9): /healthz latency, memory per connection and idle CPU
of a `tidings server` holding N authenticated, idle ``/v1/websocket`` connections, beside the
same node with none.

    PYTHONPATH=src .venv/bin/python bench/idle_websockets.py                  # 10,000 sockets
    PYTHONPATH=src .venv/bin/python bench/idle_websockets.py --connections 1000 --quick
    PYTHONPATH=src .venv/bin/python bench/idle_websockets.py --database postgres --json
    PYTHONPATH=src .venv/bin/python bench/idle_websockets.py --profile /tmp/idle.pstats

Target (issue 9): 10,000 idle WebSockets on one node with /healthz p99 < 50 ms; memory per
connection measured.

Method:

- One node, started exactly as an operator starts it: ``tidings server --port P --data-dir D``
  (the CLI, so `tidings.server.serving.uvicorn_config` sets the WebSocket implementation, frame
  limit and ping interval), in a fresh temporary data directory. ``--database sqlite`` is the
  embedded mode; ``--database postgres`` uses a fresh schema in database ``test`` on
  127.0.0.1:5432 and Redis for hints, as a cluster node would (`bench/relay.py`'s settings,
  dropped at the end). Rate limits are raised so that registration is not refused.
- N real accounts, one device each, registered through ``POST /v1/accounts`` (own identity
  key, signed prekeys, one one-time X25519 and ML-KEM prekey), 8 requests in flight. One
  device per account because that is what N idle phones are; linking more devices to fewer
  accounts costs two requests per device instead of one, so it would not be cheaper, and
  ``MAX_WEBSOCKETS_PER_ACCOUNT`` (16) forbids many sockets on one account.
- The sockets are held by ``--client-procs`` separate processes (asyncio on uvloop, the
  `websockets` client with its defaults, as Tidings' client transport uses it), each with
  ``RLIMIT_NOFILE`` raised to its hard limit. A socket counts as open once its first frame,
  ``queue_empty``, has arrived (every queue is empty: nobody sends). Opening stops after
  ``--open-timeout`` seconds (240): a node that cannot keep up is measured with however many
  sockets it opened, and the opening curve (the server's open descriptors every 10 s) shows
  where it flattened.
- Two windows of ``--seconds`` each (30; --quick: 10), the same measurement in both: first
  with 0 connections (after registration, so the database and caches are the same), then
  with all N idle. In each: ``GET /healthz`` open-loop at ``--rate`` per second (20) from
  this process over keep-alive connections (latency = response time - scheduled time, so a
  stalled event loop shows as latency), server CPU from ``/proc/<pid>/stat`` (and per thread,
  so aiosqlite's worker thread is visible), the socket holders' CPU, the machine's CPU, and
  the server's RSS at the window's end. Bytes per connection = (RSS idle with N - RSS with 0)
  / N. After the N-window the sockets are closed and the RSS read again 5 s later.
- ``--profile FILE``: after both windows (so it does not touch the figures) one more window
  with cProfile enabled in the server's main thread (started and stopped by SIGUSR1/SIGUSR2),
  stats dumped to FILE and the top functions printed: call counts per second show what every
  idle socket costs.

The machine has 2 cores shared by everything here: generator, server and database. Linux
only (reads /proc).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import multiprocessing
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from relay import (  # bench/ is not a package: its modules import each other by path
    PYTHON,
    CpuWindow,
    Device,
    HttpPool,
    Ledger,
    TidingsSystem,
    device_keys,
    drop_cluster_state,
    finite,
    free_port,
    machine_facts,
    percentile,
    proc_cpu_s,
    proc_rss_mb,
    service_versions,
)

TARGET_P99_MS = 50.0
REGISTER_IN_FLIGHT = 8
CONNECT_IN_FLIGHT = 32
PROFILE_FOCUS = ("pending", "active_enforcement", "_deliver", "acknowledge", "healthz",
                 "authenticate", "keepalive_ping", "send_ping", "wait_for", "read", "rollback",
                 "positions_after", "wake_stale")
"""Functions whose rate the profile always shows: what an idle socket still costs (the
timed enforcement re-check, keep-alive pings) and the node's queue sweep."""
HEALTHZ = b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n"

# The server, with cProfile switchable from outside (SIGUSR1 on, SIGUSR2 off and dump).
# The server, with cProfile switchable from outside: SIGUSR1 starts it (and resets the
# garbage-collector pause counts), SIGUSR2 stops it and dumps the stats to the file, and the
# collector's pauses per generation (count, total s, longest s) to the file + ".gc.json".
_SERVER_WRAPPER = """\
import cProfile, gc, json, os, signal, sys, time
out = os.environ.pop("IDLE_BENCH_PROFILE", "")
if out:
    profiler = cProfile.Profile()
    pauses = {}
    started = [0.0]
    def _gc(phase, info):
        if phase == "start":
            started[0] = time.perf_counter()
            return
        row = pauses.setdefault(str(info["generation"]), [0, 0.0, 0.0])
        took = time.perf_counter() - started[0]
        row[0] += 1
        row[1] += took
        row[2] = max(row[2], took)
    def _start(*_):
        pauses.clear()
        gc.callbacks.append(_gc)
        profiler.enable()
    def _dump(*_):
        profiler.disable()
        gc.callbacks.remove(_gc)
        with open(out + ".gc.json", "w") as f:
            json.dump(pauses, f)
        profiler.dump_stats(out)
    signal.signal(signal.SIGUSR1, _start)
    signal.signal(signal.SIGUSR2, _dump)
stalls_out = os.environ.pop("IDLE_BENCH_STALLS", "")
if stalls_out:
    import threading, traceback, collections
    stall_file = open(stalls_out, "a", buffering=1)
    def _note(**row):
        stall_file.write(json.dumps(row) + "\\n")
    gc_started = [0.0, 0.0]
    def _gc_note(phase, info):
        if phase == "start":
            gc_started[0] = time.perf_counter()
            gc_started[1] = time.time()
            return
        took = time.perf_counter() - gc_started[0]
        if took >= 0.02 or info["generation"] == 2:
            _note(kind="gc", at=gc_started[1], ms=round(took * 1000, 1),
                  generation=info["generation"], collected=info["collected"],
                  objects=len(gc.get_objects(2)) if info["generation"] == 2 else None)
    # Not gc.get_freeze_count(): it walks the frozen list (2 million objects with 10,000
    # sockets), which added ~0.3 s to every full collection's stall when it was logged here.
    gc.callbacks.append(_gc_note)
    main_id = threading.get_ident()
    def _watch(loop):
        # A callback posted to the loop every 20 ms; one not run within 100 ms is a stall,
        # and the main thread's stack is sampled every 10 ms until it runs.
        while True:
            ran = threading.Event()
            posted, posted_wall = time.perf_counter(), time.time()
            loop.call_soon_threadsafe(ran.set)
            if ran.wait(0.1):
                time.sleep(0.02)
                continue
            stacks = collections.Counter()
            while not ran.wait(0.01):
                frame = sys._current_frames().get(main_id)
                if frame is not None:
                    lines = traceback.format_stack(frame)[-12:]
                    stacks["".join(lines)] += 1
            _note(kind="stall", at=posted_wall, ms=round((time.perf_counter() - posted) * 1000, 1),
                  samples=sum(stacks.values()),
                  stacks=[[n, st] for st, n in stacks.most_common(3)])
    import uvicorn.server
    _serve = uvicorn.server.Server.serve
    async def _serve_watched(self, *a, **kw):
        import asyncio
        threading.Thread(target=_watch, args=(asyncio.get_running_loop(),), daemon=True,
                         name="stall-watch").start()
        return await _serve(self, *a, **kw)
    uvicorn.server.Server.serve = _serve_watched
from tidings.cli import cli
sys.argv = ["tidings", *sys.argv[1:]]
cli()
"""


def raise_nofile() -> int:
    """Soft RLIMIT_NOFILE up to the hard limit (inherited by child processes); returns it."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


# --- the socket holders (separate processes) -----------------------------------------------------


def holder_main(ws_url: str, devices: list[tuple[str, int, bytes]], open_s: float,
                pipe: Connection) -> None:
    """Open one authenticated WebSocket per device, report ``("idle", opened, failures)`` once
    each has received ``queue_empty`` or ``open_s`` seconds have passed (the attempts still
    under way then count as ``deadline``), hold them until anything arrives on ``pipe``,
    close."""
    raise_nofile()
    try:
        import uvloop
    except ImportError:
        asyncio.run(_hold(ws_url, devices, open_s, pipe))
    else:
        uvloop.run(_hold(ws_url, devices, open_s, pipe))


async def _hold(ws_url: str, devices: list[tuple[str, int, bytes]], open_s: float,
                pipe: Connection) -> None:
    from websockets.asyncio.client import connect

    sockets: list[Any] = []
    failures: dict[str, int] = {}
    gate = asyncio.Semaphore(CONNECT_IN_FLIGHT)
    unexpected: list[str] = []

    async def watch(ws: Any) -> None:
        with contextlib.suppress(Exception):
            async for frame in ws:  # an idle socket gets nothing: anything is worth a note
                unexpected.append(str(frame)[:80])

    async def one(username: str, registration_id: int, secret: bytes) -> None:
        device = Device(username, registration_id, secret)
        async with gate:
            try:
                ws = await connect(ws_url, proxy=None, open_timeout=120,
                                   additional_headers={"Authorization": device.authorization()})
                first = await asyncio.wait_for(ws.recv(), 120)
            except Exception as exc:
                failures[type(exc).__name__] = failures.get(type(exc).__name__, 0) + 1
                return
        if "queue_empty" not in str(first):
            failures["unexpected_first_frame"] = failures.get("unexpected_first_frame", 0) + 1
        sockets.append(ws)
        watchers.append(asyncio.ensure_future(watch(ws)))

    watchers: list[asyncio.Task[None]] = []
    attempts = [asyncio.ensure_future(one(*d)) for d in devices]
    _, late = await asyncio.wait(attempts, timeout=open_s)
    for task in late:
        task.cancel()
    if late:
        failures["deadline"] = len(late)
    await asyncio.gather(*late, return_exceptions=True)
    pipe.send(("idle", len(sockets), failures))
    await asyncio.to_thread(pipe.recv)
    closed_by_server = sum(1 for ws in sockets if ws.close_code is not None)
    for task in watchers:
        task.cancel()
    await asyncio.gather(*(asyncio.wait_for(ws.close(), 10) for ws in sockets),
                         return_exceptions=True)
    pipe.send(("closed", closed_by_server, unexpected[:5]))


# --- measurement ---------------------------------------------------------------------------------


@dataclass
class Window:
    connections: int
    seconds: float
    probes: int
    healthz_failed: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    server_rss_mb: float
    server_cpu_pct: float
    server_threads_cpu_pct: dict[str, float]
    holders_cpu_pct: float
    cpu: dict[str, Any]
    worst_probes: list[tuple[float, float]] = field(default_factory=list)
    started_at: float = 0.0
    """Wall-clock time the window began (the probes' clock)."""
    """The 5 slowest probes: (scheduled wall-clock time, latency ms), to match with
    ``--stalls``."""


def main_thread_cpu_s(pid: int) -> float:
    """CPU seconds of a process's main thread (the event loop); the rest of the process's CPU
    is its other threads: aiosqlite's workers, the default executor."""
    return proc_cpu_s_of(Path(f"/proc/{pid}/task/{pid}/stat"))


def proc_cpu_s_of(stat_file: Path) -> float:
    try:
        stat = stat_file.read_text()
    except OSError:
        return 0.0
    fields_ = stat[stat.rindex(")") + 2 :].split()
    return (int(fields_[11]) + int(fields_[12])) / os.sysconf("SC_CLK_TCK")


async def measure(port: int, server_pid: int, holder_pids: list[int], connections: int,
                  seconds: float, rate: float) -> Window:
    """/healthz open-loop at ``rate`` per second for ``seconds``, with CPU and RSS readings."""
    pool = HttpPool(port, 4)
    latencies: list[float] = []
    by_time: list[tuple[float, float]] = []
    wall_offset = time.time() - time.monotonic()
    failed = 0

    async def probe(scheduled: float) -> None:
        nonlocal failed
        try:
            status = await asyncio.wait_for(pool.request(HEALTHZ), 10)
        except Exception:
            failed += 1
            return
        if status != 200:
            failed += 1
            return
        latencies.append(time.monotonic() - scheduled)
        by_time.append((round(scheduled + wall_offset, 3), ms(latencies[-1])))

    await pool.request(HEALTHZ)  # one connection warm
    count = max(1, round(rate * seconds))
    cpu = CpuWindow([server_pid])
    main0 = main_thread_cpu_s(server_pid)
    holders0 = sum(proc_cpu_s(p) for p in holder_pids)
    cpu.start()
    t0 = time.monotonic() + 0.05
    tasks = []
    for k in range(count):
        scheduled = t0 + k / rate
        delay = scheduled - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(probe(scheduled)))
    await asyncio.gather(*tasks)
    wall = time.monotonic() - cpu.t0
    usage = cpu.stop()
    holders = (sum(proc_cpu_s(p) for p in holder_pids) - holders0) / wall
    main = (main_thread_cpu_s(server_pid) - main0) / wall
    threads = {"main": round(main * 100, 1),
               "other threads": round(max(0.0, usage["server_cores"][0] - main) * 100, 1)}
    await pool.close()
    ordered = sorted(latencies)
    return Window(
        connections=connections, seconds=round(wall, 1), probes=count, healthz_failed=failed,
        p50_ms=ms(percentile(ordered, 0.50)), p99_ms=ms(percentile(ordered, 0.99)),
        max_ms=ms(ordered[-1] if ordered else math.inf),
        server_rss_mb=round(proc_rss_mb(server_pid), 1),
        server_cpu_pct=round(usage["server_cores"][0] * 100, 1),
        server_threads_cpu_pct=threads, holders_cpu_pct=round(holders * 100, 1), cpu=usage,
        worst_probes=sorted(by_time, key=lambda p: p[1])[-5:],
        started_at=round(t0 + wall_offset, 3),
    )


def stalls_in(log: Path, window: Window) -> dict[str, Any]:
    """What ``--stalls`` logged during ``window``: full collections (count, longest ms,
    largest number of objects scanned) and event-loop stalls over 100 ms (count, longest)."""
    rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    inside = [r for r in rows
              if window.started_at <= r["at"] <= window.started_at + window.seconds]
    full = [r for r in inside if r["kind"] == "gc" and r["generation"] == 2]
    stalls = [r for r in inside if r["kind"] == "stall"]
    return {"full_collections": len(full),
            "full_collection_max_ms": max((r["ms"] for r in full), default=0.0),
            "full_collection_max_objects": max((r["objects"] or 0 for r in full), default=0),
            "other_collections_over_20ms": sum(1 for r in inside if r["kind"] == "gc"
                                               and r["generation"] != 2),
            "stalls_over_100ms": len(stalls),
            "stall_max_ms": max((r["ms"] for r in stalls), default=0.0)}


def ms(seconds: float) -> float:
    return round(seconds * 1000, 2) if math.isfinite(seconds) else math.inf


# --- the run -------------------------------------------------------------------------------------


class Node:
    """One `tidings server` process (the CLI) with the benchmark's settings."""

    def __init__(self, workdir: Path, database: str, profile: Path | None,
                 stalls: Path | None = None) -> None:
        # TidingsSystem holds bench/relay.py's node settings (raised rate limits; PostgreSQL
        # schema, Redis prefix and franking key for a cluster node): one place for them.
        self.settings = TidingsSystem(Ledger(), 0, b"", workdir, cluster=database == "postgres")
        self.workdir = workdir
        self.port = free_port()
        env = {**os.environ, **self.settings.env("node")}
        data_dir = env.pop("TIDINGS_DATA_DIR")
        if profile is not None:
            env["IDLE_BENCH_PROFILE"] = str(profile)
        if stalls is not None:
            env["IDLE_BENCH_STALLS"] = str(stalls)
        self.log = (workdir / "server.log").open("wb")
        self.proc = subprocess.Popen(
            [PYTHON, "-c", _SERVER_WRAPPER, "server", "--port", str(self.port),
             "--data-dir", data_dir],
            stdout=self.log, stderr=subprocess.STDOUT, env=env, cwd=workdir,
        )  # fmt: skip

    async def ready(self, timeout: float = 90.0) -> None:
        pool = HttpPool(self.port, 1)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"the server exited; see {self.workdir / 'server.log'}")
                with contextlib.suppress(OSError, asyncio.IncompleteReadError):
                    if await pool.request(HEALTHZ) == 200:
                        return
                await asyncio.sleep(0.2)
            raise RuntimeError("the server did not start")
        finally:
            await pool.close()

    async def stop(self) -> None:
        self.proc.terminate()
        try:
            await asyncio.to_thread(self.proc.wait, 30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.log.close()
        if self.settings.cluster:
            await drop_cluster_state(self.settings.schema, self.settings.prefix)


async def register(port: int, count: int, quiet: bool) -> tuple[list[Device], float, float]:
    """``count`` accounts with one device each; returns (devices, key generation s, HTTP s)."""
    from tidings.client.transport import Transport

    salt = os.urandom(3).hex()
    t = time.monotonic()
    material = await asyncio.to_thread(
        lambda: [device_keys(f"idle{i:05d}{salt}") for i in range(count)])
    keygen_s = time.monotonic() - t
    gate = asyncio.Semaphore(REGISTER_IN_FLIGHT)
    done = 0
    t = time.monotonic()
    async with Transport(f"http://127.0.0.1:{port}", timeout=120) as transport:

        async def one(keys: dict[str, Any], device: Device) -> None:
            nonlocal done
            async with gate:
                await transport.create_account(device.username, keys)
            done += 1
            if not quiet and done % 2000 == 0:
                print(f"  registered {done}/{count} ({done / (time.monotonic() - t):.0f}/s)",
                      file=sys.stderr, flush=True)

        await asyncio.gather(*(one(k, d) for k, d in material))
    return [d for _, d in material], keygen_s, time.monotonic() - t


async def open_sockets(port: int, devices: list[Device], procs: int, open_s: float,
                       server_pid: int, say: Any) -> tuple[
        list[tuple[multiprocessing.Process, Connection]], int, dict[str, int], float,
        list[tuple[float, int]]]:
    """Start the holders and wait until every socket is idle (or ``open_s`` passed); returns
    (holders, opened, failures, seconds, [(seconds, server's open file descriptors)] every
    10 s: the opening curve, which flattens when the server cannot keep up)."""
    ctx = multiprocessing.get_context("spawn")
    ws_url = f"ws://127.0.0.1:{port}/v1/websocket"
    holders = []
    t = time.monotonic()
    for i in range(procs):
        mine = [(d.username, d.registration_id, d.secret) for d in devices[i::procs]]
        here, there = ctx.Pipe()
        proc = ctx.Process(target=holder_main, args=(ws_url, mine, open_s, there),
                           daemon=True)
        proc.start()
        holders.append((proc, here))
    curve: list[tuple[float, int]] = []

    async def sample() -> None:
        while True:
            await asyncio.sleep(10)
            with contextlib.suppress(OSError):
                curve.append((round(time.monotonic() - t, 1),
                              len(os.listdir(f"/proc/{server_pid}/fd"))))
                say(f"    {curve[-1][0]:g} s: server has {curve[-1][1]} descriptors open")

    sampler = asyncio.ensure_future(sample())
    opened = 0
    failures: dict[str, int] = {}
    for _, pipe in holders:
        _, n, failed = await asyncio.to_thread(pipe.recv)
        opened += n
        for k, v in failed.items():
            failures[k] = failures.get(k, 0) + v
    sampler.cancel()
    return holders, opened, failures, time.monotonic() - t, curve


async def close_sockets(holders: list[tuple[multiprocessing.Process, Connection]]) -> dict[
        str, Any]:
    closed_by_server = 0
    unexpected: list[str] = []
    for _, pipe in holders:
        pipe.send("stop")
    for proc, pipe in holders:
        if await asyncio.to_thread(pipe.poll, 60):
            _, n, frames = pipe.recv()
            closed_by_server += n
            unexpected.extend(frames)
        await asyncio.to_thread(proc.join, 30)
        if proc.is_alive():
            proc.kill()
    return {"closed_by_server_meanwhile": closed_by_server, "unexpected_frames": unexpected}


async def profile_window(node: Node, seconds: float, out: Path, top: int) -> list[dict[str, Any]]:
    """cProfile in the server's main thread for ``seconds``; the ``top`` functions by own
    time, with calls per second."""
    import pstats

    os.kill(node.proc.pid, signal.SIGUSR1)
    await asyncio.sleep(seconds)
    os.kill(node.proc.pid, signal.SIGUSR2)
    for _ in range(100):
        if out.exists() and out.stat().st_size:
            break
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.5)
    stats = pstats.Stats(str(out))
    rows = []
    for (file, line, name), (_cc, calls, tottime, cumtime, _) in stats.stats.items():  # type: ignore[attr-defined]
        rows.append({"function": f"{Path(file).name}:{line}({name})",
                     "calls_per_s": round(calls / seconds, 1),
                     "own_ms_per_s": round(tottime / seconds * 1000, 2),
                     "cum_ms_per_s": round(cumtime / seconds * 1000, 2)})
    rows.sort(key=lambda r: r["own_ms_per_s"], reverse=True)
    focus = [r for r in rows[top:] if r["function"].rsplit("(", 1)[1][:-1] in PROFILE_FOCUS]
    gc_file = Path(str(out) + ".gc.json")
    for generation, (count, total, longest) in sorted(json.loads(gc_file.read_text()).items()):
        focus.append({"function": f"garbage collection, generation {generation}",
                      "calls_per_s": round(count / seconds, 2),
                      "own_ms_per_s": round(total / seconds * 1000, 2),
                      "cum_ms_per_s": round(longest * 1000, 2)})  # the longest pause, ms
    return rows[:top] + focus


async def run(args: argparse.Namespace) -> dict[str, Any]:
    nofile = raise_nofile()
    seconds = args.seconds if args.seconds else (10.0 if args.quick else 30.0)
    facts = machine_facts() | await service_versions()
    facts["rlimit_nofile"] = nofile
    root = Path(tempfile.mkdtemp(prefix="tidings-idle-"))
    say = (lambda *_: None) if args.quiet else (
        lambda text: print(text, file=sys.stderr, flush=True))
    result: dict[str, Any] = {"command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
                              "machine": facts, "database": args.database,
                              "connections": args.connections, "rate_per_s": args.rate}
    node = Node(root, args.database, args.profile, args.stalls)
    holders: list[tuple[multiprocessing.Process, Connection]] = []
    try:
        await node.ready()
        rss_start = proc_rss_mb(node.proc.pid)
        say(f"node up on port {node.port} ({args.database}); registering "
            f"{args.connections} accounts")
        devices, keygen_s, register_s = await register(node.port, args.connections, args.quiet)
        result["setup"] = {"rss_at_start_mb": round(rss_start, 1),
                           "keygen_s": round(keygen_s, 1), "register_s": round(register_s, 1),
                           "registrations_per_s": round(len(devices) / register_s, 1)}
        say(f"  registered in {register_s:.1f} s; baseline window ({seconds:g} s, 0 sockets)")
        await asyncio.sleep(3)
        baseline = await measure(node.port, node.proc.pid, [], 0, seconds, args.rate)
        say(f"  baseline: /healthz p50 {baseline.p50_ms} ms p99 {baseline.p99_ms} ms, RSS "
            f"{baseline.server_rss_mb} MB, server CPU {baseline.server_cpu_pct} %")
        say(f"  opening {args.connections} sockets from {args.client_procs} process(es)")
        holders, opened, failures, open_s, curve = await open_sockets(
            node.port, devices, args.client_procs, args.open_timeout, node.proc.pid, say)
        result["setup"] |= {"open_s": round(open_s, 1), "opened": opened,
                            "open_failures": failures, "open_curve_fds": curve}
        say(f"  {opened} idle after {open_s:.1f} s (failures {failures}); settling "
            f"{args.settle:g} s, then the idle window ({seconds:g} s)")
        await asyncio.sleep(args.settle)
        pids = [p.pid for p, _ in holders if p.pid is not None]
        idle = await measure(node.port, node.proc.pid, pids, opened, seconds, args.rate)
        say(f"  idle: /healthz p50 {idle.p50_ms} ms p99 {idle.p99_ms} ms, RSS "
            f"{idle.server_rss_mb} MB, server CPU {idle.server_cpu_pct} %")
        if args.profile is not None:
            say(f"  profiling the server for {seconds:g} s (cProfile, main thread)")
            result["profile"] = await profile_window(node, seconds, args.profile, args.top)
        result["windows"] = [asdict(baseline), asdict(idle)]
        if args.stalls is not None:
            result["stalls"] = [stalls_in(args.stalls, w) for w in (baseline, idle)]
        result["bytes_per_connection"] = (
            round((idle.server_rss_mb - baseline.server_rss_mb) * 1024 * 1024 / opened)
            if opened else None)
        result["close"] = await close_sockets(holders)
        holders = []
        await asyncio.sleep(5)
        result["rss_after_close_mb"] = round(proc_rss_mb(node.proc.pid), 1)
    finally:
        for proc, _ in holders:
            proc.kill()
        await node.stop()
        shutil.rmtree(root, ignore_errors=True)
    return result


def render(r: dict[str, Any]) -> str:
    base, idle = (Window(**w) for w in r["windows"])
    s = r["setup"]
    f = r["machine"]
    lines = [
        f"idle WebSockets: {r['connections']} requested, {s['opened']} open "
        f"({r['database']}); {f['nproc']} x {f['cpu']}, Python {f['python']}, load at start "
        f"{f['load_avg_at_start']}",
        f"set-up: {r['connections']} accounts registered in {s['register_s']} s "
        f"({s['registrations_per_s']}/s; client key generation {s['keygen_s']} s), sockets "
        f"open and idle in {s['open_s']} s (failures {s['open_failures'] or 'none'}); server "
        f"descriptors every 10 s: {[n for _, n in s['open_curve_fds']]}",
        "",
        "| | 0 connections | " + f"{idle.connections:,} idle connections |",
        "|---|--:|--:|",
        f"| /healthz p50 ms ({r['rate_per_s']:g}/s, {base.seconds:g} s) | {base.p50_ms} | "
        f"{idle.p50_ms} |",
        f"| /healthz p99 ms | {base.p99_ms} | {idle.p99_ms} |",
        f"| /healthz max ms | {base.max_ms} | {idle.max_ms} |",
        f"| /healthz failed | {base.healthz_failed} | {idle.healthz_failed} |",
        f"| server RSS MB | {base.server_rss_mb} | {idle.server_rss_mb} |",
        f"| server CPU % (one core = 100) | {base.server_cpu_pct} | {idle.server_cpu_pct} |",
        f"| server CPU by thread % | {base.server_threads_cpu_pct} | "
        f"{idle.server_threads_cpu_pct} |",
        f"| socket holders CPU % | - | {idle.holders_cpu_pct} |",
        f"| PostgreSQL + Redis CPU % (anyone's) | {round(base.cpu['db_cores'] * 100, 1)} | "
        f"{round(idle.cpu['db_cores'] * 100, 1)} |",
        f"| machine CPU % (2 cores = 200) | {round(base.cpu['machine_cores'] * 100, 1)} | "
        f"{round(idle.cpu['machine_cores'] * 100, 1)} |",
        "",
        f"memory per connection: {r['bytes_per_connection']:,} bytes "
        f"(RSS {base.server_rss_mb} -> {idle.server_rss_mb} MB; "
        f"{r['rss_after_close_mb']} MB 5 s after closing them)",
        f"/healthz p99 with {idle.connections:,} idle: {idle.p99_ms} ms (target < "
        f"{TARGET_P99_MS:g} ms): {'PASS' if idle.p99_ms < TARGET_P99_MS else 'MISS'}",
    ]
    lines.append(f"slowest probes (wall time, ms): 0 connections {base.worst_probes}; "
                 f"idle {idle.worst_probes}")
    for name, row in zip(("0 connections", "idle"), r.get("stalls", []), strict=False):
        lines.append(f"--stalls, {name} window: {row}")
    if r["close"]["closed_by_server_meanwhile"] or r["close"]["unexpected_frames"]:
        lines.append(f"note: {r['close']}")
    if r.get("profile"):
        lines.append("profile (cProfile, main thread; for garbage collection 'cum' is the "
                     "longest pause in ms):")
    for row in r.get("profile", []):
        lines.append(f"  {row['own_ms_per_s']:8.2f} ms/s own {row['cum_ms_per_s']:9.2f} cum "
                     f"{row['calls_per_s']:9.1f} calls/s  {row['function']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument("--quick", action="store_true", help="10 s windows instead of 30 s")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--database", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--seconds", type=float, default=0.0,
                        help="length of each measured window (default 30, --quick 10)")
    parser.add_argument("--rate", type=float, default=20.0, help="/healthz requests per second")
    parser.add_argument("--client-procs", type=int, default=2,
                        help="processes holding the sockets")
    parser.add_argument("--open-timeout", type=float, default=240.0,
                        help="seconds allowed for opening the sockets; the idle window then "
                             "runs with however many are open")
    parser.add_argument("--settle", type=float, default=10.0,
                        help="seconds between the last socket open and the idle window")
    parser.add_argument("--profile", type=Path, default=None, metavar="FILE",
                        help="one more window with cProfile in the server; pstats to FILE")
    parser.add_argument("--stalls", type=Path, default=None, metavar="FILE",
                        help="JSON lines appended to FILE by the server: every event-loop "
                             "stall over 100 ms (with sampled stacks of the main thread) and "
                             "every garbage collection over 20 ms or of generation 2")
    parser.add_argument("--top", type=int, default=25, help="profile rows printed")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    args = parser.parse_args(argv)
    if args.connections < 1 or args.client_procs < 1:
        parser.error("--connections and --client-procs must be >= 1")
    if args.profile is not None:
        args.profile = args.profile.resolve()
        args.profile.unlink(missing_ok=True)
    try:
        import uvloop
    except ImportError:
        result = asyncio.run(run(args))
    else:
        result = uvloop.run(run(args))
    print(json.dumps(finite(result), indent=1) if args.json else render(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
