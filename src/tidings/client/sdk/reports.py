"""Reports, account status and appeals."""

from __future__ import annotations

from typing import Any

from tidings.client.errors import InvalidArgumentError, NotReportableError, TransportError
from tidings.client.sdk.constants import DEFAULT_REPORT_CONTEXT, MAX_REPORT_CONTEXT
from tidings.client.sdk.inbox import InboxMixin
from tidings.client.sdk.records import MessageRecord
from tidings.client.transport import b64d, b64e
from tidings.crypto.franking import ReportItem, verify_context_chain
from tidings.errors import TidingsError
from tidings.wire import codec
from tidings.wire import tidings_pb2 as pb
from tidings.wire.report import (
    MAX_REPORT_NOTE_CHARS,
    MAX_REPORTED_ATTACHMENTS,
    REPORT_CATEGORIES,
)


class ReportsMixin(InboxMixin):
    """Reports, a part of `Client`."""

    # -- reports, account status, appeals ------------------------------------------------------

    def build_report(
        self,
        message_id: str,
        category: str,
        *,
        context: int = DEFAULT_REPORT_CONTEXT,
        note: str | None = None,
        block: bool = False,
    ) -> dict[str, Any]:
        """The JSON body of ``POST /v1/reports`` for a message received by this device.

        ``items`` are the reported message's franking material (`ReportItem`) and up to
        ``context`` received messages of the same conversation before and after it, oldest
        first. The context is grown outwards one message at a time and only while the run
        stays a valid transcript excerpt (`verify_context_chain`), so a gap in the local
        history (a refused message, a member who was away) shortens the context instead of
        making the server refuse the report. The reported message's attachments are reported
        by revealing their keys.

        Raises:
            InvalidArgumentError: unknown category, context out of range, overlong note.
            NotReportableError: no such message, or it was not received by this device.
        """
        if category not in REPORT_CATEGORIES:
            raise InvalidArgumentError(
                f"unknown category {category!r}; one of: {', '.join(REPORT_CATEGORIES)}")
        if not 0 <= context <= MAX_REPORT_CONTEXT:
            raise InvalidArgumentError(f"context is 0 to {MAX_REPORT_CONTEXT} messages")
        if note is not None and len(note) > MAX_REPORT_NOTE_CHARS:
            raise InvalidArgumentError(f"the note is longer than {MAX_REPORT_NOTE_CHARS} "
                                       "characters")
        record = self._message_record(message_id)
        target = None if record is None else _reportable(record)
        if record is None or target is None or record.message.direction != "in":
            raise NotReportableError(
                "only a message received by this device can be reported (see `messages --json`"
                " for ids)")
        candidates: list[tuple[int, str, ReportItem, pb.Content]] = []
        for other in self._message_records():
            if other.message.peer != record.message.peer:
                continue
            parsed = _reportable(other)
            if parsed is not None:
                candidates.append((parsed[0].server_timestamp_ms, other.message.id, *parsed))
        candidates.sort(key=lambda c: c[0])  # stable: ties keep the order of arrival
        index = next(i for i, c in enumerate(candidates) if c[1] == message_id)
        lo = hi = index

        def valid(first: int, last: int) -> bool:
            try:
                verify_context_chain([c[2] for c in candidates[first:last + 1]])
            except TidingsError:
                return False
            return True

        while lo > 0 and index - lo < context and valid(lo - 1, hi):
            lo -= 1
        while hi < len(candidates) - 1 and hi - index < context and valid(lo, hi + 1):
            hi += 1
        window = candidates[lo:hi + 1]
        reported_index = index - lo
        pointers = target[1].data.attachments
        body: dict[str, Any] = {
            "category": category,
            "items": [b64e(c[2].encode()) for c in window],
            "reported_index": reported_index,
            "attachments": [
                {"item": reported_index, "pointer": j, "key": b64e(p.key)}
                for j, p in enumerate(pointers[:MAX_REPORTED_ATTACHMENTS])
            ],
            "block": bool(block),
        }
        if note:
            body["note"] = note
        return body

    async def report(
        self,
        message_id: str,
        category: str,
        *,
        context: int = DEFAULT_REPORT_CONTEXT,
        note: str | None = None,
        block: bool = False,
    ) -> dict[str, Any]:
        """Report a received message (`build_report`) with ``POST /v1/reports``. With
        ``block``, the sender is also blocked locally. Returns the server's answer
        (``report_id``, ``case_id``) plus ``items`` (how many messages were sent).

        Raises:
            InvalidArgumentError, NotReportableError: see `build_report`.
            ServerError: the server refused the report (its reason's code).
        """
        body = self.build_report(message_id, category, context=context, note=note, block=block)
        answer = await self._transport.post_report(body)
        if block:
            sender = ReportItem.decode(b64d(body["items"][body["reported_index"]])).sender
            self.set_blocked(sender, True)
        return {**answer, "items": len(body["items"])}

    async def account_status(self) -> dict[str, Any]:
        """This account's enforcement state (``GET /v1/account/status``): status, until,
        policy, reason, decision id, appeal state. Works for a suspended or banned account."""
        return await self._transport.account_status()

    async def appeal(self, decision_id: str, text: str) -> dict[str, Any]:
        """Appeal an enforcement decision (``POST /v1/appeals``); returns ``{"appeal_id"}``.

        Raises:
            InvalidArgumentError: empty text. ServerError: refused (unknown decision, already
            appealed...).
        """
        if not text.strip() or not decision_id.strip():
            raise InvalidArgumentError("an appeal needs the decision id and a text")
        return await self._transport.post_appeal(decision_id, text)



def _reportable(record: MessageRecord) -> tuple[ReportItem, pb.Content] | None:
    """The report item and content of a stored message if it can be a report item: received
    by this device, with franking material, a data message (a link of the transcript chain).
    """
    if record.report_item is None:
        return None
    try:
        item = ReportItem.decode(b64d(record.report_item))
        content = codec.decode(pb.Content, item.content)
    except (TidingsError, TransportError):
        return None
    if content.WhichOneof("body") != "data":
        return None
    return item, content
