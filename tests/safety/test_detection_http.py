"""Detection through the real app (SQLite and PostgreSQL): the list and its signed digest on
the public endpoints (404 before the first `tidings admin detection build-list`), vouchers
posted by authenticated devices answered identically whether or not they match, typed 4xx
answers on bad input, the per-account rate limit, and the background processing that opens
a detection case once the threshold is crossed."""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from tests.safety.test_detection import LISTED, UNLISTED, edited, pdq_hex
from tests.support.app import Net, make_config
from tests.support.devices import DeviceKit
from tests.support.services import PG_URL, pg_admin, require_service
from tidings.app import create_app
from tidings.cli import cli
from tidings.crypto.primitives import ed25519_verify
from tidings.crypto.psi import BlindedList
from tidings.crypto.threshold import WindowDealer
from tidings.crypto.voucher import VoucherBuilder
from tidings.media.pdq import dihedral_hashes
from tidings.safety.case_model import CaseSource
from tidings.safety.categories import Category
from tidings.server.config import ServerConfig
from tidings.wire.base64url import b64d, b64e
from tidings.wire.detection import DetectionInnerPayload, list_statement

THRESHOLD = 3


@pytest.fixture(params=["sqlite", "postgresql"])
def config(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ServerConfig]:
    base: dict[str, Any] = {"detection_threshold": THRESHOLD, "rate_vouchers_per_hour": 50}
    if request.param == "sqlite":
        yield make_config(tmp_path / "data", **base)
        return
    schema = f"tidings_det_{secrets.token_hex(4)}"
    error = pg_admin(f'CREATE SCHEMA "{schema}"')
    require_service("PostgreSQL", not error, f"{PG_URL} ({error})")
    yield make_config(tmp_path / "data", database_url=PG_URL, database_schema=schema, **base)
    pg_admin(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture
def net(config: ServerConfig) -> Iterator[Net]:
    with TestClient(create_app(config), raise_server_exceptions=True) as client:
        yield Net(client, config)


def _admin(config: ServerConfig, *args: str) -> Any:
    where = ["--data-dir", str(config.data_dir)]
    if config.database_url:
        where += ["--database-url", config.database_url]
    env = {"TIDINGS_DATABASE_SCHEMA": config.database_schema} if config.database_schema else {}
    env["TIDINGS_DETECTION_THRESHOLD"] = str(config.detection_threshold)
    result = CliRunner().invoke(cli, ["admin", *args, *where, "--json"], env=env)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _publish(net: Net) -> dict[str, Any]:
    safety = net.safety
    operator = safety.operator()
    safety.banks.create_bank(operator, name="cse", category=Category.CHILD_SEXUAL_EXPLOITATION)
    rows = "".join(f"pdq,{pdq_hex(n)}\n" for n in LISTED).encode()
    safety.banks.import_file(operator, "cse", rows, organisation="NCMEC", jurisdiction="US")
    safety.banks.import_file(operator, "cse", rows, organisation="IWF", jurisdiction="GB")
    built: dict[str, Any] = _admin(net.config, "detection", "build-list")
    return built


def real_coin() -> Any:
    """A random source whose voucher coin always says "real" (the first 4-byte draw of a
    voucher: 999,999 of a million is above any synthetic rate below 100 %): the node's lists
    carry the default synthetic rate, and a synthetic voucher for a listed image would leave
    the window one real share short of the threshold."""
    first = [True]

    def draw(n: int) -> bytes:
        if n == 4 and first[0]:
            first[0] = False
            return (999_999).to_bytes(4, "big")
        return os.urandom(n)

    return draw


class Sender:
    """A registered device sending images with vouchers, as the client does."""

    def __init__(self, net: Net, kit: DeviceKit, blinded: BlindedList) -> None:
        self.net, self.kit, self.blinded = net, kit, blinded
        self.window = os.urandom(16)
        params = blinded.params
        self.dealer = WindowDealer(os.urandom(32), params.threshold, params.tag_dimension)

    def voucher(self, image: bytes) -> bytes:
        pointer = self.net.upload(self.kit, image)
        hashes = dihedral_hashes(image)
        payload = DetectionInnerPayload(
            pointer.id,
            pointer.key,
            pointer.digest,
            pointer.size,
            pointer.content_type,
            hashes[0].bits,
        )
        builder = VoucherBuilder(self.blinded, self.dealer, real_coin())
        return builder.build([h.bits for h in hashes], payload.encode())

    def post(self, voucher: bytes, *, window: bytes | None = None) -> Any:
        body = {"window": b64e(window or self.window), "voucher": b64e(voucher)}
        return self.net.client.post("/v1/detection/vouchers", json=body, headers=self.kit.auth)


def _sender(net: Net) -> Sender:
    data = net.client.get("/v1/detection/list").content
    return Sender(net, net.register("sender"), BlindedList.decode(data))


def test_the_list_endpoints_publish_the_signed_list(net: Net) -> None:
    for path in ("/v1/detection/list", "/v1/detection/list/digest"):
        r = net.client.get(path)
        assert r.status_code == 404 and r.json()["error"]["code"] == "detection_list_missing"
    built = _publish(net)
    digest = net.client.get("/v1/detection/list/digest").json()
    assert digest["version"] == built["version"] == 1
    assert digest["threshold"] == THRESHOLD
    r = net.client.get("/v1/detection/list")
    assert r.status_code == 200 and r.headers["content-type"] == "application/octet-stream"
    blinded = BlindedList.decode(r.content)
    assert b64e(blinded.digest()) == digest["digest"] and blinded.digest().hex() == built["digest"]
    statement = list_statement(
        version=digest["version"],
        digest=b64d(digest["digest"]),
        threshold=digest["threshold"],
        created_ms=digest["created_ms"],
    )
    ed25519_verify(b64d(digest["signing_public_key"]), statement, b64d(digest["signature"]))
    assert r.headers["etag"] == f'"{digest["digest"]}"'
    again = net.client.get("/v1/detection/list", headers={"If-None-Match": r.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    status = _admin(net.config, "detection", "status")
    assert status["list"]["version"] == 1 and status["list"]["stored"] is True


def test_vouchers_are_answered_alike_and_a_case_opens_at_the_threshold(net: Net) -> None:
    _publish(net)
    sender = _sender(net)
    answers = []
    for name in (*LISTED[:THRESHOLD], *UNLISTED):
        r = sender.post(sender.voucher(edited(name)))
        answers.append((r.status_code, r.content))
    assert set(answers) == {(202, b'{"status":"accepted"}')}
    detection = net.client.app.state.detection  # type: ignore[attr-defined]
    deadline = time.monotonic() + 60
    cases: list[Any] = []
    while time.monotonic() < deadline:
        detection.run_round()  # beside the node's own background task
        cases = net.safety.case_repo.list_cases(limit=10)  # type: ignore[attr-defined]
        if cases and len(detection.matches_for_case(cases[0].case_id)) == THRESHOLD:
            break
        time.sleep(0.2)
    (case,) = cases
    assert case.subject == sender.kit.username and case.source is CaseSource.DETECTION
    assert case.queue_id == "child_safety"
    assert len(detection.matches_for_case(case.case_id)) == THRESHOLD
    listed = _admin(net.config, "cases")["cases"]
    assert any(c["id"] == case.case_id and c["source"] == "detection" for c in listed)


def test_bad_vouchers_get_typed_4xx_and_nothing_is_stored(net: Net) -> None:
    _publish(net)
    sender = _sender(net)
    good = sender.voucher(edited(LISTED[0]))
    cases = [
        ({"window": b64e(bytes(16)), "voucher": b64e(b"\x01garbage")}, 400),
        ({"window": b64e(bytes(15)), "voucher": b64e(good)}, 400),
        ({"window": b64e(bytes(16)), "voucher": "***"}, 400),
        ({"window": b64e(bytes(16))}, 400),
        ({"window": b64e(bytes(16)), "voucher": b64e(bytes(17_000))}, 400),
    ]
    for body, status in cases:
        r = net.client.post("/v1/detection/vouchers", json=body, headers=sender.kit.auth)
        assert r.status_code == status, (body.keys(), r.text)
        assert r.json()["error"]["code"]
    r = net.client.post(
        "/v1/detection/vouchers", json={"window": b64e(bytes(16)), "voucher": b64e(good)}
    )
    assert r.status_code == 401
    assert net.client.app.state.detection.repository.pending_count() == 0  # type: ignore[attr-defined]


def test_vouchers_are_rate_limited_per_account(tmp_path: Path) -> None:
    config = make_config(tmp_path / "data", detection_threshold=THRESHOLD, rate_vouchers_per_hour=2)
    with TestClient(create_app(config)) as client:
        net = Net(client, config)
        _publish(net)
        sender = _sender(net)
        voucher = sender.voucher(edited(LISTED[0]))
        codes = [sender.post(voucher).status_code for _ in range(3)]
        assert codes == [202, 202, 429]
        r = sender.post(voucher)
        assert r.json()["error"]["code"] == "rate_limited" and "retry-after" in r.headers
        other = Sender(net, net.register("other"), sender.blinded)
        assert other.post(voucher).status_code == 202  # per account


def test_a_node_refuses_to_start_on_a_list_of_another_threshold(tmp_path: Path) -> None:
    config = make_config(tmp_path / "data", detection_threshold=THRESHOLD)
    with TestClient(create_app(config)) as client:
        _publish(Net(client, config))
    other = make_config(tmp_path / "data", detection_threshold=THRESHOLD + 2)
    with pytest.raises(Exception, match="build-list"), TestClient(create_app(other)):
        pass


def test_vouchers_accepted_before_a_crash_are_processed_after_the_restart(
    config: ServerConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The node accepts vouchers and dies before its background task ran (here: it never
    runs); the next node on the same storage processes them on its own."""

    async def never(*_: object) -> None:
        return None

    with monkeypatch.context() as patched:
        patched.setattr("tidings.app._detect_forever", never)
        with TestClient(create_app(config)) as client:
            net = Net(client, config)
            _publish(net)
            sender = _sender(net)
            for name in LISTED[:THRESHOLD]:
                assert sender.post(sender.voucher(edited(name))).status_code == 202
            assert client.app.state.detection.repository.pending_count() == THRESHOLD  # type: ignore[attr-defined]
    with TestClient(create_app(config)) as client:
        detection = client.app.state.detection  # type: ignore[attr-defined]
        safety = client.app.state.safety  # type: ignore[attr-defined]
        def matched() -> int:
            cases = safety.case_repo.list_cases(limit=10)
            return len(detection.matches_for_case(cases[0].case_id)) if cases else 0

        deadline = time.monotonic() + 60
        # The case opens with the first confirmed image; the others join it within the round.
        while time.monotonic() < deadline and matched() < THRESHOLD:
            time.sleep(0.2)  # the restarted node's own background task, nothing else
        (case,) = safety.case_repo.list_cases(limit=10)
        assert case.subject == sender.kit.username
        assert len(detection.matches_for_case(case.case_id)) == THRESHOLD
        assert detection.repository.pending_count() == 0
