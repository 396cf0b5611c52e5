"""Detection on the server (`tidings.safety.detection`), with the real PSI layer, real
photographs (scikit-image's bundled files), real hash banks and the evidence vault, on the
in-memory repositories, SQLite and PostgreSQL: list building and signing, voucher intake that
does not depend on the voucher, processing, threshold recovery, confirmation in the clear,
detection cases, and processing that survives a crash."""

from __future__ import annotations

import functools
import io
import os
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import skimage.data
from PIL import Image

from tests.safety.conftest import backend_db
from tidings.crypto import attachment
from tidings.crypto.primitives import ed25519_verify
from tidings.crypto.psi import (
    DEFAULT_PSI_PARAMETERS,
    BlindedList,
    PsiParameters,
    generate_list_secret,
)
from tidings.crypto.threshold import WindowDealer
from tidings.crypto.voucher import VoucherBuilder, VoucherOpener
from tidings.errors import (
    DecodeError,
    DetectionListMissingError,
    DetectionThresholdMismatchError,
    InvalidKeyError,
    OversizedError,
)
from tidings.media.pdq import dihedral_hashes, hash_image
from tidings.safety.audit import AuditAction
from tidings.safety.case_model import CaseSource, CaseState
from tidings.safety.categories import Category, QueueId
from tidings.safety.detection import (
    CLAIM_LEASE_MS,
    DETECTION_IMAGE_KIND,
    DetectionKeys,
    DetectionService,
    banks_device_list,
)
from tidings.safety.detection_model import Outcome, WindowKey
from tidings.safety.evidence import EvidenceKeyRing
from tidings.safety.reports import FrankingKey, FrankingKeyRing
from tidings.safety.service import SafetyRepositories, SafetyService
from tidings.safety.sql import SafetyDatabase
from tidings.safety.staff import Principal, Role, permissions_for
from tidings.wire.base64url import b64e
from tidings.wire.detection import DetectionInnerPayload, list_statement

T0 = 1_700_000_000_000
THRESHOLD = 3
QUIET = replace(DEFAULT_PSI_PARAMETERS, synthetic_rate_ppm=0)
"""No synthetic vouchers: each listed image sent is exactly one real share."""
LISTED = ("astronaut", "coffee", "chelsea", "rocket")
UNLISTED = ("camera", "coins", "horse")
SINGLE_SOURCE = "gravel"
"""Listed by one source only: never on the device list (the two-jurisdiction rule)."""
REVIEWER = Principal(
    staff_id="staff_cs",
    username="cs",
    roles=frozenset({Role.REVIEWER}),
    permissions=permissions_for({Role.REVIEWER}, child_safety=True),
    queues=frozenset({QueueId.CHILD_SAFETY.value}),
)


# --- images ---------------------------------------------------------------------------------


@functools.cache
def original(name: str) -> bytes:
    """The bundled photograph ``name`` as PNG bytes (what a bank lists)."""
    pixels = np.asarray(getattr(skimage.data, name)())
    out = io.BytesIO()
    Image.fromarray(pixels).convert("RGB").save(out, "PNG")
    return out.getvalue()


@functools.cache
def edited(name: str) -> bytes:
    """``name`` scaled to 4/5 and recompressed as JPEG 70: what a sender sends (PDQ distance
    2-12 from the listed hash, for these photographs; rotated and mirrored copies are the
    client's end-to-end test's and bench/psi_recall.py's)."""
    image = Image.open(io.BytesIO(original(name))).convert("RGB")
    image = image.resize((image.width * 4 // 5, image.height * 4 // 5))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=70)
    return out.getvalue()


def pdq_hex(name: str) -> str:
    return hash_image(original(name)).hex


# --- the world ------------------------------------------------------------------------------


class Store:
    """The attachment store as detection sees it: attachment ciphertext and list blobs."""

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}

    def fetch(self, attachment_id: str) -> bytes | None:
        return self.blobs.get(attachment_id)

    def read(self, blob_id: str) -> bytes | None:
        return self.blobs.get(blob_id)

    def write(self, blob_id: str, data: bytes) -> None:
        self.blobs[blob_id] = data


@dataclass
class Clock:
    now: int = T0

    def __call__(self) -> int:
        self.now += 1
        return self.now


@dataclass
class Env:
    safety: SafetyService
    detection: DetectionService
    store: Store
    clock: Clock
    keys: DetectionKeys
    db: SafetyDatabase | None
    devices: list[Device] = field(default_factory=list)

    def device(self, account: str, device_id: int = 1) -> Device:
        _, data = self.detection.list_bytes()
        device = Device(self, account, device_id, BlindedList.decode(data))
        self.devices.append(device)
        return device

    def audit_actions(self) -> list[str]:
        return [e.action for e in self.safety.audit_repo.entries()]  # type: ignore[attr-defined]


@dataclass
class Device:
    """A sender's device: one voucher window against the list it holds."""

    env: Env
    account: str
    device_id: int
    blinded: BlindedList
    window: bytes = field(default_factory=lambda: os.urandom(16))
    seed: bytes = field(default_factory=lambda: os.urandom(32))

    def voucher(self, image: bytes, *, claim: bytes | None = None) -> tuple[bytes, str]:
        """Upload ``image`` (encrypted) and build its voucher; ``claim``: build the voucher
        from that image's hashes instead (an LSH false candidate, seen from the server).
        Returns (voucher, attachment id)."""
        key = attachment.generate_key()
        ciphertext, digest = attachment.encrypt_bytes(key, image)
        attachment_id = b64e(os.urandom(32))
        self.env.store.blobs[attachment_id] = ciphertext
        hashes = dihedral_hashes(claim or image)
        payload = DetectionInnerPayload(
            attachment_id, key, digest, len(image), "image/jpeg", hashes[0].bits
        )
        params = self.blinded.params
        builder = VoucherBuilder(
            self.blinded, WindowDealer(self.seed, params.threshold, params.tag_dimension)
        )
        return builder.build([h.bits for h in hashes], payload.encode()), attachment_id

    def send(self, image: bytes, *, claim: bytes | None = None) -> str:
        voucher, attachment_id = self.voucher(image, claim=claim)
        self.env.detection.accept_voucher(self.account, self.device_id, self.window, voucher)
        return attachment_id


def _safety(db: SafetyDatabase | None, store: Store, clock: Clock) -> SafetyService:
    keys: dict[str, Any] = {
        "franking_keys": FrankingKeyRing([FrankingKey("f1", os.urandom(32))]),
        "evidence_keys": EvidenceKeyRing({"ev1": EVIDENCE_KEY}, "ev1"),
        "fetcher": store,
        "clock": clock,
    }
    if db is not None:
        return SafetyService.open(db.url, schema=db.schema, **keys)
    repos = SafetyRepositories.in_memory()
    return SafetyService(repos, **keys)


EVIDENCE_KEY = os.urandom(32)


def _detection(
    safety: SafetyService,
    store: Store,
    clock: Clock,
    keys: DetectionKeys,
    *,
    threshold: int = THRESHOLD,
    params: PsiParameters = QUIET,
) -> DetectionService:
    assert safety.detection_repo is not None
    return DetectionService(
        repository=safety.detection_repo,
        banks=banks_device_list(safety.banks),
        vault=safety.vault,
        cases=safety.cases,
        audit=safety.audit,
        blobs=store,
        fetcher=store,
        keys=keys,
        threshold=threshold,
        params=params,
        clock=clock,
    )


def _bank(safety: SafetyService) -> None:
    operator = safety.operator()
    safety.banks.create_bank(operator, name="cse", category=Category.CHILD_SEXUAL_EXPLOITATION)
    both = "".join(f"pdq,{pdq_hex(n)}\n" for n in LISTED).encode()
    safety.banks.import_file(operator, "cse", both, organisation="NCMEC", jurisdiction="US")
    safety.banks.import_file(operator, "cse", both, organisation="IWF", jurisdiction="GB")
    single = f"pdq,{pdq_hex(SINGLE_SOURCE)}\n".encode()
    safety.banks.import_file(operator, "cse", single, organisation="IWF", jurisdiction="GB")


def make_env(db: SafetyDatabase | None, *, params: PsiParameters = QUIET) -> Env:
    store, clock = Store(), Clock()
    safety = _safety(db, store, clock)
    keys = DetectionKeys(generate_list_secret(), os.urandom(32))
    _bank(safety)
    detection = _detection(safety, store, clock, keys, params=params)
    detection.build_list(actor="operator:cli")
    return Env(safety, detection, store, clock, keys, db)


@pytest.fixture
def env(safety_db: SafetyDatabase | None) -> Iterator[Env]:
    world = make_env(safety_db)
    yield world
    if safety_db is not None:
        world.safety.close()


def _cases(env: Env) -> list[Any]:
    repo: Any = env.safety.case_repo
    return list(repo.list_cases(limit=100))


# --- the list -------------------------------------------------------------------------------


def test_the_list_holds_the_device_eligible_hashes_signed(env: Env) -> None:
    record, data = env.detection.list_bytes()
    assert record.version == 1 and record.threshold == THRESHOLD
    assert record.entry_count == len(LISTED)  # the single-source hash is left out
    assert record.key_count == len(LISTED) * QUIET.tables
    blinded = BlindedList.decode(data)
    assert blinded.digest() == record.digest and blinded.version == 1
    assert blinded.params.threshold == THRESHOLD
    statement = list_statement(
        version=1, digest=record.digest, threshold=THRESHOLD, created_ms=record.created_ms
    )
    ed25519_verify(env.keys.signing_public, statement, record.signature)
    assert record.signing_public == env.keys.signing_public
    assert env.store.blobs[record.blob_id] == data
    assert AuditAction.DETECTION_LIST_BUILT.value in env.audit_actions()
    second = env.detection.build_list(actor="operator:cli")
    assert second.version == 2 and env.detection.current_list() == second


def test_a_list_built_for_another_threshold_is_refused(env: Env) -> None:
    other = _detection(env.safety, env.store, env.clock, env.keys, threshold=THRESHOLD + 1)
    with pytest.raises(DetectionThresholdMismatchError, match="build-list"):
        other.check_threshold()
    env.detection.check_threshold()  # the configured one is fine


def test_no_list_is_a_typed_not_found() -> None:
    store, clock = Store(), Clock()
    safety = _safety(None, store, clock)
    keys = DetectionKeys(generate_list_secret(), os.urandom(32))
    detection = _detection(safety, store, clock, keys)
    with pytest.raises(DetectionListMissingError):
        detection.list_bytes()
    assert detection.status()["list"] is None


# --- intake ---------------------------------------------------------------------------------


def test_intake_is_the_same_whether_or_not_a_voucher_opens(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    device = env.device("sender")
    matching, _ = device.voucher(edited("astronaut"))
    innocent, _ = device.voucher(edited("camera"))
    assert len(matching) == len(innocent)

    def never(*_: object) -> None:
        raise AssertionError("intake must not open vouchers")

    monkeypatch.setattr(VoucherOpener, "open", never)
    assert env.detection.accept_voucher("sender", 1, device.window, matching) is None
    assert env.detection.accept_voucher("sender", 1, device.window, innocent) is None
    assert env.detection.repository.pending_count() == 2
    assert env.detection.repository.opened_count() == 0


@pytest.mark.parametrize(
    ("voucher", "window", "error"),
    [
        (b"", bytes(16), DecodeError),
        (b"\x01" + bytes(40), bytes(16), DecodeError),
        (b"\x07" + bytes(100), bytes(16), DecodeError),
        (bytes(20_000), bytes(16), OversizedError),
        (None, bytes(15), DecodeError),
    ],
)
def test_malformed_vouchers_are_refused_with_typed_errors(
    env: Env, voucher: bytes | None, window: bytes, error: type[Exception]
) -> None:
    if voucher is None:
        voucher, _ = env.device("sender").voucher(edited("astronaut"))
    with pytest.raises(error):
        env.detection.accept_voucher("sender", 1, window, voucher)
    assert env.detection.repository.pending_count() == 0


# --- below and at the threshold -------------------------------------------------------------


def test_below_the_threshold_only_opened_records_are_kept(env: Env) -> None:
    device = env.device("sender")
    for name in LISTED[: THRESHOLD - 1]:
        device.send(edited(name))
    for name in UNLISTED:
        device.send(edited(name))
    actions = env.audit_actions()
    result = env.detection.run_round()
    assert result.processed == THRESHOLD - 1 + len(UNLISTED)
    assert (result.matches, result.false_candidates) == (0, 0)
    repo = env.detection.repository
    assert repo.pending_count() == 0  # processed vouchers are deleted
    assert repo.opened_count() == THRESHOLD - 1  # unlisted images never open
    assert _cases(env) == []
    assert env.audit_actions() == actions  # nothing about the account is recorded
    assert repo.windows_to_evaluate(10) == []
    opened = repo.opened_for_window(_window(device))
    assert len(opened) == THRESHOLD - 1
    assert all(r.outcome is None and r.evaluated for r in opened)


def _window(device: Device) -> WindowKey:
    return WindowKey(device.account, device.device_id, device.window)


def test_at_the_threshold_a_case_opens_with_exactly_the_matched_images(env: Env) -> None:
    device = env.device("sender")
    sent = {device.send(edited(name)): name for name in LISTED[:THRESHOLD]}
    innocent = {device.send(edited(name)) for name in UNLISTED}
    result = env.detection.run_round()
    assert result.matches == THRESHOLD and result.false_candidates == 0
    (case,) = _cases(env)
    assert case.subject == "sender" and case.source is CaseSource.DETECTION
    assert case.queue_id == QueueId.CHILD_SAFETY.value and case.state is CaseState.OPEN
    assert case.category is Category.CHILD_SEXUAL_EXPLOITATION
    matches = env.detection.matches_for_case(case.case_id)
    assert {m.attachment_id for m in matches} == set(sent)
    assert not {m.attachment_id for m in matches} & innocent
    queue = env.safety.cases.queue_for_case(REVIEWER, case.case_id)
    for match in matches:
        assert match.distance <= 31 and match.entries[0].bank == "cse"
        assert {s for s, _ in match.entries[0].sources} == {"NCMEC", "IWF"}
        assert {j for _, j in match.entries[0].sources} == {"US", "GB"}
        opened = env.safety.vault.open(
            match.evidence_id,
            principal=REVIEWER,
            queue=queue,
            case_id=case.case_id,
            purpose="test",
            now_ms=env.clock(),
        )
        assert opened.kind == DETECTION_IMAGE_KIND
        assert opened.plaintext == edited(sent[match.attachment_id])
    actions = env.audit_actions()
    assert actions.count(AuditAction.DETECTION_MATCH.value) == THRESHOLD
    assert actions.count(AuditAction.EVIDENCE_VIEW.value) == THRESHOLD
    assert AuditAction.DETECTION_RECOVERED.value in actions

    # A further match in the same window joins the same open case.
    extra = device.send(edited(LISTED[THRESHOLD]))
    assert env.detection.run_round().matches == 1
    assert [c.case_id for c in _cases(env)] == [case.case_id]
    matches = env.detection.matches_for_case(case.case_id)
    assert extra in {m.attachment_id for m in matches} and len(matches) == THRESHOLD + 1
    assert env.detection.run_round().matches == 0  # nothing matched twice


def test_matched_images_outlive_the_attachment(env: Env) -> None:
    device = env.device("sender")
    ids = [device.send(edited(name)) for name in LISTED[:THRESHOLD]]
    env.detection.run_round()
    for attachment_id in ids:
        del env.store.blobs[attachment_id]  # the attachment expired
    (case,) = _cases(env)
    queue = env.safety.cases.queue_for_case(REVIEWER, case.case_id)
    for match in env.detection.matches_for_case(case.case_id):
        opened = env.safety.vault.open(
            match.evidence_id,
            principal=REVIEWER,
            queue=queue,
            case_id=case.case_id,
            purpose="test",
            now_ms=env.clock(),
        )
        assert opened.plaintext.startswith(b"\xff\xd8")  # the JPEG, from the vault


def test_false_candidates_never_open_a_case(env: Env) -> None:
    """Vouchers whose LSH keys match a listed hash (built from it) but whose attachment is
    another image: they open and recover, the server's own hash is far from every listed one,
    and no case opens."""
    device = env.device("sender")
    for listed, innocent in zip(LISTED, UNLISTED, strict=False):
        device.send(edited(innocent), claim=edited(listed))
    result = env.detection.run_round()
    assert result.false_candidates == len(UNLISTED) and result.matches == 0
    assert _cases(env) == []
    opened = env.detection.repository.opened_for_window(_window(device))
    assert {r.outcome for r in opened} == {Outcome.NO_MATCH}
    assert env.audit_actions().count(AuditAction.DETECTION_FALSE_CANDIDATE.value) == len(UNLISTED)


def test_a_case_holds_only_the_confirmed_images(env: Env) -> None:
    device = env.device("sender")
    real = [device.send(edited(name)) for name in LISTED[: THRESHOLD - 1]]
    decoy = device.send(edited("horse"), claim=edited(LISTED[THRESHOLD - 1]))
    result = env.detection.run_round()
    assert (result.matches, result.false_candidates) == (THRESHOLD - 1, 1)
    (case,) = _cases(env)
    ids = {m.attachment_id for m in env.detection.matches_for_case(case.case_id)}
    assert ids == set(real) and decoy not in ids


def test_windows_and_devices_do_not_add_up(env: Env) -> None:
    first, second = env.device("sender", 1), env.device("sender", 2)
    for name in LISTED[: THRESHOLD - 1]:
        first.send(edited(name))
    second.send(edited(LISTED[THRESHOLD - 1]))
    later = env.device("sender", 1)  # a new window of the first device
    later.send(edited(LISTED[0]))
    env.detection.run_round()
    assert _cases(env) == []


def test_synthetic_vouchers_open_and_recover_nothing(safety_db: SafetyDatabase | None) -> None:
    noisy = replace(DEFAULT_PSI_PARAMETERS, synthetic_rate_ppm=1_000_000)
    env = make_env(safety_db, params=noisy)
    try:
        device = env.device("sender")
        for name in (*UNLISTED, *LISTED):
            device.send(edited(name))
        env.detection.run_round()
        assert env.detection.repository.opened_count() == len(UNLISTED) + len(LISTED)
        assert _cases(env) == []
    finally:
        if safety_db is not None:
            env.safety.close()


# --- crashes --------------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def sql_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SafetyDatabase | None]:
    """A clean SQL database only (a restart needs storage that outlives the process)."""
    yield from backend_db(request, tmp_path)


def test_a_voucher_accepted_before_a_crash_is_processed_after(
    sql_db: SafetyDatabase,
) -> None:
    env = make_env(sql_db)
    device = env.device("sender")
    for name in LISTED[:THRESHOLD]:
        device.send(edited(name))
    # The node claims the vouchers and dies before finishing them.
    claimed = env.detection.repository.claim_pending(
        now_ms=env.clock.now, lease_ms=CLAIM_LEASE_MS, limit=10
    )
    assert len(claimed) == THRESHOLD
    env.safety.close()

    clock = Clock(env.clock.now + CLAIM_LEASE_MS + 1)
    safety = _safety(sql_db, env.store, clock)
    try:
        restarted = _detection(safety, env.store, clock, env.keys)
        result = restarted.run_round()
        assert result.processed == THRESHOLD and result.matches == THRESHOLD
        assert restarted.repository.pending_count() == 0
    finally:
        safety.close()


def test_a_window_past_the_synthetic_bound_is_recorded_once_and_left() -> None:
    """A modified client making every voucher open (all synthetic): past 2·(t + D) opened
    records with nothing recovered, the window is recorded once and not evaluated again."""
    noisy = replace(DEFAULT_PSI_PARAMETERS, synthetic_rate_ppm=1_000_000, tag_dimension=2)
    env = make_env(None, params=noisy)
    bound = 2 * (THRESHOLD + 2)
    device = env.device("sender")
    names = [*UNLISTED, *LISTED]
    for i in range(bound + 3):
        device.send(edited(names[i % len(names)]))
        if i in (bound - 1, bound, bound + 2):
            env.detection.run_round()
    actions = env.audit_actions()
    assert actions.count(AuditAction.DETECTION_WINDOW_OVER_BOUND.value) == 1
    assert AuditAction.DETECTION_RECOVERED.value not in actions
    assert _cases(env) == []
    assert env.detection.repository.windows_to_evaluate(10) == []


def test_a_node_with_another_secret_serves_the_list_and_leaves_vouchers_pending(env: Env) -> None:
    """A cluster node reading other key files than the one that built the list: it still
    serves the published bytes, and opens nothing (nor drops anything) with its own secret."""
    stray_keys = DetectionKeys(generate_list_secret(), os.urandom(32))
    stray = _detection(env.safety, env.store, env.clock, stray_keys)
    device = env.device("sender")
    device.send(edited(LISTED[0]))
    assert stray.list_bytes() == env.detection.list_bytes()
    assert stray.run_round().processed == 0
    assert env.detection.repository.pending_count() == 1
    env.clock.now += CLAIM_LEASE_MS + 1  # the stray node's claim lapses
    assert env.detection.run_round().processed == 1
    assert env.detection.repository.opened_count() == 1


def test_a_detection_joins_the_subjects_open_case_and_moves_it_to_child_safety(
    env: Env,
) -> None:
    from tidings.safety.case_model import CaseRecord
    from tidings.safety.categories import Severity

    report_case = CaseRecord(
        case_id="case_reported",
        subject="sender",
        queue_id=QueueId.HARASSMENT.value,
        category=Category.HARASSMENT,
        severity=Severity.MEDIUM,
        base_priority=100,
        priority=100,
        state=CaseState.OPEN,
        created_ms=T0,
        updated_ms=T0,
        sla_due_ms=T0 + 10**9,
        report_count=1,
        reporter_count=1,
        lock_holder="staff_rita",
        lock_expires_ms=T0 + 10**9,
    )
    env.safety.case_repo.add_case(report_case)
    device = env.device("sender")
    for name in LISTED[:THRESHOLD]:
        device.send(edited(name))
    assert env.detection.run_round().matches == THRESHOLD
    case = env.safety.case_repo.get_case("case_reported")
    assert case is not None and case.queue_id == QueueId.CHILD_SAFETY.value
    assert case.category is Category.CHILD_SEXUAL_EXPLOITATION and case.lock_holder is None
    assert case.sla_due_ms < report_case.sla_due_ms
    assert len(env.detection.matches_for_case("case_reported")) == THRESHOLD
    assert [c.case_id for c in _cases(env)] == ["case_reported"]


def test_detection_keys_are_created_private_stable_and_checked(tmp_path: Path) -> None:
    secret, signing = tmp_path / "keys" / "detection.key", tmp_path / "keys" / "signing.key"
    keys = DetectionKeys.load(secret, signing)
    assert DetectionKeys.load(secret, signing) == keys  # stable across loads
    for path in (secret, signing):
        assert path.stat().st_mode & 0o777 == 0o600
    assert keys.psi_secret.hex() not in repr(keys) and keys.signing_seed.hex() not in repr(keys)
    secret.write_bytes(b"\xff" * 32)  # 32 bytes, not a clamped scalar
    with pytest.raises(InvalidKeyError, match=r"detection\.key"):
        DetectionKeys.load(secret, signing)
    signing.write_bytes(b"short")
    with pytest.raises(InvalidKeyError):
        DetectionKeys.load(tmp_path / "fresh.key", signing)


def test_idle_unrecovered_windows_are_deleted_and_recovered_ones_kept(env: Env) -> None:
    from tidings.clock import DAY_MS
    from tidings.safety.detection import WINDOW_RETENTION_DAYS

    below = env.device("below")  # t - 1 matches: opened, never recovered
    for name in LISTED[: THRESHOLD - 1]:
        below.send(edited(name))
    found = env.device("found")  # t matches: recovered, a case, kept with the case
    for name in LISTED[:THRESHOLD]:
        found.send(edited(name))
    env.detection.run_round()
    repo = env.detection.repository
    assert repo.opened_count() == 2 * THRESHOLD - 1 and len(_cases(env)) == 1

    env.clock.now += (WINDOW_RETENTION_DAYS - 1) * DAY_MS
    assert env.detection.purge_idle_windows() == 0  # not idle long enough yet
    late = env.device("late")  # a window still in use keeps its old records
    late.send(edited(LISTED[0]))
    env.detection.run_round()
    env.clock.now += 2 * DAY_MS
    late.send(edited(LISTED[1]))
    env.detection.run_round()

    actions = env.audit_actions()
    assert env.detection.purge_idle_windows() == THRESHOLD - 1
    assert repo.opened_for_window(_window(below)) == []
    assert len(repo.opened_for_window(_window(found))) == THRESHOLD
    assert len(repo.opened_for_window(_window(late))) == 2
    assert env.audit_actions()[len(actions):] == ["detection.windows_purged"]
    assert env.detection.purge_idle_windows() == 0
