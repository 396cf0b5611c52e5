"""Issue 10's proof, end to end through the real server (uvicorn on a free port) and the real
`tidings` command line: an operator builds a bank of real photographs' hashes from two sources
in two jurisdictions and publishes the list; senders send images with ``tidings send-file``,
their devices sync and check the list and post one voucher per image; the node's background
task opens what it can.

- ``t`` edited copies of listed photographs (recompressed, rotated by 90 degrees, mirrored)
  open one detection case in the child-safety queue holding exactly those images, which a
  child-safety reviewer signs in to the console to see, blurred;
- ``t - 1`` of them open nothing, and the server holds no matched image;
- unlisted photographs never open one, however many are sent.

The node runs with ``detection_threshold = 3`` and no synthetic vouchers
(``detection_synthetic_ppm = 0``), so each listed image sent is exactly one real share; the
synthetic layer is the PSI tests' (tests/crypto, tests/safety/test_detection.py).
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image
from typer.testing import CliRunner

from tests.console.conftest import csrf_of
from tests.safety.test_detection import LISTED, UNLISTED, original, pdq_hex
from tests.support.live import LiveServer
from tests.support.staff import PASSWORD, active_staff
from tidings.cli import cli
from tidings.media.pdq import hash_image
from tidings.safety.categories import QueueId
from tidings.safety.staff import Role, TotpVerifier
from tidings.server.config import ServerConfig

THRESHOLD = 3
PROFILE_ENV = {"TIDINGS_PASSPHRASE": "e2e passphrase"}
runner = CliRunner()


def _variant(name: str, how: str) -> bytes:
    """A sender's copy of photograph ``name``: ``how`` is "jpeg" (scaled to 4/5, JPEG 70),
    "rot90" (turned a quarter, PNG) or "mirror" (left-right, JPEG 85)."""
    image = Image.open(io.BytesIO(original(name))).convert("RGB")
    out = io.BytesIO()
    if how == "jpeg":
        image.resize((image.width * 4 // 5, image.height * 4 // 5)).save(out, "JPEG", quality=70)
    elif how == "rot90":
        image.transpose(Image.Transpose.ROTATE_90).save(out, "PNG")
    else:
        image.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(out, "JPEG", quality=85)
    return out.getvalue()


class World:
    def __init__(self, tmp: Path, server: LiveServer, config: ServerConfig) -> None:
        self.tmp, self.server, self.config = tmp, server, config

    @property
    def safety(self) -> Any:
        return self.server.app.state.safety

    def admin(self, *args: str) -> Any:
        env = {"TIDINGS_DETECTION_THRESHOLD": str(THRESHOLD),
               "TIDINGS_DETECTION_SYNTHETIC_PPM": "0"}
        result = runner.invoke(
            cli, ["admin", *args, "--data-dir", str(self.config.data_dir), "--json"], env=env
        )
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    def user(self, name: str, *args: str) -> Any:
        result = runner.invoke(
            cli, ["--profile", str(self.tmp / name), *args, "--json"], env=PROFILE_ENV
        )
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    def register(self, name: str) -> None:
        self.user(name, "register", name, "--server", self.server.url)

    def send_images(self, sender: str, recipient: str, images: list[bytes]) -> None:
        for i, data in enumerate(images):
            path = self.tmp / f"{sender}-{i}.img"
            path.write_bytes(data)
            self.user(sender, "send-file", recipient, str(path), "--content-type", "image/png")

    def settle(self) -> None:
        """Wait until the node has processed every voucher (its background task)."""
        deadline = time.monotonic() + 60
        while self.admin("detection", "status")["pending_vouchers"]:
            assert time.monotonic() < deadline, "vouchers were not processed within 60 s"
            time.sleep(0.2)
        # One more round: windows are evaluated after their vouchers are opened.
        self.safety.detection.run_round()

    def cases_of(self, subject: str) -> list[dict[str, Any]]:
        cases: list[dict[str, Any]] = self.admin("cases")["cases"]
        return [c for c in cases if c["subject"] == subject]


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    config = ServerConfig(
        data_dir=tmp_path / "server",
        rate_registrations_per_hour=100_000,
        rate_prekey_fetches_per_minute=100_000,
        rate_sends_per_minute=100_000,
        detection_threshold=THRESHOLD,
        detection_synthetic_ppm=0,
    )
    server = LiveServer(config).start()
    w = World(tmp_path, server, config)
    try:
        # The operator: one bank, the same hashes from two hotlines in two jurisdictions.
        w.admin("bank", "create", "cse", "--category", "child_sexual_exploitation")
        rows = tmp_path / "hashes.csv"
        rows.write_text("".join(f"pdq,{pdq_hex(n)}\n" for n in LISTED))
        w.admin("bank", "import", "cse", str(rows), "--source", "NCMEC", "--jurisdiction", "US")
        w.admin("bank", "import", "cse", str(rows), "--source", "IWF", "--jurisdiction", "GB")
        built = w.admin("detection", "build-list")
        assert built["entries"] == len(LISTED) and built["threshold"] == THRESHOLD
        w.register("bob")
        yield w
    finally:
        server.stop()


def _console_case_page(world: World, case_id: str) -> str:
    """Sign in to the console as a child-safety reviewer (password + TOTP) and fetch the
    case page."""
    staff = active_staff(
        world.safety, "cleo", {Role.REVIEWER}, queues=[QueueId.CHILD_SAFETY],
        child_safety=True,
    )
    totp = TotpVerifier()
    with httpx.Client(base_url=world.server.url, follow_redirects=False) as http:
        page = http.get("/console/login")
        r = http.post("/console/login", data={"username": "cleo", "password": PASSWORD,
                                               "csrf": csrf_of(page.text)})
        assert r.status_code == 303, r.text
        page = http.get("/console/login/totp")
        code = totp.code_at(staff.totp_secret, totp.step(int(time.time() * 1000)))
        r = http.post("/console/login/totp", data={"code": code, "csrf": csrf_of(page.text)})
        assert r.status_code == 303, r.text
        r = http.get(f"/console/cases/{case_id}")
        assert r.status_code == 200, r.text
        return r.text


def test_t_edited_listed_images_open_one_detection_case_with_exactly_them(world: World) -> None:
    world.register("alice")
    sent = [_variant(LISTED[0], "jpeg"), _variant(LISTED[1], "rot90"),
            _variant(LISTED[2], "mirror")]
    unlisted = [_variant(UNLISTED[0], "jpeg"), _variant(UNLISTED[1], "rot90")]
    world.send_images("alice", "bob", [sent[0], unlisted[0], sent[1], unlisted[1], sent[2]])
    status = world.user("alice", "status")["detection"]
    assert status["list"]["version"] == 1 and status["list"]["threshold"] == THRESHOLD
    assert status["pending_vouchers"] == 0 and status["window_vouchers"] == 5
    assert status["refused"] is None
    world.settle()

    cases = world.cases_of("alice")
    assert len(cases) == 1, cases
    case = cases[0]
    assert case["source"] == "detection" and case["queue"] == QueueId.CHILD_SAFETY.value
    assert case["category"] == "child_sexual_exploitation"
    matches = world.safety.detection.matches_for_case(case["id"])
    # Exactly the three listed images, as the server hashed them itself after decrypting.
    assert sorted(m.server_pdq.hex() for m in matches) == sorted(hash_image(d).hex for d in sent)
    assert all(m.distance <= 31 for m in matches)
    assert {e.bank for m in matches for e in m.entries} == {"cse"}
    assert all({s[0] for s in e.sources} == {"NCMEC", "IWF"} for m in matches for e in m.entries)

    page = _console_case_page(world, case["id"])
    assert f"On-device detection: {len(sent)} matched images" in page
    assert page.count('class="media blur') == len(sent)  # blurred by default


def test_t_minus_one_listed_images_open_nothing_and_unlisted_never_do(world: World) -> None:
    world.register("carol")
    world.register("dave")
    below = [_variant(LISTED[0], "rot90"), _variant(LISTED[3], "mirror")]
    world.send_images("carol", "bob", below)
    innocent = [_variant(n, how) for n in UNLISTED for how in ("jpeg", "rot90")]
    world.send_images("dave", "bob", innocent)
    world.settle()
    assert world.cases_of("carol") == [] and world.cases_of("dave") == []
    # The server holds the opened outer layers of carol's two vouchers, and nothing it can
    # read: no case, so no matched image (dave's never opened).
    assert world.admin("detection", "status")["opened_records"] == len(below)
    # The same image again adds no second voucher (it would be a second share of one image).
    world.send_images("carol", "bob", [below[0]])
    status = world.user("carol", "status")["detection"]
    assert status["window_vouchers"] == len(below)
    world.settle()
    assert world.cases_of("carol") == []


def test_the_audit_command_checks_the_published_list_from_outside(world: World) -> None:
    result = runner.invoke(cli, ["audit", "detection-list", world.server.url, "--json"])
    assert result.exit_code == 0, result.output
    seen = json.loads(result.stdout)
    digest = httpx.get(f"{world.server.url}/v1/detection/list/digest").json()
    assert seen["ok"] and seen["version"] == digest["version"] == 1
    assert seen["signing_public_key"] == digest["signing_public_key"]
    assert seen["parameters"]["synthetic_rate_ppm"] == 0
    pinned = runner.invoke(cli, ["audit", "detection-list", world.server.url, "--expect-key",
                                 digest["signing_public_key"], "--json"])
    assert pinned.exit_code == 0 and json.loads(pinned.stdout)["key_pinned"]
    other = runner.invoke(cli, ["audit", "detection-list", world.server.url, "--expect-key",
                                "A" * 43, "--json"])
    assert other.exit_code == 1
    assert json.loads(other.stdout)["error"]["code"] == "detection_list_refused"


def test_the_synthetic_rate_is_a_checked_setting() -> None:
    from tidings.server.config import ConfigError

    assert ServerConfig().detection_synthetic_ppm == 977  # about 1/1024
    env = {"TIDINGS_DETECTION_SYNTHETIC_PPM": "0"}
    assert ServerConfig.load(env=env).detection_synthetic_ppm == 0
    for bad in ("-1", "1000001", "lots"):
        with pytest.raises(ConfigError, match="detection_synthetic_ppm"):
            ServerConfig.load(env={"TIDINGS_DETECTION_SYNTHETIC_PPM": bad})
