"""Detection on the server (issue 10, docs/detection.md "On the server"): the blinded list it
publishes, the vouchers it takes in, threshold recovery, and the detection cases it opens.

Flow:

1. `DetectionService.build_list` (``tidings admin detection build-list``): the PDQ entries the
   hash banks allow on devices (`tidings.safety.banks.BankService.device_list`: two sources
   in two jurisdictions) → their `tidings.crypto.psi.list_keys` → a `BlindedList` under the PSI
   secret with the configured threshold → its bytes in the attachment store (local disk or
   S3, so every node serves the same list) under an id derived from its digest, and a
   `ListRecord` row signed with the list-signing key (Ed25519 over
   `tidings.wire.detection.list_statement`). Audited (the operator).
2. `accept_voucher` (``POST /v1/detection/vouchers``): the voucher's structure is checked
   (typed errors), then its raw bytes are stored durably and the call returns — the same
   answer, after the same work, whether or not the voucher would open. Nothing of it is
   audited (an audit entry per voucher would be the per-account count the threshold hides).
3. `process_pending` (a background task on every node, `tidings.app`): claims pending
   vouchers, tries to open each (`VoucherOpener.open`), and in one transaction deletes the
   voucher and stores its `OpenedRecord` — or nothing, if it did not open. A voucher claimed
   by a node that crashed is taken again once its claim lapses: accepted means processed.
4. `evaluate_windows`: a window with at least t opened records is handed to
   `recover_inner`; each recovered inner payload (`DetectionInnerPayload`) names one
   attachment, which is fetched, decrypted (`tidings.crypto.attachment`), hashed by the server
   (`tidings.media.pdq.dihedral_hashes`) and checked in the clear against the device list
   (the device-eligible entries of the node's `tidings.safety.bank_match.BankMatcher`, the
   index reported attachments are matched with too; PDQ distance ≤ 31). Only a confirmed
   image goes on: it is sealed in the `EvidenceVault` (child-safety evidence, kept past
   attachment expiry, opened only with an audit entry) and joins the subject's open detection
   case in the child-safety queue (`CaseService.attach_detection`) with its bank, entry,
   distance and sources. A false candidate (recovered, but farther than 31 bits in the clear)
   is recorded as such, audited, and never opens a case.

Everything here is synchronous (the async callers use worker threads), time comes from the
injected clock and ids from an injectable source.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from tidings.clock import DAY_MS, now_ms
from tidings.crypto import attachment
from tidings.crypto.primitives import ed25519_public, ed25519_sign
from tidings.crypto.psi import (
    DEFAULT_PSI_PARAMETERS,
    BlindedList,
    PsiParameters,
    list_keys,
)
from tidings.crypto.threshold import FIELD_ELEMENT_LEN, ShareEnvelope
from tidings.crypto.voucher import OpenedVoucher, VoucherOpener, recover_inner
from tidings.errors import (
    ConflictError,
    DecodeError,
    DetectionListMissingError,
    DetectionThresholdMismatchError,
    InvalidKeyError,
    OversizedError,
    StorageUnavailableError,
    TidingsError,
)
from tidings.media.pdq import dihedral_hashes
from tidings.safety.audit import AuditAction, AuditLog
from tidings.safety.bank_match import BankMatcher, ListedHash, bank_hash_source
from tidings.safety.cases import CaseService
from tidings.safety.detection_model import (
    DetectionMatch,
    DetectionRepository,
    ListRecord,
    OpenedRecord,
    Outcome,
    PendingVoucher,
    WindowKey,
)
from tidings.safety.evidence import EvidenceVault
from tidings.safety.keyfile import load_detection_secret, load_detection_signing_key
from tidings.safety.reports import AttachmentFetcher
from tidings.storage.blobs import ATTACHMENT_ID_PATTERN, AttachmentStore
from tidings.wire.base64url import b64e
from tidings.wire.detection import NO_MESSAGE_ID, DetectionInnerPayload, list_statement
from tidings.wire.voucher import MAX_VOUCHER_BYTES, VoucherWire

__all__ = [
    "CLAIM_LEASE_MS",
    "DETECTION_IMAGE_KIND",
    "PROCESS_BATCH",
    "SYNTHETIC_BOUND_FACTOR",
    "WINDOW_ID_LEN",
    "WINDOW_RETENTION_DAYS",
    "DetectionKeys",
    "DetectionService",
    "DeviceListSource",
    "ListBlobs",
    "ListedHash",
    "RoundResult",
    "StoreListBlobs",
]

log = logging.getLogger("tidings.safety.detection")

WINDOW_ID_LEN = 16
"""The device's window id (random, renewed with every window): vouchers of one window only
combine with each other."""
PROCESS_BATCH = 64
"""Vouchers one processing round claims (and windows it evaluates)."""
CLAIM_LEASE_MS = 120_000
"""How long a claim on a pending voucher holds: a node that crashed mid-round leaves its
vouchers to be taken again after this."""
SYNTHETIC_BOUND_FACTOR = 2
"""A window with more than 2·(t + D) opened vouchers and nothing recovered is not evaluated
again (docs/detection.md "Server cost": an honest window with fewer than t real shares passes
that with probability below 1e-28 at the defaults)."""
WINDOW_RETENTION_DAYS = 180
"""A window that was never recovered and got no opened voucher for this long is deleted
(`purge_idle_windows`): its matches, if any, are forgotten rather than kept for a lifetime of
innocent use. Detection then counts only matches less than this far apart in time."""
DETECTION_IMAGE_KIND = "detection_image"
"""The evidence kind of a matched image (its ``report_id`` is the match id)."""
_LISTS_CACHED = 4


# --- keys -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DetectionKeys:
    """The PSI secret (a clamped scalar: it opens vouchers) and the Ed25519 seed that signs
    published lists. Never in a repr, a log or the database."""

    psi_secret: bytes = field(repr=False)
    signing_seed: bytes = field(repr=False)

    @property
    def signing_public(self) -> bytes:
        return ed25519_public(self.signing_seed)

    @classmethod
    def load(cls, secret_path: Path, signing_path: Path) -> DetectionKeys:
        """The keys in the two files, each created on first use (mode 0600, atomically:
        `tidings.safety.keyfile`): a fresh clamped PSI secret, a fresh signing seed.

        Raises:
            InvalidKeyError: a file is not a key of the right length (or the PSI secret is
                not clamped); the message names the path, never the bytes.
            OSError: a file cannot be created or read.
        """
        return cls(load_detection_secret(secret_path), load_detection_signing_key(signing_path))


# --- collaborators --------------------------------------------------------------------------


class DeviceListSource(Protocol):
    """What detection needs of the hash banks (`tidings.safety.banks.BankService` through
    `banks_device_list`): the device-eligible PDQ entries (`ListedHash`, from
    `tidings.safety.bank_match`) and the list version."""

    def listed_hashes(self) -> list[ListedHash]: ...

    def list_version(self) -> int: ...


class ListBlobs(Protocol):
    """Where list bytes are kept, blocking (the service runs in worker threads)."""

    def write(self, blob_id: str, data: bytes) -> None: ...

    def read(self, blob_id: str) -> bytes | None: ...


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


class StoreListBlobs:
    """`ListBlobs` over the server's `AttachmentStore` (local directory or the S3 bucket every
    node shares). A list's blob id is its digest in base64url (43 characters, the attachment
    id shape), so it never collides with an attachment (those are random).

    Writing runs the store's coroutine on a loop of its own: call it from a thread without a
    running event loop (the CLI; a worker thread).
    """

    def __init__(self, store: AttachmentStore) -> None:
        self._store = store

    def write(self, blob_id: str, data: bytes) -> None:
        asyncio.run(self._store.put(blob_id, _once(data), declared=len(data), limit=len(data)))

    def read(self, blob_id: str) -> bytes | None:
        return self._store.read(blob_id)


# --- results --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RoundResult:
    """What one processing round did (for metrics and tests; never per account)."""

    processed: int = 0
    windows: int = 0
    matches: int = 0
    false_candidates: int = 0


def _default_id() -> str:
    return os.urandom(16).hex()


class DetectionService:
    """Lists, voucher intake, processing and detection cases (module docstring).

    ``threshold`` is the configured t; ``params`` the PSI parameters lists are built with (its
    threshold replaced by t). ``fetcher`` reads attachment ciphertext; ``blobs`` keeps list
    bytes. ``matcher`` confirms recovered images in the clear (its device-eligible PDQ
    entries only): the node's shared `BankMatcher` (`SafetyService.bank_matcher`); None, one
    of its own over ``banks``.
    """

    def __init__(
        self,
        *,
        repository: DetectionRepository,
        banks: DeviceListSource,
        vault: EvidenceVault,
        cases: CaseService,
        audit: AuditLog,
        blobs: ListBlobs,
        fetcher: AttachmentFetcher,
        keys: DetectionKeys,
        threshold: int,
        params: PsiParameters = DEFAULT_PSI_PARAMETERS,
        clock: Callable[[], int] = now_ms,
        id_source: Callable[[], str] = _default_id,
        matcher: BankMatcher | None = None,
    ) -> None:
        self.repository = repository
        self.banks = banks
        self.vault = vault
        self.cases = cases
        self.audit = audit
        self.blobs = blobs
        self.fetcher = fetcher
        self.keys = keys
        self.threshold = threshold
        self.params = replace(params, threshold=threshold)
        self.clock = clock
        self._ids = id_source
        self._lists: dict[int, tuple[bytes, BlindedList]] = {}
        self._openers: dict[int, VoucherOpener] = {}
        self._round_lock = threading.Lock()
        self._cache_lock = threading.Lock()
        self.matcher = matcher or BankMatcher(banks)

    def __repr__(self) -> str:
        return f"DetectionService(threshold={self.threshold})"

    # --- lists --------------------------------------------------------------------------------

    def build_list(
        self, *, actor: str, progress: Callable[[str], None] | None = None
    ) -> ListRecord:
        """Build, store, sign and publish a new list version from the current device list.

        Raises:
            StorageUnavailableError: the attachment store failed (nothing is published).
            ConflictError: another build published the same version first (run it again).
            DetectionListError: the list is larger than a device may hold.
        """
        say = progress or (lambda _: None)
        listed = self.banks.listed_hashes()
        bank_version = self.banks.list_version()
        say(f"{len(listed)} device-eligible PDQ hashes (bank list version {bank_version})")
        keys = [k for entry in listed for k in list_keys(entry.pdq, self.params)]
        current = self.repository.current_list()
        version = 1 if current is None else current.version + 1
        say(f"blinding {len(keys)} keys into list version {version}")
        blinded = BlindedList.build(keys, self.keys.psi_secret, self.params, version)
        data = blinded.encode()
        digest = blinded.digest()
        blob_id = b64e(digest)
        say(f"storing {len(data)} bytes")
        self.blobs.write(blob_id, data)
        created = self.clock()
        record = ListRecord(
            version=version,
            digest=digest,
            signature=ed25519_sign(
                self.keys.signing_seed,
                list_statement(
                    version=version, digest=digest, threshold=self.threshold, created_ms=created
                ),
            ),
            signing_public=self.keys.signing_public,
            threshold=self.threshold,
            bank_list_version=bank_version,
            created_ms=created,
            entry_count=len(listed),
            key_count=len(set(keys)),
            size=len(data),
            blob_id=blob_id,
        )
        self.repository.add_list(record)
        self.audit.append(
            actor=actor,
            action=AuditAction.DETECTION_LIST_BUILT,
            target=f"detection_list:{version}",
            now_ms=created,
            details={
                "digest": digest.hex(),
                "entries": len(listed),
                "threshold": self.threshold,
                "bank_list_version": bank_version,
            },
        )
        return record

    def current_list(self) -> ListRecord | None:
        return self.repository.current_list()

    def check_threshold(self) -> None:
        """Refuse to serve a list built for another threshold than the configured one.

        Raises:
            DetectionThresholdMismatchError: it was (the message names both values and the
                command that rebuilds the list).
        """
        current = self.repository.current_list()
        if current is not None and current.threshold != self.threshold:
            raise DetectionThresholdMismatchError(
                f"the published detection list (version {current.version}) was built for "
                f"threshold {current.threshold} but detection_threshold is {self.threshold}: "
                "run `tidings admin detection build-list`"
            )

    def _load(self, record: ListRecord) -> tuple[bytes, BlindedList]:
        """The bytes and the decoded list of a published version (the last `_LISTS_CACHED`
        kept).

        Raises:
            StorageUnavailableError: its bytes are gone from the store, or do not have its
                digest.
        """
        cached = self._lists.get(record.version)
        if cached is not None:
            return cached
        data = self.blobs.read(record.blob_id)
        if data is None:
            raise StorageUnavailableError("the detection list's bytes are missing from the store")
        blinded = BlindedList.decode(data)
        if blinded.digest() != record.digest:
            raise StorageUnavailableError("the stored detection list does not match its digest")
        with self._cache_lock:  # request threads and the processing task share the cache
            self._lists[record.version] = (data, blinded)
            while len(self._lists) > _LISTS_CACHED:
                del self._lists[min(self._lists)]
        return data, blinded

    def list_bytes(self) -> tuple[ListRecord, bytes]:
        """The current list and its bytes (``GET /v1/detection/list``).

        Raises:
            DetectionListMissingError: no list is published.
            StorageUnavailableError: as `_load`.
        """
        record = self.repository.current_list()
        if record is None:
            raise DetectionListMissingError()
        return record, self._load(record)[0]

    def _opener_for(self, voucher: bytes) -> VoucherOpener | None:
        """The opener of the list a voucher was built against; None when the voucher is not
        one, or names no published list (it can never open: it is dropped).

        Raises:
            StorageUnavailableError: the list's bytes cannot be read, or this node's PSI
                secret is not the one the list was built with (a node of a cluster reading
                other key files than the others): the voucher waits, and the log says why.
        """
        try:
            version = VoucherWire.decode(voucher).list_version
        except TidingsError:
            return None
        record = self.repository.get_list(version)
        if record is None:
            return None
        opener = self._openers.get(version)
        if opener is None:
            try:
                opener = VoucherOpener(self.keys.psi_secret, self._load(record)[1])
            except InvalidKeyError:
                log.error("the detection secret of this node did not build list %d", version)
                raise StorageUnavailableError(
                    "this node's detection secret is not the list's"
                ) from None
            with self._cache_lock:
                self._openers[version] = opener
                while len(self._openers) > _LISTS_CACHED:
                    del self._openers[min(self._openers)]
        return opener

    # --- intake -------------------------------------------------------------------------------

    def accept_voucher(
        self, account: str, device_id: int, window_id: bytes, voucher: bytes
    ) -> None:
        """Check the voucher's structure and store it for processing. The work and the
        result do not depend on whether the voucher would open: it is not opened here.

        Raises:
            OversizedError: more than `MAX_VOUCHER_BYTES`.
            DecodeError (or a subclass): the window id is not 16 bytes, or the voucher is not
                a well-formed voucher.
        """
        if not isinstance(voucher, bytes) or len(voucher) > MAX_VOUCHER_BYTES:
            raise OversizedError(f"a voucher is at most {MAX_VOUCHER_BYTES} bytes")
        if not isinstance(window_id, bytes) or len(window_id) != WINDOW_ID_LEN:
            raise DecodeError(f"a window id is {WINDOW_ID_LEN} bytes")
        VoucherWire.decode(voucher)
        self.repository.add_pending(
            PendingVoucher(
                voucher_id="vch_" + self._ids(),
                account=account,
                device_id=device_id,
                window_id=window_id,
                voucher=voucher,
            )
        )

    # --- processing ---------------------------------------------------------------------------

    def run_round(self) -> RoundResult:
        """`process_pending` then `evaluate_windows`, one batch each. One round at a time in
        this process (callers in several threads wait their turn); nodes share the work
        through the claims in the database."""
        with self._round_lock:
            processed = self.process_pending()
            windows, matches, false = self.evaluate_windows()
        return RoundResult(processed, windows, matches, false)

    def process_pending(self, *, limit: int = PROCESS_BATCH) -> int:
        """Open up to ``limit`` pending vouchers; returns how many were finished here. A
        voucher whose list's bytes cannot be read stays pending (its claim lapses and it is
        tried again)."""
        done = 0
        for pending in self.repository.claim_pending(
            now_ms=self.clock(), lease_ms=CLAIM_LEASE_MS, limit=limit
        ):
            try:
                opener = self._opener_for(pending.voucher)
            except StorageUnavailableError:
                continue
            try:
                opened = None if opener is None else opener.open(pending.voucher)
            except TidingsError:
                opened = None  # another list's digest, a tampered share: kept as nothing
            opened_record = None
            if opened is not None:
                opened_record = OpenedRecord(
                    opened_id="opn_" + self._ids(),
                    account=pending.account,
                    device_id=pending.device_id,
                    window_id=pending.window_id,
                    share=opened.share.to_bytes(),
                    inner_ct=opened.inner_ct,
                    opened_day=self.clock() // DAY_MS,
                )
            if self.repository.finish_pending(pending.voucher_id, opened_record):
                done += 1
        return done

    def evaluate_windows(self, *, limit: int = PROCESS_BATCH) -> tuple[int, int, int]:
        """Look at every window with records not evaluated yet; returns (windows, matches,
        false candidates)."""
        windows = matches = false = 0
        for window in self.repository.windows_to_evaluate(limit):
            found, missed = self._evaluate(window)
            windows += 1
            matches += found
            false += missed
        return windows, matches, false

    def _evaluate(self, window: WindowKey) -> tuple[int, int]:
        records = self.repository.opened_for_window(window)
        fresh = [r.opened_id for r in records if not r.evaluated]
        found = missed = 0
        cap = SYNTHETIC_BOUND_FACTOR * (self.threshold + self.params.tag_dimension)
        if len(records) > cap and all(r.outcome is None for r in records):
            # More opened vouchers than an honest window ever has without t real ones: a
            # modified client making every voucher open. Not run again (the cost grows with
            # every record); recorded once, as the sign it is, and evidence of nothing else.
            if len(records) - len(fresh) <= cap:
                self._audit_device(
                    AuditAction.DETECTION_WINDOW_OVER_BOUND, window.account, window.device_id,
                    self.clock(), opened=len(records),
                )
        elif len(records) >= self.threshold:
            recovered = self._recover(records)
            todo = [(records[i], payload) for i, payload in recovered if records[i].outcome is None]
            if todo:
                self._audit_device(
                    AuditAction.DETECTION_RECOVERED, window.account, window.device_id,
                    self.clock(), recovered=len(todo),
                )
            for record, payload in todo:
                outcome = self._confirm(record, payload)
                if outcome is Outcome.MATCH:
                    found += 1
                elif outcome is Outcome.NO_MATCH:
                    missed += 1
        self.repository.mark_evaluated(fresh)
        return found, missed

    def _audit_device(
        self, action: AuditAction, account: str, device_id: int, now: int, **details: object
    ) -> None:
        """Audit, as "system", a detection event about one device of ``account`` (target the
        account; details the device first, then ``details``)."""
        self.audit.append(
            actor="system",
            action=action,
            target=f"account:{account}",
            now_ms=now,
            details={"device": device_id, **details},
        )

    def _recover(self, records: Sequence[OpenedRecord]) -> list[tuple[int, bytes]]:
        opened: list[OpenedVoucher] = []
        for record in records:
            # The dimension the share was dealt with (the list it was built against may
            # predate a change of D): 16-byte x, y, then D tag values.
            dimension = len(record.share) // FIELD_ELEMENT_LEN - 2
            try:
                share = ShareEnvelope.from_bytes(record.share, dimension)
            except TidingsError:
                share = None
            if share is None:
                continue
            opened.append(OpenedVoucher(share=share, inner_ct=record.inner_ct))
        if len(opened) != len(records):
            return []  # a stored record was damaged: nothing is trusted in this window
        try:
            return list(recover_inner(opened, self.threshold))
        except TidingsError as exc:
            # Tampered shares or inner ciphertexts (a malicious client): nothing recovered.
            log.warning("detection recovery failed", extra={"error": type(exc).__name__})
            return []

    def _confirm(self, record: OpenedRecord, payload: bytes) -> Outcome:
        """Check one recovered image in the clear; seal it and attach it to the case when it
        matches. Returns its outcome (already stored)."""
        now = self.clock()
        try:
            inner = DetectionInnerPayload.decode(payload)
        except TidingsError:
            return self._settle(record, Outcome.INVALID)
        if not ATTACHMENT_ID_PATTERN.fullmatch(inner.attachment_id):
            return self._settle(record, Outcome.INVALID)
        ciphertext = self.fetcher.fetch(inner.attachment_id)
        if ciphertext is None:
            return self._settle(record, Outcome.UNAVAILABLE)
        try:
            plaintext = attachment.decrypt_bytes(
                inner.key, ciphertext, inner.digest, expected_size=inner.size
            )
            hashes = dihedral_hashes(plaintext)
        except TidingsError:
            return self._settle(record, Outcome.INVALID)
        entries = self.matcher.index().match_pdq(hashes, device_only=True)
        if not entries:
            self.repository.set_outcome(record.opened_id, Outcome.NO_MATCH)
            self._audit_device(
                AuditAction.DETECTION_FALSE_CANDIDATE, record.account, record.device_id, now,
                attachment=inner.attachment_id,
            )
            return Outcome.NO_MATCH
        entry_ids = [e.entry_id for e in entries]
        case_id = self.cases.attach_detection(record.account, now_ms=now)
        match_id = "dm_" + self._ids()
        evidence = self.vault.seal(
            evidence_id="ev_" + self._ids(),
            report_id=match_id,
            kind=DETECTION_IMAGE_KIND,
            plaintext=plaintext,
            child_safety=True,
            now_ms=now,
        )
        match = DetectionMatch(
            match_id=match_id,
            case_id=case_id,
            opened_id=record.opened_id,
            account=record.account,
            device_id=record.device_id,
            evidence_id=evidence.evidence_id,
            attachment_id=inner.attachment_id,
            content_type=inner.content_type,
            message_id=NO_MESSAGE_ID,
            device_pdq=inner.pdq,
            server_pdq=hashes[0].bits,
            distance=entries[0].distance,
            entries=entries,
            matched_ms=now,
        )
        try:
            self.repository.store_match(match, evidence)
        except ConflictError:
            return Outcome.MATCH  # another node matched this image first
        self.audit.append(
            actor="system",
            action=AuditAction.DETECTION_MATCH,
            target=f"case:{case_id}",
            now_ms=now,
            details={
                "match": match_id,
                "evidence": evidence.evidence_id,
                "account": record.account,
                "distance": match.distance,
                "entries": entry_ids[:20],
            },
        )
        return Outcome.MATCH

    def _settle(self, record: OpenedRecord, outcome: Outcome) -> Outcome:
        self.repository.set_outcome(record.opened_id, outcome)
        return outcome

    def purge_idle_windows(self) -> int:
        """Delete the opened records of windows never recovered and idle for
        `WINDOW_RETENTION_DAYS`; audited (one "system" entry with the count) when any went.
        Returns how many records went."""
        now = self.clock()
        gone = self.repository.delete_idle_windows(now // DAY_MS - WINDOW_RETENTION_DAYS)
        if gone:
            self.audit.append(
                actor="system",
                action=AuditAction.DETECTION_WINDOWS_PURGED,
                target="detection:windows",
                now_ms=now,
                details={"records": gone, "idle_days": WINDOW_RETENTION_DAYS},
            )
        return gone

    # --- reading ------------------------------------------------------------------------------

    def matches_for_case(self, case_id: str) -> list[DetectionMatch]:
        """The confirmed images of a case (metadata; the images are evidence, opened through
        `EvidenceVault.open` with an audit entry)."""
        return self.repository.matches_for_case(case_id)

    def status(self) -> dict[str, Any]:
        """The operator's view (``tidings admin detection status``): the current list, the
        configured threshold, the backlog. No per-account figure."""
        current = self.repository.current_list()
        out: dict[str, Any] = {
            "threshold": self.threshold,
            "pending_vouchers": self.repository.pending_count(),
            "opened_records": self.repository.opened_count(),
            "signing_public_key": b64e(self.keys.signing_public),
            "list": None,
        }
        if current is not None:
            out["list"] = {
                "version": current.version,
                "digest": current.digest.hex(),
                "threshold": current.threshold,
                "bank_list_version": current.bank_list_version,
                "created_ms": current.created_ms,
                "entries": current.entry_count,
                "keys": current.key_count,
                "bytes": current.size,
                "stored": self.blobs.read(current.blob_id) is not None,
                "bank_list_current": current.bank_list_version == self.banks.list_version(),
            }
        return out


def banks_device_list(banks: Any) -> DeviceListSource:
    """`DeviceListSource` over a `tidings.safety.banks.BankService` (its device list)."""
    return bank_hash_source(banks, device_only=True)
