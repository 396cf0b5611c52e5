"""Reports from the client side: the ReportItem run and JSON body of ``POST /v1/reports``
(checked with the server's franking key as the provider checks them), and the round trip
through the server's trust & safety routes when they are present."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.clients import register, run
from tidings.client.errors import InvalidArgumentError, NotReportableError, ServerError
from tidings.client.sdk import K_MESSAGE
from tidings.client.transport import b64d
from tidings.crypto.franking import ReportItem, direct_conversation_id, verify_report
from tidings.wire import codec
from tidings.wire import tidings_pb2 as pb


def bodies(items: list[ReportItem]) -> list[str]:
    return [codec.decode(pb.Content, i.content).data.body for i in items]


def test_report_body_with_context_and_attachment(
    tmp_path: Path, server_url: str, franking_key: bytes, names: Callable[[str], str]
) -> None:
    async def main() -> None:
        alice = await register(tmp_path, "a", names("alice"), server_url)
        bob = await register(tmp_path, "b", names("bob"), server_url)
        a, b = alice.account.username, bob.account.username
        for text in ("one", "two", "three"):
            await alice.send_text(b, text)
        await bob.send_text(a, "stop it")  # the reporter's own messages are never items
        await alice.send_text(b, "four")
        doc = tmp_path / "evidence.txt"
        doc.write_text("bad file")
        await alice.send_file(b, doc, caption="look")
        await bob.poll()
        received = {m.body: m for m in bob.messages(a) if m.direction == "in"}

        body = bob.build_report(received["three"].id, "harassment", context=1, note="help")
        items = [ReportItem.decode(b64d(x)) for x in body["items"]]
        assert bodies(items) == ["two", "three", "four"]
        assert body["reported_index"] == 1 and body["block"] is False
        assert body["note"] == "help" and body["attachments"] == []
        verify_report(franking_key, items, expected_conversation_id=direct_conversation_id(a, b))
        assert all(i.recipient == b and i.recipient_device == 1 for i in items)

        # Wide context: everything received, oldest first; the file is revealed by its key.
        body = bob.build_report(received["look"].id, "spam", context=50, block=True)
        items = [ReportItem.decode(b64d(x)) for x in body["items"]]
        assert bodies(items) == ["one", "two", "three", "four", "look"]
        assert body["reported_index"] == 4 and body["block"] is True
        pointer = codec.decode(pb.Content, items[4].content).data.attachments[0]
        assert body["attachments"] == [{"item": 4, "pointer": 0,
                                        "key": body["attachments"][0]["key"]}]
        assert b64d(body["attachments"][0]["key"]) == pointer.key
        verify_report(franking_key, items, expected_conversation_id=direct_conversation_id(a, b))

        # A gap in the local history (here: a deleted record) shortens the context instead of
        # producing a run the server would refuse.
        bob._store.delete(K_MESSAGE, received["two"].id)
        body = bob.build_report(received["four"].id, "spam", context=5)
        items = [ReportItem.decode(b64d(x)) for x in body["items"]]
        assert bodies(items) == ["three", "four", "look"]
        verify_report(franking_key, items)

        with pytest.raises(InvalidArgumentError):
            bob.build_report(received["four"].id, "rudeness")
        with pytest.raises(InvalidArgumentError):
            bob.build_report(received["four"].id, "spam", context=51)
        with pytest.raises(NotReportableError):
            bob.build_report("o:nothing", "spam")
        sent = next(m for m in bob.messages(a) if m.direction == "out")
        with pytest.raises(NotReportableError):
            bob.build_report(sent.id, "spam")
        await alice.aclose()
        await bob.aclose()

    run(main())


def test_report_round_trip(
    tmp_path: Path, server_url: str, names: Callable[[str], str]
) -> None:
    async def main() -> None:
        alice = await register(tmp_path, "a", names("alice"), server_url)
        bob = await register(tmp_path, "b", names("bob"), server_url)
        a, b = alice.account.username, bob.account.username
        await alice.send_text(b, "a threat")
        await bob.poll()
        message = next(m for m in bob.messages(a) if m.direction == "in")
        answer = await bob.report(message.id, "violent_threat", context=3, block=True)
        # Only alice's one message exists, so context=3 still yields exactly one item.
        assert answer["report_id"] and answer["case_id"] and answer["items"] == 1
        # The same message cannot be reported twice: with one message in the conversation the
        # second report carries the very same item, so the server sees an exact replay.
        with pytest.raises(ServerError) as refused:
            await bob.report(message.id, "violent_threat")
        assert (refused.value.status, refused.value.code) == (400, "report_replayed")
        # Blocked locally: alice's next message is refused unread.
        await alice.send_text(b, "more")
        events = await bob.poll()
        assert [e.code for e in events if e.kind == "rejected"] == ["blocked"]
        status = await alice.account_status()
        # A report opens a case; no decision yet, so the reported account is untouched.
        assert status["status"] == "active"
        await alice.aclose()
        await bob.aclose()

    run(main())
