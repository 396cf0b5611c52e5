"""`tidings chat`: a terminal chat on top of the SDK (Textual).

Layout: a banner (hidden unless a contact's safety number changed), the conversation list
(1:1 and groups, with unread counts) on the left, the open conversation and a composer on the
right. The SDK's listen loop (WebSocket, reconnecting) runs in the background for the app's
lifetime; every event re-renders what it touches.

Typing is never lost: the app starts with the most recent conversation open and the composer
focused; a printable key pressed while anything else has focus (the list, after Tab or ctrl+l)
moves focus back to the composer and is typed there; a message sent with no conversation open
is kept in the composer for the next conversation opened, with a hint saying how to open one.

Composer: plain text is sent to the open conversation. Commands::

    /to USER              open (or start) the conversation with USER
    /group TITLE USER...  create a group with these members and open it
    /file PATH            send a file to the open conversation
    /save N [DIR]         save attachment N of the open conversation (numbers are shown)
    /verify               mark the open contact verified (after comparing safety numbers)
    /report [N] CATEGORY [NOTE...]
                          report a received message of the open conversation to the
                          provider, with up to 5 messages of context: N is the message's
                          line in the pane counted from the top (1 = the first line shown);
                          without N, the last received message. CATEGORY is one of
                          child_sexual_exploitation, violent_threat, terrorism, harassment,
                          self_harm, spam, fraud, other. The report id is shown below.
    /appeal DECISION_ID TEXT
                          appeal an enforcement decision on this account

Enforcement: the account's status is fetched at start-up and whenever the server refuses a
request with an ``account_*`` error; a warned, restricted, suspended or banned account gets a
banner saying so, with the decision id and how to appeal (``/appeal DECISION_ID text``).

Concurrency: the listen loop and the user's sends are tasks of one event loop. The SDK keeps
every state change inside a store transaction that never spans an await (the rule that also
lets two processes share a profile), so the two interleave safely.

Nothing here logs or displays keys or secrets; errors are shown as their one-line message.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from textual import events
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Footer, Input, Label, ListItem, ListView, Static

from tidings.client.sdk import GROUP_PEER_PREFIX, Client, Message, ReceiveEvent, TrustEvent
from tidings.errors import TidingsError

STATUS_MARKS = {"sent": "✓", "delivered": "✓✓", "read": "✓✓ read"}
NO_CONVERSATION_HINT = ("No conversation open. Type /to USER and Enter to start one, "
                        "or pick one on the left (ctrl+l, arrows, Enter).")


def lawful_notice_lines(state: dict[str, Any]) -> list[str]:
    """One line per lawful-request notice in an account status (``lawful_notices``: data about
    this account was produced to an authority; a non-disclosure order delays it until it
    ends)."""
    import datetime

    lines = []
    for notice in state.get("lawful_notices") or ():
        if not isinstance(notice, dict):
            continue
        due_s = int(notice.get("due_ms", 0)) / 1000
        when = datetime.datetime.fromtimestamp(due_s, tz=datetime.UTC)
        what = ", ".join(str(c).replace("_", " ") for c in notice.get("categories") or ())
        who = f"{notice.get('agency') or 'An authority'} ({notice.get('country') or '?'})"
        lines.append(
            f"ⓘ {who} was given {what or 'data'} about your account under a "
            f"{str(notice.get('kind', 'request')).replace('_', ' ')} "
            f"(notice of {when.strftime('%Y-%m-%d')}, request {notice.get('request_id')})."
        )
    return lines


def key_transparency_lines(state: dict[str, Any]) -> list[str]:
    """One line per key-transparency alert in a status (``key_transparency.alerts``: a device
    or a device list of this account that none of its devices vouched for, or a directory
    answer that did not verify)."""
    kt = state.get("key_transparency")
    if not isinstance(kt, dict):
        return []
    return [
        (f"ⓘ Key transparency ({alert.get('code')}, resolved: the device was removed): "
         if alert.get("resolved_at_ms") else f"⚠ Key transparency ({alert.get('code')}): ")
        + str(alert.get("message"))
        for alert in kt.get("alerts") or ()
        if isinstance(alert, dict)
    ]


def kt_event_lines(peer: str, events: Sequence[TrustEvent]) -> list[str]:
    """The conversation banner's lines for ``peer``'s key-transparency trust events: its
    signed device list (published in the key directory) added a device, or was reset."""
    added = sorted({e.device_id for e in events if e.kind == "kt_device_added"})
    lines = []
    if added:
        lines.append(f"⚠ {peer}'s signed device list now includes device "
                     f"{', '.join(map(str, added))} (key transparency).")
    refused = sorted({e.device_id for e in events if e.kind == "kt_unvouched_device"})
    if refused:
        lines.append(f"⚠ Device {', '.join(map(str, refused))} of {peer} is not in {peer}'s "
                     "signed device list: nothing is encrypted to it (key transparency).")
    senders = sorted({e.device_id for e in events if e.kind == "kt_unvouched_sender"})
    if senders:
        lines.append(f"⚠ Messages came from device {', '.join(map(str, senders))} of {peer}, "
                     f"which is not in {peer}'s signed device list (key transparency).")
    if any(e.kind == "kt_reset" for e in events):
        lines.append(f"⚠ {peer}'s account was reset (re-registered or recovered): "
                     "its device list started over.")
    return lines


def account_notice(state: dict[str, Any]) -> str:
    """The banner text for an account status (``GET /v1/account/status``): its enforcement
    and any lawful-request notices; "" when the account is in good standing and there are
    none."""
    kind = str(state.get("status", "active"))
    notices = lawful_notice_lines(state) + key_transparency_lines(state)
    if kind == "active":
        return " ".join(notices)
    text = f"⚠ Your account is {kind}"
    if state.get("until_ms"):
        import datetime

        until = datetime.datetime.fromtimestamp(int(state["until_ms"]) / 1000, tz=datetime.UTC)
        text += f" until {until.strftime('%Y-%m-%d %H:%M UTC')}"
    reason = f"{state.get('policy') or ''} {state.get('reason') or ''}".strip()
    if reason:
        text += f" ({reason})"
    text += "."
    decision = state.get("decision_id")
    appeal = state.get("appeal")
    if isinstance(appeal, dict):
        outcome = appeal.get("outcome")
        text += f" Decision {decision}: appeal {appeal.get('state')}" + (
            f" ({outcome})." if outcome else ".")
    elif decision:
        text += f" Decision {decision}. To appeal, type: /appeal {decision} why this is wrong"
    return " ".join([text, *notices])


class ChatApp(App[None]):
    """The chat UI of one SDK `Client` (which the caller opens and closes).

    ``listen``: run the SDK listen loop in the background (tests may drive receiving
    themselves). Attributes useful to tests: ``current`` (the open conversation's peer),
    ``lines`` (the rendered lines of the open conversation), ``banner_text``,
    ``status_text``, ``account_state``.
    """

    CSS = """
    #banner { background: $error; color: $text; padding: 0 1; display: none; }
    #banner.shown { display: block; }
    #conversations { width: 32; border-right: solid $primary; }
    #pane { width: 1fr; }
    #messages { height: 1fr; padding: 0 1; }
    #status { height: 1; color: $text-muted; padding: 0 1; }
    """

    # Focus the composer, not the first focusable widget (the list), when the screen starts.
    AUTO_FOCUS: ClassVar[str | None] = "#composer"

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+q", "quit", "Quit"),
        Binding("ctrl+l", "focus_list", "Conversations"),
    ]

    def __init__(
        self, client: Client, *, listen: bool = True, resync_interval: float = 3.0
    ) -> None:
        super().__init__()
        self._resync_interval = resync_interval
        self.client = client
        self.current: str | None = None
        self.lines: list[str] = []
        self.banner_text = ""
        self.status_text = ""
        self._listen = listen
        self._peers: list[str] = []
        self._labels: list[str] = []
        self._extra_peers: list[str] = []  # conversations opened with /to before any message
        self._attachments: list[tuple[str, int]] = []  # (message id, index) per shown number
        self._changed: set[str] = set()  # contacts whose safety number changed
        self._line_ids: list[str] = []  # message id per line of the pane
        self.account_state: dict[str, Any] = {}  # last `account_status` answer
        self._account_notice = ""
        self._draft = ""  # a message typed with no conversation open, kept for the next one
        # The list is rebuilt from the listen loop and from user actions: one at a time, or
        # a clear() could interleave with another rebuild's extend().
        self._list_lock = asyncio.Lock()

    # -- layout ------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield Static("", id="banner")
        with Horizontal():
            yield ListView(id="conversations")
            with Vertical(id="pane"):
                with VerticalScroll(id="messages"):
                    yield Static("", id="history")
                yield Static("", id="status")
                # No select-all on focus: keys redirected to the composer (`on_event`) must
                # add to what is typed there, not replace it.
                yield Input(placeholder="message, or /to USER, /file PATH, /verify, "
                                        "/report [N] CATEGORY [NOTE], /appeal ID TEXT ...",
                            id="composer", select_on_focus=False)
        yield Footer()

    async def on_mount(self) -> None:
        self.title = f"Tidings — {self.client.account.username}"
        self._load_trust_warnings()
        await self.refresh_account_status()
        await self.refresh_conversations()
        if self._peers:
            # Start where the person left off: the most recent conversation, ready to type.
            await self.open_conversation(self._peers[0])
        else:
            self.render_messages()
            self.query_one("#composer", Input).focus()
        if self._listen:
            self.run_worker(self._listen_loop(), name="listen", exclusive=True, group="listen")
            if self._resync_interval > 0:
                self.run_worker(self._resync_loop(), name="resync", group="resync")

    async def _listen_loop(self) -> None:
        try:
            await self.client.listen(follow=True, on_event=self._on_event, reconnect_delay=0.5)
        except TidingsError as exc:
            self.set_status(f"receiving stopped: {exc.message}")

    async def _resync_loop(self) -> None:
        # Safety net beside the WebSocket: an envelope the server fails to push (a lost hint,
        # or a queue row the connection's cursor skipped) is fetched over HTTP. Envelopes are
        # deduplicated by message id, so one seen both ways is processed once.
        while True:
            await asyncio.sleep(self._resync_interval)
            try:
                for event in await self.client.poll():
                    self._on_event(event)
            except TidingsError:
                continue  # the listen loop reports connection problems

    # -- conversations -------------------------------------------------------------------------

    def _conversation_peers(self) -> list[str]:
        latest: dict[str, int] = {}
        for m in self.client.messages():
            latest[m.peer] = max(latest.get(m.peer, 0), m.server_timestamp_ms)
        for g in self.client.groups():
            latest.setdefault(g.peer, 0)
        for peer in self._extra_peers:
            latest.setdefault(peer, 1 << 62)
        return sorted(latest, key=lambda p: -latest[p])

    def peer_label(self, peer: str) -> str:
        if peer.startswith(GROUP_PEER_PREFIX):
            try:
                group = self.client.group(peer)
                return f"# {group.title}" + ("" if group.active else " (left)")
            except TidingsError:
                return "# (unknown group)"
        return peer + (" ⚠" if peer in self._changed else "")

    async def refresh_conversations(self) -> None:
        """Rebuild the conversation list (labels, unread counts), keeping the selection."""
        async with self._list_lock:
            unread = self.client.unread_counts()
            peers = self._conversation_peers()
            view = self.query_one("#conversations", ListView)
            labels = []
            for peer in peers:
                count = unread.get(peer, 0) if peer != self.current else 0
                labels.append(self.peer_label(peer) + (f" ({count})" if count else ""))
            self._peers = peers
            await view.clear()
            await view.extend([ListItem(Label(text)) for text in labels])
            self._labels = labels  # only once the items are in the list
            if self.current in peers:
                view.index = peers.index(self.current)

    def conversation_labels(self) -> list[str]:
        """The labels as last rendered (for tests and screen readers). Read from the model,
        not the widgets: a refresh may be mounting new list items at that moment."""
        return list(self._labels)

    async def on_list_view_selected(self, event: ListView.Selected) -> None:
        index = event.list_view.index
        if index is not None and 0 <= index < len(self._peers):
            await self.open_conversation(self._peers[index])

    async def open_conversation(self, peer: str) -> None:
        """Show ``peer``'s conversation, mark it read (read receipts go out), focus the
        composer (with the message kept from when no conversation was open, if any)."""
        self.current = peer
        if peer not in self._peers and peer not in self._extra_peers:
            self._extra_peers.append(peer)
        self.render_messages()
        self._show_banner()  # with the conversation's key-transparency notices
        composer = self.query_one("#composer", Input)
        if self._draft and not composer.value:
            composer.value, self._draft = self._draft, ""
            composer.cursor_position = len(composer.value)
            self.set_status(f"to {peer}: press Enter to send the message you typed")
        composer.focus()
        await self._mark_read()
        await self.refresh_conversations()

    async def _mark_read(self) -> None:
        if self.current is None:
            return
        try:
            await self.client.mark_read(self.current)
        except TidingsError as exc:
            self.set_status(f"could not send read receipts: {exc.message}")

    def action_focus_list(self) -> None:
        self.query_one("#conversations", ListView).focus()

    async def on_event(self, event: events.Event) -> None:
        """Send typing to the composer whatever has focus.

        A printable key pressed while the list (or nothing) has focus would be swallowed:
        focus the composer, and the key goes there. This runs in the app's handler of keys
        from the terminal, before they are forwarded to the focused widget, and sets the focus
        at once (not deferred like `Widget.focus`); the key itself is then forwarded as usual,
        so it joins the composer's queue behind keys already sent there and typing keeps its
        order.
        """
        if (isinstance(event, events.Key) and not event.is_forwarded and event.is_printable
                and not isinstance(self.focused, Input)):
            composer = self.screen.query("#composer")  # absent on another screen (palette)
            if composer:
                self.screen.set_focus(composer.first(Input))
        await super().on_event(event)

    # -- rendering ---------------------------------------------------------------------------

    def _line(self, m: Message) -> str:
        who = "me" if m.direction == "out" else m.sender
        if m.group_id is not None and m.direction == "in":
            who = f"{m.sender}"
        text = m.body
        if m.notice:
            text = f"— {m.notice} —" + (f" {m.body}" if m.body else "")
        for index, a in enumerate(m.attachments):
            self._attachments.append((m.id, index))
            text += f" [file {len(self._attachments)}: {a.file_name}, {a.size} bytes]"
        mark = f"  {STATUS_MARKS.get(m.status, '')}" if m.direction == "out" else ""
        return f"{who}: {text}{mark}"

    def render_messages(self) -> None:
        """Render the open conversation into the message pane (and ``lines``)."""
        self._attachments = []
        if self.current is None:
            self.lines = []
            self._line_ids = []
        else:
            history = sorted(self.client.messages(self.current),
                             key=lambda m: m.server_timestamp_ms)
            self.lines = [self._line(m) for m in history]
            self._line_ids = [m.id for m in history]
        empty = NO_CONVERSATION_HINT if self.current is None else "(no messages)"
        self.query_one("#history", Static).update("\n".join(self.lines) or empty)
        self.query_one("#messages", VerticalScroll).scroll_end(animate=False)

    def set_status(self, text: str) -> None:
        self.status_text = text
        self.query_one("#status", Static).update(text)

    def _show_banner(self) -> None:
        banner = self.query_one("#banner", Static)
        parts = [self._account_notice] if self._account_notice else []
        if self._changed:
            names = ", ".join(sorted(self._changed))
            parts.append(f"⚠ The safety number with {names} changed. Compare it "
                         f"(`tidings safety-number`) and type /verify in the chat.")
        if self.current is not None and not self.current.startswith(GROUP_PEER_PREFIX):
            parts.extend(kt_event_lines(self.current, self.client.trust_events(self.current)))
        self.banner_text = "\n".join(parts)
        if parts:
            banner.update(self.banner_text)
            banner.add_class("shown")
        else:
            banner.remove_class("shown")

    async def refresh_account_status(self) -> None:
        """Fetch this account's enforcement state, check it in the key directory, and show
        (or clear) its banner."""
        try:
            self.account_state = await self.client.account_status()
            try:
                kt = await self.client.kt_sync()
            except TidingsError:
                kt = self.client.kt_status()  # the failure is one of its alerts
            self.account_state["key_transparency"] = kt
        except TidingsError as exc:
            self.set_status(f"could not fetch the account status: {exc.message}")
            return
        self._account_notice = account_notice(self.account_state)
        self._show_banner()

    def _load_trust_warnings(self) -> None:
        # Changes seen while the app was closed are kept as trust events by the SDK.
        for peer in {m.peer for m in self.client.messages()}:
            if not peer.startswith(GROUP_PEER_PREFIX) and self.client.trust_events(peer):
                self._changed.add(peer)
        self._show_banner()

    # -- events ------------------------------------------------------------------------------

    def _on_event(self, event: ReceiveEvent) -> None:
        # Called inside the SDK's listen loop: hand the event to the app's message loop and
        # return at once, so receiving never waits on the screen (or on sends it triggers).
        self.call_later(self._apply_event, event)

    async def _apply_event(self, event: ReceiveEvent) -> None:
        if event.identity_changed and event.sender != self.client.account.username:
            self._changed.add(event.sender)
            self._show_banner()
        if event.kind == "rejected":
            self.set_status(f"refused a message from {event.sender} ({event.code})")
        if event.kind in ("message", "sync", "receipt"):
            peer = event.message.peer if event.message is not None else None
            if peer is not None and peer == self.current and event.kind == "message":
                await self._mark_read()
            if self.current is not None and (peer == self.current or event.kind == "receipt"):
                self.render_messages()
            await self.refresh_conversations()

    async def on_input_submitted(self, event: Input.Submitted) -> None:
        text = event.value.strip()
        event.input.value = ""
        if not text:
            return
        try:
            await self._command(text)
        except TidingsError as exc:
            self.set_status(f"error ({exc.code}): {exc.message}")
            if exc.code.startswith("account_"):
                # The server enforces a decision on this account: say what and how to appeal.
                await self.refresh_account_status()

    async def _command(self, text: str) -> None:
        if text.startswith("/to "):
            await self.open_conversation(text[4:].strip())
            return
        if text.startswith("/group "):
            title, *members = text[7:].split()
            result = await self.client.create_group(title, members)
            await self.open_conversation(result.group.peer)
            return
        if text == "/verify":
            await self._verify()
            return
        if text.startswith("/save "):
            await self._save(text[6:].split())
            return
        if text == "/report" or text.startswith("/report "):
            await self._report(text[7:].split())
            return
        if text == "/appeal" or text.startswith("/appeal "):
            await self._appeal(text[7:].strip())
            return
        if text == "/to":
            self.set_status("usage: /to USER")
            return
        if self.current is None:
            # Not sent, and not lost: it waits in the composer of the next conversation.
            self._draft = text
            self.set_status("not sent: no conversation is open. Type /to USER and Enter "
                            "(or pick one on the left); your message will be waiting.")
            self.render_messages()
            return
        group = self.current.startswith(GROUP_PEER_PREFIX)
        if text.startswith("/file "):
            path = Path(text[6:].strip()).expanduser()
            self.set_status(f"sending {path.name}...")
            if group:
                await self.client.send_group_file(self.current, path)
            else:
                await self.client.send_file(self.current, path)
            self.set_status(f"sent {path.name}")
        elif group:
            result = await self.client.send_group_text(self.current, text)
            if result.failed:
                self.set_status("not reached: " + ", ".join(result.failed))
        else:
            await self.client.send_text(self.current, text)
        self.render_messages()
        await self.refresh_conversations()

    async def _verify(self) -> None:
        peer = self.current
        if peer is None or peer.startswith(GROUP_PEER_PREFIX):
            self.set_status("/verify works in a 1:1 conversation")
            return
        await self.client.verify(peer)
        self._changed.discard(peer)
        self._show_banner()
        self.set_status(f"{peer} verified")
        await self.refresh_conversations()

    async def _save(self, args: list[str]) -> None:
        try:
            number = int(args[0])
            message_id, index = self._attachments[number - 1]
        except (ValueError, IndexError):
            self.set_status("usage: /save N [DIR] with N a file number shown above")
            return
        directory = Path(args[1]).expanduser() if len(args) > 1 else Path.cwd()
        written = await self.client.download_attachment(message_id, directory, index=index)
        self.set_status(f"saved {written}")

    async def _report(self, args: list[str]) -> None:
        usage = "usage: /report [N] CATEGORY [NOTE...] (N: line of a received message)"
        if self.current is None:
            self.set_status("open a conversation first, then /report")
            return
        history = {m.id: m for m in self.client.messages(self.current)}
        if args and args[0].isdigit():
            number = int(args.pop(0))
            if not 1 <= number <= len(self._line_ids):
                self.set_status(f"no line {number} in this conversation; {usage}")
                return
            message = history.get(self._line_ids[number - 1])
            if message is None or message.direction != "in":
                self.set_status(f"line {number} is not a received message")
                return
        else:
            received = [history[i] for i in self._line_ids
                        if i in history and history[i].direction == "in"]
            if not received:
                self.set_status("no received message to report here")
                return
            message = received[-1]
        if not args:
            self.set_status(usage)
            return
        category, note = args[0], " ".join(args[1:]) or None
        try:
            answer = await self.client.report(message.id, category, note=note)
        except TidingsError as exc:
            self.set_status(f"report refused ({exc.code}): {exc.message}")
            return
        self.set_status(f"reported {message.sender}'s message ({answer.get('items')} message(s) "
                        f"sent): report {answer.get('report_id')}, case {answer.get('case_id')}")

    async def _appeal(self, rest: str) -> None:
        decision_id, _, text = rest.partition(" ")
        if not decision_id or not text.strip():
            self.set_status("usage: /appeal DECISION_ID TEXT")
            return
        try:
            answer = await self.client.appeal(decision_id, text.strip())
        except TidingsError as exc:
            self.set_status(f"appeal refused ({exc.code}): {exc.message}")
            return
        self.set_status(f"appeal {answer.get('appeal_id')} submitted")
        await self.refresh_account_status()
