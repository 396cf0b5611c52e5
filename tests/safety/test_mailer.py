"""Verification mail to lawful requesters: written to the outbox directory (0600, whole or not
at all) or sent to a real SMTP server (aiosmtpd on the loopback interface) with STARTTLS and
AUTH; a relay that does not offer TLS, refuses or is absent gives `MailDeliveryError` without
the token; the ``[lawful]`` settings and their variables; the link mailed at intake verifies,
a failed mail records nothing, and a re-issued token replaces the old one."""

from __future__ import annotations

import datetime
import email
import email.policy
import ipaddress
import json
import ssl
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.safety.test_lawful import World, _audit, _portal_fields
from tests.safety.test_lawful import world as lawful_world  # noqa: F401 (the fixture)
from tests.support.live import free_port
from tidings.errors import LawfulConfigError, LawfulVerificationError, MailDeliveryError
from tidings.safety.lawful_model import RequestState
from tidings.safety.mailer import (
    DirectoryMailer,
    OutgoingMail,
    SmtpMailer,
    load_lawful_settings,
)
from tidings.server.config import ServerConfig

TOKEN = "tok-SECRET-never-in-errors"
MAIL = OutgoingMail("lawful@tidings.example", "dscully@fbi.gov", "Confirm lawful request lr_1",
                    f"open https://portal.example/verify/lr_1?token={TOKEN}\n")


@pytest.fixture
def world(lawful_world: World) -> World:  # noqa: F811 (the imported fixture)
    """test_lawful's world (memory, SQLite, PostgreSQL)."""
    return lawful_world


def test_the_directory_mailer_writes_a_private_whole_message(tmp_path: Path) -> None:
    outbox = tmp_path / "mail-outbox"
    DirectoryMailer(outbox).send(MAIL)
    (path,) = outbox.iterdir()
    assert path.suffix == ".eml"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(outbox.stat().st_mode) == 0o700
    message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert message["To"] == "dscully@fbi.gov" and message["Message-ID"]
    assert TOKEN in message.get_content()  # type: ignore[attr-defined]
    assert TOKEN not in repr(MAIL)


def test_an_unwritable_outbox_is_a_typed_error(tmp_path: Path) -> None:
    blocked = tmp_path / "mail-outbox"
    blocked.write_text("a file where the directory should be")
    with pytest.raises(MailDeliveryError) as refused:
        DirectoryMailer(blocked).send(MAIL)
    assert TOKEN not in refused.value.message


# --- a real SMTP server ----------------------------------------------------------------------


def _tls(tmp_path: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(the server's context, a client context trusting only its self-signed certificate)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_pem = tmp_path / "relay.pem"
    key_pem = tmp_path / "relay.key"
    cert_pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_pem.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert_pem, key_pem)
    client = ssl.create_default_context(cafile=str(cert_pem))
    return server, client


class Inbox:
    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], bytes]] = []

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:
        content = envelope.content if isinstance(envelope.content, bytes) else b""
        self.messages.append((str(envelope.mail_from), list(envelope.rcpt_tos), content))
        return "250 OK"


def _authenticator(server: Any, session: Session, envelope: Envelope, mechanism: str,
                   data: Any) -> AuthResult:
    ok = isinstance(data, LoginPassword) and (data.login, data.password) == (b"relay", b"p@ss")
    return AuthResult(success=ok)


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[tuple[Inbox, int, ssl.SSLContext]]:
    server_tls, client_tls = _tls(tmp_path)
    inbox = Inbox()
    port = free_port()
    controller = Controller(
        inbox, hostname="127.0.0.1", port=port, tls_context=server_tls, require_starttls=True,
        authenticator=_authenticator, auth_required=True, auth_require_tls=True,
    )
    controller.start()
    try:
        yield inbox, port, client_tls
    finally:
        controller.stop()


def test_smtp_with_starttls_and_auth_delivers(relay: tuple[Inbox, int, ssl.SSLContext]) -> None:
    inbox, port, client_tls = relay
    SmtpMailer(f"smtp://relay:p%40ss@127.0.0.1:{port}", context=client_tls).send(MAIL)
    ((sender, to, content),) = inbox.messages
    assert (sender, to) == ("lawful@tidings.example", ["dscully@fbi.gov"])
    assert TOKEN.encode() in content


def test_a_relay_that_refuses_or_an_untrusted_certificate_is_a_typed_error(
    relay: tuple[Inbox, int, ssl.SSLContext],
) -> None:
    inbox, port, client_tls = relay
    for mailer in (
        SmtpMailer(f"smtp://relay:wrong@127.0.0.1:{port}", context=client_tls),  # AUTH refused
        SmtpMailer(f"smtp://relay:p%40ss@127.0.0.1:{port}"),  # self-signed: not trusted
        SmtpMailer(f"smtp://127.0.0.1:{free_port()}", timeout=2),  # nobody listening
    ):
        with pytest.raises(MailDeliveryError) as refused:
            mailer.send(MAIL)
        assert TOKEN not in refused.value.message and "p@ss" not in refused.value.message
    assert inbox.messages == []


def test_a_relay_without_tls_is_refused_unless_on_loopback_and_said_so(tmp_path: Path) -> None:
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        with pytest.raises(MailDeliveryError):  # smtp:// requires STARTTLS
            SmtpMailer(f"smtp://127.0.0.1:{port}").send(MAIL)
        assert inbox.messages == []
        SmtpMailer(f"smtp+insecure://127.0.0.1:{port}").send(MAIL)
        assert len(inbox.messages) == 1
    finally:
        controller.stop()
    with pytest.raises(LawfulConfigError, match="loopback"):
        SmtpMailer("smtp+insecure://mail.example.com")
    for bad in ("http://mail.example.com", "smtp://", "smtp://h:notaport", "smtp://h/path"):
        with pytest.raises(LawfulConfigError):
            SmtpMailer(bad)
    assert "p@ss" not in repr(SmtpMailer("smtps://u:p%40ss@mail.example.com"))


# --- settings --------------------------------------------------------------------------------


def test_lawful_settings_from_the_table_and_the_environment(tmp_path: Path) -> None:
    table = {"domains": ["FBI.gov", "nca.gov.uk"], "from": "legal@tidings.example",
             "portal_url": "https://tidings.example/lawful-portal/"}
    settings = load_lawful_settings(table, tmp_path, env={})
    assert settings.allowed_domains == {"fbi.gov", "nca.gov.uk"}
    assert settings.portal_url == "https://tidings.example/lawful-portal"
    assert isinstance(settings.mailer, DirectoryMailer)
    assert settings.mailer.directory == tmp_path / "mail-outbox"
    env = {"TIDINGS_LAWFUL_DOMAINS": "police.example", "TIDINGS_SMTP_URL": "smtps://m.example",
           "TIDINGS_LAWFUL_FROM": "ops@tidings.example"}
    overridden = load_lawful_settings(table, tmp_path, env=env)
    assert overridden.allowed_domains == {"police.example"}
    assert isinstance(overridden.mailer, SmtpMailer) and overridden.sender == "ops@tidings.example"
    for bad in ({"unknown": 1}, {"from": "not an address"}, {"portal_url": "ftp://x"},
                {"smtp_url": "gopher://x"}):
        with pytest.raises(LawfulConfigError):
            load_lawful_settings(bad, tmp_path, env={})


def test_the_server_file_takes_a_lawful_table(tmp_path: Path) -> None:
    path = tmp_path / "tidings.toml"
    path.write_text('[server]\nport = 9000\n[lawful]\ndomains = ["fbi.gov"]\n'
                    'smtp_url = "smtps://u:secret@m.example"\n')
    config = ServerConfig.load(path, env={})
    assert config.lawful["domains"] == ["fbi.gov"] and config.port == 9000
    assert "secret" not in repr(config)
    path.write_text("[lawful]\nfrom = 1\n[referrals]\n")
    assert ServerConfig.load(path, env={}).lawful == {"from": 1}
    path.write_text('lawful = "x"\n')
    with pytest.raises(Exception, match="must be a table"):
        ServerConfig.load(path, env={})


# --- the service mails the link --------------------------------------------------------------


class Recorder:
    def __init__(self, fail: bool = False) -> None:
        self.sent: list[OutgoingMail] = []
        self.fail = fail

    def send(self, mail: OutgoingMail) -> None:
        if self.fail:
            raise MailDeliveryError("the mail relay m.example:465 did not take the message")
        self.sent.append(mail)


def _link_token(mail: OutgoingMail, portal: str) -> tuple[str, str]:
    (line,) = [ln for ln in mail.body.splitlines() if ln.startswith(portal)]
    parts = urlsplit(line)
    return parts.path.rsplit("/", 1)[1], parse_qs(parts.query)["token"][0]


def test_the_link_mailed_at_intake_verifies(world: World) -> None:
    lawful = world.safety.lawful
    mailer = Recorder()
    lawful.mailer, lawful.portal_url = mailer, "https://tidings.example/lawful-portal"
    intake = lawful.submit(**_portal_fields(world))
    (mail,) = mailer.sent
    assert mail.to == "dscully@fbi.gov" and intake.request.request_id in mail.subject
    request_id, token = _link_token(mail, lawful.portal_url)
    assert (request_id, token) == (intake.request.request_id, intake.token)
    assert lawful.confirm(request_id, token).request.state is RequestState.VERIFIED


def test_a_mail_that_fails_records_nothing(world: World) -> None:
    lawful = world.safety.lawful
    lawful.mailer = Recorder(fail=True)
    with pytest.raises(MailDeliveryError):
        lawful.submit(**_portal_fields(world))
    with pytest.raises(MailDeliveryError):
        world.receive(kind="preservation", scope=[])
    assert lawful.repository.all() == [] and _audit(world) == []
    assert world.safety.holds.active_for("alice") == []


def test_a_reissued_token_replaces_the_old_one(world: World) -> None:
    lawful = world.safety.lawful
    mailer = Recorder()
    lawful.mailer = mailer
    first = world.receive()
    rid = first.request.request_id
    again = lawful.resend_verification(world.legal, rid)
    assert len(mailer.sent) == 2 and again.token != first.token
    assert [e["to"] for e in json.loads(again.request.outbox)] == ["dscully@fbi.gov"] * 2
    with pytest.raises(LawfulVerificationError):
        lawful.verify(rid, first.token)
    assert lawful.verify(rid, again.token).state is RequestState.VERIFIED
    assert [e.action for e in _audit(world)][-2:] == ["lawful.resend", "lawful.transition"]
