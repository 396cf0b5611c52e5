"""What a referral to NCMEC's CyberTipline says, as typed, frozen values (issue 11).

A `Referral` is built from a case a reviewer confirmed; `tidings.safety.cybertip_xml` turns it
into the Reporting API's ``<report>`` and ``<fileDetails>`` documents and
`tidings.safety.cybertip_client` sends them. Nothing here does I/O.

The field names and vocabularies follow NCMEC's public CyberTipline Reporting API
documentation (https://report.cybertip.org/ispws/documentation/index.html: "Report Details
Types", "File Details", "Report Annotations", "File Annotations"), as read on 2026-12-02
together with public third-party descriptions of it (see docs/referrals.md). The XSD the
project writes from it is ``cybertip_schema.xsd`` beside this module.

Every constructor checks its own invariants and raises `InvalidReferralError`; a value that
exists is one the XML builder can write. Free text (notes, message content) is kept out of
``repr`` so a referral can be named in a log line without its content.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from enum import StrEnum

from tidings.errors import InvalidReferralError

MAX_TEXT_CHARS = 10_000
"""Longest free-text value (additional information, message content) put in one element."""

MAX_NAME_CHARS = 500
"""Longest short value (names, identifiers, file names, URLs)."""

MAX_FILES = 1_000
"""Most files one referral carries (the API sets no limit; this bounds one run)."""

MD5_BYTES = 16
PDQ_BYTES = 32


class IncidentType(StrEnum):
    """``incidentSummary/incidentType``: the documented incident types, spelled as the API
    spells them."""

    CHILD_PORNOGRAPHY = "Child Pornography (possession, manufacture, and distribution)"
    CHILD_SEX_TRAFFICKING = "Child Sex Trafficking"
    CHILD_SEX_TOURISM = "Child Sex Tourism"
    CHILD_SEXUAL_MOLESTATION = "Child Sexual Molestation"
    MISLEADING_DOMAIN_NAME = "Misleading Domain Name"
    MISLEADING_WORDS_OR_IMAGES = "Misleading Words or Digital Images on the Internet"
    ONLINE_ENTICEMENT = "Online Enticement of Children for Sexual Act"
    UNSOLICITED_OBSCENE_MATERIAL = "Unsolicited Obscene Material Sent to a Child"


class ReportAnnotation(StrEnum):
    """``incidentSummary/reportAnnotations``: tags of the whole report."""

    SEXTORTION = "sextortion"
    CSAM_SOLICITATION = "csamSolicitation"
    MINOR_TO_MINOR_INTERACTION = "minorToMinorInteraction"
    SPAM = "spam"


class FileAnnotation(StrEnum):
    """``fileDetails/fileAnnotations``: tags of one file."""

    ANIME_DRAWING_VIRTUAL_HENTAI = "animeDrawingVirtualHentai"
    POTENTIAL_MEME = "potentialMeme"
    VIRAL = "viral"
    POSSIBLE_SELF_PRODUCTION = "possibleSelfProduction"
    PHYSICAL_HARM = "physicalHarm"
    VIOLENCE_GORE = "violenceGore"
    BESTIALITY = "bestiality"
    LIVE_STREAMING = "liveStreaming"
    INFANT = "infant"
    GENERATIVE_AI = "generativeAi"


class FileRelevance(StrEnum):
    """``fileDetails/fileRelevance``: why the file is in the report."""

    REPORTED = "Reported"
    SUPPLEMENTAL_REPORTED = "Supplemental Reported"


class IndustryClassification(StrEnum):
    """``fileDetails/industryClassification``: the industry categorization scale (A:
    prepubescent, B: pubescent minor; 1: sex act, 2: lascivious exhibition)."""

    A1 = "A1"
    A2 = "A2"
    B1 = "B1"
    B2 = "B2"


class CaptureEvent(StrEnum):
    """``ipCaptureEvent/eventName`` and ``deviceId/eventName``: what the user did when the
    address or device was seen."""

    LOGIN = "Login"
    REGISTRATION = "Registration"
    PURCHASE = "Purchase"
    UPLOAD = "Upload"
    OTHER = "Other"
    UNKNOWN = "Unknown"


def _text(value: str | None, what: str, limit: int = MAX_NAME_CHARS) -> None:
    if value is None:
        return
    if not value.strip():
        raise InvalidReferralError(f"{what} is empty")
    if len(value) > limit:
        raise InvalidReferralError(f"{what} is longer than {limit} characters")


def _when(value: int | None, what: str) -> None:
    if value is not None and value < 0:
        raise InvalidReferralError(f"{what} is before 1970")


@dataclass(frozen=True, slots=True)
class Email:
    """An e-mail address; ``verified`` whether the provider verified it (None: not said)."""

    address: str
    verified: bool | None = None

    def __post_init__(self) -> None:
        _text(self.address, "an e-mail address", 320)
        local, at, domain = self.address.rpartition("@")
        if not at or not local or "." not in domain or any(c.isspace() for c in self.address):
            raise InvalidReferralError("an e-mail address is not of the form name@domain")


@dataclass(frozen=True, slots=True)
class ContactPerson:
    """A named person of the provider (``reportingPerson``, ``contactPerson``)."""

    first_name: str | None = None
    last_name: str | None = None
    emails: tuple[Email, ...] = ()
    phones: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _text(self.first_name, "a first name")
        _text(self.last_name, "a last name")
        for phone in self.phones:
            _text(phone, "a phone number", 64)


@dataclass(frozen=True, slots=True)
class Reporter:
    """``reporter``: the provider. The API requires the reporting person's e-mail."""

    reporting_person: ContactPerson
    contact_person: ContactPerson | None = None
    company_template: str | None = None
    terms_of_service: str | None = field(default=None, repr=False)
    legal_url: str | None = None

    def __post_init__(self) -> None:
        if not self.reporting_person.emails:
            raise InvalidReferralError("the reporting person needs an e-mail address")
        _text(self.company_template, "the company template", MAX_TEXT_CHARS)
        _text(self.terms_of_service, "the terms of service", MAX_TEXT_CHARS)
        _text(self.legal_url, "the legal URL")


@dataclass(frozen=True, slots=True)
class IpCaptureEvent:
    """``ipCaptureEvent``: an address the provider saw, only where and as long as it retains
    addresses. ``at_ms`` epoch milliseconds (None: not known)."""

    ip: str
    event: CaptureEvent
    at_ms: int | None = None
    possible_proxy: bool | None = None
    port: int | None = None

    def __post_init__(self) -> None:
        try:
            ipaddress.ip_address(self.ip)
        except ValueError:
            raise InvalidReferralError("an IP capture event holds no IP address") from None
        if self.port is not None and not 0 < self.port < 65536:
            raise InvalidReferralError("an IP capture event's port is out of range")
        _when(self.at_ms, "an IP capture event")


@dataclass(frozen=True, slots=True)
class DeviceId:
    """``deviceId``: an identifier of a device of the user (for Tidings: the account's device
    number and identity-key fingerprint, ``id_type`` naming which)."""

    id_type: str
    id_value: str
    event: CaptureEvent | None = None
    at_ms: int | None = None

    def __post_init__(self) -> None:
        _text(self.id_type, "a device id's type", 64)
        _text(self.id_value, "a device id's value")
        _when(self.at_ms, "a device id")


@dataclass(frozen=True, slots=True)
class ReportedPerson:
    """``personOrUserReported``: the account the case is about, by what the platform knows
    (its stable account id, its username, display names). ``additional_info`` is free text."""

    esp_identifier: str
    esp_service: str | None = None
    screen_name: str | None = None
    display_names: tuple[str, ...] = ()
    profile_url: str | None = None
    ip_events: tuple[IpCaptureEvent, ...] = ()
    device_ids: tuple[DeviceId, ...] = ()
    additional_info: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        _text(self.esp_identifier, "the reported account id")
        _text(self.esp_service, "the service name")
        _text(self.screen_name, "the reported screen name")
        for name in self.display_names:
            _text(name, "a display name")
        _text(self.profile_url, "the profile URL")
        _text(self.additional_info, "the reported person's additional information", MAX_TEXT_CHARS)


@dataclass(frozen=True, slots=True)
class Victim:
    """``victim``, when known: the platform account (a child the conversation was with), and
    an age only if a person established it."""

    esp_identifier: str | None = None
    screen_name: str | None = None
    display_names: tuple[str, ...] = ()
    age: int | None = None
    additional_info: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        _text(self.esp_identifier, "the victim's account id")
        _text(self.screen_name, "the victim's screen name")
        for name in self.display_names:
            _text(name, "a display name")
        if self.age is not None and not 0 <= self.age < 18:
            raise InvalidReferralError("a victim's age must be 0-17")
        if self.esp_identifier is None and self.screen_name is None and self.age is None:
            raise InvalidReferralError("a victim needs an account id, a screen name or an age")
        _text(self.additional_info, "the victim's additional information", MAX_TEXT_CHARS)


@dataclass(frozen=True, slots=True)
class ChatIncident:
    """``internetDetails/chatImIncident``: the conversation on the platform. ``content`` is
    only what a reviewer chose to quote from the verified report (None: nothing quoted)."""

    chat_client: str
    chat_room_name: str | None = None
    content: str | None = field(default=None, repr=False)
    additional_info: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        _text(self.chat_client, "the chat client")
        _text(self.chat_room_name, "the chat room name")
        _text(self.content, "the chat content", MAX_TEXT_CHARS)
        _text(self.additional_info, "the chat's additional information", MAX_TEXT_CHARS)


@dataclass(frozen=True, slots=True)
class IncidentSummary:
    """``incidentSummary``. ``escalate_reason`` set: ``escalateToHighPriority`` (the API takes
    the reason as text, e.g. a child in imminent danger)."""

    incident_type: IncidentType
    incident_ms: int
    escalate_reason: str | None = None
    annotations: frozenset[ReportAnnotation] = frozenset()
    incident_description: str | None = None

    def __post_init__(self) -> None:
        _when(self.incident_ms, "the incident")
        _text(self.escalate_reason, "the escalation reason", MAX_TEXT_CHARS)
        _text(self.incident_description, "the incident time description", MAX_TEXT_CHARS)


@dataclass(frozen=True, slots=True)
class ReferralFile:
    """One file of the referral (a reported attachment's plaintext, held as evidence).

    ``viewed_by_provider`` has no default: a person states, per file, whether staff viewed
    the whole file (``fileViewedByEsp``). ``md5`` is the original binary hash
    (``originalFileHash hashType="MD5"``); ``pdq`` the perceptual hash, sent as
    ``details type="HASH"`` because it is not a binary hash of the file. ``exif`` name/value
    pairs are sent only when staff viewed them (``exif_viewed_by_provider``)."""

    file_key: str
    file_name: str
    viewed_by_provider: bool
    md5: bytes
    publicly_available: bool = False
    exif_viewed_by_provider: bool | None = None
    relevance: FileRelevance = FileRelevance.REPORTED
    annotations: frozenset[FileAnnotation] = frozenset()
    industry_classification: IndustryClassification | None = None
    pdq: bytes | None = None
    uploaded_ms: int | None = None
    exif: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    ip_event: IpCaptureEvent | None = None
    device_ids: tuple[DeviceId, ...] = ()
    additional_info: tuple[str, ...] = field(default=(), repr=False)

    def __post_init__(self) -> None:
        _text(self.file_key, "a file's key", 128)
        _text(self.file_name, "a file name")
        if any(c in self.file_name for c in '/\\\r\n"') or self.file_name in {".", ".."}:
            raise InvalidReferralError("a file name may not hold a path, quote or line break")
        if len(self.md5) != MD5_BYTES:
            raise InvalidReferralError("a file's MD5 is not 16 bytes")
        if self.pdq is not None and len(self.pdq) != PDQ_BYTES:
            raise InvalidReferralError("a file's PDQ hash is not 32 bytes")
        if self.relevance is not FileRelevance.REPORTED and (
            self.industry_classification is not None
            or FileAnnotation.POTENTIAL_MEME in self.annotations
        ):
            # The documentation: only "Reported" files take an industry classification or
            # the potential-meme tag.
            raise InvalidReferralError(
                "only a Reported file takes an industry classification or potentialMeme"
            )
        if self.exif and not self.exif_viewed_by_provider:
            raise InvalidReferralError("EXIF is sent only when staff viewed it")
        for name, value in self.exif:
            _text(name, "an EXIF name")
            _text(value, "an EXIF value", MAX_TEXT_CHARS)
        _when(self.uploaded_ms, "a file's upload")
        for text in self.additional_info:
            _text(text, "a file's additional information", MAX_TEXT_CHARS)


@dataclass(frozen=True, slots=True)
class Referral:
    """A whole referral: one CyberTipline report and its files.

    ``referral_id`` is ours (stable across retries); ``case_id`` the confirmed case it comes
    from; ``reviewed_by`` the staff member who confirmed it (human review is mandatory: an
    empty value is refused)."""

    referral_id: str
    case_id: str
    reviewed_by: str
    summary: IncidentSummary
    reporter: Reporter
    reported_person: ReportedPerson | None = None
    chat_incidents: tuple[ChatIncident, ...] = ()
    victims: tuple[Victim, ...] = ()
    files: tuple[ReferralFile, ...] = ()
    additional_info: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        _text(self.referral_id, "the referral id", 128)
        _text(self.case_id, "the case id", 128)
        _text(self.reviewed_by, "the reviewer")
        if len(self.files) > MAX_FILES:
            raise InvalidReferralError(f"a referral carries at most {MAX_FILES} files")
        keys = [f.file_key for f in self.files]
        if len(set(keys)) != len(keys):
            raise InvalidReferralError("two files of the referral share a key")
        _text(self.additional_info, "the referral's additional information", MAX_TEXT_CHARS)

    def file(self, file_key: str) -> ReferralFile:
        """The file with ``file_key`` (KeyError if the referral has none)."""
        for f in self.files:
            if f.file_key == file_key:
                return f
        raise KeyError(file_key)
