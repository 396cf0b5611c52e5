"""Staff console page server time with a large case table (100,000 cases by default).

    .venv/bin/python bench/console.py                 # SQLite, 100k cases (about 1-2 min)
    .venv/bin/python bench/console.py --quick         # SQLite, 10k cases, fewer requests
    .venv/bin/python bench/console.py --pg            # PostgreSQL as well (fresh schema, dropped)
    .venv/bin/python bench/console.py --profile       # + cProfile of the slowest console route

Method
------
* The **real app**: `tidings.app.create_app(ServerConfig(data_dir=<tmp>))` (or with
  ``database_url`` = PostgreSQL and a fresh ``database_schema``), its lifespan run in-process
  (which migrates the database), the console mounted at ``/console`` exactly as in production.
* **Seeding.** A handful of cases come from *real verified reports*: messages franked with the
  node's own franking key, tagged as the server tags them, submitted through
  `SafetyService.submit_report` (franking and context-chain verification, evidence encrypted
  into the vault, case routing). The remaining cases are bulk rows inserted with
  ``executemany`` into the storage layer's own tables (`safety_cases`, `safety_reports`,
  `safety_report_items`: one report with one verified item per case, no evidence), spread over
  every category (hence every queue) with a fixed seed; ``--open`` of them (default 30 %) are
  open / pending second review / appealed, the rest decided (dismissed, actioned, ...).
* **Client.** httpx `AsyncClient` over `ASGITransport` against the app; a reviewer (member of
  every queue but child safety, no clearance) signs in through the console's own pages
  (password, then a TOTP code), like a browser.
* **Server time** is measured by a pure ASGI wrapper around the app: from the moment the app is
  called to the moment the last body chunk is sent (`time.perf_counter`). The SQL the request
  ran is counted by SQLAlchemy cursor events on the safety engine (on SQLite the count includes
  the explicit ``BEGIN`` of each transaction; PostgreSQL's pre-ping ``SELECT 1`` on each pool
  checkout is not counted, the checkouts are, in their own column), which also time each
  ``execute`` (row fetching is *not* included: on SQLite most of a large SELECT's time is in
  ``fetchall``, so read that column as a floor).
* **Peers in the same run**: ``GET /healthz`` (FastAPI, no database) and ``GET /console/``
  (the console's floor: session check against the database, the worker-thread hop, a
  redirect). Pages: the queues page, the largest visible queue's page, stepping to the next
  case of that queue, and the case page; the list pages and the case page are held to the
  same < 200 ms target. Pages are requested in interleaved rounds (round *r* runs every route
  ``--per-round`` times, order rotated by *r*) after untimed warm-up; figures are p50/p95/p99 over
  all requests; ratios are ratios of medians.
* Afterwards every distinct SQL statement seen is explained (SQLite ``EXPLAIN QUERY PLAN``,
  PostgreSQL ``EXPLAIN``) and statements that scan a table without an index, or sort in a
  temporary B-tree, are listed.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import os
import platform
import pstats
import random
import re
import secrets
import statistics
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import event, insert, text

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))  # tests.support.staff: the test way to get active staff

from tests.support.staff import active_staff  # noqa: E402
from tidings.app import create_app  # noqa: E402
from tidings.crypto import franking  # noqa: E402
from tidings.crypto.franking import ReportItem  # noqa: E402
from tidings.safety.cases import CaseState  # noqa: E402
from tidings.safety.categories import CATEGORY_POLICIES, Category, QueueId  # noqa: E402
from tidings.safety.reports import ReportSubmission  # noqa: E402
from tidings.safety.staff import Role, TotpVerifier  # noqa: E402
from tidings.server.config import ServerConfig  # noqa: E402
from tidings.storage.safety_schema import (  # noqa: E402
    safety_cases,
    safety_report_items,
    safety_reports,
)
from tidings.wire import pb  # noqa: E402

PG_URL = os.environ.get("TIDINGS_TEST_PG", "postgresql://127.0.0.1:5432/test")
CSRF_RE = re.compile(r'name="csrf" value="([0-9a-f]{64})"')
PASSWORD = "correct horse battery staple"
TARGET_MS = 200.0
DAY_MS = 86_400_000
REAL_CASES = 6
CHUNK = 5000


# --- server timing ------------------------------------------------------------------------


class Timed:
    """ASGI wrapper: server time of each HTTP request, from call to the last body chunk."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.last_ms = 0.0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()

        async def timed_send(message: Any) -> None:
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                self.last_ms = (time.perf_counter() - start) * 1000

        await self.app(scope, receive, timed_send)


class SqlMeter:
    """Counts and times the statements the safety engine runs; keeps one sample per
    distinct statement (with its parameters) for EXPLAIN."""

    def __init__(self, engine: Any) -> None:
        self.count = 0
        self.ms = 0.0
        self.checkouts = 0
        self.samples: dict[str, Any] = {}
        self.record = False
        self._local = threading.local()
        event.listen(engine, "before_cursor_execute", self._before)
        event.listen(engine, "after_cursor_execute", self._after)
        event.listen(engine, "checkout", self._checkout)

    def _checkout(self, *_: Any) -> None:
        self.checkouts += 1

    def _before(self, conn: Any, cursor: Any, statement: str, params: Any, *_: Any) -> None:
        self._local.start = time.perf_counter()

    def _after(self, conn: Any, cursor: Any, statement: str, params: Any, *_: Any) -> None:
        self.count += 1
        self.ms += (time.perf_counter() - self._local.start) * 1000
        if self.record and statement.lstrip().upper().startswith(("SELECT", "UPDATE", "DELETE")):
            self.samples.setdefault(statement, params)

    def reset(self) -> tuple[int, float, int]:
        out = (self.count, self.ms, self.checkouts)
        self.count, self.ms, self.checkouts = 0, 0.0, 0
        return out


# --- seeding ------------------------------------------------------------------------------


def _categories() -> list[Category]:
    return list(Category)


def bulk_seed(db: Any, n: int, open_fraction: float, now: int, rng: random.Random) -> None:
    """``n`` cases, one report and one verified report item each, by executemany."""
    cats = _categories()
    closed = [CaseState.DISMISSED, CaseState.ACTIONED, CaseState.ACTIONED, CaseState.OVERTURNED]
    for start in range(0, n, CHUNK):
        cases, reports, items = [], [], []
        for i in range(start, min(n, start + CHUNK)):
            cat = cats[i % len(cats)]
            pol = CATEGORY_POLICIES[cat]
            created = now - rng.randrange(1, 90 * DAY_MS)
            x = rng.random()
            if x < open_fraction * 0.9:
                state = CaseState.OPEN
            elif x < open_fraction * 0.95:
                state = CaseState.PENDING_SECOND_REVIEW
            elif x < open_fraction:
                state = CaseState.APPEALED
            else:
                state = rng.choice(closed)
            case_id = f"case_{i:032x}"
            report_id = f"rep_{i:032x}"
            subject = f"subject{i:07d}"
            reporter = f"reporter{rng.randrange(20_000):05d}"
            cases.append(
                {
                    "case_id": case_id,
                    "subject": subject,
                    "queue_id": pol.default_queue,
                    "category": cat.value,
                    "severity": int(pol.severity),
                    "base_priority": pol.base_priority,
                    "priority": pol.base_priority + rng.randrange(3),
                    "state": state.value,
                    "created_ms": created,
                    "updated_ms": created,
                    "sla_due_ms": created + pol.sla_ms,
                    "report_count": 1,
                    "reporter_count": 1,
                    "assignee": None,
                    "lock_holder": None,
                    "lock_expires_ms": 0,
                    "escalated_by": None,
                    "pending_decision_id": None,
                    "final_decision_id": None,
                    "version": 1,
                }
            )
            reports.append(
                {
                    "report_id": report_id,
                    "reporter": reporter,
                    "reporter_device": 1,
                    "subject": subject,
                    "subject_device": 1,
                    "category": cat.value,
                    "conversation_kind": "direct",
                    "conversation_id": rng.randbytes(32),
                    "reported_message_id": rng.randbytes(16),
                    "received_ms": created,
                    "item_count": 1,
                    "attachment_count": 0,
                    "status": "accepted",
                    "case_id": case_id,
                    "voided_ms": None,
                }
            )
            items.append(
                {
                    "report_id": report_id,
                    "idx": 0,
                    "role": "reported",
                    "message_id": reports[-1]["reported_message_id"],
                    "commitment": rng.randbytes(32),
                    "sender": subject,
                    "sender_device": 1,
                    "recipient": reporter,
                    "recipient_device": 1,
                    "server_timestamp_ms": created - 60_000,
                    "franking_key_id": "server",
                    "franking_verified": True,
                    "chain_verified": True,
                    "attachments_verified": 0,
                }
            )
        with db.write() as c:
            c.execute(insert(safety_cases), cases)
            c.execute(insert(safety_reports), reports)
            c.execute(insert(safety_report_items), items)
    with db.write() as c:
        c.exec_driver_sql("ANALYZE")


def real_reports(safety: Any, franking_key: bytes, now: int) -> list[str]:
    """Cases from real verified reports (3 franked messages of context each, one evidence
    record per report), submitted through the service like ``POST /v1/reports``."""
    case_ids = []
    cats = [Category.HARASSMENT, Category.SPAM, Category.VIOLENT_THREAT, Category.FRAUD]
    for k in range(REAL_CASES):
        sender, reporter = f"mallory{k}", f"bob{k}"
        conv = franking.direct_conversation_id(sender, reporter)
        head = b""
        items = []
        for j, body in enumerate(["you again", "I know where you live", "answer me"]):
            content = pb.Content(
                version=1,
                sent_at_ms=now - 10_000 + j,
                conversation_id=conv,
                previous_commitment=head,
                data=pb.DataMessage(body=f"{body} ({k})"),
            )
            franked = franking.frank(content)
            head = franked.commitment
            ts = now - 9_000 + j
            tag_input = franking.FrankingTagInput(
                commitment=franked.commitment,
                sender=sender,
                sender_device=1,
                recipient=reporter,
                recipient_device=1,
                server_timestamp_ms=ts,
                message_id=os.urandom(16),
            )
            items.append(
                ReportItem(
                    content=franked.content,
                    franking_key=franked.franking_key,
                    commitment=franked.commitment,
                    franking_tag=franking.compute_franking_tag(franking_key, tag_input),
                    sender=sender,
                    sender_device=1,
                    recipient=reporter,
                    recipient_device=1,
                    server_timestamp_ms=ts,
                    message_id=tag_input.message_id,
                )
            )
        receipt = safety.submit_report(
            ReportSubmission(
                reporter=reporter,
                reporter_device=1,
                category=cats[k % len(cats)].value,
                items=tuple(items),
                reported_index=1,
                comment="this keeps happening",
            )
        )
        case_ids.append(receipt.case_id)
    return case_ids


# --- the run ------------------------------------------------------------------------------


async def sign_in(client: httpx.AsyncClient, username: str, totp_secret: str) -> None:
    page = await client.get("/console/login")
    r = await client.post(
        "/console/login",
        data={"username": username, "password": PASSWORD, "csrf": csrf_of(page.text)},
    )
    assert r.status_code == 303, r.text[-300:]
    page = await client.get("/console/login/totp")
    totp = TotpVerifier()
    code = totp.code_at(totp_secret, totp.step(time.time_ns() // 1_000_000))
    r = await client.post("/console/login/totp", data={"code": code, "csrf": csrf_of(page.text)})
    assert r.status_code == 303 and "/login" not in r.headers["location"], r.text[-300:]


def csrf_of(html: str) -> str:
    match = CSRF_RE.search(html)
    if match is None:
        raise RuntimeError("no CSRF token in the page")
    return match[1]


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


async def run_backend(args: argparse.Namespace, label: str, config: ServerConfig) -> dict[str, Any]:
    app = create_app(config)
    timed = Timed(app)
    safety = app.state.safety
    db = safety.case_repo._db  # the SafetyDatabase under the repositories
    rng = random.Random(20261124)
    async with app.router.lifespan_context(app):
        safety.migrate()
        now = time.time_ns() // 1_000_000
        t0 = time.perf_counter()
        bulk_seed(db, args.cases - REAL_CASES, args.open, now, rng)
        real = real_reports(safety, app.state.tidings.franking_key, now)
        seed_s = time.perf_counter() - t0
        # Created by the operator, enrolled by its owner, approved by the first admin.
        reviewer = active_staff(
            safety,
            "rita",
            [Role.REVIEWER],
            password=PASSWORD,
            queues=[q.value for q in QueueId if q is not QueueId.CHILD_SAFETY],
        )
        meter = SqlMeter(db.engine)
        transport = httpx.ASGITransport(app=timed)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            await sign_in(client, "rita", reviewer.totp_secret)
            # The largest visible queue, and open bulk cases in visible queues.
            with db.read() as c:
                counts = c.execute(
                    text(
                        "SELECT queue_id, count(*) FROM safety_cases WHERE state IN "
                        "('open','pending_second_review','appealed') GROUP BY queue_id"
                    )
                ).all()
                visible = {q.value for q in QueueId if q is not QueueId.CHILD_SAFETY}
                open_per_queue = {q: n for q, n in counts}
                big_queue = max(
                    (q for q in open_per_queue if q in visible), key=lambda q: open_per_queue[q]
                )
                bulk_ids = [
                    r[0]
                    for r in c.execute(
                        text(
                            "SELECT case_id FROM safety_cases WHERE state='open' AND queue_id "
                            "IN ('harassment','fraud_spam','general','violence','self_harm') "
                            "AND case_id LIKE 'case_%' ORDER BY case_id LIMIT 400"
                        )
                    )
                ]
                step_ids = [
                    r[0]
                    for r in c.execute(
                        text(
                            "SELECT case_id FROM safety_cases WHERE state='open' AND queue_id = "
                            ":q ORDER BY case_id LIMIT 400"
                        ),
                        {"q": big_queue},
                    )
                ]
            bulk_iter = iter(rng.sample(bulk_ids, len(bulk_ids)) * 10)
            step_iter = iter(rng.sample(step_ids, len(step_ids)) * 10)
            real_iter = iter(real * 1000)
            routes: dict[str, Callable[[], str]] = {
                "peer: GET /healthz": lambda: "/healthz",
                "peer: GET /console/ (session check, redirect)": lambda: "/console/",
                "queues page (all queues)": lambda: "/console/queues",
                f"queue page ({big_queue}, {open_per_queue[big_queue]:,} open)": (
                    lambda: f"/console/queues/{big_queue}"
                ),
                f"queue step (next case in {big_queue})": (
                    lambda: f"/console/queues/{big_queue}/step?case={next(step_iter)}"
                ),
                "case page (bulk case, metadata only)": lambda: f"/console/cases/{next(bulk_iter)}",
                "case page (verified report + evidence)": (
                    lambda: f"/console/cases/{next(real_iter)}"
                ),
            }
            server: dict[str, list[float]] = defaultdict(list)
            wall: dict[str, list[float]] = defaultdict(list)
            sqln: dict[str, list[int]] = defaultdict(list)
            sqlms: dict[str, list[float]] = defaultdict(list)
            conns: dict[str, list[int]] = defaultdict(list)
            sizes: dict[str, int] = {}

            async def hit(name: str, record: bool) -> None:
                path = routes[name]()
                meter.reset()
                t = time.perf_counter()
                r = await client.get(path)
                w = (time.perf_counter() - t) * 1000
                if r.status_code not in (200, 303, 307):
                    raise RuntimeError(f"{path}: HTTP {r.status_code} {r.text[-300:]}")
                n, ms, checkouts = meter.reset()
                if record:
                    server[name].append(timed.last_ms)
                    wall[name].append(w)
                    sqln[name].append(n)
                    sqlms[name].append(ms)
                    conns[name].append(checkouts)
                    sizes[name] = len(r.content)

            if args.cases_only:  # the peers and the case pages only (no list pages)
                routes = {k: v for k, v in routes.items() if not k.startswith("queue")}
            names = list(routes)
            meter.record = True
            for name in names:  # warm-up, untimed
                for _ in range(2):
                    await hit(name, False)
            meter.record = False
            t1 = time.perf_counter()
            for rnd in range(args.rounds):
                order = names[rnd % len(names) :] + names[: rnd % len(names)]
                for name in order:
                    for _ in range(args.per_round):
                        await hit(name, True)
            bench_s = time.perf_counter() - t1

            profile_text = ""
            if args.profile:
                profile_text = await profile_route(
                    app, client, routes, [n for n in names if not n.startswith("peer")]
                )

        rows = []
        base = statistics.median(server[names[0]])
        for name in names:
            med = statistics.median(server[name])
            rows.append(
                {
                    "route": name,
                    "n": len(server[name]),
                    "p50": med,
                    "p95": pct(server[name], 0.95),
                    "p99": pct(server[name], 0.99),
                    "wall_p50": statistics.median(wall[name]),
                    "sql_n": statistics.median(sqln[name]),
                    "sql_ms": statistics.median(sqlms[name]),
                    "conns": statistics.median(conns[name]),
                    "bytes": sizes[name],
                    "x_healthz": med / base,
                }
            )
        plans = explain(db, meter.samples, args.sorts)
        with db.read() as c:
            totals = {
                t: c.execute(text(f"SELECT count(*) FROM {t}")).scalar_one()
                for t in ("safety_cases", "safety_reports", "safety_audit_log", "safety_evidence")
            }
    return {
        "label": label,
        "rows": rows,
        "seed_s": seed_s,
        "bench_s": bench_s,
        "open_per_queue": open_per_queue,
        "plans": plans,
        "totals": totals,
        "profile": profile_text,
    }


async def profile_route(
    app: Any, client: httpx.AsyncClient, routes: dict[str, Callable[[], str]], names: list[str]
) -> str:
    """cProfile of the console's worker-thread dispatch (where the handlers run) for each of
    the page routes, 20 requests each."""
    mount = next(r for r in app.routes if getattr(r, "path", "") == "/console")
    console = mount.app.state.console
    original = console._dispatch
    out = io.StringIO()
    for name in names:
        prof = cProfile.Profile()

        def dispatch(*a: Any, _p: cProfile.Profile = prof) -> Any:
            _p.enable()
            try:
                return original(*a)
            finally:
                _p.disable()

        console._dispatch = dispatch
        for _ in range(20):
            await client.get(routes[name]())
        console._dispatch = original
        out.write(f"\n--- cProfile: {name}, 20 requests, by cumulative time ---\n")
        stats = pstats.Stats(prof, stream=out)
        stats.sort_stats("cumulative").print_stats(22)
        out.write(f"--- {name}: by own time ---\n")
        stats.sort_stats("tottime").print_stats(12)
    return out.getvalue()


def explain(db: Any, samples: dict[str, Any], args_sorts: bool) -> list[tuple[str, str]]:
    """(statement, plan problem) for each sampled statement that scans a table without an
    index (and, with ``args_sorts``, each that sorts: on per-case lookups these sort a handful
    of rows after an index lookup, which is harmless). PostgreSQL sequential scans of tables
    under 1,000 rows (staff, sessions: the planner's choice, indexes exist) are not listed."""
    found = []
    with db.read() as c:
        raw = c.connection.driver_connection
        for statement, params in samples.items():
            cur = raw.cursor()
            try:
                if db.is_sqlite:
                    cur.execute("EXPLAIN QUERY PLAN " + statement, params)
                    lines = [str(r[-1]) for r in cur.fetchall()]
                    bad = [
                        ln
                        for ln in lines
                        if (ln.startswith("SCAN") and "INDEX" not in ln)
                        or (args_sorts and "TEMP B-TREE" in ln)
                    ]
                else:
                    cur.execute("EXPLAIN " + statement, params)
                    lines = [str(r[0]) for r in cur.fetchall()]
                    bad = []
                    for ln in lines:
                        scan = re.search(r"Seq Scan on (\w+)", ln)
                        if scan:  # the planner seq-scans tiny tables even when indexed
                            rows = c.execute(text("SELECT count(*) FROM " + scan[1])).scalar_one()
                            if rows >= 1000:
                                bad.append(f"{ln.strip()} [{rows:,} rows]")
                        elif args_sorts and ln.strip().lstrip("-> ").startswith("Sort"):
                            bad.append(ln.strip())
            finally:
                cur.close()
            if bad:
                found.append((" ".join(statement.split())[:160], "; ".join(bad)))
    return found


# --- output -------------------------------------------------------------------------------


def report(res: dict[str, Any], args: argparse.Namespace) -> None:
    print(f"\n## {res['label']}: {res['totals']['safety_cases']:,} cases")
    print(
        f"seeded in {res['seed_s']:.1f} s; measured in {res['bench_s']:.1f} s; open (lockable) "
        "cases per queue: "
        + ", ".join(f"{q} {n:,}" for q, n in sorted(res["open_per_queue"].items()))
    )
    print("table sizes after the run: " + ", ".join(f"{t} {n:,}" for t, n in res["totals"].items()))
    print()
    print(
        "| route | N | server p50 ms | server p95 ms | server p99 ms | client wall p50 ms | "
        "SQL stmts | SQL execute ms p50 (fetch not incl.) | pool checkouts | body KiB | "
        "p50 / healthz p50 | target |"
    )
    print("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|")
    for r in res["rows"]:
        target = ""
        if not r["route"].startswith("peer"):  # case pages and the queue list pages
            target = "PASS" if r["p50"] < TARGET_MS and r["p95"] < TARGET_MS else "MISS"
            target += f" (< {TARGET_MS:.0f} ms)"
        print(
            f"| {r['route']} | {r['n']} | {r['p50']:.1f} | {r['p95']:.1f} | {r['p99']:.1f} "
            f"| {r['wall_p50']:.1f} "
            f"| {r['sql_n']:.0f} | {r['sql_ms']:.1f} | {r['conns']:.0f} | {r['bytes'] / 1024:.0f} "
            f"| {r['x_healthz']:.1f}x | {target} |"
        )
    print(
        "\nstatements whose plan scans a table without an index"
        + (" or sorts:" if args.sorts else ":")
    )
    if not res["plans"]:
        print("  (none)")
    for statement, bad in res["plans"]:
        print(f"  - {statement}\n      -> {bad}")
    if res["profile"]:
        print(res["profile"])


def machine() -> str:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import sqlite3

    import sqlalchemy

    return (
        f"nproc={os.cpu_count()}, CPU {cpu}, CPython {platform.python_version()}, "
        f"SQLite {sqlite3.sqlite_version}, SQLAlchemy {sqlalchemy.__version__}, "
        f"httpx {httpx.__version__}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="10k cases, fewer requests")
    ap.add_argument("--cases", type=int, default=None)
    ap.add_argument("--open", type=float, default=0.3, help="fraction of cases open (0.3)")
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--per-round", type=int, default=None)
    ap.add_argument("--pg", action="store_true", help="also PostgreSQL at $TIDINGS_TEST_PG")
    ap.add_argument("--pg-only", action="store_true")
    ap.add_argument("--profile", action="store_true", help="cProfile the page routes")
    ap.add_argument("--sorts", action="store_true", help="list statements that sort, too")
    ap.add_argument(
        "--cases-only",
        action="store_true",
        help="measure the peers and the case pages only (is the case-page tail the list pages?)",
    )
    args = ap.parse_args()
    args.cases = args.cases or (10_000 if args.quick else 100_000)
    args.rounds = args.rounds or (5 if args.quick else 6)
    args.per_round = args.per_round or 10
    print(f"# bench/console.py: {' '.join(sys.argv[1:]) or '(defaults)'}")
    print(machine())
    print(
        f"{args.cases:,} cases, {args.open:.0%} open; {args.rounds} rounds x {args.per_round} "
        "requests per route, interleaved; server time = ASGI call to last body chunk"
    )
    results = []
    if not args.pg_only:
        with tempfile.TemporaryDirectory(prefix="tidings-console-bench-") as tmp:
            config = ServerConfig(data_dir=Path(tmp))
            results.append(asyncio.run(run_backend(args, "SQLite (embedded)", config)))
            report(results[-1], args)
    if args.pg or args.pg_only:
        from tidings.safety.sql import SafetyDatabase

        schema = f"tidings_consolebench_{secrets.token_hex(4)}"
        admin = SafetyDatabase(PG_URL)
        with admin.write() as c:
            c.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
        try:
            with tempfile.TemporaryDirectory(prefix="tidings-console-bench-") as tmp:
                config = ServerConfig(
                    data_dir=Path(tmp), database_url=PG_URL, database_schema=schema
                )
                results.append(asyncio.run(run_backend(args, "PostgreSQL", config)))
                report(results[-1], args)
        finally:
            with admin.write() as c:
                c.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
            admin.dispose()


if __name__ == "__main__":
    main()
