"""``X-Forwarded-For`` is believed only from ``trusted_proxies`` (empty by default): a rotating
header from loopback must not lift the per-address registration limit. Against a real uvicorn
server started with the node's settings (uvicorn's own proxy handling trusts 127.0.0.1)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.app import make_config
from tests.support.devices import DeviceKit
from tests.support.live import LiveServer
from tidings.server.config import ConfigError, ServerConfig

LIMIT = 2


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., LiveServer]]:
    servers: list[LiveServer] = []

    def start(**overrides: Any) -> LiveServer:
        config = make_config(
            tmp_path / f"data{len(servers)}", rate_registrations_per_hour=LIMIT, **overrides
        )
        servers.append(LiveServer(config).start())
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


def register(http: httpx.Client, name: str, forwarded_for: str) -> httpx.Response:
    return http.post(
        "/v1/accounts",
        json={"username": name, "device": DeviceKit(one_time=0, kem=0).device_keys()},
        headers={"X-Forwarded-For": forwarded_for},
    )


def test_a_rotating_forwarded_for_from_loopback_does_not_lift_the_limit(
    serve: Callable[..., LiveServer],
) -> None:
    server = serve()
    with httpx.Client(base_url=server.url) as http:
        answers = [register(http, f"user{i}", f"198.51.100.{i}") for i in range(LIMIT + 1)]
    assert [a.status_code for a in answers] == [201] * LIMIT + [429]
    assert int(answers[-1].headers["Retry-After"]) >= 1


def test_a_configured_proxy_names_the_client(serve: Callable[..., LiveServer]) -> None:
    server = serve(trusted_proxies=("127.0.0.1",))
    with httpx.Client(base_url=server.url) as http:
        # Each forwarded address has a limit of its own...
        rotating = [register(http, f"user{i}", f"198.51.100.{i}") for i in range(LIMIT + 1)]
        assert [a.status_code for a in rotating] == [201] * (LIMIT + 1)
        # ...and one forwarded address is limited as that client.
        same = [register(http, f"same{i}", "203.0.113.7") for i in range(LIMIT + 1)]
        assert [a.status_code for a in same] == [201] * LIMIT + [429]


def test_a_proxy_network_is_trusted_and_other_peers_are_not(
    serve: Callable[..., LiveServer],
) -> None:
    server = serve(trusted_proxies=("10.0.0.0/8",))  # loopback is not a trusted proxy here
    with httpx.Client(base_url=server.url) as http:
        answers = [register(http, f"user{i}", f"198.51.100.{i}") for i in range(LIMIT + 1)]
    assert [a.status_code for a in answers] == [201] * LIMIT + [429]


def test_trusted_proxies_setting() -> None:
    assert ServerConfig().trusted_proxies == ()
    loaded = ServerConfig.load(env={"TIDINGS_TRUSTED_PROXIES": "10.1.2.3/8, ::1"})
    assert loaded.trusted_proxies == ("10.0.0.0/8", "::1")
    for bad in ("*", "proxy.internal", "10.0.0.0/33"):
        with pytest.raises(ConfigError):
            ServerConfig.load(env={"TIDINGS_TRUSTED_PROXIES": bad})


def test_trusted_proxies_from_a_toml_list(tmp_path: Path) -> None:
    path = tmp_path / "tidings.toml"
    path.write_text('[server]\ntrusted_proxies = ["192.0.2.1", "2001:db8::/32"]\n')
    assert ServerConfig.load(path, env={}).trusted_proxies == ("192.0.2.1", "2001:db8::/32")
