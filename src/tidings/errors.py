"""The typed errors every Tidings layer raises.

Every error has a stable, machine-readable ``code`` (used verbatim in HTTP error bodies and in
``--json`` CLI output) and a one-line human message. Messages never contain plaintext, key
material or evidence: they name the problem, not the data.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType


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


class VrfProofError(CryptoError):
    """A VRF proof or public key is malformed, or the proof does not verify for the input."""

    code = "invalid_vrf_proof"


class KtProofError(CryptoError):
    """A key-transparency proof (lookup, history, audit) does not verify against its root."""

    code = "invalid_kt_proof"


class DeviceListChainError(CryptoError):
    """A signed device list has no valid signature chain from the account's previous list.

    ``device_ids`` names the devices the chain does not vouch for.
    """

    code = "device_list_chain_broken"

    def __init__(self, message: str | None = None, device_ids: tuple[int, ...] = ()) -> None:
        super().__init__(message)
        self.device_ids = device_ids


class EpochForkError(CryptoError):
    """Two signed epoch heads disagree about one epoch, or a head does not extend its
    predecessor: the directory showed different histories."""

    code = "kt_epoch_fork"


class KtHeadRollbackError(CryptoError):
    """The directory served an epoch head older than one this client already verified."""

    code = "kt_head_rollback"


class KtKeyChangedError(CryptoError):
    """The directory's KT signing key or VRF key is not the one this client pinned."""

    code = "kt_key_changed"


class UnvouchedDeviceError(CryptoError):
    """A contact's device is not in the account's signed device list published in the key
    directory: nothing is encrypted to it. ``device_ids`` names it (them)."""

    code = "unvouched_device"

    def __init__(
        self, message: str | None = None, device_ids: tuple[int, ...] = (), account: str = ""
    ) -> None:
        super().__init__(message)
        self.device_ids = device_ids
        self.account = account


class WitnessQuorumError(CryptoError):
    """Fewer than the required number of trusted witnesses co-signed an epoch head."""

    code = "kt_witness_quorum"


class KtWitnessPolicyError(TidingsError):
    """A device's witness requirement is not distinct 32-byte Ed25519 keys (at most 32) with a
    minimum between 0 and their number."""

    code = "invalid_kt_witness_policy"


class ContextChainError(CryptoError):
    """A run of franked messages is not linked by their previous-commitment chain."""

    code = "broken_context_chain"


# --- private matching: threshold shares (tidings.crypto.threshold) -------------------------


class InvalidShareError(DecodeError):
    """A threshold share holds a value that is not a field element, or an x of zero."""

    code = "invalid_share"


class ShareRecoveryError(CryptoError):
    """The shares do not determine one window key: too few, a repeated x, or not on one
    polynomial of the threshold's degree (a synthetic or tampered share among them)."""

    code = "share_recovery_failed"


class ThresholdParameterError(CryptoError):
    """A threshold-sharing parameter (threshold, tag dimension, rate, count) is out of range."""

    code = "invalid_threshold_parameters"


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


# --- trust & safety (provider side) ---------------------------------------------------------


class SafetyError(TidingsError):
    """A trust & safety operation was refused."""

    code = "safety_error"


class SafetyInputError(SafetyError):
    """A trust & safety request is malformed or names something it may not (bad argument)."""

    code = "invalid_safety_input"


class InvalidPeriodError(SafetyInputError):
    """Not a reporting period: use 2026H2, 2026Q3, 2026-11, 2026 or 2026-07-01..2026-09-30."""

    code = "invalid_period"


class BankImportError(SafetyInputError):
    """A hash-bank file (import or removal) has a bad row; nothing from the file was applied.
    ``line`` is the 1-based line number of the first bad row (0: the file as a whole)."""

    code = "bank_file_invalid"

    def __init__(self, message: str | None = None, *, line: int = 0) -> None:
        text = message or self.__class__.__doc__ or self.code
        super().__init__(f"line {line}: {text}" if line else text)
        self.line = line


class NotFoundError(SafetyError):
    """The case, report, evidence, staff account or other record does not exist."""

    code = "not_found"


class ConflictError(SafetyError):
    """The record already exists or was changed concurrently; reload and retry."""

    code = "conflict"


class ReportRefusedError(SafetyError):
    """The report was refused; nothing about it was stored."""

    code = "report_refused"


class InvalidReportError(ReportRefusedError):
    """The report is malformed (no items, bad index, bad attachment reference, too large)."""

    code = "invalid_report"


class ReporterNotRecipientError(ReportRefusedError):
    """The reporting account and device are not the recipient named in a reported item's tag."""

    code = "reporter_not_recipient"


class ReportReplayError(ReportRefusedError):
    """This exact report was already received."""

    code = "report_replayed"


class MessageAlreadyReportedError(ReportReplayError):
    """The reporter has already reported this message."""

    code = "message_already_reported"


class AttachmentKeyMismatchError(AttachmentError):
    """The revealed attachment key is not the key in the franked message's attachment pointer."""

    code = "attachment_key_mismatch"


class AttachmentUnavailableError(AttachmentError):
    """The server no longer holds the reported attachment's ciphertext."""

    code = "attachment_unavailable"


class UnknownKeyIdError(CryptoError):
    """A server key id (franking or evidence key ring) is not in the key ring."""

    code = "unknown_key_id"


class EvidenceExpiredError(SafetyError):
    """The evidence is past its retention period and can no longer be opened."""

    code = "evidence_expired"


class AuthenticationError(SafetyError):
    """Staff sign-in failed: unknown account, wrong password or code, or invalid session."""

    code = "authentication_failed"


class LoginThrottledError(AuthenticationError):
    """Too many failed sign-ins; try again later."""

    code = "login_throttled"

    def __init__(self, message: str | None = None, *, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class SessionExpiredError(AuthenticationError):
    """The staff session has expired or was revoked; sign in again."""

    code = "session_expired"


class PermissionDeniedError(SafetyError):
    """The staff member's role does not allow this action."""

    code = "permission_denied"


class TwoPersonRuleError(PermissionDeniedError):
    """This grant needs the approval of a second, independent admin (not the requester, not
    the grantee, and not an account enrolled through a link either of them issued)."""

    code = "two_person_rule"


class EnrolmentTokenError(SafetyError):
    """This enrolment link is not valid: it was used, it expired, or a newer link replaced
    it. Ask an admin for a new link."""

    code = "enrolment_invalid"


class ChildSafetyPermissionError(PermissionDeniedError):
    """The action touches child-safety material and the staff member lacks that permission."""

    code = "child_safety_permission_required"


class CsrfError(SafetyError):
    """The form's security token is missing or does not belong to this session; reload the
    page and try again."""

    code = "csrf_failed"


class CaseLockedError(SafetyError):
    """The case is locked by another staff member, or the caller does not hold its lock."""

    code = "case_locked"


class InvalidCaseStateError(SafetyError):
    """The case (or appeal) is not in a state that allows this action."""

    code = "invalid_case_state"


class InvalidDecisionError(SafetyError):
    """A decision lacks its policy or reason, names an unknown policy, or has a bad period."""

    code = "invalid_decision"


class SameReviewerError(SafetyError):
    """This step must be taken by a different staff member than the one who made the decision."""

    code = "same_reviewer_not_allowed"


class AuditChainError(SafetyError):
    """The audit log's hash chain does not verify (an entry was edited, removed or reordered)."""

    code = "audit_chain_broken"


# --- messaging server -----------------------------------------------------------------------


class RequestError(TidingsError):
    """A request to the messaging server cannot be served as asked."""

    code = "bad_request"


class UnauthorizedError(RequestError):
    """The request carries no valid device credentials."""

    code = "unauthorized"


class ForbiddenError(RequestError):
    """The authenticated device may not do this (for example, act on another account)."""

    code = "forbidden"


class UsernameTakenError(RequestError):
    """The username is already registered (or reserved after a ban)."""

    code = "username_taken"


class UnknownAccountError(RequestError):
    """No account with that username exists."""

    code = "unknown_account"


class UnknownDeviceError(RequestError):
    """The account has no device with that id."""

    code = "unknown_device"


class UnknownAttachmentError(RequestError):
    """No attachment with that id (never uploaded, or expired and deleted)."""

    code = "unknown_attachment"


class LastDeviceError(RequestError):
    """The last device of an account cannot be removed; delete the account instead."""

    code = "last_device"


class ProvisioningCodeError(RequestError):
    """The provisioning code is unknown, already used or expired."""

    code = "invalid_provisioning_code"


class MismatchedDevicesError(RequestError):
    """The message list does not name exactly the recipient's current devices."""

    code = "mismatched_devices"

    def __init__(self, missing: list[int], extra: list[int]) -> None:
        super().__init__(f"device list mismatch: {len(missing)} missing, {len(extra)} extra")
        self.missing = missing
        self.extra = extra


class StaleDevicesError(RequestError):
    """Some devices re-registered: their registration ids are not the current ones."""

    code = "stale_devices"

    def __init__(self, stale: list[int]) -> None:
        super().__init__(f"{len(stale)} device(s) re-registered; fetch their keys again")
        self.stale = stale


class QueueFullError(RequestError):
    """A recipient device's queue is at its limit; try again later."""

    code = "queue_full"


class RateLimitedError(RequestError):
    """Too many requests of this kind; retry after the given number of seconds."""

    code = "rate_limited"

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(f"too many requests; retry after {retry_after_s} s")
        self.retry_after_s = retry_after_s


class AttachmentTooLargeError(OversizedError):
    """The attachment exceeds the server's size limit."""

    code = "attachment_too_large"


class AttachmentQuotaExceededError(RequestError):
    """The account's stored attachments would exceed its storage quota; wait until some expire."""

    code = "attachment_quota_exceeded"


class StorageUnavailableError(TidingsError):
    """The server could not store the request's data: the database commit of a send or an ack
    failed, or the attachment store (local disk or S3 object storage) cannot be reached or
    refused the operation. Nothing was stored; try again later."""

    code = "storage_unavailable"


# --- key transparency's publication (docs/key-transparency.md "Publication") ---------------


class UnknownEpochError(RequestError):
    """The key directory has published no such epoch (yet)."""

    code = "unknown_kt_epoch"


class KtDeviceListMismatchError(RequestError):
    """The signed device list does not name exactly the account's registered devices (ids and
    identity keys): fetch the account's devices, sign a list of them and submit it again."""

    code = "kt_device_list_mismatch"


class KtVersionConflictError(RequestError):
    """The account's device list already has this version (another device submitted one):
    fetch the latest list, sign its successor and submit again."""

    code = "kt_version_conflict"


class KtQueueFullError(RequestError):
    """The account already has the most device lists waiting for the next epoch; submit again
    once an epoch has published them."""

    code = "kt_queue_full"


class KtWitnessUnknownError(ForbiddenError):
    """The co-signature is by a key that is not one of this server's configured witnesses."""

    code = "kt_witness_unknown"


# --- enforcement on the messaging API (trust & safety decisions) -----------------------------


class AccountBannedError(ForbiddenError):
    """This account is banned; only its status and appeals remain available."""

    code = "account_banned"


class AccountSuspendedError(ForbiddenError):
    """This account is suspended; only its status and appeals remain available."""

    code = "account_suspended"


class AccountRestrictedError(ForbiddenError):
    """This account is restricted and cannot start new conversations."""

    code = "account_restricted"


# --- media (image hashing for known-image detection) ------------------------------------------


class ImageDecodeError(DecodeError):
    """The bytes are not an image in a supported format, or the image data is corrupt."""

    code = "image_undecodable"


class ImageTruncatedError(TruncatedError):
    """The image data ends before the image it describes is complete."""

    code = "image_truncated"


class ImageTooLargeError(OversizedError):
    """The image exceeds the hashing limit in bytes or in decoded pixels (a decompression bomb)."""

    code = "image_too_large"


class PdqHashFormatError(DecodeError):
    """A PDQ hash is not 256 bits (32 bytes, 64 hex digits) with a quality of 0-100."""

    code = "pdq_hash_malformed"


# --- private threshold matching (tidings.crypto.psi / voucher) -------------------------------


class DetectionListError(DecodeError):
    """A blinded detection list is malformed or its parameters are out of range."""

    code = "invalid_detection_list"


class DetectionListMismatchError(ProtocolError):
    """A voucher was built against another detection list (version or digest)."""

    code = "detection_list_mismatch"


class DetectionListRefusedError(ProtocolError):
    """A detection list or its published digest does not verify: the signature is bad, the
    signing key is not the one this device (or auditor) pinned, or the list's bytes do not
    have the published digest, version or threshold. The list is not used."""

    code = "detection_list_refused"


class MalformedVoucherError(DecodeError):
    """A matching voucher is not a well-formed encoding."""

    code = "malformed_voucher"


class VoucherTamperedError(CryptoError):
    """An opened voucher's share or inner layer does not authenticate or is inconsistent."""

    code = "voucher_tampered"


# --- detection on the server (tidings.safety.detection) -------------------------------------


class DetectionListMissingError(NotFoundError):
    """No detection list has been published yet (`tidings admin detection build-list`)."""

    code = "detection_list_missing"


class DetectionThresholdMismatchError(SafetyError):
    """The published detection list was built for another threshold than the configured
    ``detection_threshold``: rebuild it (`tidings admin detection build-list`)."""

    code = "detection_threshold_mismatch"


# --- lawful requests (tidings.safety.lawful) --------------------------------------------------


class LawfulRequestError(SafetyError):
    """A lawful request (a law-enforcement request for user data) was refused."""

    code = "lawful_request_error"


class InvalidLawfulRequestError(LawfulRequestError):
    """A lawful request's field is missing or out of range, or a scope names nothing the
    request may have (no category in the inventory its legal process reaches)."""

    code = "invalid_lawful_request"


class LawfulRequestStateError(LawfulRequestError):
    """The action is not allowed in the request's current state (the transition table)."""

    code = "invalid_lawful_request_state"


class LawfulVerificationError(LawfulRequestError):
    """The requester's one-time verification token is wrong, used or expired."""

    code = "lawful_verification_failed"


class LawfulConfigError(LawfulRequestError):
    """Lawful-request production is not configured (no package signing key)."""

    code = "invalid_lawful_config"


class MailDeliveryError(LawfulRequestError):
    """A message to a requester (the verification link) could not be handed to the mail
    relay or written to the mail outbox; nothing was recorded. The message names the relay,
    never the message."""

    code = "mail_delivery_failed"


class PackageVerificationError(LawfulRequestError):
    """A production package does not verify: a file, the manifest or its signature differs
    from what was signed, or the package is malformed."""

    code = "package_verification_failed"


# --- referrals to NCMEC's CyberTipline (tidings.safety.cybertip_*) ---------------------------


class ReferralError(SafetyError):
    """A referral to the clearinghouse (NCMEC's CyberTipline) was refused or failed."""

    code = "referral_error"


class ReferralConfigError(ReferralError):
    """The referral configuration is missing or invalid (URL, credentials, HTTPS, limits)."""

    code = "invalid_referral_config"


class InvalidReferralError(ReferralError):
    """The referral cannot be built: a required field is missing or a value is out of range
    (no reporter e-mail, a bad IP address or hash, text the XML format cannot carry)."""

    code = "invalid_referral"


class ReferralStateError(ReferralError):
    """The referral is not in a state that allows this step (already finished, retracted,
    or waiting for a person to resolve it)."""

    code = "invalid_referral_state"


class ReferralSubmitUncertainError(ReferralStateError):
    """A /submit reached the clearinghouse but its answer was lost: a report may have been
    opened. Nothing is sent again until a person resolves the referral."""

    code = "referral_submit_uncertain"


class ClearinghouseError(ReferralError):
    """The clearinghouse answered with an error code this client does not know.

    ``response_code`` is the documented ``responseCode`` (None when there was no answer),
    ``step`` the endpoint (``submit``, ``upload``, ...). Neither carries report content."""

    code = "clearinghouse_error"

    def __init__(
        self, message: str | None = None, *, step: str = "", response_code: int | None = None
    ) -> None:
        super().__init__(message)
        self.step = step
        self.response_code = response_code


class ClearinghouseUnavailableError(ClearinghouseError):
    """The clearinghouse could not be reached, timed out, or reported a server-side failure
    (responseCode 1000, 1100, 1110, 1111, 1300; HTTP 5xx). Safe steps are retried."""

    code = "clearinghouse_unavailable"


class ClearinghouseAuthError(ClearinghouseError):
    """The clearinghouse refused the credentials or this account's authorization
    (responseCode 2000, 3000, 3100, 3300; HTTP 401/403)."""

    code = "clearinghouse_auth_failed"


class ClearinghouseRejectedError(ClearinghouseError):
    """The clearinghouse rejected what was sent as invalid (responseCode 4000, 4100, 4110,
    4200): fix the referral; retrying the same bytes cannot succeed."""

    code = "clearinghouse_rejected"


class ClearinghouseUnknownReportError(ClearinghouseError):
    """The clearinghouse does not know the report or file (responseCode 1210, 5001, 5002): an
    unfinished report is deleted 24 hours after it was opened or 1 hour after its last change,
    whichever is later."""

    code = "clearinghouse_unknown_report"


class ClearinghouseReportClosedError(ClearinghouseError):
    """The report is already finished or retracted (responseCode 5101, 5102)."""

    code = "clearinghouse_report_closed"


class ClearinghouseResponseError(ClearinghouseError):
    """The clearinghouse's answer is not a well-formed response document (not XML, too large,
    a DOCTYPE or entity declaration, a missing or malformed field)."""

    code = "clearinghouse_bad_response"


# --- HTTP status: one table for every HTTP surface (messaging API and staff console) ---------

HTTP_STATUS: Mapping[type[TidingsError], int] = MappingProxyType(
    {
        OversizedError: 413,
        UnauthorizedError: 401,
        AuthenticationError: 401,
        ForbiddenError: 403,
        PermissionDeniedError: 403,
        CsrfError: 403,
        UnknownAccountError: 404,
        UnknownDeviceError: 404,
        UnknownAttachmentError: 404,
        UnknownEpochError: 404,
        KtDeviceListMismatchError: 409,
        KtVersionConflictError: 409,
        KtQueueFullError: 409,
        NotFoundError: 404,
        UsernameTakenError: 409,
        MismatchedDevicesError: 409,
        LastDeviceError: 409,
        ConflictError: 409,
        DetectionListMismatchError: 409,
        CaseLockedError: 409,
        SameReviewerError: 409,
        InvalidCaseStateError: 409,
        StaleDevicesError: 410,
        EnrolmentTokenError: 410,
        RateLimitedError: 429,
        QueueFullError: 507,
        AttachmentQuotaExceededError: 507,
        StorageUnavailableError: 503,
        ReferralConfigError: 503,
        ReferralStateError: 409,
        LawfulRequestStateError: 409,
        LawfulVerificationError: 403,
        LawfulConfigError: 503,
        MailDeliveryError: 503,
        ClearinghouseError: 502,
        ClearinghouseUnavailableError: 503,
        ClearinghouseReportClosedError: 409,
    }
)
"""The HTTP status of each error class that is not 400; a subclass not listed takes its
nearest listed ancestor's (so ``AccountBannedError`` is 403 like ``ForbiddenError``)."""


def http_status(kind: type[TidingsError]) -> int:
    """The HTTP status every Tidings HTTP surface answers errors of class ``kind`` with: the
    entry in `HTTP_STATUS` for the nearest class in its MRO, else 400 (bad input)."""
    for cls in kind.__mro__:
        status = HTTP_STATUS.get(cls)
        if status is not None:
            return status
    return 400
