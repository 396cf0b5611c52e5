"""The API contract: /openapi.json documents every answer the server gives, and the server keeps
to it (docs/api.md "Errors").

The document is checked directly (every error status with its codes and schema, 401 and the
HTTP Basic scheme on authenticated routes, no FastAPI 422), and a bounded schemathesis run with
every check (``--checks all``) drives a real server with valid device credentials (the CLI
itself, so the run is the one a person makes by hand; tests/server/schemathesis.toml and
tests/server/contract_hooks.py say what no schema can).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st

from tests.support.app import make_config
from tests.support.devices import DeviceKit, ratchet_body
from tests.support.live import LiveServer
from tidings import errors as e
from tidings.app import create_app
from tidings.server.errors import status_of
from tidings.server.openapi import HTTP_ERROR_CODES
from tidings.wire.base64url import B64URL_PATTERN, b64d, b64e

ROOT = Path(__file__).resolve().parents[2]
CONFIG_FILE = ROOT / "tests" / "server" / "schemathesis.toml"

EXAMPLES_PER_OPERATION = 12
"""Bounded: hypothesis examples per operation and phase (the run takes about a minute)."""


def _all_error_classes() -> list[type[e.TidingsError]]:
    found: list[type[e.TidingsError]] = []
    todo: list[type[e.TidingsError]] = [e.TidingsError]
    while todo:
        kind = todo.pop()
        found.append(kind)
        todo.extend(kind.__subclasses__())
    return found


@pytest.fixture(scope="module")
def document(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    app = create_app(make_config(tmp_path_factory.mktemp("openapi") / "data"))
    with TestClient(app) as client:
        response = client.get("/openapi.json")
    assert response.status_code == 200
    schema: dict[str, Any] = response.json()
    return schema


def _operations(document: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            yield f"{method.upper()} {path}", operation


def _codes(response: dict[str, Any]) -> list[str]:
    schema = response["content"]["application/json"]["schema"]
    assert schema["$ref"] == "#/components/schemas/ErrorBody"
    codes: list[str] = schema["properties"]["error"]["properties"]["code"]["enum"]
    return codes


def test_every_error_status_documents_its_codes_from_the_status_table(
    document: dict[str, Any],
) -> None:
    statuses_of_code: dict[str, set[int]] = {}
    for kind in _all_error_classes():
        statuses_of_code.setdefault(kind.code, set()).add(status_of(kind))
    for code_status in HTTP_ERROR_CODES.items():
        statuses_of_code.setdefault(code_status[1], set()).add(code_status[0])
    for label, operation in _operations(document):
        responses = operation["responses"]
        assert "422" not in responses, label  # validation errors answer 400 `malformed`
        for status, response in responses.items():
            if int(status) < 400:
                continue
            codes = _codes(response)
            assert codes, label
            for code in codes:
                assert int(status) in statuses_of_code[code], (label, status, code)
                assert f"`{code}`" in response["description"], (label, status, code)
        if "429" in responses:
            assert responses["429"]["headers"]["Retry-After"]["required"] is True, label


def test_authenticated_routes_declare_http_basic_and_401(document: dict[str, Any]) -> None:
    scheme = document["components"]["securitySchemes"]["device"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "basic")
    public = {
        "GET /healthz",
        "POST /v1/accounts",
        "POST /v1/devices/link",
        # The published detection list and its signed digest: anyone may check them.
        "GET /v1/detection/list",
        "GET /v1/detection/list/digest",
        # Key transparency: heads, lookups and audits are for anyone; a witness's
        # co-signature authenticates itself (a configured witness key).
        "GET /v1/kt/head",
        "GET /v1/kt/head/{epoch}",
        "GET /v1/kt/lookup/{username}",
        "GET /v1/kt/audit/{epoch}",
        "POST /v1/kt/cosign/{epoch}",
    }
    for label, operation in _operations(document):
        if label in public:
            assert "security" not in operation and "401" not in operation["responses"], label
        else:
            assert operation["security"] == [{"device": []}], label
            assert "unauthorized" in _codes(operation["responses"]["401"]), label
    assert "HTTPValidationError" not in document["components"]["schemas"]


def test_the_safety_routes_and_declared_limits_are_documented(document: dict[str, Any]) -> None:
    paths = document["paths"]
    report = paths["/v1/reports"]["post"]["responses"]
    assert {"invalid_report", "commitment_mismatch", "malformed"} <= set(_codes(report["400"]))
    assert _codes(report["429"]) == ["rate_limited"]  # declared for the reports rate limit
    upload = paths["/v1/attachments"]["post"]["responses"]
    assert "attachment_quota_exceeded" in _codes(upload["507"])
    assert "rate_limited" in _codes(upload["429"])
    assert "attachment_too_large" in _codes(upload["413"])
    appeal = paths["/v1/appeals"]["post"]["responses"]
    assert set(_codes(appeal["404"])) == {"not_found"}
    status = paths["/v1/account/status"]["get"]["responses"]
    assert _codes(status["401"]) == ["unauthorized"]
    send = paths["/v1/messages/{username_or_message_id}"]["put"]["responses"]
    assert {"mismatched_devices"} == set(_codes(send["409"]))
    detail = document["components"]["schemas"]["ErrorDetail"]["properties"]
    assert {"code", "message", "missing", "extra", "stale"} <= set(detail)


def test_parameters_say_what_the_server_accepts(document: dict[str, Any]) -> None:
    device = next(
        p for p in document["paths"]["/v1/devices/{device_id}"]["patch"]["parameters"]
    )
    assert device["schema"] == {"type": "integer", "minimum": 1, "maximum": 2**31 - 1}
    query = document["paths"]["/v1/keys/{username}"]["get"]["parameters"]
    assert {p["name"]: p["schema"]["maximum"] for p in query if p["in"] == "query"} == {
        "device_id": 2**31 - 1
    }
    # PUT .../{username} and DELETE .../{message_id} serve the same URLs: one path item.
    merged = document["paths"]["/v1/messages/{username_or_message_id}"]
    assert set(merged) == {"put", "delete"}
    assert "/v1/messages/{message_id}" not in document["paths"]


def test_framework_answers_keep_the_error_shape_and_allow_lists_every_method(
    client: TestClient,
) -> None:
    # Starlette's 405 named only the first route of the path; both are served there.
    options = client.options("/v1/devices/1")
    assert options.status_code == 405
    assert options.headers["allow"] == "DELETE, PATCH"
    assert client.options("/v1/messages/abc").headers["allow"] == "DELETE, PUT"
    # /v1/devices/link is not a device id: its own resource, POST only.
    patch = client.patch("/v1/devices/link", json={"name": "x"})
    assert (patch.status_code, patch.headers["allow"]) == (405, "POST")
    assert patch.json()["error"]["code"] == "method_not_allowed"
    # A body that is not JSON at all is `malformed`, not a framework `http_error`.
    json_type = {"content-type": "application/json"}
    garbage = client.post("/v1/devices/link", content=b"X\xb3\x1d\x0e\x1e", headers=json_type)
    assert (garbage.status_code, garbage.json()["error"]["code"]) == (400, "malformed")


def test_an_empty_attachment_is_refused(client: TestClient, register: Any) -> None:
    alice = register("alice")
    headers = {**alice.auth, "Content-Type": "application/octet-stream"}
    response = client.post("/v1/attachments", content=b"", headers=headers)
    assert (response.status_code, response.json()["error"]["code"]) == (400, "malformed")


def test_json_integers_are_json_schema_integers(client: TestClient, register: Any) -> None:
    # JSON Schema (and so the contract) calls 1.0 an integer; true and "1" are not.
    alice = register("alice")
    bob = register("bob", registration_id=1)
    answers = {}
    for value in (1.0, True, "1"):
        message = {"device_id": bob.device_id, "registration_id": value, "type": 2}
        message |= {"body": b64e(ratchet_body()), "commitment": b64e(bytes(32))}
        answers[repr(value)] = client.put(
            f"/v1/messages/{bob.username}", json={"messages": [message]}, headers=alice.auth
        ).status_code
    assert answers == {"1.0": 200, "True": 400, "'1'": 400}


@pytest.fixture
def contract_server(tmp_path: Path) -> Iterator[tuple[LiveServer, DeviceKit]]:
    server = LiveServer(make_config(tmp_path / "data")).start()
    kit = DeviceKit()
    created = httpx.post(
        f"{server.url}/v1/accounts", json={"username": "contract", "device": kit.device_keys()}
    )
    assert created.status_code == 201, created.text
    kit.username, kit.device_id = "contract", created.json()["device_id"]
    yield server, kit
    server.stop()


def test_schemathesis_all_checks_find_nothing(
    contract_server: tuple[LiveServer, DeviceKit], tmp_path: Path
) -> None:
    server, kit = contract_server
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "src")]),
        "TIDINGS_CONTRACT_KIT": json.dumps(
            {
                "url": server.url,
                "username": kit.username,
                "identity": b64e(kit.identity.to_bytes()),
                "secret": b64e(kit.secret),
            }
        ),
    }
    command = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "--config-file",
        str(CONFIG_FILE),
        "--no-color",
        "run",
        f"{server.url}/openapi.json",
        "--checks",
        "all",
        "--auth",
        f"{kit.username}.{kit.device_id}:{b64e(kit.secret)}",
        "--max-examples",
        str(EXAMPLES_PER_OPERATION),
        "--generation-deterministic",
        "--workers",
        "1",
        "--report-dir",
        str(tmp_path / "report"),
    ]
    run = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=280, check=False
    )
    # Lines cut short: a failing case can carry a request body of megabytes.
    output = "\n".join(line[:400] for line in (run.stdout + run.stderr).splitlines())
    assert run.returncode == 0, output[-20_000:]
    assert "Tested: 30" in output, output[-4_000:]  # every operation was exercised


@given(st.text(alphabet="AB_-=+/ 0", max_size=12))
def test_the_base64url_pattern_is_what_b64d_accepts(text: str) -> None:
    try:
        b64d(text)
        decodes = True
    except e.DecodeError:
        decodes = False
    # Padding is b64d's leniency the contract does not offer: "=" never matches. ("+" and "/"
    # of standard base64 passed b64d before.)
    assert bool(re.fullmatch(B64URL_PATTERN, text)) == (decodes and "=" not in text)
