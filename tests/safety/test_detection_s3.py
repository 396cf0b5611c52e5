"""A detection list published on one node of a cluster is served by another: the list bytes
live in the S3 bucket every node uses (no shared disk), the keys beside the shared franking key,
the rows in the shared database; a voucher posted to either node is processed by whichever
node claims it."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from tests.safety.test_detection import LISTED, edited, pdq_hex
from tests.safety.test_detection_http import Sender
from tests.support.app import Net, make_config
from tests.support.s3 import SeaweedS3, seaweed_s3
from tidings.app import create_app
from tidings.cli import cli
from tidings.crypto.psi import BlindedList
from tidings.safety.categories import Category
from tidings.server.config import ServerConfig
from tidings.storage.database import sqlite_url

THRESHOLD = 2


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    with seaweed_s3(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server


def test_node_b_serves_and_processes_what_node_a_published(tmp_path: Path, s3: SeaweedS3) -> None:
    bucket = s3.new_bucket()
    shared = tmp_path / "shared"
    shared.mkdir()
    keys = tmp_path / "keys"
    nodes: list[ServerConfig] = [
        make_config(
            tmp_path / name,
            database_url=sqlite_url(shared),
            franking_key_file=keys / "franking.key",
            node_name=name,
            detection_threshold=THRESHOLD,
            **s3.settings(bucket),
        )
        for name in ("node-a", "node-b")
    ]
    with TestClient(create_app(nodes[0])) as a, TestClient(create_app(nodes[1])) as b:
        net_a, net_b = Net(a, nodes[0]), Net(b, nodes[1])
        safety = net_a.safety
        operator = safety.operator()
        safety.banks.create_bank(operator, name="cse", category=Category.CHILD_SEXUAL_EXPLOITATION)
        rows = "".join(f"pdq,{pdq_hex(n)}\n" for n in LISTED).encode()
        for org, cc in (("NCMEC", "US"), ("IWF", "GB")):
            safety.banks.import_file(operator, "cse", rows, organisation=org, jurisdiction=cc)
        settings = {f"TIDINGS_{k.upper()}": str(v) for k, v in s3.settings(bucket).items()}
        result = CliRunner().invoke(
            cli,
            [
                "admin",
                "detection",
                "build-list",
                "--data-dir",
                str(nodes[0].data_dir),
                "--database-url",
                nodes[0].database_url,
                "--json",
            ],
            env={
                **settings,
                "TIDINGS_FRANKING_KEY_FILE": str(keys / "franking.key"),
                "TIDINGS_DETECTION_THRESHOLD": str(THRESHOLD),
            },
        )
        assert result.exit_code == 0, result.output
        digest = json.loads(result.stdout)["digest"]
        assert not list((nodes[0].data_dir / "attachments").iterdir())  # nothing on disk
        served = b.get("/v1/detection/list")
        assert served.status_code == 200
        blinded = BlindedList.decode(served.content)
        assert blinded.digest().hex() == digest
        assert (keys / "detection.key").exists() and (keys / "detection_list_signing.key").exists()

        sender = Sender(net_a, net_a.register("sender"), blinded)
        for i, name in enumerate(LISTED[:THRESHOLD]):
            sender.net = (net_a, net_b)[i % 2]  # uploads and posts alternate between nodes
            assert sender.post(sender.voucher(edited(name))).status_code == 202
        deadline = time.monotonic() + 60
        cases: list[object] = []
        while time.monotonic() < deadline and not cases:
            cases = net_b.safety.case_repo.list_cases(limit=5)  # type: ignore[attr-defined]
            time.sleep(0.2)
        assert len(cases) == 1
