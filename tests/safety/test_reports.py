"""Report verification and intake: every forgery in the issue is refused with its exact typed
error, and nothing at all is stored for a refused report."""

from __future__ import annotations

import dataclasses
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tidings.crypto import attachment, franking
from tidings.crypto.franking import ChainFault, ReportItem
from tidings.errors import (
    AttachmentError,
    AttachmentKeyMismatchError,
    AttachmentUnavailableError,
    CommitmentMismatchError,
    ContextChainError,
    CryptoError,
    DecodeError,
    InvalidFrankingTagError,
    InvalidReportError,
    MessageAlreadyReportedError,
    ReporterNotRecipientError,
    ReportReplayError,
    TidingsError,
)
from tidings.safety.categories import ConversationKind, QueueId
from tidings.safety.evidence import KIND_MESSAGES
from tidings.safety.reports import (
    AttachmentReveal,
    FrankingKey,
    FrankingKeyRing,
    ReplayKind,
    ReportStatus,
    replay_keys,
    verify_submission,
)
from tidings.wire import pb

from .conftest import (
    NEW_KEY,
    OLD_KEY,
    ROTATED_AT,
    T0,
    Chat,
    World,
    altered_content,
    build_world,
    direct_chat,
    group_chat,
    submission,
)

ALICE, BOB, BOB2, CAROL = ("alice", 1), ("bob", 1), ("bob", 2), ("carol", 1)


def three_messages(world: World) -> tuple[Chat, list[ReportItem]]:
    chat = direct_chat(world.server, "alice", "bob")
    sent = [chat.send(ALICE, [BOB, BOB2], text) for text in ("hi", "answer me", "threat")]
    return chat, [s.to(*BOB) for s in sent]


def refused(world: World, sub: object, error: type[TidingsError]) -> TidingsError:
    """Submit, expect exactly ``error``, and check that nothing was stored but the count."""
    before = len(world.audit_repo.rows)
    counted = world.refusals.count_refused(0, world.now + 1).get((error.code,), 0)
    with pytest.raises(error) as caught:
        world.intake.submit(sub, now_ms=world.now)  # type: ignore[arg-type]
    assert type(caught.value) is error
    assert world.stored_nothing(before)
    # Only the count: one more refusal under its code on the day, nothing of the report.
    assert world.refusals.count_refused(0, world.now + 1).get((error.code,), 0) == counted + 1
    return caught.value


# --- accepted reports ---------------------------------------------------------------------


def test_direct_report_is_verified_stored_encrypted_and_opens_a_case(world: World) -> None:
    _, items = three_messages(world)
    receipt = world.intake.submit(submission(BOB, items), now_ms=world.now)

    report = world.report_repo.get_report(receipt.report_id)
    assert report is not None
    assert (report.subject, report.reporter, report.category) == ("alice", "bob", "harassment")
    assert report.conversation_kind is ConversationKind.DIRECT
    assert report.conversation_id == franking.direct_conversation_id("alice", "bob")
    assert report.case_id == receipt.case_id
    assert report.status is ReportStatus.ACCEPTED
    recorded = world.report_repo.items_for_report(receipt.report_id)
    assert [i.franking_verified and i.chain_verified for i in recorded] == [True] * 3
    assert [i.role.value for i in recorded] == ["context", "context", "reported"]
    assert {i.franking_key_id for i in recorded} == {"f1"}

    (evidence,) = world.evidence_repo.evidence_for_report(receipt.report_id)
    assert evidence.kind == KIND_MESSAGES
    for item in items:  # encrypted at rest: no content, no franking key in the blob
        assert item.content not in evidence.ciphertext
        assert item.franking_key not in evidence.ciphertext
    case = world.case_repo.get_case(receipt.case_id)
    assert case is not None and case.subject == "alice"
    assert case.queue_id == QueueId.HARASSMENT
    assert world.audit.verify().ok


def test_group_report_with_several_senders(world: World) -> None:
    chat = group_chat(world.server)
    sent = [
        chat.send(ALICE, [BOB, CAROL], "one"),
        chat.send(CAROL, [ALICE, BOB], "two"),
        chat.send(ALICE, [BOB, CAROL], "three"),
    ]
    items = [s.to(*BOB) for s in sent]
    receipt = world.intake.submit(submission(BOB, items, reported=2), now_ms=world.now)
    report = world.report_repo.get_report(receipt.report_id)
    assert report is not None and report.conversation_kind is ConversationKind.GROUP
    assert report.conversation_id == chat.conversation_id
    assert report.subject == "alice"


def test_report_spanning_a_franking_key_rotation_verifies(world: World) -> None:
    chat = direct_chat(world.server, "alice", "bob")
    world.server.clock = ROTATED_AT - 2
    items = [chat.send(ALICE, [BOB], t).to(*BOB) for t in ("before", "around", "after")]
    assert items[0].server_timestamp_ms < ROTATED_AT <= items[-1].server_timestamp_ms
    receipt = world.intake.submit(submission(BOB, items), now_ms=world.now)
    key_ids = [i.franking_key_id for i in world.report_repo.items_for_report(receipt.report_id)]
    assert key_ids == ["f1", "f2", "f2"]


def test_the_full_crypto_path_with_sessions_is_reportable() -> None:
    # Reuse the end-to-end harness of the crypto tests: real PQXDH + ratchet + franking.
    from tests.crypto import test_end_to_end as e2e

    world = build_world()
    world.intake.franking_keys = FrankingKeyRing([FrankingKey("e2e", e2e.SERVER_KEY)])
    alice, bob = e2e.Device("alice", 1), e2e.Device("bob", 1)
    conversation = franking.direct_conversation_id("alice", "bob")
    for text in ("hello", "you will regret this"):
        (envelope,) = alice.send_direct(
            [bob], alice.content(conversation, pb.DataMessage(body=text))
        )
        bob.receive_direct(envelope)
    receipt = world.intake.submit(
        submission(BOB, bob.received, category="violent_threat"), now_ms=world.now
    )
    case = world.case_repo.get_case(receipt.case_id)
    assert case is not None and case.queue_id == QueueId.VIOLENCE


# --- forgeries ----------------------------------------------------------------------------


def test_altered_text_is_refused(world: World) -> None:
    _, items = three_messages(world)
    forged = dataclasses.replace(items[-1], content=altered_content(items[-1], "I love you"))
    refused(world, submission(BOB, [*items[:2], forged]), CommitmentMismatchError)


def test_swapped_franking_key_is_refused(world: World) -> None:
    _, items = three_messages(world)
    forged = dataclasses.replace(items[-1], franking_key=os.urandom(32))
    refused(world, submission(BOB, [forged]), CommitmentMismatchError)


def test_content_and_commitment_swapped_together_fail_the_tag(world: World) -> None:
    _, items = three_messages(world)
    new_content = altered_content(items[-1], "made up")
    commitment = franking.compute_commitment(items[-1].franking_key, new_content)
    forged = dataclasses.replace(items[-1], content=new_content, commitment=commitment)
    refused(world, submission(BOB, [forged]), InvalidFrankingTagError)


def test_tag_from_another_message_is_refused(world: World) -> None:
    _, items = three_messages(world)
    forged = dataclasses.replace(items[-1], franking_tag=items[0].franking_tag)
    refused(world, submission(BOB, [forged]), InvalidFrankingTagError)


def test_blaming_another_sender_is_refused(world: World) -> None:
    _, items = three_messages(world)
    forged = dataclasses.replace(items[-1], sender="carol")
    refused(world, submission(BOB, [forged]), InvalidFrankingTagError)


def test_tag_under_a_key_the_server_never_had_is_refused(world: World) -> None:
    chat = direct_chat(world.server, "alice", "bob")
    item = chat.send(ALICE, [BOB], "x", server_key=os.urandom(32)).to(*BOB)
    refused(world, submission(BOB, [item]), InvalidFrankingTagError)


def test_old_key_cannot_vouch_for_a_timestamp_after_its_rotation(world: World) -> None:
    chat = direct_chat(world.server, "alice", "bob")
    world.server.clock = ROTATED_AT + 10
    item = chat.send(ALICE, [BOB], "x", server_key=OLD_KEY).to(*BOB)
    refused(world, submission(BOB, [item]), InvalidFrankingTagError)
    world.server.clock = T0 - 100  # before any key existed
    item = chat.send(ALICE, [BOB], "y", server_key=OLD_KEY).to(*BOB)
    refused(world, submission(BOB, [item]), InvalidFrankingTagError)
    assert NEW_KEY != OLD_KEY


def test_reporter_who_is_not_the_recipient_is_refused(world: World) -> None:
    _, items = three_messages(world)
    refused(world, submission(CAROL, items), ReporterNotRecipientError)
    # Bob's other device did not receive these copies either.
    refused(world, submission(BOB2, items), ReporterNotRecipientError)
    # One item addressed elsewhere spoils the whole report.
    chat = direct_chat(world.server, "alice", "carol")
    stray = chat.send(ALICE, [CAROL], "hi carol").to(*CAROL)
    refused(world, submission(BOB, [*items, stray]), ReporterNotRecipientError)


def test_relabelled_recipient_breaks_the_tag(world: World) -> None:
    _, items = three_messages(world)
    stolen = [dataclasses.replace(i, recipient="carol") for i in items]
    refused(world, submission(CAROL, stolen), InvalidFrankingTagError)


def test_replayed_report_is_refused(world: World) -> None:
    _, items = three_messages(world)
    sub = submission(BOB, items)
    world.intake.submit(sub, now_ms=world.now)
    counts = (
        len(world.report_repo.reports),
        len(world.evidence_repo.rows),
        len(world.audit_repo.rows),
    )
    with pytest.raises(ReportReplayError) as caught:
        world.intake.submit(sub, now_ms=world.now + 1)
    assert type(caught.value) is ReportReplayError and caught.value.code == "report_replayed"
    assert counts == (
        len(world.report_repo.reports),
        len(world.evidence_repo.rows),
        len(world.audit_repo.rows),
    )


def test_same_message_reported_twice_by_the_same_reporter_is_refused(world: World) -> None:
    _, items = three_messages(world)
    world.intake.submit(submission(BOB, items), now_ms=world.now)
    # Less context, a different category: still the same reported message.
    with pytest.raises(MessageAlreadyReportedError):
        world.intake.submit(submission(BOB, items[1:], category="spam"), now_ms=world.now)
    assert len(world.report_repo.reports) == 1


def test_same_message_from_the_reporters_other_device_is_refused(world: World) -> None:
    chat = direct_chat(world.server, "alice", "bob")
    sent = chat.send(ALICE, [BOB, BOB2], "threat")
    world.intake.submit(submission(BOB, [sent.to(*BOB)]), now_ms=world.now)
    with pytest.raises(MessageAlreadyReportedError):
        world.intake.submit(submission(BOB2, [sent.to(*BOB2)]), now_ms=world.now)


def test_another_reporter_may_report_the_same_group_message(world: World) -> None:
    chat = group_chat(world.server)
    sent = chat.send(ALICE, [BOB, CAROL], "hate")
    first = world.intake.submit(submission(BOB, [sent.to(*BOB)]), now_ms=world.now)
    second = world.intake.submit(submission(CAROL, [sent.to(*CAROL)]), now_ms=world.now)
    assert first.case_id == second.case_id  # grouped, not noise


def test_context_from_another_conversation_is_refused(world: World) -> None:
    _, items = three_messages(world)
    other = direct_chat(world.server, "alice", "bob")
    other.conversation_id = os.urandom(32)  # a stitched-in message from elsewhere
    foreign = other.send(ALICE, [BOB], "elsewhere").to(*BOB)
    error = refused(world, submission(BOB, [*items, foreign], reported=0), ContextChainError)
    assert error.message.startswith(ChainFault.TWO_CONVERSATIONS.value)


def test_group_context_stitched_into_a_direct_report_is_refused(world: World) -> None:
    _, items = three_messages(world)
    group = group_chat(world.server)
    foreign = group.send(ALICE, [BOB], "in the group").to(*BOB)
    error = refused(world, submission(BOB, [*items, foreign], reported=0), ContextChainError)
    assert error.message.startswith(ChainFault.TWO_CONVERSATIONS.value)


def test_direct_message_from_a_conversation_not_between_sender_and_reporter(world: World) -> None:
    chat = Chat(world.server, franking.direct_conversation_id("alice", "dave"))
    item = chat.send(ALICE, [BOB], "for dave, delivered to bob").to(*BOB)
    error = refused(world, submission(BOB, [item]), ContextChainError)
    assert error.message.startswith(ChainFault.WRONG_CONVERSATION.value)


def test_dropped_or_reordered_context_is_refused(world: World) -> None:
    _, items = three_messages(world)
    error = refused(world, submission(BOB, [items[0], items[2]]), ContextChainError)
    assert error.message.startswith(ChainFault.BROKEN_LINK.value)
    error = refused(world, submission(BOB, [items[1], items[0], items[2]]), ContextChainError)
    assert error.message.startswith(ChainFault.REORDERED.value)


def test_malformed_submissions_are_refused(world: World) -> None:
    _, items = three_messages(world)
    refused(world, submission(BOB, items, category="rudeness"), InvalidReportError)
    sub = dataclasses.replace(submission(BOB, items), reported_index=3)
    refused(world, sub, InvalidReportError)
    refused(world, dataclasses.replace(sub, items=()), InvalidReportError)
    reveal = AttachmentReveal(0, 0, os.urandom(32))
    refused(world, submission(BOB, items, attachments=(reveal,)), InvalidReportError)
    refused(world, submission(BOB, items, attachments=(reveal, reveal)), InvalidReportError)
    refused(world, submission(BOB, items, comment="x" * 2001), InvalidReportError)


# --- attachments --------------------------------------------------------------------------


def attachment_report(world: World) -> tuple[Chat, ReportItem, pb.AttachmentPointer, bytes]:
    chat = direct_chat(world.server, "alice", "bob")
    pointer, key = chat.upload(b"\x89PNG abusive image bytes" * 40)
    item = chat.send(ALICE, [BOB], "look", attachments=(pointer,)).to(*BOB)
    return chat, item, pointer, key


def test_reported_attachment_is_fetched_checked_decrypted_and_sealed(world: World) -> None:
    _, item, pointer, key = attachment_report(world)
    receipt = world.intake.submit(
        submission(BOB, [item], attachments=(AttachmentReveal(0, 0, key),)), now_ms=world.now
    )
    kinds = sorted(e.kind for e in world.evidence_repo.evidence_for_report(receipt.report_id))
    assert kinds == ["attachment:0:0", "messages"]
    (att,) = [
        e
        for e in world.evidence_repo.evidence_for_report(receipt.report_id)
        if e.kind != "messages"
    ]
    assert att.plaintext_size == pointer.size
    assert b"abusive image" not in att.ciphertext


def test_attachment_key_swap_is_refused(world: World) -> None:
    _, item, _, _ = attachment_report(world)
    sub = submission(BOB, [item], attachments=(AttachmentReveal(0, 0, os.urandom(32)),))
    refused(world, sub, AttachmentKeyMismatchError)
    sub = submission(BOB, [item], attachments=(AttachmentReveal(0, 0, b"short"),))
    refused(world, sub, AttachmentKeyMismatchError)


def test_attachment_that_does_not_open_under_the_franked_key_is_refused(world: World) -> None:
    chat = direct_chat(world.server, "alice", "bob")
    # The sender uploads a blob under one key but franks a pointer with another key (and the
    # blob's real digest): the server must not accept a key the blob does not open under.
    real_key, claimed_key = attachment.generate_key(), attachment.generate_key()
    pointer, _ = chat.upload(b"payload" * 100, key=real_key)
    pointer.key = claimed_key
    item = chat.send(ALICE, [BOB], "see", attachments=(pointer,)).to(*BOB)
    sub = submission(BOB, [item], attachments=(AttachmentReveal(0, 0, claimed_key),))
    refused(world, sub, AttachmentError)


def test_substituted_attachment_ciphertext_is_refused(world: World) -> None:
    chat, item, pointer, key = attachment_report(world)
    # Same key, different content: only the digest in the franked pointer catches it.
    other, _ = attachment.encrypt_bytes(key, b"something innocent", chunk_size=256)
    world.server.attachments[pointer.id] = other
    sub = submission(BOB, [item], attachments=(AttachmentReveal(0, 0, key),))
    refused(world, sub, AttachmentError)
    del world.server.attachments[pointer.id]
    refused(world, sub, AttachmentUnavailableError)
    assert chat


# --- replay keys, verify_submission, properties -------------------------------------------


def test_replay_keys_are_stable_and_distinct(world: World) -> None:
    _, items = three_messages(world)
    a = replay_keys(submission(BOB, items))
    assert a == replay_keys(submission(BOB, items))
    b = replay_keys(submission(BOB, items[1:]))
    assert a[0] != b[0] and a[1] == b[1]
    assert (a[0].kind, a[1].kind) == (ReplayKind.REPORT, ReplayKind.MESSAGE)


def test_store_is_atomic_against_a_concurrent_duplicate(world: World) -> None:
    _, items = three_messages(world)
    sub = submission(BOB, items)
    world.intake.submit(sub, now_ms=world.now)
    # A second copy that passed the early check still cannot be stored.
    reports = dict(world.report_repo.reports)
    report = next(iter(reports.values()))
    with pytest.raises(ReportReplayError):
        world.report_repo.store_verified_report(
            dataclasses.replace(report, report_id="rep_other"), [], [], replay_keys(sub)
        )
    assert world.report_repo.reports == reports


def test_verify_submission_returns_contents_and_key_ids(world: World) -> None:
    _, items = three_messages(world)
    keys = FrankingKeyRing([FrankingKey("f1", OLD_KEY, 0, None)])
    verified = verify_submission(keys, submission(BOB, items))
    assert [c.data.body for c in verified.contents] == ["hi", "answer me", "threat"]
    assert verified.key_ids == ("f1", "f1", "f1")
    assert "content" not in repr(verified) and items[0].franking_key.hex() not in repr(verified)


FIELDS = ("content", "franking_key", "commitment", "franking_tag")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    field=st.sampled_from(FIELDS),
    index=st.integers(0, 2),
    position=st.integers(0, 10_000),
    flip=st.integers(1, 255),
)
def test_any_flipped_byte_is_refused_and_nothing_stored(
    field: str, index: int, position: int, flip: int
) -> None:
    world = build_world()
    _, items = three_messages(world)
    value = bytearray(getattr(items[index], field))
    value[position % len(value)] ^= flip
    try:
        forged = dataclasses.replace(items[index], **{field: bytes(value)})  # type: ignore[arg-type]
    except DecodeError:
        return  # refused at parsing already
    items[index] = forged
    before = len(world.audit_repo.rows)
    with pytest.raises((CryptoError, DecodeError)):
        world.intake.submit(submission(BOB, items), now_ms=world.now)
    assert world.stored_nothing(before)
