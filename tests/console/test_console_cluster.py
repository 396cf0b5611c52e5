"""The console on two nodes behind a load balancer without sticky sessions: two `create_app`
instances (each its own data directory holding the same key files, as a cluster must) on one
database, SQLite file or PostgreSQL schema, and every request sent to the node the test names.
Sign-in progress, the CSRF key, the exposure counter, preferences and sign-out all carry over;
console GETs write nothing. Under CI=true a missing PostgreSQL fails (never skips)."""

from __future__ import annotations

import asyncio
import re
import secrets
import shutil
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import event

from tests.support.app import make_config
from tests.support.services import PG_URL, pg_admin, require_service
from tests.support.staff import PASSWORD, active_staff
from tidings.app import create_app
from tidings.safety.categories import QueueId
from tidings.safety.staff import Role, TotpVerifier
from tidings.server.config import ServerConfig
from tidings.storage.files import KT_SIGNING_KEY_FILE, KT_VRF_KEY_FILE

pytestmark = pytest.mark.anyio

CSRF_RE = re.compile(r'name="csrf" value="([0-9a-f]{64})"')
KEY_FILES = ("franking.key", "staff.key", "evidence.keys", "audit_anchor.key",
             KT_SIGNING_KEY_FILE, KT_VRF_KEY_FILE)
WRITES = re.compile(r"^\s*(INSERT|UPDATE|DELETE|BEGIN IMMEDIATE)\b", re.IGNORECASE)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, str]]:
    """Where both nodes keep their data: one SQLite file, or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        yield {"database_url": f"sqlite:///{tmp_path / 'shared.db'}"}
        return
    schema = f"tidings_console_cluster_{secrets.token_hex(4)}"
    error = pg_admin(f'CREATE SCHEMA "{schema}"')
    require_service("PostgreSQL", not error, f"{PG_URL} ({error})")
    try:
        yield {"database_url": PG_URL, "database_schema": schema}
    finally:
        pg_admin(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


class Balancer(httpx.AsyncBaseTransport):
    """Sends each request to the node in ``target`` (0 = A, 1 = B): no stickiness at all."""

    def __init__(self, apps: list[Any]) -> None:
        self.nodes = [httpx.ASGITransport(app=app) for app in apps]
        self.target = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self.nodes[self.target].handle_async_request(request)


class Cluster:
    def __init__(self, client: httpx.AsyncClient, balancer: Balancer, apps: list[Any]) -> None:
        self.client = client
        self.balancer = balancer
        self.apps = apps

    async def get(self, node: int, path: str) -> httpx.Response:
        self.balancer.target = node
        return await self.client.get(path)

    async def post(self, node: int, path: str, data: dict[str, str]) -> httpx.Response:
        self.balancer.target = node
        return await self.client.post(path, data=data)


@asynccontextmanager
async def two_nodes(tmp_path: Path, database: dict[str, str]) -> AsyncIterator[Cluster]:
    configs: list[ServerConfig] = []
    apps = []
    for name in ("a", "b"):
        data_dir = tmp_path / name
        data_dir.mkdir()
        if configs:  # node B gets node A's key files, as every node of a cluster must
            for key_file in KEY_FILES:
                shutil.copy2(configs[0].data_dir / key_file, data_dir / key_file)
        configs.append(make_config(data_dir, **database))
        apps.append(create_app(configs[-1]))
    balancer = Balancer(apps)
    async with AsyncExitStack() as stack:
        for app in apps:
            await stack.enter_async_context(app.router.lifespan_context(app))
        client = await stack.enter_async_context(
            httpx.AsyncClient(transport=balancer, base_url="http://testserver")
        )
        yield Cluster(client, balancer, apps)


def csrf_of(response: httpx.Response) -> str:
    match = CSRF_RE.search(response.text)
    assert match, f"no CSRF token in {response.url}"
    return match.group(1)


async def test_console_requests_alternate_between_two_nodes(
    tmp_path: Path, database: dict[str, str]
) -> None:
    async with two_nodes(tmp_path, database) as cluster:
        safety_a = cluster.apps[0].state.safety
        # Off the event loop: the nodes' background tasks (an epoch published at start) may
        # hold SQLite's write turn across an await, which a blocking write here would wait on.
        rita = await asyncio.to_thread(
            active_staff, safety_a, "rita", [Role.REVIEWER], password=PASSWORD,
            queues=[QueueId.HARASSMENT],
        )
        totp = TotpVerifier()

        # Sign-in: the form from B, the password to A, the TOTP page from B, the code to A.
        form = await cluster.get(1, "/console/login")
        r = await cluster.post(
            0, "/console/login", {"username": "rita", "password": PASSWORD, "csrf": csrf_of(form)}
        )
        assert r.status_code == 303 and r.headers["location"].endswith("/console/login/totp")
        login_cookie = cluster.client.cookies["tidings_console_login"]
        page = await cluster.get(1, "/console/login/totp")
        assert page.status_code == 200 and "rita" in page.text  # B sees A's pending step
        code = totp.code_at(rita.totp_secret, totp.step(safety_a.clock()))
        r = await cluster.post(0, "/console/login/totp", {"code": code, "csrf": csrf_of(page)})
        assert r.status_code == 303 and r.headers["location"].endswith("/console/")
        # The pending step was used up: replaying its cookie on the other node gets nothing.
        session = cluster.client.cookies["tidings_console"]
        cluster.client.cookies.set("tidings_console_login", login_cookie)
        del cluster.client.cookies["tidings_console"]
        replay = await cluster.post(1, "/console/login/totp", {"code": code, "csrf": csrf_of(page)})
        assert replay.status_code == 401
        cluster.client.cookies.set("tidings_console", session)

        # A session token from A's sign-in works on B; a CSRF token A rendered is valid on B.
        prefs = await cluster.get(1, "/console/preferences")
        assert prefs.status_code == 200
        csrf_a = csrf_of(await cluster.get(0, "/console/preferences"))
        r = await cluster.post(
            1, "/console/preferences", {"blur": "off", "greyscale": "on", "csrf": csrf_a}
        )
        assert r.status_code == 303
        shown = await cluster.get(0, "/console/preferences")
        assert "Currently: media not blurred, greyscale." in shown.text

        # The exposure counter: one reveal on each node, one running count.
        one = await cluster.post(0, "/console/wellbeing/exposure", {"csrf": csrf_a})
        two = await cluster.post(1, "/console/wellbeing/exposure", {"csrf": csrf_a})
        assert (one.json(), two.json()) == ({"exposure": 1}, {"exposure": 2})
        assert 'id="exposure-count">2<' in (await cluster.get(0, "/console/queues")).text

        # Console GETs, on either node, write nothing and take no write lock (SQLite BEGIN
        # IMMEDIATE): the session's last-seen is batched.
        statements: list[str] = []
        engines = [app.state.safety.staff_repo.database.engine for app in cluster.apps]

        def seen(_c: Any, _cur: Any, statement: str, *_: Any) -> None:
            statements.append(statement)

        for engine in engines:
            event.listen(engine, "before_cursor_execute", seen)
        try:
            for i in range(10):
                for path in ("/console/queues", f"/console/queues/{QueueId.HARASSMENT}"):
                    assert (await cluster.get(i % 2, path)).status_code == 200
        finally:
            for engine in engines:
                event.remove(engine, "before_cursor_execute", seen)
        assert statements and not [s for s in statements if WRITES.match(s)]

        # Sign-out on B ends the session on A.
        assert (await cluster.post(1, "/console/logout", {"csrf": csrf_a})).status_code == 303
        cluster.client.cookies.set("tidings_console", session)
        r = await cluster.get(0, "/console/queues")
        assert r.status_code == 303 and "/console/login" in r.headers["location"]
