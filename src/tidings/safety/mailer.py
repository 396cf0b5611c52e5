"""E-mail to lawful requesters (issue 11, docs/operations.md "Lawful requests"): the one-time
verification link sent to the officer's official address, and the settings that say how.

Two mailers behind one `Mailer` protocol:

- `DirectoryMailer` (the default): each message is written as an RFC 5322 ``.eml`` file into
  ``<data_dir>/mail-outbox`` (directory 0700, files 0600, written atomically), for an
  operator's own mail relay to pick up, or to read on a test machine. Nothing leaves the node.
- `SmtpMailer`: SMTP from ``smtp_url`` — ``smtp://host[:25]`` (STARTTLS required: the link
  is a credential), ``smtps://host[:465]`` (TLS from the first byte); ``user:password@`` for
  AUTH. The server's certificate is checked against the system's roots. ``smtp+insecure://``
  (no TLS) exists only for a relay on the loopback interface, and is refused for any other
  host.

The settings come from the ``[lawful]`` table of the server's file (``domains``, ``from``,
``portal_url``, ``smtp_url``) and the environment (``TIDINGS_LAWFUL_DOMAINS``,
``TIDINGS_LAWFUL_FROM``, ``TIDINGS_LAWFUL_PORTAL_URL``, ``TIDINGS_SMTP_URL``, which win):
`load_lawful_settings`. A message body holds a token: `OutgoingMail`'s ``repr`` leaves it
out, and no error carries it.
"""

from __future__ import annotations

import os
import secrets
import smtplib
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlsplit

from tidings.errors import LawfulConfigError, MailDeliveryError
from tidings.safety.outbound import is_loopback_host

__all__ = [
    "DEFAULT_FROM",
    "DEFAULT_PORTAL_URL",
    "MAIL_OUTBOX_DIR",
    "DirectoryMailer",
    "LawfulSettings",
    "Mailer",
    "OutgoingMail",
    "SmtpMailer",
    "load_lawful_settings",
]

MAIL_OUTBOX_DIR = "mail-outbox"
"""The `DirectoryMailer`'s directory under the data directory."""
SMTP_TIMEOUT_S = 15.0
DEFAULT_FROM = "lawful-requests@localhost"
DEFAULT_PORTAL_URL = "http://127.0.0.1:8080/lawful-portal"
ENV = {
    "domains": "TIDINGS_LAWFUL_DOMAINS",
    "from": "TIDINGS_LAWFUL_FROM",
    "portal_url": "TIDINGS_LAWFUL_PORTAL_URL",
    "smtp_url": "TIDINGS_SMTP_URL",
}
"""Each ``[lawful]`` key and the variable that overrides it."""


@dataclass(frozen=True, slots=True)
class OutgoingMail:
    """One plain-text message. ``body`` may hold a token: it is never in the ``repr``."""

    sender: str
    to: str
    subject: str
    body: str

    def __repr__(self) -> str:
        return f"OutgoingMail(to={self.to!r}, subject={self.subject!r})"

    def message(self) -> EmailMessage:
        """The message as RFC 5322 (Date and Message-ID set)."""
        message = EmailMessage()
        message["From"] = self.sender
        message["To"] = self.to
        message["Subject"] = self.subject
        message["Date"] = formatdate(usegmt=True)
        message["Message-ID"] = make_msgid(domain=self.sender.rpartition("@")[2] or None)
        message.set_content(self.body)
        return message


class Mailer(Protocol):
    def send(self, mail: OutgoingMail) -> None:
        """Hand ``mail`` on. Raises `MailDeliveryError` (it was not sent)."""
        ...


class DirectoryMailer:
    """Writes each message as ``<directory>/<time>-<random>.eml`` (module docstring)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def __repr__(self) -> str:
        return f"DirectoryMailer({self.directory})"

    def send(self, mail: OutgoingMail) -> None:
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            name = f"{time.time_ns() // 1_000_000}-{secrets.token_hex(6)}.eml"
            final = self.directory / name
            partial = self.directory / f".{name}.part"
            # O_EXCL and 0600 from the start: the token is never readable by others, even
            # for a moment; the rename makes the file appear whole or not at all.
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(mail.message().as_bytes())
            os.replace(partial, final)
        except OSError as exc:
            raise MailDeliveryError(
                f"cannot write the message into the mail outbox ({type(exc).__name__})"
            ) from None


@dataclass(frozen=True, slots=True)
class _SmtpTarget:
    scheme: str
    host: str
    port: int
    username: str | None
    password: str | None


def _smtp_target(url: str) -> _SmtpTarget:
    """Raises `LawfulConfigError` for a URL that is not one of the module's forms."""
    parts = urlsplit(url)
    ports = {"smtp": 25, "smtps": 465, "smtp+insecure": 25}
    if parts.scheme not in ports or not parts.hostname or parts.path not in ("", "/"):
        raise LawfulConfigError("smtp_url is smtp://host[:port], smtps://host[:port] or, on "
                                "the loopback interface only, smtp+insecure://")
    if parts.scheme == "smtp+insecure" and not is_loopback_host(parts.hostname):
        raise LawfulConfigError("smtp+insecure:// is allowed for a loopback relay only")
    try:
        port = parts.port or ports[parts.scheme]
    except ValueError:
        raise LawfulConfigError("smtp_url has an invalid port") from None
    return _SmtpTarget(
        parts.scheme, parts.hostname, port,
        unquote(parts.username) if parts.username else None,
        unquote(parts.password) if parts.password else None,
    )


class SmtpMailer:
    """Sends each message over SMTP (module docstring). Raises `LawfulConfigError` at
    construction for a bad URL."""

    def __init__(self, url: str, *, timeout: float = SMTP_TIMEOUT_S,
                 context: ssl.SSLContext | None = None) -> None:
        self._target = _smtp_target(url)
        self._timeout = timeout
        self._context = context or ssl.create_default_context()

    def __repr__(self) -> str:
        t = self._target
        return f"SmtpMailer({t.scheme}://{t.host}:{t.port})"

    def send(self, mail: OutgoingMail) -> None:
        t = self._target
        try:
            client: smtplib.SMTP
            if t.scheme == "smtps":
                client = smtplib.SMTP_SSL(t.host, t.port, timeout=self._timeout,
                                          context=self._context)
            else:
                client = smtplib.SMTP(t.host, t.port, timeout=self._timeout)
            with client:
                if t.scheme == "smtp":
                    client.starttls(context=self._context)
                if t.username is not None:
                    client.login(t.username, t.password or "")
                client.send_message(mail.message())
        except (smtplib.SMTPException, OSError, ssl.SSLError) as exc:
            # The class only: an SMTP reply may quote the message, which holds the token.
            raise MailDeliveryError(
                f"the mail relay {t.host}:{t.port} did not take the message "
                f"({type(exc).__name__})"
            ) from None


@dataclass(frozen=True, slots=True)
class LawfulSettings:
    """How the node talks to requesters: the allow-list of official e-mail domains
    (lower-case), the sender address, the portal's public URL (no trailing slash; the
    verification link points into it) and the mailer."""

    allowed_domains: frozenset[str]
    sender: str
    portal_url: str
    mailer: Mailer


def _domains(value: object) -> frozenset[str]:
    items = value if isinstance(value, list | tuple) else str(value).split(",")
    return frozenset(str(d).strip().lower() for d in items if str(d).strip())


def load_lawful_settings(
    table: Mapping[str, object] | None, data_dir: Path, env: Mapping[str, str] | None = None
) -> LawfulSettings:
    """The ``[lawful]`` table and the environment as `LawfulSettings` (module docstring):
    `SmtpMailer` when ``smtp_url`` is set, else `DirectoryMailer` in
    ``<data_dir>/mail-outbox``.

    Raises: `LawfulConfigError` for an unknown key, a sender that is not an address, a
    portal URL that is not http(s), or an invalid ``smtp_url``."""
    values = dict(table or {})
    unknown = set(values) - set(ENV)
    if unknown:
        raise LawfulConfigError(f"[lawful] takes only: {', '.join(sorted(ENV))}")
    environ = os.environ if env is None else env
    for key, variable in ENV.items():
        if environ.get(variable):
            values[key] = environ[variable]
    sender = str(values.get("from") or DEFAULT_FROM)
    if "@" not in sender or any(c in sender for c in "\r\n"):
        raise LawfulConfigError("the lawful sender ('from') is an e-mail address")
    portal = str(values.get("portal_url") or DEFAULT_PORTAL_URL).rstrip("/")
    if urlsplit(portal).scheme not in ("http", "https") or not urlsplit(portal).hostname:
        raise LawfulConfigError("portal_url is the portal's public http(s) URL")
    smtp_url = str(values.get("smtp_url") or "")
    mailer: Mailer = (
        SmtpMailer(smtp_url) if smtp_url else DirectoryMailer(data_dir / MAIL_OUTBOX_DIR)
    )
    return LawfulSettings(_domains(values.get("domains", "")), sender, portal, mailer)
