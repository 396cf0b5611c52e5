"""The typed errors every Tidings layer raises.

Every error has a stable, machine-readable ``code`` (used verbatim in HTTP error bodies and in
``--json`` CLI output) and a one-line human message. Messages never contain plaintext, key
material or evidence: they name the problem, not the data.
"""

from __future__ import annotations


class TidingsError(Exception):
    """Base class of every error Tidings raises on purpose."""

    code: str = "tidings_error"

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.__class__.__doc__ or self.code)

    @property
    def message(self) -> str:
        return str(self.args[0])


# --- decoding -------------------------------------------------------------------------------


class DecodeError(TidingsError):
    """The input is not a well-formed encoding of the expected structure."""

    code = "malformed"


class TruncatedError(DecodeError):
    """The input ends before the structure it encodes is complete."""

    code = "truncated"


class OversizedError(DecodeError):
    """The input is larger than the limit for its kind."""

    code = "oversized"


class UnsupportedVersionError(DecodeError):
    """The input carries a protocol version this implementation does not speak."""

    code = "unsupported_version"


# --- cryptography ---------------------------------------------------------------------------


class CryptoError(TidingsError):
    """A cryptographic check failed."""

    code = "crypto_error"


class InvalidKeyError(CryptoError):
    """A key has the wrong length or type, or yields a degenerate (all-zero) shared secret."""

    code = "invalid_key"


class InvalidSignatureError(CryptoError):
    """A signature does not verify under the claimed key."""

    code = "invalid_signature"


class DecryptionError(CryptoError):
    """A ciphertext failed authentication or could not be decrypted."""

    code = "decryption_failed"


class CommitmentMismatchError(CryptoError):
    """A franking commitment does not open to the content it is paired with."""

    code = "commitment_mismatch"


class InvalidFrankingTagError(CryptoError):
    """A server franking tag does not verify for the claimed message and participants."""

    code = "invalid_franking_tag"


class ContextChainError(CryptoError):
    """A run of franked messages is not linked by their previous-commitment chain."""

    code = "broken_context_chain"


# --- protocol state -------------------------------------------------------------------------


class ProtocolError(TidingsError):
    """A message is well formed but not acceptable in the current protocol state."""

    code = "protocol_error"


class DuplicateMessageError(ProtocolError):
    """The message was already received (replay or duplicate delivery)."""

    code = "duplicate_message"


class TooManySkippedMessagesError(ProtocolError):
    """The message is further ahead of the chain than the skipped-key limit allows."""

    code = "too_many_skipped_messages"


class OutOfWindowError(ProtocolError):
    """The message is too old: its key is outside the kept out-of-order window."""

    code = "out_of_window"


class UnknownPrekeyError(ProtocolError):
    """A handshake names a prekey this device does not hold (never issued, or already used)."""

    code = "unknown_prekey"


class NoSessionError(ProtocolError):
    """There is no usable session with the remote device."""

    code = "no_session"


class UnknownSenderKeyError(ProtocolError):
    """A group message uses a sender key this device has not been given."""

    code = "unknown_sender_key"


class AttachmentError(CryptoError):
    """An attachment ciphertext does not match its digest, or does not open under its key."""

    code = "attachment_integrity"


class UntrustedIdentityError(ProtocolError):
    """A remote identity key is not the one expected for that device (changed or substituted)."""

    code = "untrusted_identity"


class ChainExhaustedError(ProtocolError):
    """The sending chain has used every message number a ratchet header can carry."""

    code = "chain_exhausted"
