"""The Tidings PQXDH handshake (Signal PQXDH revision 3, with Tidings' parameters).

Parameters (docs/protocol.md, "PQXDH"): curve X25519, hash SHA-256, KEM ML-KEM-768,
``info = "Tidings_PQXDH_X25519_SHA-256_ML-KEM-768_v1"``; identity keys are an Ed25519/X25519 pair
(no XEdDSA), ``Encode(IK)`` is the 65-byte `IdentityKey.encode()`.

Alice (initiator), with Bob's verified bundle::

    DH1 = X25519(IK_A.x25519, SPK_B)     DH2 = X25519(EK_A, IK_B.x25519)
    DH3 = X25519(EK_A, SPK_B)            DH4 = X25519(EK_A, OPK_B)   (only if a one-time prekey)
    (SS, CT) = ML-KEM-768.Encaps(PQPK_B)
    SK = HKDF-SHA256(salt = 32 zero bytes, IKM = 0xFF*32 || DH1 || DH2 || DH3 || [DH4] || SS,
                     info, 32 bytes)
    AD = Encode(IK_A) || Encode(IK_B)                                   (130 bytes)

Bob computes the same from the prekey message and his private keys. SK seeds the Double Ratchet
with Bob's signed prekey as his first ratchet key (Alice: ``init_alice(SK, SPK_B)``; Bob:
``init_bob(SK, (spk_private, spk_public))``), and AD is the ratchet's associated data.

Why the session layer must still do two things:

- *Identity*: a valid bundle only proves that *some* identity signed the prekeys. Whether it is
  the identity of the intended device (key transparency, pinned identity) is checked by passing
  ``expected_identity`` to `initiate` / ``expected_initiator`` to `respond`, or by the caller
  with the returned identities, before the session is used. AD carries both full identity
  encodings into every ratchet MAC, so a prekey message whose initiator identity was swapped
  derives a different SK (DH1 changes) *and* a different AD: its first ratchet message fails.
- *Confirmation*: `respond` cannot tell a genuine message from a forged or tampered one -- ML-KEM
  decapsulation never fails (implicit rejection: a wrong ciphertext yields an unrelated secret).
  The proof is the first ratchet message: only if it decrypts under (SK, AD) does the session
  layer keep the session and call ``DevicePrekeys.consume(result.consumption)``. `respond`
  itself never mutates the prekey state, so a forged prekey message cannot burn prekeys.

Replays: a prekey message that used one-time keys is refused after consumption
(`UnknownPrekeyError`). One that used only the signed and last-resort keys can be replayed to
`respond` and yields the same SK; as in the PQXDH spec (section 4.2), the session layer detects
that by the base key (``result.base_key``) of sessions it already holds.
"""

from __future__ import annotations

from dataclasses import dataclass

from tidings.crypto import primitives
from tidings.crypto.bundle import PrekeyBundle
from tidings.crypto.device_prekeys import DevicePrekeys, PrekeyConsumption
from tidings.crypto.identity import (
    IdentityKey,
    IdentityKeyPair,
    RandomSource,
    draw_random,
    random_source,
)
from tidings.errors import (
    DecodeError,
    InvalidKeyError,
    UnsupportedVersionError,
    UntrustedIdentityError,
)
from tidings.wire import codec, limits
from tidings.wire import tidings_pb2 as pb

PQXDH_INFO = b"Tidings_PQXDH_X25519_SHA-256_ML-KEM-768_v1"
"""HKDF info string of the handshake."""

PQXDH_KDF_PREFIX = b"\xff" * 32
"""``F``: 32 0xFF bytes before the DH outputs (domain-separates the curve25519 inputs)."""

PQXDH_SALT = bytes(32)
"""HKDF salt: 32 zero bytes (the hash output length)."""

SHARED_SECRET_LEN = 32
ASSOCIATED_DATA_LEN = 2 * codec.IDENTITY_KEY_LEN


def derive_shared_secret(
    dh1: bytes, dh2: bytes, dh3: bytes, dh4: bytes | None, kem_secret: bytes
) -> bytes:
    """``SK = HKDF-SHA256(0^32, 0xFF^32 || DH1 || DH2 || DH3 || [DH4] || SS, PQXDH_INFO, 32)``.

    Raises:
        InvalidKeyError: an input has the wrong length.
    """
    parts = [dh1, dh2, dh3] + ([] if dh4 is None else [dh4])
    if any(len(p) != primitives.X25519_KEY_LEN for p in parts):
        raise InvalidKeyError("a PQXDH DH output is not 32 bytes")
    if len(kem_secret) != primitives.MLKEM768_SHARED_SECRET_LEN:
        raise InvalidKeyError("a PQXDH KEM secret is not 32 bytes")
    ikm = PQXDH_KDF_PREFIX + b"".join(parts) + kem_secret
    return primitives.hkdf_sha256(ikm, salt=PQXDH_SALT, info=PQXDH_INFO, length=SHARED_SECRET_LEN)


def associated_data(initiator: IdentityKey, responder: IdentityKey) -> bytes:
    """``AD = Encode(IK_A) || Encode(IK_B)`` (130 bytes), initiator first."""
    return initiator.encode() + responder.encode()


@dataclass(frozen=True, slots=True, repr=False, eq=False)
class InitiatorResult:
    """What Alice's session layer needs after `initiate`.

    ``remote_ratchet_key`` is Bob's signed prekey, his first Double Ratchet public key. The
    ephemeral private key is not kept anywhere (forward secrecy); ``base_key`` is its public
    half, sent in every prekey message of the session until Bob answers.
    """

    shared_secret: bytes
    associated_data: bytes
    local_identity: IdentityKey
    remote_identity: IdentityKey
    base_key: bytes
    signed_prekey_id: int
    one_time_prekey_id: int | None
    kem_prekey_id: int
    kem_ciphertext: bytes
    remote_ratchet_key: bytes

    def prekey_message(
        self, *, registration_id: int, message: pb.RatchetMessage
    ) -> pb.PrekeyMessage:
        """The wire `PrekeyMessage` carrying ``message`` (the ratchet message encrypted under
        this handshake), from the initiator device with ``registration_id``."""
        out = pb.PrekeyMessage(
            version=limits.PROTOCOL_VERSION,
            identity_key=self.local_identity.encode(),
            registration_id=registration_id,
            base_key=self.base_key,
            signed_prekey_id=self.signed_prekey_id,
            kem_prekey_id=self.kem_prekey_id,
            kem_ciphertext=self.kem_ciphertext,
        )
        if self.one_time_prekey_id is not None:
            out.one_time_prekey_id = self.one_time_prekey_id
        out.message.CopyFrom(message)
        return out

    def __repr__(self) -> str:
        return (
            f"InitiatorResult(remote={self.remote_identity!r}, "
            f"signed_prekey_id={self.signed_prekey_id}, "
            f"one_time_prekey_id={self.one_time_prekey_id}, kem_prekey_id={self.kem_prekey_id})"
        )


@dataclass(frozen=True, slots=True, repr=False, eq=False)
class ResponderResult:
    """What Bob's session layer needs after `respond`.

    ``signed_prekey_private`` / ``signed_prekey_public`` are Bob's first ratchet key pair
    (``init_bob``). ``consumption`` goes to `DevicePrekeys.consume` once the first ratchet
    message has decrypted -- never before.
    """

    shared_secret: bytes
    associated_data: bytes
    initiator_identity: IdentityKey
    initiator_registration_id: int
    base_key: bytes
    signed_prekey_id: int
    signed_prekey_private: bytes
    signed_prekey_public: bytes
    consumption: PrekeyConsumption

    def __repr__(self) -> str:
        return (
            f"ResponderResult(initiator={self.initiator_identity!r}, "
            f"signed_prekey_id={self.signed_prekey_id}, consumption={self.consumption!r})"
        )


def initiate(
    identity: IdentityKeyPair,
    bundle: PrekeyBundle,
    *,
    expected_identity: IdentityKey | None = None,
    rng: RandomSource | None = None,
) -> InitiatorResult:
    """Run Alice's side of PQXDH against Bob's ``bundle``.

    Order of checks: the expected identity (if given), then both bundle signatures; only then
    is the ephemeral key drawn and any DH or encapsulation computed. ``rng`` supplies the 32-byte
    ephemeral private key (tests); ML-KEM encapsulation randomness always comes from the OS.

    Raises:
        UntrustedIdentityError: ``expected_identity`` is given and differs from the bundle's.
        InvalidSignatureError: the signed prekey's or the KEM prekey's signature fails.
        InvalidKeyError: a bundle key is degenerate (low-order X25519 point, malformed ML-KEM
            key).
    """
    if expected_identity is not None and expected_identity != bundle.identity_key:
        raise UntrustedIdentityError("the bundle's identity key is not the expected one")
    bundle.verify()  # before any DH: a forged prekey must not be used at all

    remote = bundle.identity_key
    spk = bundle.signed_prekey.public
    ephemeral = draw_random(random_source(rng), primitives.X25519_KEY_LEN)
    base_key = primitives.x25519_public(ephemeral)

    dh1 = identity.dh(spk)
    dh2 = primitives.x25519(ephemeral, remote.agreement_public)
    dh3 = primitives.x25519(ephemeral, spk)
    one_time = bundle.one_time_prekey
    dh4 = None if one_time is None else primitives.x25519(ephemeral, one_time.public)
    kem_secret, kem_ciphertext = primitives.mlkem768_encapsulate(bundle.kem_prekey.public)

    return InitiatorResult(
        shared_secret=derive_shared_secret(dh1, dh2, dh3, dh4, kem_secret),
        associated_data=associated_data(identity.public, remote),
        local_identity=identity.public,
        remote_identity=remote,
        base_key=base_key,
        signed_prekey_id=bundle.signed_prekey.id,
        one_time_prekey_id=None if one_time is None else one_time.id,
        kem_prekey_id=bundle.kem_prekey.id,
        kem_ciphertext=kem_ciphertext,
        remote_ratchet_key=spk,
    )


def respond(
    identity: IdentityKeyPair,
    prekeys: DevicePrekeys,
    message: pb.PrekeyMessage,
    *,
    expected_initiator: IdentityKey | None = None,
) -> ResponderResult:
    """Run Bob's side of PQXDH for a received ``message`` (from `codec.decode`).

    Never mutates ``prekeys``. Every lookup happens before any DH or decapsulation, so a
    message naming unknown prekeys costs nothing. The inner ratchet message is not touched.

    Raises:
        UnsupportedVersionError: the message version is not `limits.PROTOCOL_VERSION`.
        DecodeError: the initiator identity, base key or KEM ciphertext is malformed.
        InvalidKeyError: ``prekeys`` were not made by ``identity``, or a DH is degenerate.
        UntrustedIdentityError: ``expected_initiator`` is given and differs from the message's.
        UnknownPrekeyError: a named signed, one-time or KEM prekey is not held (never issued,
            already consumed, or retired past its grace period).
    """
    if message.version != limits.PROTOCOL_VERSION:
        raise UnsupportedVersionError("prekey message version is not supported")
    if identity.public != prekeys.identity_key:
        raise InvalidKeyError("these prekeys belong to another identity")
    initiator = IdentityKey.decode(bytes(message.identity_key))
    base_key = bytes(message.base_key)
    if len(base_key) != primitives.X25519_KEY_LEN:
        raise DecodeError("base key must be 32 bytes")
    kem_ciphertext = bytes(message.kem_ciphertext)
    if len(kem_ciphertext) != primitives.MLKEM768_CIPHERTEXT_LEN:
        raise DecodeError("ML-KEM ciphertext must be 1088 bytes")
    if expected_initiator is not None and expected_initiator != initiator:
        raise UntrustedIdentityError("the initiator's identity key is not the expected one")

    signed = prekeys.find_signed_prekey(message.signed_prekey_id)
    one_time = (
        prekeys.find_one_time_prekey(message.one_time_prekey_id)
        if message.HasField("one_time_prekey_id")
        else None
    )
    kem = prekeys.find_kem_prekey(message.kem_prekey_id)

    dh1 = primitives.x25519(signed.private, initiator.agreement_public)
    dh2 = identity.dh(base_key)
    dh3 = primitives.x25519(signed.private, base_key)
    dh4 = None if one_time is None else primitives.x25519(one_time.private, base_key)
    kem_secret = primitives.mlkem768_decapsulate(kem.seed, kem_ciphertext)

    return ResponderResult(
        shared_secret=derive_shared_secret(dh1, dh2, dh3, dh4, kem_secret),
        associated_data=associated_data(initiator, identity.public),
        initiator_identity=initiator,
        initiator_registration_id=message.registration_id,
        base_key=base_key,
        signed_prekey_id=signed.id,
        signed_prekey_private=signed.private,
        signed_prekey_public=signed.public,
        consumption=PrekeyConsumption(
            one_time_prekey_id=None if one_time is None else one_time.id,
            kem_prekey_id=None if kem.last_resort else kem.id,
        ),
    )
