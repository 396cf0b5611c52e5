"""1:1 sessions: the PQXDH handshake and the Double Ratchet combined, with franking binding,
versioned serialization, and the per-remote-device bookkeeping of Sesame-style multi-device.

`Session` is one ratchet with one remote device. Until the initiator has heard back, each of its
messages is a `PrekeyMessage` repeating the handshake, so the responder can set the session up
from whichever message arrives first. Every ratchet message is encrypted with associated data
``AD ‖ commitment``: the handshake's AD (both identity encodings) followed by the 32-byte
franking commitment of the plaintext, so a ciphertext cannot be re-paired with another
commitment (PROTOCOL.md, Franking).

`SessionRecord` holds every session with one remote device: the current one, used to encrypt,
and up to `MAX_ARCHIVED_SESSIONS` archived ones that may still decrypt messages in flight. A
device that re-registers (new identity key or registration id) gets a new session and its old
ones are archived and never used to encrypt again. Receiving on an archived session of the
*same* registration promotes it back (this is how two devices that initiated to each other at
the same moment converge on one session); one of an older registration is never promoted.

Every operation is failure-atomic: if it raises, the session, the record and the prekeys are
exactly as they were.
"""

from __future__ import annotations

from dataclasses import dataclass

from tidings.crypto import pqxdh
from tidings.crypto.bundle import PrekeyBundle
from tidings.crypto.device_prekeys import DevicePrekeys
from tidings.crypto.identity import IdentityKey, IdentityKeyPair, RandomSource
from tidings.crypto.primitives import MLKEM768_CIPHERTEXT_LEN, X25519_KEY_LEN
from tidings.crypto.ratchet import DoubleRatchet, Header
from tidings.errors import (
    DecodeError,
    DuplicateMessageError,
    NoSessionError,
    TidingsError,
    UnsupportedVersionError,
)
from tidings.wire import binary, codec, limits
from tidings.wire import tidings_pb2 as pb

SESSION_FORMAT = 1
"""Version byte of the `Session.to_bytes` layout."""

SESSION_RECORD_FORMAT = 1
"""Version byte of the `SessionRecord.to_bytes` layout."""

MAX_ARCHIVED_SESSIONS = 40
"""Archived sessions kept per remote device (as libsignal); the oldest is dropped first."""

MAX_RATCHET_STATE_BYTES = 256 * 1024
"""Upper bound on one serialized ratchet (2,000 skipped keys of 37 bytes plus chains)."""

ROLE_INITIATOR = 0
ROLE_RESPONDER = 1

PREKEY = pb.Envelope.PREKEY
RATCHET = pb.Envelope.RATCHET

_COMMITMENT_LEN = codec.COMMITMENT_LEN


def _ratchet_ad(session_ad: bytes, commitment: bytes) -> bytes:
    if len(commitment) != _COMMITMENT_LEN:
        raise DecodeError(f"commitment must be {_COMMITMENT_LEN} bytes")
    return session_ad + commitment


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    """An encrypted message for one remote device: the Envelope ``type`` and its ``body``."""

    type: pb.Envelope.Type.ValueType
    body: bytes


@dataclass(frozen=True, slots=True, repr=False)
class _PendingPrekey:
    """The handshake fields an initiator repeats until the responder answers."""

    signed_prekey_id: int
    one_time_prekey_id: int | None
    kem_prekey_id: int
    kem_ciphertext: bytes
    local_registration_id: int

    def __repr__(self) -> str:
        return f"_PendingPrekey(signed_prekey_id={self.signed_prekey_id})"


class Session:
    """One Double Ratchet session with one remote device. Create with `initiate` or `accept`."""

    __slots__ = (
        "_ad",
        "_base_key",
        "_local_identity",
        "_pending",
        "_ratchet",
        "_remote_identity",
        "_remote_registration_id",
        "_role",
    )

    def __init__(
        self,
        *,
        ratchet: DoubleRatchet,
        role: int,
        local_identity: IdentityKey,
        remote_identity: IdentityKey,
        remote_registration_id: int,
        base_key: bytes,
        pending: _PendingPrekey | None,
    ) -> None:
        self._ratchet = ratchet
        self._role = role
        self._local_identity = local_identity
        self._remote_identity = remote_identity
        self._remote_registration_id = remote_registration_id
        self._base_key = base_key
        self._pending = pending
        initiator, responder = (
            (local_identity, remote_identity)
            if role == ROLE_INITIATOR
            else (remote_identity, local_identity)
        )
        self._ad = pqxdh.associated_data(initiator, responder)

    # -- creation ---------------------------------------------------------------------------

    @classmethod
    def initiate(
        cls,
        identity: IdentityKeyPair,
        bundle: PrekeyBundle,
        *,
        local_registration_id: int,
        expected_identity: IdentityKey | None = None,
        rng: RandomSource | None = None,
    ) -> Session:
        """Start a session with the device that published ``bundle``.

        Raises:
            UntrustedIdentityError: ``expected_identity`` is given and the bundle's differs.
            InvalidSignatureError: a prekey signature in the bundle fails (before any DH).
            InvalidKeyError: a bundle key is degenerate.
        """
        result = pqxdh.initiate(identity, bundle, expected_identity=expected_identity, rng=rng)
        ratchet = DoubleRatchet.init_alice(
            result.shared_secret, result.remote_ratchet_key, rng=rng
        )
        return cls(
            ratchet=ratchet,
            role=ROLE_INITIATOR,
            local_identity=identity.public,
            remote_identity=result.remote_identity,
            remote_registration_id=bundle.registration_id,
            base_key=result.base_key,
            pending=_PendingPrekey(
                signed_prekey_id=result.signed_prekey_id,
                one_time_prekey_id=result.one_time_prekey_id,
                kem_prekey_id=result.kem_prekey_id,
                kem_ciphertext=result.kem_ciphertext,
                local_registration_id=local_registration_id,
            ),
        )

    @classmethod
    def accept(
        cls,
        identity: IdentityKeyPair,
        prekeys: DevicePrekeys,
        message: pb.PrekeyMessage,
        commitment: bytes,
        *,
        expected_initiator: IdentityKey | None = None,
        rng: RandomSource | None = None,
    ) -> tuple[Session, bytes]:
        """Set up the responder's session from a checked ``message`` and decrypt its payload.

        The one-time prekeys the message used are consumed from ``prekeys`` only once the
        payload has decrypted, so a forged or tampered prekey message burns nothing.

        Raises:
            UnknownPrekeyError: the message names a prekey not held (replay after consumption).
            UntrustedIdentityError: ``expected_initiator`` is given and differs.
            DecryptionError: the payload does not authenticate (forgery, tampered KEM
                ciphertext, or a commitment that is not the one the sender bound).
            DecodeError / InvalidKeyError: malformed fields.
        """
        result = pqxdh.respond(identity, prekeys, message, expected_initiator=expected_initiator)
        ratchet = DoubleRatchet.init_bob(
            result.shared_secret, result.signed_prekey_private, rng=rng
        )
        inner = message.message
        plaintext = ratchet.decrypt(
            Header.decode(inner.header),
            inner.ciphertext,
            _ratchet_ad(result.associated_data, commitment),
        )
        prekeys.consume(result.consumption)
        session = cls(
            ratchet=ratchet,
            role=ROLE_RESPONDER,
            local_identity=identity.public,
            remote_identity=result.initiator_identity,
            remote_registration_id=result.initiator_registration_id,
            base_key=result.base_key,
            pending=None,
        )
        return session, plaintext

    # -- use --------------------------------------------------------------------------------

    @property
    def remote_identity(self) -> IdentityKey:
        return self._remote_identity

    @property
    def remote_registration_id(self) -> int:
        return self._remote_registration_id

    @property
    def base_key(self) -> bytes:
        """The initiator's handshake ephemeral public key: identifies the handshake."""
        return self._base_key

    @property
    def awaiting_reply(self) -> bool:
        """True while this (initiator) session still wraps its messages in prekey messages."""
        return self._pending is not None

    def encrypt(self, plaintext: bytes, commitment: bytes) -> OutgoingMessage:
        """Encrypt a `FrankedContent` encoding bound to its 32-byte franking ``commitment``.

        Raises:
            DecodeError: ``commitment`` is not 32 bytes.
            ChainExhaustedError: the sending chain has no message numbers left.
        """
        header, ciphertext = self._ratchet.encrypt(plaintext, _ratchet_ad(self._ad, commitment))
        inner = pb.RatchetMessage(
            version=limits.PROTOCOL_VERSION, header=header.encode(), ciphertext=ciphertext
        )
        pending = self._pending
        if pending is None:
            return OutgoingMessage(RATCHET, codec.encode(inner))
        outer = pb.PrekeyMessage(
            version=limits.PROTOCOL_VERSION,
            identity_key=self._local_identity.encode(),
            registration_id=pending.local_registration_id,
            base_key=self._base_key,
            signed_prekey_id=pending.signed_prekey_id,
            kem_prekey_id=pending.kem_prekey_id,
            kem_ciphertext=pending.kem_ciphertext,
            message=inner,
        )
        if pending.one_time_prekey_id is not None:
            outer.one_time_prekey_id = pending.one_time_prekey_id
        return OutgoingMessage(PREKEY, codec.encode(outer))

    def decrypt(self, message: pb.RatchetMessage, commitment: bytes) -> bytes:
        """Decrypt a checked ratchet message (from `codec.decode` or a prekey message).

        Raises:
            DecryptionError: the message does not authenticate under this session.
            DuplicateMessageError: the message was already decrypted.
            TooManySkippedMessagesError: the message is too far ahead.
            DecodeError: malformed header or commitment.
        """
        plaintext = self._ratchet.decrypt(
            Header.decode(message.header), message.ciphertext, _ratchet_ad(self._ad, commitment)
        )
        if self._role == ROLE_INITIATOR:
            # Any authenticated message from the responder proves it holds the session.
            self._pending = None
        return plaintext

    # -- storage ----------------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """Versioned serialization (layout in docs/protocol.md, Sessions). Contains keys:
        store it encrypted at rest."""
        out = [
            binary.u8(SESSION_FORMAT),
            binary.u8(self._role),
            self._local_identity.encode(),
            self._remote_identity.encode(),
            binary.u32(self._remote_registration_id),
            self._base_key,
            binary.var32(self._ratchet.to_bytes()),
        ]
        pending = self._pending
        if pending is None:
            out.append(binary.u8(0))
        else:
            out += [
                binary.u8(1),
                binary.u32(pending.signed_prekey_id),
                binary.u8(pending.one_time_prekey_id is not None),
                binary.u32(pending.one_time_prekey_id or 0),
                binary.u32(pending.kem_prekey_id),
                pending.kem_ciphertext,
                binary.u32(pending.local_registration_id),
            ]
        return b"".join(out)

    @classmethod
    def from_bytes(cls, data: bytes, *, rng: RandomSource | None = None) -> Session:
        """Inverse of `to_bytes`.

        Raises:
            UnsupportedVersionError: unknown format byte.
            TruncatedError / DecodeError / InvalidKeyError: malformed input.
        """
        reader = binary.Reader(data, "session state")
        session = cls._read(reader, rng)
        reader.finish()
        return session

    @classmethod
    def _read(cls, reader: binary.Reader, rng: RandomSource | None) -> Session:
        if (fmt := reader.u8()) != SESSION_FORMAT:
            raise UnsupportedVersionError(f"session state format {fmt} is not supported")
        role = reader.u8()
        if role not in (ROLE_INITIATOR, ROLE_RESPONDER):
            raise DecodeError("session state has an unknown role")
        local = IdentityKey.decode(reader.take(codec.IDENTITY_KEY_LEN))
        remote = IdentityKey.decode(reader.take(codec.IDENTITY_KEY_LEN))
        registration_id = reader.u32()
        base_key = reader.take(X25519_KEY_LEN)
        ratchet = DoubleRatchet.from_bytes(reader.var32(MAX_RATCHET_STATE_BYTES), rng=rng)
        pending = None
        if reader.flag():
            if role != ROLE_INITIATOR:
                raise DecodeError("a responder session cannot await a reply")
            signed_id = reader.u32()
            has_one_time = reader.flag()
            one_time_id = reader.u32()
            pending = _PendingPrekey(
                signed_prekey_id=signed_id,
                one_time_prekey_id=one_time_id if has_one_time else None,
                kem_prekey_id=reader.u32(),
                kem_ciphertext=reader.take(MLKEM768_CIPHERTEXT_LEN),
                local_registration_id=reader.u32(),
            )
        return cls(
            ratchet=ratchet,
            role=role,
            local_identity=local,
            remote_identity=remote,
            remote_registration_id=registration_id,
            base_key=base_key,
            pending=pending,
        )

    def __repr__(self) -> str:
        role = "initiator" if self._role == ROLE_INITIATOR else "responder"
        return (
            f"Session(role={role}, remote={self._remote_identity!r}, "
            f"registration_id={self._remote_registration_id}, "
            f"awaiting_reply={self.awaiting_reply})"
        )


@dataclass(frozen=True, slots=True, repr=False)
class Decrypted:
    """The result of `SessionRecord.decrypt`.

    ``new_session`` is True when the message set up a new session (first contact, a
    re-registered device, or a simultaneous initiation); ``identity_changed`` is True when that
    new session's remote identity key differs from the previous current session's — the client
    must then show the safety-number change and, if the contact was verified, stop trusting it.
    """

    plaintext: bytes
    remote_identity: IdentityKey
    new_session: bool
    identity_changed: bool

    def __repr__(self) -> str:
        return (
            f"Decrypted(remote={self.remote_identity!r}, new_session={self.new_session}, "
            f"identity_changed={self.identity_changed})"
        )


class SessionRecord:
    """Every session with one remote device: the current one and the archived ones."""

    __slots__ = ("_archived", "_current")

    def __init__(self, current: Session | None = None, archived: list[Session] | None = None):
        self._current = current
        self._archived: list[Session] = list(archived or [])  # most recent first

    @property
    def current(self) -> Session | None:
        return self._current

    @property
    def archived(self) -> tuple[Session, ...]:
        return tuple(self._archived)

    def needs_new_session(self, bundle: PrekeyBundle) -> bool:
        """True if ``bundle`` is from a device this record has no current session with: none
        yet, or the device re-registered (other identity key or registration id)."""
        current = self._current
        return (
            current is None
            or current.remote_identity != bundle.identity_key
            or current.remote_registration_id != bundle.registration_id
        )

    def promote(self, session: Session) -> None:
        """Make ``session`` current, archiving the one it replaces (the oldest archived session
        beyond `MAX_ARCHIVED_SESSIONS` is dropped). A sender starts a session with
        ``record.promote(Session.initiate(...))``, so the record changes only once the
        handshake has succeeded."""
        self._archived = [s for s in self._archived if s is not session]
        if self._current is not None and self._current is not session:
            self._archived.insert(0, self._current)
        self._current = session
        del self._archived[MAX_ARCHIVED_SESSIONS:]

    def encrypt(self, plaintext: bytes, commitment: bytes) -> OutgoingMessage:
        """Encrypt with the current session.

        Raises:
            NoSessionError: there is no current session (`promote` a `Session.initiate`d
                from a fresh bundle).
        """
        if self._current is None:
            raise NoSessionError("no current session with this device")
        return self._current.encrypt(plaintext, commitment)

    def decrypt(
        self,
        envelope_type: int,
        body: bytes,
        commitment: bytes,
        *,
        identity: IdentityKeyPair,
        prekeys: DevicePrekeys,
        expected_identity: IdentityKey | None = None,
        rng: RandomSource | None = None,
    ) -> Decrypted:
        """Decrypt an envelope body from this remote device.

        A prekey message for a handshake this record already holds (same base key) is decrypted
        with that session; any other prekey message sets up a new current session. A ratchet
        message is tried on the current session, then on the archived ones.

        Raises:
            DecodeError: ``body`` is malformed or ``envelope_type`` is not PREKEY/RATCHET.
            NoSessionError: a ratchet message and no session at all.
            DecryptionError: no session decrypts it (the error of the current session).
            DuplicateMessageError, TooManySkippedMessagesError, UnknownPrekeyError,
            UntrustedIdentityError: as the underlying session operations.
        """
        if envelope_type == PREKEY:
            return self._decrypt_prekey(
                codec.decode(pb.PrekeyMessage, body),
                commitment,
                identity=identity,
                prekeys=prekeys,
                expected_identity=expected_identity,
                rng=rng,
            )
        if envelope_type != RATCHET:
            raise DecodeError("envelope type is not a 1:1 session message")
        message = codec.decode(pb.RatchetMessage, body)
        candidates = [s for s in (self._current, *self._archived) if s is not None]
        if not candidates:
            raise NoSessionError("no session with this device")
        first_error: TidingsError | None = None
        for session in candidates:
            try:
                plaintext = session.decrypt(message, commitment)
            except DuplicateMessageError:
                raise
            except TidingsError as exc:
                first_error = first_error or exc
                continue
            if session is not self._current and self._same_registration(session):
                self.promote(session)
            return Decrypted(plaintext, session.remote_identity, False, False)
        assert first_error is not None
        raise first_error

    def _decrypt_prekey(
        self,
        message: pb.PrekeyMessage,
        commitment: bytes,
        *,
        identity: IdentityKeyPair,
        prekeys: DevicePrekeys,
        expected_identity: IdentityKey | None,
        rng: RandomSource | None,
    ) -> Decrypted:
        base_key = bytes(message.base_key)
        for session in (self._current, *self._archived):
            if session is not None and session.base_key == base_key:
                # A repeat of a handshake we already accepted: its one-time prekeys are gone,
                # so it can only be decrypted by the session it created.
                plaintext = session.decrypt(message.message, commitment)
                return Decrypted(plaintext, session.remote_identity, False, False)
        session, plaintext = Session.accept(
            identity, prekeys, message, commitment, expected_initiator=expected_identity, rng=rng
        )
        previous = self._current
        changed = previous is not None and previous.remote_identity != session.remote_identity
        self.promote(session)
        return Decrypted(plaintext, session.remote_identity, True, changed)

    def _same_registration(self, session: Session) -> bool:
        current = self._current
        return current is None or (
            current.remote_identity == session.remote_identity
            and current.remote_registration_id == session.remote_registration_id
        )

    def to_bytes(self) -> bytes:
        """Versioned serialization of the whole record. Contains keys: store encrypted."""
        out = [binary.u8(SESSION_RECORD_FORMAT), binary.u8(self._current is not None)]
        if self._current is not None:
            out.append(self._current.to_bytes())
        out.append(binary.u16(len(self._archived)))
        out += [s.to_bytes() for s in self._archived]
        return b"".join(out)

    @classmethod
    def from_bytes(cls, data: bytes, *, rng: RandomSource | None = None) -> SessionRecord:
        """Inverse of `to_bytes`. Raises the typed errors of `Session.from_bytes`."""
        reader = binary.Reader(data, "session record")
        if (fmt := reader.u8()) != SESSION_RECORD_FORMAT:
            raise UnsupportedVersionError(f"session record format {fmt} is not supported")
        current = Session._read(reader, rng) if reader.flag() else None
        count = reader.u16()
        if count > MAX_ARCHIVED_SESSIONS:
            raise DecodeError("session record has too many archived sessions")
        archived = [Session._read(reader, rng) for _ in range(count)]
        reader.finish()
        return cls(current, archived)

    def __repr__(self) -> str:
        return f"SessionRecord(current={self._current!r}, archived={len(self._archived)})"
