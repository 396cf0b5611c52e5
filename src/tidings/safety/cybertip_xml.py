"""The CyberTipline Reporting API's XML: the documents we send, and the answers we parse.

Sent (built with `xml.etree.ElementTree`, children in the order of the documented schema,
which the API enforces — an out-of-order document is refused with responseCode 4100):

- `report_xml`: the ``<report>`` document ``/submit`` takes (incident summary, internet
  details, reporter, reported person, victims, additional information);
- `file_details_xml`: the ``<fileDetails>`` document ``/fileinfo`` takes for one uploaded file.

Both validate against ``cybertip_schema.xsd`` beside this module (`SCHEMA_PATH`), which the
project wrote from NCMEC's public documentation
(https://report.cybertip.org/ispws/documentation/index.html) for the part of the format it
sends; tests check every document against it.

Parsed (`parse_response`): NCMEC's ``<reportResponse>`` (``responseCode``,
``responseDescription``, ``reportId``, ``fileId``, ``hash``) and ``<reportDoneResponse>``
(``responseCode``, ``reportId``, ``files/fileId``). The parser is defensive because the bytes
come from the network: a size limit, UTF-8 only, depth and element limits, and *no DOCTYPE at
all* — `defusedxml` is not installed in this project, so instead of relying on expat's entity
handling (which still expands internal entities, the "billion laughs" shape) the parser
refuses any document type declaration, so no entity, internal or external, can be declared.
The documented answers never carry one.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final
from xml.parsers import expat

from tidings.errors import ClearinghouseResponseError, InvalidReferralError
from tidings.safety.referral_model import (
    ContactPerson,
    DeviceId,
    FileAnnotation,
    IpCaptureEvent,
    Referral,
    ReferralFile,
    ReportAnnotation,
    ReportedPerson,
)

SCHEMA_PATH: Final = Path(__file__).with_name("cybertip_schema.xsd")
"""The project's XSD for the documents it sends."""

MAX_RESPONSE_BYTES: Final = 64 * 1024
"""Largest answer parsed; the documented answers are a few hundred bytes (a finish answer
lists one file id per file)."""

MAX_RESPONSE_DEPTH: Final = 4
MAX_RESPONSE_ELEMENTS: Final = 2 * 1000 + 16
"""An answer nests at most ``reportDoneResponse/files/fileId``; one fileId per file."""

RESPONSE_ROOTS: Final = frozenset({"reportResponse", "reportDoneResponse"})

_XML_ILLEGAL = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_REPORT_ID = re.compile(r"[0-9]{1,20}")
_FILE_ID = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
_MD5_HEX = re.compile(r"[0-9a-fA-F]{32}")


# --- building -------------------------------------------------------------------------------


def _xml_datetime(ms: int) -> str:
    """``ms`` (epoch milliseconds) as an xs:dateTime in UTC, e.g. 2026-12-02T13:45:00Z."""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _bool(value: bool) -> str:
    return "true" if value else "false"


def _add(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    if text is not None and _XML_ILLEGAL.search(text):
        # ElementTree would write the character and produce a document no parser accepts.
        raise InvalidReferralError(f"<{tag}> holds a character XML cannot carry")
    element = ET.SubElement(parent, tag, attrs)
    if text is not None:
        element.text = text
    return element


def _opt(parent: ET.Element, tag: str, text: str | None) -> None:
    if text is not None:
        _add(parent, tag, text)


def _opt_time(parent: ET.Element, tag: str, ms: int | None) -> None:
    """``<tag>`` holding ``ms`` as an xs:dateTime (`_xml_datetime`); nothing when None."""
    if ms is not None:
        _add(parent, tag, _xml_datetime(ms))


def _opt_bool(parent: ET.Element, tag: str, value: bool | None) -> None:
    """``<tag>`` holding ``value`` as an xs:boolean; nothing when None."""
    if value is not None:
        _add(parent, tag, _bool(value))


def _person(parent: ET.Element, tag: str, person: ContactPerson) -> None:
    element = _add(parent, tag)
    _opt(element, "firstName", person.first_name)
    _opt(element, "lastName", person.last_name)
    for phone in person.phones:
        _add(element, "phone", phone)
    for email in person.emails:
        attrs = {} if email.verified is None else {"verified": _bool(email.verified)}
        _add(element, "email", email.address, **attrs)


def _ip_event(parent: ET.Element, event: IpCaptureEvent) -> None:
    element = _add(parent, "ipCaptureEvent")
    _add(element, "ipAddress", event.ip)
    _add(element, "eventName", event.event.value)
    _opt_time(element, "dateTime", event.at_ms)
    _opt_bool(element, "possibleProxy", event.possible_proxy)
    if event.port is not None:
        _add(element, "port", str(event.port))


def _device(parent: ET.Element, device: DeviceId) -> None:
    element = _add(parent, "deviceId")
    _add(element, "idType", device.id_type)
    _add(element, "idValue", device.id_value)
    if device.event is not None:
        _add(element, "eventName", device.event.value)
    _opt_time(element, "dateTime", device.at_ms)


def _reported(parent: ET.Element, person: ReportedPerson) -> None:
    element = _add(parent, "personOrUserReported")
    _add(element, "espIdentifier", person.esp_identifier)
    _opt(element, "espService", person.esp_service)
    _opt(element, "screenName", person.screen_name)
    for name in person.display_names:
        _add(element, "displayName", name)
    _opt(element, "profileUrl", person.profile_url)
    for event in person.ip_events:
        _ip_event(element, event)
    for device in person.device_ids:
        _device(element, device)
    _opt(element, "additionalInfo", person.additional_info)


def _document(root: ET.Element) -> bytes:
    document: bytes = ET.tostring(root, encoding="UTF-8", xml_declaration=True)
    return document


def report_xml(referral: Referral) -> bytes:
    """The ``<report>`` document of ``referral`` for ``/submit`` (UTF-8 bytes).

    Raises:
        InvalidReferralError: a text value holds a character XML 1.0 cannot carry.
    """
    root = ET.Element("report")
    summary = _add(root, "incidentSummary")
    _add(summary, "incidentType", referral.summary.incident_type.value)
    _opt(summary, "escalateToHighPriority", referral.summary.escalate_reason)
    if referral.summary.annotations:
        annotations = _add(summary, "reportAnnotations")
        for tag in ReportAnnotation:  # the documented order, which the schema fixes
            if tag in referral.summary.annotations:
                _add(annotations, tag.value)
    _add(summary, "incidentDateTime", _xml_datetime(referral.summary.incident_ms))
    _opt(summary, "incidentDateTimeDescription", referral.summary.incident_description)
    for chat in referral.chat_incidents:
        incident = _add(_add(root, "internetDetails"), "chatImIncident")
        _add(incident, "chatClient", chat.chat_client)
        _opt(incident, "chatRoomName", chat.chat_room_name)
        _opt(incident, "content", chat.content)
        _opt(incident, "additionalInfo", chat.additional_info)
    reporter = _add(root, "reporter")
    _person(reporter, "reportingPerson", referral.reporter.reporting_person)
    if referral.reporter.contact_person is not None:
        _person(reporter, "contactPerson", referral.reporter.contact_person)
    _opt(reporter, "companyTemplate", referral.reporter.company_template)
    _opt(reporter, "termsOfService", referral.reporter.terms_of_service)
    _opt(reporter, "legalURL", referral.reporter.legal_url)
    if referral.reported_person is not None:
        _reported(root, referral.reported_person)
    for victim in referral.victims:
        element = _add(root, "victim")
        if victim.age is not None:
            _add(_add(element, "victimPerson"), "age", str(victim.age))
        _opt(element, "espIdentifier", victim.esp_identifier)
        _opt(element, "screenName", victim.screen_name)
        for name in victim.display_names:
            _add(element, "displayName", name)
        _opt(element, "additionalInfo", victim.additional_info)
    _opt(root, "additionalInfo", referral.additional_info)
    return _document(root)


def file_details_xml(report_id: str, file_id: str, file: ReferralFile) -> bytes:
    """The ``<fileDetails>`` document for ``/fileinfo``: what the provider knows of one file
    uploaded to report ``report_id`` as ``file_id``.

    Raises:
        InvalidReferralError: a text value holds a character XML 1.0 cannot carry.
    """
    root = ET.Element("fileDetails")
    _add(root, "reportId", report_id)
    _add(root, "fileId", file_id)
    _add(root, "originalFileName", file.file_name)
    _opt_time(root, "uploadedToEspTimestamp", file.uploaded_ms)
    _add(root, "fileViewedByEsp", _bool(file.viewed_by_provider))
    _opt_bool(root, "exifViewedByEsp", file.exif_viewed_by_provider)
    _add(root, "publiclyAvailable", _bool(file.publicly_available))
    _add(root, "fileRelevance", file.relevance.value)
    if file.annotations:
        annotations = _add(root, "fileAnnotations")
        for file_tag in FileAnnotation:  # the documented order, which the schema fixes
            if file_tag in file.annotations:
                _add(annotations, file_tag.value)
    if file.industry_classification is not None:
        _add(root, "industryClassification", file.industry_classification.value)
    _add(root, "originalFileHash", file.md5.hex(), hashType="MD5")
    if file.ip_event is not None:
        _ip_event(root, file.ip_event)
    for device in file.device_ids:
        _device(root, device)
    if file.exif:
        _name_values(_add(root, "details", type="EXIF"), file.exif)
    if file.pdq is not None:
        _name_values(_add(root, "details", type="HASH"), [("PDQ", file.pdq.hex())])
    for text in file.additional_info:
        _add(root, "additionalInfo", text)
    return _document(root)


def _name_values(parent: ET.Element, pairs: Iterable[tuple[str, str]]) -> None:
    for name, value in pairs:
        pair = _add(parent, "nameValuePair")
        _add(pair, "name", name)
        _add(pair, "value", value)


# --- parsing --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClearinghouseResponse:
    """One parsed answer. ``root`` is ``reportResponse`` or ``reportDoneResponse``;
    ``response_code`` 0 is success. ``md5_hex`` is the hash the server computed of an
    uploaded file; ``file_ids`` the files a finished report holds."""

    root: str
    response_code: int
    description: str = ""
    report_id: str | None = None
    file_id: str | None = None
    md5_hex: str | None = None
    file_ids: tuple[str, ...] = ()


class _Collector:
    """Expat handlers that keep the text of each element by its path below the root."""

    def __init__(self) -> None:
        self.root = ""
        self.stack: list[str] = []
        self.text: list[str] = []
        self.values: list[tuple[str, str]] = []
        self.count = 0

    def start(self, name: str, _attrs: dict[str, str]) -> None:
        self.count += 1
        if self.count > MAX_RESPONSE_ELEMENTS or len(self.stack) >= MAX_RESPONSE_DEPTH:
            raise ClearinghouseResponseError("the answer is nested too deep or too long")
        if not self.stack:
            self.root = name
        elif len(self.stack) > 1 and self.stack[1:] != ["files"]:
            raise ClearinghouseResponseError(f"unexpected element <{name}> in the answer")
        self.stack.append(name)
        self.text = []

    def end(self, name: str) -> None:
        path = "/".join(self.stack[1:])
        if path:
            self.values.append((path, "".join(self.text).strip()))
        self.stack.pop()
        self.text = []

    def data(self, text: str) -> None:
        self.text.append(text)


def _refuse_doctype(*_args: object) -> None:
    raise ClearinghouseResponseError("the answer declares a DOCTYPE (refused: entities)")


def parse_response(data: bytes) -> ClearinghouseResponse:
    """Parse a CyberTipline answer (``reportResponse`` or ``reportDoneResponse``).

    Raises:
        ClearinghouseResponseError: ``data`` is larger than `MAX_RESPONSE_BYTES`, not UTF-8
            XML, declares a DOCTYPE, has another root, nests deeper than the documented
            answers, repeats or lacks ``responseCode``, or holds a malformed ``reportId``,
            ``fileId`` or ``hash``.
    """
    if len(data) > MAX_RESPONSE_BYTES:
        raise ClearinghouseResponseError("the answer is larger than the limit")
    collector = _Collector()
    # encoding="UTF-8" overrides whatever the document declares: one decoding, checked here.
    parser = expat.ParserCreate(encoding="UTF-8")
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    parser.StartDoctypeDeclHandler = _refuse_doctype
    parser.EntityDeclHandler = _refuse_doctype
    parser.StartElementHandler = collector.start
    parser.EndElementHandler = collector.end
    parser.CharacterDataHandler = collector.data
    try:
        parser.Parse(data, True)
    except expat.ExpatError:
        raise ClearinghouseResponseError("the answer is not well-formed XML") from None
    except (UnicodeDecodeError, ValueError):
        raise ClearinghouseResponseError("the answer is not UTF-8 XML") from None
    if collector.root not in RESPONSE_ROOTS:
        raise ClearinghouseResponseError("the answer's root is not a documented response")
    return _response(collector.root, collector.values)


def _response(root: str, values: list[tuple[str, str]]) -> ClearinghouseResponse:
    single: dict[str, str] = {}
    file_ids: list[str] = []
    for path, text in values:
        if path == "files/fileId":
            file_ids.append(_checked(_FILE_ID, text, "fileId"))
        elif path == "files":
            continue
        elif path in single:
            raise ClearinghouseResponseError(f"the answer repeats <{path}>")
        else:
            single[path] = text
    code_text = single.get("responseCode")
    if code_text is None:
        raise ClearinghouseResponseError("the answer has no responseCode")
    if not re.fullmatch(r"-?[0-9]{1,9}", code_text):
        raise ClearinghouseResponseError("the answer's responseCode is not a number")
    report_id = single.get("reportId") or None
    file_id = single.get("fileId") or None
    md5_hex = single.get("hash") or None
    return ClearinghouseResponse(
        root=root,
        response_code=int(code_text),
        description=single.get("responseDescription", "")[:500],
        report_id=None if report_id is None else _checked(_REPORT_ID, report_id, "reportId"),
        file_id=None if file_id is None else _checked(_FILE_ID, file_id, "fileId"),
        md5_hex=None if md5_hex is None else _checked(_MD5_HEX, md5_hex, "hash").lower(),
        file_ids=tuple(file_ids),
    )


def _checked(pattern: re.Pattern[str], text: str, what: str) -> str:
    if not pattern.fullmatch(text):
        raise ClearinghouseResponseError(f"the answer's {what} is malformed")
    return text
