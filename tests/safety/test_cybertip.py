"""Referrals to NCMEC's CyberTipline (issue 11): the XML we send validates against the
project's XSD, the client runs the documented workflow against a real local server, retries
never open a second report, every failure is a typed error, and the answer parser refuses
what it must."""

from __future__ import annotations

import asyncio
import logging
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import replace

import httpx
import pytest
import xmlschema
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.cybertip_server import CyberTiplineServer
from tidings import errors as e
from tidings.media.digests import content_digests
from tidings.safety.cybertip_client import (
    CyberTiplineClient,
    ReferralConfig,
    ReferralProgress,
    ReferralState,
    StepEvent,
    load_referral_config,
)
from tidings.safety.cybertip_xml import (
    MAX_RESPONSE_BYTES,
    SCHEMA_PATH,
    file_details_xml,
    parse_response,
    report_xml,
)
from tidings.safety.referral_model import (
    CaptureEvent,
    ChatIncident,
    ContactPerson,
    DeviceId,
    Email,
    FileAnnotation,
    FileRelevance,
    IncidentSummary,
    IncidentType,
    IndustryClassification,
    IpCaptureEvent,
    Referral,
    ReferralFile,
    ReportAnnotation,
    ReportedPerson,
    Reporter,
    Victim,
)

SCHEMA = xmlschema.XMLSchema(str(SCHEMA_PATH))
T0 = 1_764_000_000_000
IMAGE_A = b"\x89PNG first reported image bytes"
IMAGE_B = b"\xff\xd8 second reported image bytes"
CONTENTS = {"ev-1": IMAGE_A, "ev-2": IMAGE_B}


def _file(key: str, data: bytes, **kw: object) -> ReferralFile:
    values: dict[str, object] = {
        "file_key": key,
        "file_name": f"{key}.bin",
        "viewed_by_provider": True,
        "md5": content_digests(data).md5,
    }
    values.update(kw)
    return ReferralFile(**values)  # type: ignore[arg-type]


def make_referral(referral_id: str = "ref-1", **kw: object) -> Referral:
    values: dict[str, object] = {
        "referral_id": referral_id,
        "case_id": "case-1",
        "reviewed_by": "reviewer-1",
        "summary": IncidentSummary(
            IncidentType.CHILD_PORNOGRAPHY,
            T0,
            escalate_reason="A child appears to be in imminent danger",
            annotations=frozenset({ReportAnnotation.SEXTORTION, ReportAnnotation.SPAM}),
        ),
        "reporter": Reporter(
            ContactPerson("Safety", "Team", (Email("safety@tidings.example", True),)),
            company_template="Tidings: legal process to legal@tidings.example",
            legal_url="https://tidings.example/legal",
        ),
        "reported_person": ReportedPerson(
            esp_identifier="acct-42",
            esp_service="Tidings",
            screen_name="suspect42",
            display_names=("S.",),
            ip_events=(IpCaptureEvent("203.0.113.7", CaptureEvent.LOGIN, T0 - 60_000, port=443),),
            device_ids=(DeviceId("Tidings device", "acct-42/2", CaptureEvent.REGISTRATION),),
        ),
        "chat_incidents": (ChatIncident("Tidings", content="the reported message, quoted"),),
        "victims": (Victim(esp_identifier="acct-7", age=13),),
        "files": (
            _file(
                "ev-1",
                IMAGE_A,
                industry_classification=IndustryClassification.A1,
                annotations=frozenset({FileAnnotation.INFANT, FileAnnotation.VIRAL}),
                pdq=bytes(range(32)),
                exif_viewed_by_provider=True,
                exif=(("Make", "Camera"),),
                uploaded_ms=T0,
            ),
            _file(
                "ev-2",
                IMAGE_B,
                viewed_by_provider=False,
                relevance=FileRelevance.SUPPLEMENTAL_REPORTED,
            ),
        ),
        "additional_info": "Detected by a hash match; confirmed by two reviewers.",
    }
    values.update(kw)
    return Referral(**values)  # type: ignore[arg-type]


class Sink:
    """Stores every progress and event, like the case history and audit log will."""

    def __init__(self) -> None:
        self.events: list[StepEvent] = []
        self.latest: ReferralProgress | None = None

    async def __call__(self, progress: ReferralProgress, event: StepEvent) -> None:
        self.latest = progress
        self.events.append(event)

    def steps(self) -> list[tuple[str, str]]:
        return [(ev.step, ev.outcome) for ev in self.events]


CLIENT_TIMEOUT_S = 2.0


@pytest.fixture
def server() -> Iterator[CyberTiplineServer]:
    srv = CyberTiplineServer().start()
    # Longer than the client's timeout below, which is generous so that a loaded CI machine
    # (the server validates every document against the XSD) never times out by accident.
    srv.hang_s = CLIENT_TIMEOUT_S + 1.0
    try:
        yield srv
    finally:
        srv.stop()


def config_for(server: CyberTiplineServer, **kw: object) -> ReferralConfig:
    values: dict[str, object] = {
        "url": server.url,
        "username": server.username,
        "password": server.password,
        "timeout_s": CLIENT_TIMEOUT_S,
        "max_attempts": 3,
        "backoff_s": 0.01,
    }
    values.update(kw)
    return ReferralConfig(**values)  # type: ignore[arg-type]


def run_send(
    config: ReferralConfig,
    referral: Referral,
    sink: Sink,
    progress: ReferralProgress | None = None,
) -> ReferralProgress:
    async def main() -> ReferralProgress:
        client = CyberTiplineClient(config)
        try:
            return await client.send(referral, CONTENTS, sink, progress)
        finally:
            await client.aclose()

    return asyncio.run(main())


# --- the XML and its schema --------------------------------------------------------------------


def test_report_and_file_details_validate_and_carry_the_mapped_fields() -> None:
    referral = make_referral()
    report = report_xml(referral)
    SCHEMA.validate(report.decode())
    root = ET.fromstring(report)
    assert root.tag == "report"
    assert root.findtext("incidentSummary/incidentType") == IncidentType.CHILD_PORNOGRAPHY.value
    assert root.findtext("incidentSummary/escalateToHighPriority")
    assert [a.tag for a in root.find("incidentSummary/reportAnnotations") or []] == [
        "sextortion",
        "spam",
    ]
    assert root.findtext("incidentSummary/incidentDateTime") == "2025-11-24T16:00:00Z"
    assert root.findtext("internetDetails/chatImIncident/chatClient") == "Tidings"
    assert root.findtext("reporter/reportingPerson/email") == "safety@tidings.example"
    assert root.findtext("personOrUserReported/espIdentifier") == "acct-42"
    assert root.findtext("personOrUserReported/ipCaptureEvent/ipAddress") == "203.0.113.7"
    assert root.findtext("personOrUserReported/deviceId/idValue") == "acct-42/2"
    assert root.findtext("victim/victimPerson/age") == "13"

    first = ET.fromstring(file_details_xml("1001", "f-1", referral.files[0]))
    SCHEMA.validate(ET.tostring(first, encoding="unicode"))
    assert first.findtext("fileViewedByEsp") == "true"
    assert first.findtext("exifViewedByEsp") == "true"
    assert first.findtext("publiclyAvailable") == "false"
    assert first.findtext("industryClassification") == "A1"
    hashes = first.findall("originalFileHash")
    assert [(h.get("hashType"), h.text) for h in hashes] == [("MD5", referral.files[0].md5.hex())]
    details = {d.get("type"): d for d in first.findall("details")}
    assert details["HASH"].findtext("nameValuePair/name") == "PDQ"
    assert details["HASH"].findtext("nameValuePair/value") == bytes(range(32)).hex()
    assert details["EXIF"].findtext("nameValuePair/value") == "Camera"
    assert [a.tag for a in first.find("fileAnnotations") or []] == ["viral", "infant"]

    second = ET.fromstring(file_details_xml("1001", "f-2", referral.files[1]))
    SCHEMA.validate(ET.tostring(second, encoding="unicode"))
    assert second.findtext("fileViewedByEsp") == "false"  # set truthfully, per file
    assert second.find("exifViewedByEsp") is None and second.find("details") is None
    assert second.findtext("fileRelevance") == "Supplemental Reported"


def test_a_minimal_referral_validates() -> None:
    referral = make_referral(reported_person=None, chat_incidents=(), victims=(), files=())
    SCHEMA.validate(report_xml(referral).decode())


def test_the_schema_can_fail() -> None:
    """The XSD refuses documents NCMEC would: out of order, missing the reporter's e-mail."""
    root = ET.fromstring(report_xml(make_referral()))
    summary = root.find("incidentSummary")
    assert summary is not None
    summary[0], summary[1] = summary[1], summary[0]
    assert not SCHEMA.is_valid(ET.tostring(root, encoding="unicode"))
    bare = ET.fromstring(report_xml(make_referral()))
    person = bare.find("reporter/reportingPerson")
    assert person is not None
    person.remove(person.find("email"))  # type: ignore[arg-type]
    assert not SCHEMA.is_valid(ET.tostring(bare, encoding="unicode"))


@pytest.mark.parametrize(
    "build",
    [
        lambda: Email("not-an-address"),
        lambda: Reporter(ContactPerson("A", "B")),
        lambda: IpCaptureEvent("300.1.1.1", CaptureEvent.LOGIN),
        lambda: IpCaptureEvent("203.0.113.1", CaptureEvent.LOGIN, port=70_000),
        lambda: Victim(age=18),
        lambda: Victim(),
        lambda: _file("x", b"x", md5=b"short"),
        lambda: _file("x", b"x", pdq=b"\x00" * 31),
        lambda: _file("x", b"x", exif=(("Make", "Camera"),)),  # EXIF not viewed
        lambda: _file("x", b"x", file_name="../etc/passwd"),
        lambda: _file(
            "x",
            b"x",
            relevance=FileRelevance.SUPPLEMENTAL_REPORTED,
            industry_classification=IndustryClassification.B2,
        ),
        lambda: make_referral(reviewed_by=""),  # human review is mandatory
        lambda: make_referral(files=(_file("a", b"1"), _file("a", b"2"))),
        lambda: report_xml(make_referral(additional_info="bell \x07 character")),
    ],
)
def test_invalid_referrals_are_refused(build: object) -> None:
    assert callable(build)
    with pytest.raises(e.InvalidReferralError):
        build()


# --- the workflow against the local server ------------------------------------------------------


def test_the_whole_workflow(server: CyberTiplineServer) -> None:
    config = config_for(server)

    async def status() -> str:
        client = CyberTiplineClient(config)
        try:
            return (await client.status()).description
        finally:
            await client.aclose()

    assert server.username in asyncio.run(status())
    sink = Sink()
    done = run_send(config, make_referral(), sink)
    assert done.state is ReferralState.FINISHED
    assert server.opened == 1
    [report] = server.finished()
    assert done.report_id == report.report_id
    assert sorted(f.data for f in report.files.values()) == sorted(CONTENTS.values())
    assert all(f.details is not None for f in report.files.values())
    assert sink.steps() == [
        ("submit", "sending"),
        ("submit", "ok"),
        ("upload", "ok"),
        ("fileinfo", "ok"),
        ("upload", "ok"),
        ("fileinfo", "ok"),
        ("finish", "ok"),
    ]
    assert all(ev.report_id == report.report_id for ev in sink.events[1:])
    # Sending a finished referral again does nothing.
    assert run_send(config, make_referral(), Sink(), done) == done
    assert server.requests.count("submit") == 1


@pytest.mark.parametrize("mode", ["http_500", "code_1000", "timeout", "malformed", "drop"])
@pytest.mark.parametrize("step", ["upload", "fileinfo", "finish"])
def test_failures_after_submit_are_retried_without_a_second_report(
    server: CyberTiplineServer, step: str, mode: str
) -> None:
    server.fail(step, mode)
    done = run_send(config_for(server), make_referral(), Sink())
    assert done.state is ReferralState.FINISHED
    assert server.requests.count("submit") == 1
    assert server.opened == 1 and len(server.finished()) == 1
    assert server.requests.count(step) >= 2
    if (step, mode) == ("upload", "drop"):
        # The lost answer leaves one undescribed file inside the same report, not a new report.
        [report] = server.finished()
        assert len(report.files) == 3
        assert sum(f.details is not None for f in report.files.values()) == 2


def test_retries_back_off_exponentially_up_to_the_cap(server: CyberTiplineServer) -> None:
    server.fail("upload", "code_1000", "code_1000", "http_500")
    delays: list[float] = []

    async def sleep(seconds: float) -> None:
        delays.append(seconds)

    async def main() -> ReferralProgress:
        config = config_for(server, max_attempts=4, backoff_s=0.5, max_backoff_s=1.5)
        client = CyberTiplineClient(config, sleep=sleep)
        try:
            return await client.send(make_referral(), CONTENTS, Sink())
        finally:
            await client.aclose()

    assert asyncio.run(main()).state is ReferralState.FINISHED
    assert delays == [0.5, 1.0, 1.5]


def test_submit_failing_before_it_opens_a_report_is_retried(server: CyberTiplineServer) -> None:
    server.fail("submit", "code_1000", "code_1000")
    done = run_send(config_for(server), make_referral(), Sink())
    assert done.state is ReferralState.FINISHED
    assert server.requests.count("submit") == 3
    assert server.opened == 1


@pytest.mark.parametrize("mode", ["timeout", "drop", "malformed", "http_500"])
def test_a_lost_submit_answer_needs_a_person(server: CyberTiplineServer, mode: str) -> None:
    config = config_for(server)
    sink = Sink()
    server.fail("submit", mode)
    with pytest.raises(e.ReferralSubmitUncertainError):
        run_send(config, make_referral(), sink)
    assert server.requests.count("submit") == 1  # never sent twice on its own
    assert sink.latest is not None and sink.latest.state is ReferralState.SUBMIT_UNCERTAIN
    uncertain = sink.latest
    with pytest.raises(e.ReferralSubmitUncertainError):
        run_send(config, make_referral(), sink, uncertain)
    assert server.requests.count("submit") == 1

    async def reopen() -> ReferralProgress:
        client = CyberTiplineClient(config)
        try:
            return await client.reopen(uncertain, sink, by="legal-1")
        finally:
            await client.aclose()

    fresh = asyncio.run(reopen())
    assert fresh.state is ReferralState.PENDING and sink.events[-1].by == "legal-1"
    done = run_send(config, make_referral(), sink, fresh)
    assert done.state is ReferralState.FINISHED
    assert len(server.finished()) == 1  # an orphaned report, if any, is never finished


def test_a_crash_during_submit_never_submits_again(server: CyberTiplineServer) -> None:
    crashed = replace(ReferralProgress.start(make_referral()), state=ReferralState.SUBMITTING)
    sink = Sink()
    with pytest.raises(e.ReferralSubmitUncertainError):
        run_send(config_for(server), make_referral(), sink, crashed)
    assert server.requests == [] and sink.steps() == [("submit", "uncertain")]


def test_a_resumed_referral_skips_the_steps_it_has_done(server: CyberTiplineServer) -> None:
    config = config_for(server)
    sink = Sink()
    server.fail("fileinfo", "code_1000", "code_1000", "code_1000")
    with pytest.raises(e.ClearinghouseUnavailableError) as raised:
        run_send(config, make_referral(), sink)
    assert raised.value.step == "fileinfo" and raised.value.response_code == 1000
    partial = sink.latest
    assert partial is not None and partial.state is ReferralState.OPEN
    assert partial.file("ev-1").file_id and not partial.file("ev-1").details_sent
    done = run_send(config, make_referral(), sink, partial)
    assert done.state is ReferralState.FINISHED
    assert server.requests.count("submit") == 1
    assert server.requests.count("upload") == 2  # ev-1 once, ev-2 once
    assert server.opened == 1


def test_an_expired_report_is_marked_and_can_be_reopened(server: CyberTiplineServer) -> None:
    config = config_for(server)
    sink = Sink()
    gone = replace(
        ReferralProgress.start(make_referral()), state=ReferralState.OPEN, report_id="999999"
    )
    with pytest.raises(e.ClearinghouseUnknownReportError) as raised:
        run_send(config, make_referral(), sink, gone)
    assert raised.value.response_code == 5001
    assert sink.latest is not None and sink.latest.state is ReferralState.EXPIRED
    with pytest.raises(e.ReferralStateError):
        run_send(config, make_referral(), sink, sink.latest)


def test_retract_an_open_report_and_not_a_finished_one(server: CyberTiplineServer) -> None:
    config = config_for(server)
    sink = Sink()
    server.fail("finish", "code_1000", "code_1000", "code_1000")
    with pytest.raises(e.ClearinghouseUnavailableError):
        run_send(config, make_referral(), sink)
    open_progress = sink.latest
    assert open_progress is not None and open_progress.state is ReferralState.OPEN

    async def retract(progress: ReferralProgress) -> ReferralProgress:
        client = CyberTiplineClient(config)
        try:
            return await client.retract(progress, sink, by="legal-1")
        finally:
            await client.aclose()

    async def anonymous() -> None:
        client = CyberTiplineClient(config)
        try:
            await client.retract(open_progress, sink, by="")
        finally:
            await client.aclose()

    with pytest.raises(e.ReferralStateError):
        asyncio.run(anonymous())
    retracted = asyncio.run(retract(open_progress))
    assert retracted.state is ReferralState.RETRACTED and sink.events[-1].by == "legal-1"
    assert server.reports[retracted.report_id or ""].retracted
    with pytest.raises(e.ReferralStateError):
        run_send(config, make_referral(), sink, retracted)
    with pytest.raises(e.ReferralStateError):
        asyncio.run(retract(retracted))
    # NCMEC says the report is finished: a typed error (the API cannot retract it).
    done = run_send(config, make_referral("ref-2"), Sink())
    with pytest.raises(e.ClearinghouseReportClosedError):
        asyncio.run(retract(replace(done, state=ReferralState.OPEN)))


def test_wrong_credentials_are_a_typed_error_and_open_nothing(server: CyberTiplineServer) -> None:
    sink = Sink()
    with pytest.raises(e.ClearinghouseAuthError):
        run_send(config_for(server, password="wrong-password"), make_referral(), sink)
    assert server.opened == 0
    assert sink.latest is not None and sink.latest.state is ReferralState.PENDING


def test_contents_are_checked_before_anything_is_sent(server: CyberTiplineServer) -> None:
    async def main() -> None:
        client = CyberTiplineClient(config_for(server))
        try:
            await client.send(make_referral(), {"ev-1": IMAGE_A, "ev-2": b"other"}, Sink())
        finally:
            await client.aclose()

    with pytest.raises(e.InvalidReferralError):
        asyncio.run(main())
    assert server.requests == []


def test_secrets_stay_out_of_logs_errors_and_reprs(
    server: CyberTiplineServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    config = config_for(server)
    server.fail("upload", "http_500")
    run_send(config, make_referral(), Sink())
    with pytest.raises(e.ClearinghouseError) as raised:
        run_send(config_for(server, password="another-secret"), make_referral("r2"), Sink())
    texts = [caplog.text, repr(config), repr(CyberTiplineClient(config)), str(raised.value)]
    assert not [t for t in texts if server.password in t or "another-secret" in t]


# --- documented response codes -> typed errors (any server speaking the API) --------------------

CODES = [
    (1000, e.ClearinghouseUnavailableError),
    (1100, e.ClearinghouseUnavailableError),
    (1111, e.ClearinghouseUnavailableError),
    (1210, e.ClearinghouseUnknownReportError),
    (2000, e.ClearinghouseAuthError),
    (3100, e.ClearinghouseAuthError),
    (4000, e.ClearinghouseRejectedError),
    (4100, e.ClearinghouseRejectedError),
    (4110, e.ClearinghouseRejectedError),
    (4200, e.ClearinghouseRejectedError),
    (5001, e.ClearinghouseUnknownReportError),
    (5002, e.ClearinghouseUnknownReportError),
    (5101, e.ClearinghouseReportClosedError),
    (5102, e.ClearinghouseReportClosedError),
    (7777, e.ClearinghouseError),
]


@pytest.mark.parametrize(("code", "kind"), CODES)
def test_documented_codes_map_to_typed_errors(code: int, kind: type[e.TidingsError]) -> None:
    answer = f"<reportResponse><responseCode>{code}</responseCode></reportResponse>".encode()
    calls: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(200, content=answer)

    async def main() -> None:
        config = ReferralConfig("https://ispws.test/ispws", "u", "p", max_attempts=2, backoff_s=0)
        client = CyberTiplineClient(config, transport=httpx.MockTransport(handler))
        try:
            await client.status()
        finally:
            await client.aclose()

    with pytest.raises(kind) as raised:
        asyncio.run(main())
    assert type(raised.value) is kind
    assert isinstance(raised.value, e.ClearinghouseError) and raised.value.response_code == code
    assert len(calls) == (2 if kind is e.ClearinghouseUnavailableError else 1)


# --- configuration --------------------------------------------------------------------------------


def test_configuration_from_table_and_environment() -> None:
    assert load_referral_config({}, env={}) is None
    env = {
        "TIDINGS_CYBERTIP_URL": "https://exttest.cybertip.org/ispws",
        "TIDINGS_CYBERTIP_USERNAME": "esp",
        "TIDINGS_CYBERTIP_PASSWORD": "s3cret",
    }
    config = load_referral_config({"url": "https://other.example/ispws", "timeout_s": 5}, env)
    assert config is not None
    assert config.url == env["TIDINGS_CYBERTIP_URL"] and config.timeout_s == 5.0
    assert "s3cret" not in repr(config)
    for table in (
        {"url": "http://ncmec.example/ispws", "username": "u", "password": "p"},
        {"url": "https://u:p@ncmec.example/ispws", "username": "u", "password": "p"},
        {"url": "https://ncmec.example/ispws", "username": "u"},
        {"url": "https://ncmec.example/ispws", "username": "u", "password": "p", "x": 1},
        {"url": "https://ncmec.example/ispws", "username": "u", "password": "p", "timeout_s": "z"},
    ):
        with pytest.raises(e.ReferralConfigError):
            load_referral_config(table, env={})
    loopback = load_referral_config(
        {"url": "http://127.0.0.1:9/ispws", "username": "u", "password": "p"}, env={}
    )
    assert loopback is not None


# --- the answer parser --------------------------------------------------------------------------


def test_parse_documented_answers() -> None:
    upload = parse_response(
        b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?><reportResponse>'
        b"<responseCode>0</responseCode><responseDescription>Success</responseDescription>"
        b"<reportId>4564654</reportId><fileId>b0754af766b426f2928a02c651ed4b99</fileId>"
        b"<hash>FAFA5EFEAF3CBE3B23B2748D13E629A1</hash></reportResponse>"
    )
    assert (upload.response_code, upload.report_id) == (0, "4564654")
    assert upload.md5_hex == "fafa5efeaf3cbe3b23b2748d13e629a1"
    done = parse_response(
        b"<reportDoneResponse><responseCode>0</responseCode><reportId>1</reportId>"
        b"<files><fileId>a</fileId><fileId>b</fileId></files></reportDoneResponse>"
    )
    assert done.file_ids == ("a", "b")


@pytest.mark.parametrize(
    "data",
    [
        b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]>'
        b"<reportResponse><responseCode>&b;</responseCode></reportResponse>",
        b'<!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
        b"<reportResponse><responseCode>&x;</responseCode></reportResponse>",
        b"<reportResponse><responseCode>0</responseCode>" + b" " * MAX_RESPONSE_BYTES,
        b"<reportResponse><responseCode>0</responseCode></reportResponse><x/>",
        b"<other><responseCode>0</responseCode></other>",
        b"<reportResponse><responseDescription>no code</responseDescription></reportResponse>",
        b"<reportResponse><responseCode>0</responseCode><responseCode>1</responseCode>"
        b"</reportResponse>",
        b"<reportResponse><responseCode>zero</responseCode></reportResponse>",
        b"<reportResponse><responseCode>0</responseCode><reportId>12a</reportId></reportResponse>",
        b"<reportResponse><responseCode>0<b>1</b></responseCode></reportResponse>",
        b"<reportResponse><responseCode>0</responseCode><hash>xyz</hash></reportResponse>",
        "<reportResponse><responseCode>0</responseCode>\u00e9</reportResponse>".encode("latin-1"),
        b"",
    ],
)
def test_parser_refuses_bad_answers(data: bytes) -> None:
    with pytest.raises(e.ClearinghouseResponseError):
        parse_response(data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000))
def test_parser_answers_arbitrary_bytes_with_a_value_or_a_typed_error(data: bytes) -> None:
    try:
        parse_response(data)
    except e.ClearinghouseResponseError:
        pass


@settings(max_examples=200, deadline=None)
@given(
    code=st.integers(min_value=0, max_value=99_999),
    description=st.text(
        st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=100
    ),
    report_id=st.from_regex(r"[0-9]{1,20}", fullmatch=True),
    file_id=st.from_regex(r"[A-Za-z0-9_-]{1,64}", fullmatch=True),
)
def test_parser_reads_back_what_a_server_writes(
    code: int, description: str, report_id: str, file_id: str
) -> None:
    root = ET.Element("reportResponse")
    for tag, text in (
        ("responseCode", str(code)),
        ("responseDescription", description),
        ("reportId", report_id),
        ("fileId", file_id),
    ):
        ET.SubElement(root, tag).text = text
    answer = parse_response(ET.tostring(root, encoding="UTF-8", xml_declaration=True))
    assert (answer.response_code, answer.report_id, answer.file_id) == (code, report_id, file_id)
    assert answer.description == description.strip()
