"""A local CyberTipline Reporting API server for tests (issue 11).

It implements the documented endpoints (``/status``, ``/submit``, ``/upload``, ``/fileinfo``,
``/finish``, ``/retract``) the way NCMEC's public documentation describes them: HTTP Basic
auth, ``<report>`` / ``<fileDetails>`` XML validated against the project's XSD
(`tidings.safety.cybertip_xml.SCHEMA_PATH`), answers as ``<reportResponse>`` /
``<reportDoneResponse>`` with the documented response codes. It is written from that
description, not from NCMEC's software, and keeps everything in memory.

Tests can make the next request to a step fail (`CyberTiplineServer.fail`):

- ``http_500``: a 500 with a plain-text body, before doing anything;
- ``code_1000``: the documented "server error" answer, before doing anything;
- ``timeout``: hang longer than the client waits, doing nothing;
- ``malformed``: do the step, then answer broken XML;
- ``drop``: do the step, then close the connection mid-answer (the answer is lost).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import secrets
import threading
import time
from dataclasses import dataclass, field
from xml.etree import ElementTree as ET

import uvicorn
import xmlschema
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from tests.support.live import START_TIMEOUT_S, free_port
from tidings.safety.cybertip_xml import SCHEMA_PATH

FAILURE_MODES = frozenset({"http_500", "code_1000", "timeout", "malformed", "drop"})
_BEFORE = frozenset({"http_500", "code_1000", "timeout"})


@dataclass
class StoredFile:
    name: str
    data: bytes = field(repr=False)
    details: bytes | None = None


@dataclass
class StoredReport:
    report_id: str
    xml: bytes = field(repr=False)
    files: dict[str, StoredFile] = field(default_factory=dict)
    finished: bool = False
    retracted: bool = False


def _answer(code: int, description: str, root: str = "reportResponse", **values: str) -> bytes:
    element = ET.Element(root)
    ET.SubElement(element, "responseCode").text = str(code)
    if root == "reportResponse":
        ET.SubElement(element, "responseDescription").text = description
    for name, value in values.items():
        ET.SubElement(element, name).text = value
    return bytes(ET.tostring(element, encoding="UTF-8", xml_declaration=True))


class _Dropped(Response):
    """Starts an answer and ends the exchange before its body: the client never gets it."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/xml"), (b"content-length", b"200")],
            }
        )
        await send({"type": "http.response.body", "body": b"<report", "more_body": True})


class CyberTiplineServer:
    """The endpoints in a background uvicorn thread on a free local port."""

    def __init__(self, username: str = "esp-test", password: str | None = None) -> None:
        self.username = username
        self.password = password or secrets.token_urlsafe(16)
        self.schema = xmlschema.XMLSchema(str(SCHEMA_PATH))
        self.reports: dict[str, StoredReport] = {}
        self.requests: list[str] = []
        self.hang_s = 3.0
        self._failures: dict[str, list[str]] = {}
        self._next_id = 1000
        self._lock = threading.Lock()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/ispws"
        routes = [
            Route("/ispws/status", self._status, methods=["GET"]),
            Route("/ispws/submit", self._submit, methods=["POST"]),
            Route("/ispws/upload", self._upload, methods=["POST"]),
            Route("/ispws/fileinfo", self._fileinfo, methods=["POST"]),
            Route("/ispws/finish", self._finish, methods=["POST"]),
            Route("/ispws/retract", self._retract, methods=["POST"]),
        ]
        self.app = Starlette(routes=routes)
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="critical")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    # --- control ---

    def start(self) -> CyberTiplineServer:
        self.thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the CyberTipline test server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)

    def fail(self, step: str, *modes: str) -> None:
        """Make the next ``len(modes)`` requests to ``step`` fail, in this order."""
        assert set(modes) <= FAILURE_MODES, modes
        self._failures.setdefault(step, []).extend(modes)

    @property
    def opened(self) -> int:
        """How many reports /submit opened (a duplicate referral shows as 2)."""
        return len(self.reports)

    def finished(self) -> list[StoredReport]:
        return [r for r in self.reports.values() if r.finished]

    # --- plumbing ---

    def _authorized(self, request: Request) -> bool:
        expected = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        given = request.headers.get("authorization", "")
        return secrets.compare_digest(given.encode(), f"Basic {expected}".encode())

    async def _handle(self, step: str, request: Request, action: object) -> Response:
        self.requests.append(step)
        if not self._authorized(request):
            return Response(status_code=401, headers={"WWW-Authenticate": 'Basic realm="ispws"'})
        queue = self._failures.get(step) or []
        mode = queue.pop(0) if queue else None
        if mode in _BEFORE:
            if mode == "timeout":
                await asyncio.sleep(self.hang_s)
                return Response(status_code=500)
            if mode == "code_1000":
                return _xml(_answer(1000, "Server error"))
            return Response(b"internal error", status_code=500, media_type="text/plain")
        assert callable(action)
        body: bytes = await action(request)
        if mode == "malformed":
            return _xml(b"<reportResponse><responseCode>0</respon")
        if mode == "drop":
            return _Dropped()
        return _xml(body)

    def _valid(self, data: bytes, root: str) -> int:
        """0, or the documented code for a document that is malformed (4110) or invalid (4100)."""
        try:
            tree = ET.fromstring(data)
        except ET.ParseError:
            return 4110
        if tree.tag != root or not self.schema.is_valid(data.decode("utf-8")):
            return 4100
        return 0

    def _open_report(self, report_id: str) -> StoredReport | int:
        report = self.reports.get(report_id)
        if report is None:
            return 5001
        if report.retracted:
            return 5101
        if report.finished:
            return 5102
        return report

    # --- endpoints ---

    async def _status(self, request: Request) -> Response:
        async def action(_request: Request) -> bytes:
            return _answer(0, f"Remote User : {self.username}")

        return await self._handle("status", request, action)

    async def _submit(self, request: Request) -> Response:
        async def action(req: Request) -> bytes:
            if not req.headers.get("content-type", "").startswith("text/xml"):
                return _answer(4000, "Invalid request")
            data = await req.body()
            code = self._valid(data, "report")
            if code:
                return _answer(code, "Validation failed" if code == 4100 else "Malformed XML")
            with self._lock:
                self._next_id += 1
                report_id = str(self._next_id)
                self.reports[report_id] = StoredReport(report_id, data)
            return _answer(0, "Success", reportId=report_id)

        return await self._handle("submit", request, action)

    async def _upload(self, request: Request) -> Response:
        async def action(req: Request) -> bytes:
            form = await req.form()
            report_id = str(form.get("id", ""))
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                return _answer(4200, "Malformed file submittal", reportId=report_id)
            report = self._open_report(report_id)
            if isinstance(report, int):
                return _answer(report, "Report not open")
            data = await upload.read()
            file_id = secrets.token_hex(16)
            report.files[file_id] = StoredFile(upload.filename or "", data)
            md5 = hashlib.md5(data).hexdigest()
            return _answer(0, "Success", reportId=report_id, fileId=file_id, hash=md5)

        return await self._handle("upload", request, action)

    async def _fileinfo(self, request: Request) -> Response:
        async def action(req: Request) -> bytes:
            data = await req.body()
            code = self._valid(data, "fileDetails")
            if code:
                return _answer(code, "Validation failed")
            tree = ET.fromstring(data)
            report_id = tree.findtext("reportId", "")
            report = self._open_report(report_id)
            if isinstance(report, int):
                return _answer(report, "Report not open")
            stored = report.files.get(tree.findtext("fileId", ""))
            if stored is None:
                return _answer(5002, "File does not exist", reportId=report_id)
            stored.details = data
            return _answer(0, "Success", reportId=report_id)

        return await self._handle("fileinfo", request, action)

    async def _finish(self, request: Request) -> Response:
        async def action(req: Request) -> bytes:
            report_id = str((await req.form()).get("id", ""))
            report = self._open_report(report_id)
            if isinstance(report, int):
                return _answer(report, "", root="reportDoneResponse")
            report.finished = True
            element = ET.Element("reportDoneResponse")
            ET.SubElement(element, "responseCode").text = "0"
            ET.SubElement(element, "reportId").text = report_id
            files = ET.SubElement(element, "files")
            for file_id in report.files:
                ET.SubElement(files, "fileId").text = file_id
            return bytes(ET.tostring(element, encoding="UTF-8", xml_declaration=True))

        return await self._handle("finish", request, action)

    async def _retract(self, request: Request) -> Response:
        async def action(req: Request) -> bytes:
            report_id = str((await req.form()).get("id", ""))
            report = self._open_report(report_id)
            if isinstance(report, int):
                return _answer(report, "Report not open")
            report.retracted = True
            return _answer(0, "Success", reportId=report_id)

        return await self._handle("retract", request, action)


def _xml(body: bytes) -> Response:
    return Response(body, media_type="text/xml; charset=utf-8")
