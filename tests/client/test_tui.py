"""`tidings chat` driven headless with Textual's pilot, against the real server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from textual.widgets import Input, ListView

from tests.support.clients import register
from tests.support.staff import active_staff
from tidings.client.tui import ChatApp


async def wait_for(pilot: object, condition: Callable[[], bool], timeout: float = 15.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def select_by_keyboard(
    pilot: object, app: ChatApp, matches: Callable[[str], bool], timeout: float = 15.0
) -> None:
    """Move the list cursor to the first label that ``matches`` and press Enter, until that
    conversation is open. Retries because the background listen loop may rebuild the list
    (new messages, receipts) between the cursor move and the key press."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    view = app.query_one("#conversations", ListView)
    while True:
        labels = app.conversation_labels()
        index = next((i for i, label in enumerate(labels) if matches(label)), None)
        if index is not None and index < len(view.children):
            view.focus()
            view.index = index
            await pilot.press("enter")  # type: ignore[attr-defined]
            await asyncio.sleep(0.1)
            peer = app._peers[index] if index < len(app._peers) else None
            if peer is not None and app.current == peer:
                return
        assert loop.time() < deadline, "could not open the conversation"
        await asyncio.sleep(0.05)


def test_chat_tui(tmp_path: Path, server_url: str, names: Callable[[str], str]) -> None:
    async def main() -> None:
        alice = await register(tmp_path, "alice", names("alice"), server_url)
        bob = await register(tmp_path, "bob", names("bob"), server_url)
        carol = await register(tmp_path, "carol", names("carol"), server_url)
        a, b = alice.account.username, bob.account.username
        await bob.send_text(a, "hi alice")
        # A group too, so the list shows both kinds.
        await carol.create_group("Picnic", [a])

        app = ChatApp(alice)
        async with app.run_test(size=(120, 40)) as pilot:
            # The listen loop receives the queued message: the list shows it unread.
            await wait_for(pilot, lambda: f"{b} (1)" in app.conversation_labels())
            await wait_for(pilot, lambda: any(label.startswith("# Picnic")
                                              for label in app.conversation_labels()))

            # Select Bob's conversation with the keyboard.
            await select_by_keyboard(pilot, app, lambda label: label == f"{b} (1)")
            assert app.current == b
            assert app.lines == [f"{b}: hi alice"]
            assert f"{b} (1)" not in app.conversation_labels()  # read now

            # Type and send a message; Bob's SDK receives it.
            assert app.focused is app.query_one("#composer", Input)
            await pilot.press(*"hello bob", "enter")
            await wait_for(pilot, lambda: any(line.startswith("me: hello bob")
                                              for line in app.lines))
            events = await bob.poll()
            assert [e.message.body for e in events
                    if e.kind == "message" and e.message] == ["hello bob"]
            # Bob's delivery receipt comes back: the pane shows it delivered.
            await wait_for(pilot, lambda: "me: hello bob  ✓✓" in app.lines)

            # A file from Bob appears with its number; /save writes it.
            doc = tmp_path / "note.txt"
            doc.write_text("file body")
            await bob.send_file(a, doc, caption="see attached")
            await wait_for(pilot, lambda: any("note.txt" in line for line in app.lines))
            assert any(line.startswith(f"{b}: see attached [file 1: note.txt")
                       for line in app.lines)
            out = tmp_path / "saved"
            out.mkdir()
            await pilot.press(*f"/save 1 {out}", "enter")
            await wait_for(pilot, lambda: (out / "note.txt").exists())
            assert (out / "note.txt").read_text() == "file body"

            # Bob re-registers (new account, same name, new keys) and writes again: the
            # banner warns about the changed safety number.
            assert app.banner_text == ""
            await bob._transport.delete_account()
            await bob.aclose()
            bob = await register(tmp_path, "bob-new", b, server_url)
            await bob.send_text(a, "it's me, new phone")
            await wait_for(pilot, lambda: any("new phone" in line for line in app.lines))
            await wait_for(pilot, lambda: b in app.banner_text)
            assert "safety number" in app.banner_text
            # /verify clears it.
            await pilot.press(*"/verify", "enter")
            await wait_for(pilot, lambda: app.banner_text == "")

            # The group conversation: send into it; Carol receives.
            await select_by_keyboard(pilot, app, lambda label: label.startswith("# Picnic"))
            assert (app.current or "").startswith("group:")
            await pilot.press(*"bring cake", "enter")
            await wait_for(pilot, lambda: any("bring cake" in line for line in app.lines))
            events = await carol.poll()
            assert "bring cake" in [e.message.body for e in events if e.message]
            await pilot.press("ctrl+q")
        for client in (alice, bob, carol):
            await client.aclose()

    asyncio.run(main())


def test_chat_tui_report_status_and_appeal(
    tmp_path: Path, server_app: tuple[str, Any], names: Callable[[str], str]
) -> None:
    """Alice reports Bob's message from the TUI; a reviewer suspends Bob; Bob's TUI says so
    (decision id, how to appeal), a refused send refreshes it, and /appeal files the appeal."""
    from tidings.safety.service import SafetyService
    from tidings.safety.staff import Role

    server_url, asgi = server_app
    safety: SafetyService = asgi.state.safety

    async def main() -> None:
        alice = await register(tmp_path, "alice", names("alice"), server_url)
        bob = await register(tmp_path, "bob", names("bob"), server_url)
        a, b = alice.account.username, bob.account.username
        await bob.send_text(a, "hello")

        app = ChatApp(alice)
        async with app.run_test(size=(120, 40)) as pilot:
            assert app.banner_text == ""  # in good standing: no account banner
            assert app.account_state.get("status") == "active"
            await wait_for(pilot, lambda: f"{b} (1)" in app.conversation_labels())
            await select_by_keyboard(pilot, app, lambda label: label == f"{b} (1)")
            await pilot.press(*"hi", "enter")
            await wait_for(pilot, lambda: any(line.startswith("me: hi") for line in app.lines))
            await bob.poll()
            await bob.send_text(a, "you will regret this")
            await wait_for(pilot, lambda: f"{b}: you will regret this" in app.lines)
            assert app.lines[0] == f"{b}: hello" and app.lines[1].startswith("me: hi")

            # Line 2 is Alice's own message: not reportable.
            await pilot.press(*"/report 2 harassment", "enter")
            await wait_for(pilot, lambda: "not a received message" in app.status_text)
            # Line 3, with a note: the server accepts it and the TUI shows the ids.
            await pilot.press(*"/report 3 harassment threatened me", "enter")
            await wait_for(pilot, lambda: "report " in app.status_text
                           and "case " in app.status_text)
            case_id = app.status_text.rsplit("case ", 1)[1].strip()
            case = safety.case_repo.get_case(case_id)
            assert case is not None and case.subject == b
            # Reporting it again: the server's typed refusal is shown.
            await pilot.press(*"/report 3 harassment", "enter")
            await wait_for(pilot, lambda: app.status_text.startswith("report refused ("))
            assert ("message_already_reported" in app.status_text
                    or "report_replayed" in app.status_text)
            await pilot.press("ctrl+q")

        # A reviewer suspends Bob (the reported sender).
        reviewer = safety.staff.principal_for(active_staff(
            safety, names("rev"), [Role.REVIEWER], queues=(case.queue_id,)).staff_id)
        safety.claim(reviewer, case_id)
        until = int(time.time() * 1000) + 86_400_000
        outcome = safety.decide(reviewer, case_id, kind="suspend", policy_id="HAR-1",
                                reason="threats", until_ms=until)
        assert outcome.enforcements
        decision_id = outcome.decision.decision_id

        app = ChatApp(bob, listen=False)
        async with app.run_test(size=(120, 40)) as pilot:
            # Fetched at start-up: what happened and how to appeal.
            assert "suspended" in app.banner_text
            assert f"/appeal {decision_id}" in app.banner_text
            # A send refused for the suspension says so and keeps the banner.
            app.query_one("#composer", Input).focus()
            await pilot.press(*f"/to {a}", "enter")
            await wait_for(pilot, lambda: app.current == a)
            await pilot.press(*"sorry", "enter")
            await wait_for(pilot, lambda: app.status_text.startswith("error ("))
            assert "account_suspended" in app.status_text, app.status_text
            assert f"/appeal {decision_id}" in app.banner_text
            # /appeal files it; the banner then shows the appeal's state.
            await pilot.press(*"/appeal", "enter")
            await wait_for(pilot, lambda: app.status_text.startswith("usage: /appeal"))
            await pilot.press(*f"/appeal {decision_id} it was a quote from a film", "enter")
            await wait_for(pilot, lambda: app.status_text.startswith("appeal ")
                           and "submitted" in app.status_text)
            await wait_for(pilot, lambda: "appeal " in app.banner_text
                           and f"/appeal {decision_id}" not in app.banner_text)
            assert [x.decision_id for x in safety._appeals_by(b)] == [decision_id]
            await pilot.press("ctrl+q")
        for client in (alice, bob):
            await client.aclose()

    asyncio.run(main())


def test_chat_starts_ready_to_type_and_never_loses_typing(
    tmp_path: Path, server_url: str, names: Callable[[str], str]
) -> None:
    """A newcomer (no conversations): the composer has focus; a message typed before any
    conversation is open is not sent but kept, with a hint; "/to bob" opens Bob's chat with
    the message waiting. Next start: the most recent conversation is open, and keys typed
    while the list has focus (after Tab, or ctrl+l) go to the composer."""

    async def main() -> None:
        alice = await register(tmp_path, "alice", names("alice"), server_url)
        bob = await register(tmp_path, "bob", names("bob"), server_url)
        carol = await register(tmp_path, "carol", names("carol"), server_url)
        a, b, c = (x.account.username for x in (alice, bob, carol))
        composer = "#composer"

        app = ChatApp(alice, listen=False)
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause()
            assert app.current is None
            assert app.focused is app.query_one(composer, Input)
            await pilot.press(*"hello bob", "enter")
            await wait_for(pilot, lambda: app.status_text.startswith("not sent"))
            assert "/to USER" in app.status_text
            await pilot.press(*f"/to {b}", "enter")
            await wait_for(pilot, lambda: app.current == b)
            assert app.query_one(composer, Input).value == "hello bob"
            await pilot.press("enter")
            await wait_for(pilot, lambda: any(x.startswith("me: hello bob") for x in app.lines))
            await pilot.press("ctrl+q")
        assert [e.message.body for e in await bob.poll() if e.message] == ["hello bob"]

        # Carol writes last: her conversation is the most recent one.
        await carol.send_text(a, "hi from carol")
        await alice.poll()
        app = ChatApp(alice, listen=False)
        async with app.run_test(size=(120, 40)) as pilot:
            await wait_for(pilot, lambda: app.current == c)
            await pilot.pause()
            assert app.focused is app.query_one(composer, Input)
            assert app.lines == [f"{c}: hi from carol"]
            await pilot.press("tab")
            await wait_for(pilot, lambda: app.focused is not app.query_one(composer, Input))
            await pilot.press(*"after tab", "enter")
            await wait_for(pilot, lambda: any(x.startswith("me: after tab") for x in app.lines))
            await pilot.press("ctrl+l")
            await wait_for(pilot, lambda: app.focused is app.query_one("#conversations"))
            await pilot.press(*"from the list", "enter")
            await wait_for(pilot, lambda: any(x.startswith("me: from the list")
                                              for x in app.lines))
            await pilot.press("ctrl+q")
        got = [e.message.body for e in await carol.poll() if e.kind == "message" and e.message]
        assert got == ["after tab", "from the list"]
        for client in (alice, bob, carol):
            await client.aclose()

    asyncio.run(main())
