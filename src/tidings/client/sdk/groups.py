"""Groups: membership, sender keys, group sends and receives."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from tidings.client.errors import (
    InvalidArgumentError,
    NotAGroupMemberError,
    SendFailedError,
    StoreTamperedError,
    UnknownGroupError,
)
from tidings.client.sdk.attachments import AttachmentsMixin
from tidings.client.sdk.constants import (
    DEFAULT_CONTENT_TYPE,
    GROUP_PEER_PREFIX,
    K_GROUP,
    K_SEEN,
    K_SENDER_KEYS,
    K_SENT_INDEX,
    K_SK_LINE,
    MAX_GROUP_TITLE_CHARS,
    MAX_SEND_ATTEMPTS,
)
from tidings.client.sdk.models import (
    Group,
    GroupSendResult,
    ReceiveEvent,
)
from tidings.client.transport import OutgoingEnvelope, Progress, SendResult, b64d, b64e
from tidings.crypto.franking import ReportItem, frank, group_conversation_id, open_franked
from tidings.crypto.primitives import sha256
from tidings.crypto.sender_keys import GroupSenderKeys
from tidings.errors import (
    CryptoError,
    DecodeError,
    DuplicateMessageError,
    MismatchedDevicesError,
    ProtocolError,
    StaleDevicesError,
    TidingsError,
)
from tidings.wire import codec, limits
from tidings.wire import tidings_pb2 as pb


class GroupsMixin(AttachmentsMixin):
    """Groups, a part of `Client`."""

    # -- groups ------------------------------------------------------------------------------
    #
    # A group is a local record (id, title, revision, members, active) that every member device
    # keeps, plus one `GroupSenderKeys` per group conversation. Group messages are one
    # SENDER_KEY ciphertext per message, sent with the same body to every device of every
    # member account (own other devices included: they hold this device's sender key like any
    # member device). The franking commitment is the sender-key associated data.
    #
    # Membership changes are group data messages whose GroupContext lists the members; a
    # receiver applies one when the sender is a member in its current view and the change
    # supersedes its view (`_supersedes`: higher revision, ties broken by a digest), so members
    # that see the same changes converge whatever the order. Departed members' sender-key lines
    # are forgotten and every remaining device rotates its own key (`remove_member`), so the
    # departed cannot read later messages.
    #
    # Sender-key distributions arrive over 1:1 sessions with the group's conversation id; they
    # are filed by conversation id (the group may not be known yet: a new member gets the keys
    # just before the message that tells it about the group), and a (sender, device,
    # distribution id) index finds the conversation of a later SENDER_KEY message.

    def groups(self) -> list[Group]:
        """Every group this device knows (active or not), by title."""
        out = [Group.from_json(r) for _, r in self._store.items_json(K_GROUP)]
        return sorted(out, key=lambda g: (g.title.lower(), g.id))

    def group(self, ref: str) -> Group:
        """Find a group by id (base64url, or the ``"group:<id>"`` peer), unique id prefix of at
        least 4 characters, or unique title.

        Raises:
            UnknownGroupError: nothing (or more than one group) matches.
        """
        ref = ref.removeprefix(GROUP_PEER_PREFIX)
        groups = self.groups()
        matchers: list[Callable[[Group], bool]] = [
            lambda g: g.id == ref,
            lambda g: g.title == ref,
            lambda g: len(ref) >= 4 and g.id.startswith(ref),
        ]
        for matcher in matchers:
            found = [g for g in groups if matcher(g)]
            if len(found) == 1:
                return found[0]
            if len(found) > 1:
                raise UnknownGroupError(f"{ref!r} matches several groups: use the group id")
        raise UnknownGroupError(f"no group matches {ref!r} (see `tidings group list`)")

    def _group_record(self, group_id: str) -> Group:
        """The stored group ``group_id``.

        Raises: UnknownGroupError (none), StoreTamperedError (the record is damaged)."""
        record = self._store.get_json(K_GROUP, group_id)
        if record is None:
            raise UnknownGroupError("no such group")
        return Group.from_json(record)

    def _put_group(self, group: Group) -> None:
        self._store.put_json(K_GROUP, group.id, group.to_json())

    def _change_members(self, group_id: str, members: list[str]) -> None:
        """Store the next revision of the group with ``members`` (a change this device makes
        and is about to announce)."""
        with self._store.transaction():
            record = self._group_record(group_id)
            self._put_group(replace(record, revision=record.revision + 1,
                                    members=tuple(members)))

    def _group_keys(self, conversation: bytes) -> GroupSenderKeys:
        """The sender keys of a group conversation, created (fresh own key) when absent."""
        data = self._store.get(K_SENDER_KEYS, b64e(conversation))
        if data is None:
            return GroupSenderKeys.create()
        try:
            return GroupSenderKeys.from_bytes(data)
        except TidingsError:
            raise StoreTamperedError("a stored group key state is damaged") from None

    def _put_group_keys(self, conversation: bytes, keys: GroupSenderKeys) -> None:
        self._store.put(K_SENDER_KEYS, b64e(conversation), keys.to_bytes())

    def _member_devices(self, members: list[str]) -> list[tuple[str, int]]:
        """The known devices of ``members`` (for this account: its other devices)."""
        out = []
        for account in members:
            for device_id in self._contact(account).devices:
                out.append((account, device_id))
        return sorted(out)

    async def _check_accounts(self, usernames: list[str]) -> list[str]:
        """Deduplicated, validated account names (each must exist on the server)."""
        out: list[str] = []
        for name in usernames:
            if name not in out:
                if name != self.account.username:
                    await self.refresh_contact(name)  # UnknownAccountError for no such account
                out.append(name)
        return out

    async def create_group(self, title: str, members: list[str]) -> GroupSendResult:
        """Create a group (random 16-byte id, revision 1) with this account and ``members``,
        and announce it to every member device.

        Raises:
            InvalidArgumentError: empty or overlong title, too many members.
            UnknownAccountError: a member account does not exist (nothing is created).
            SendFailedError: no member could be reached (the group exists locally).
        """
        title = title.strip()
        if not title or len(title) > MAX_GROUP_TITLE_CHARS:
            raise InvalidArgumentError(
                f"a group title has 1 to {MAX_GROUP_TITLE_CHARS} characters")
        me = self.account.username
        accounts = await self._check_accounts([m for m in members if m != me])
        member_list = sorted({me, *accounts})
        if len(member_list) > limits.MAX_GROUP_MEMBERS:
            raise InvalidArgumentError(f"a group has at most {limits.MAX_GROUP_MEMBERS} members")
        gid = b64e(secrets.token_bytes(16))
        self._put_group(Group(gid, title, 1, tuple(member_list), active=True))
        notice = f"{me} created the group"
        return await self._send_group(gid, pb.DataMessage(), targets=member_list, change=True,
                                      notice=notice)

    async def add_group_members(self, ref: str, usernames: list[str]) -> GroupSendResult:
        """Add accounts to a group (next revision) and announce it to every member, the new
        ones included. New members receive this device's current sender key and cannot read
        anything sent before.

        Raises:
            UnknownGroupError, NotAGroupMemberError (this account left / was removed),
            UnknownAccountError, InvalidArgumentError (nobody new), SendFailedError.
        """
        group = self._active_group(ref)
        new = [u for u in await self._check_accounts(usernames) if u not in group.members]
        if not new:
            raise InvalidArgumentError("everyone named is already a member")
        members = sorted({*group.members, *new})
        self._change_members(group.id, members)
        notice = f"{self.account.username} added {', '.join(new)}"
        return await self._send_group(group.id, pb.DataMessage(), targets=members, change=True,
                                      notice=notice)

    async def remove_group_members(self, ref: str, usernames: list[str]) -> GroupSendResult:
        """Remove accounts from a group (next revision). The removal notice reaches the removed
        members too (so their view shows it); then this device forgets their sender keys and
        rotates its own, so they cannot read later messages; every other member does the same
        on receiving the notice.

        Raises:
            UnknownGroupError, NotAGroupMemberError (this account is not a member, or a named
            account is not), InvalidArgumentError (removing oneself: use `leave_group`),
            SendFailedError.
        """
        group = self._active_group(ref)
        me = self.account.username
        if me in usernames:
            raise InvalidArgumentError("to remove yourself, leave the group")
        for name in usernames:
            if name not in group.members:
                raise NotAGroupMemberError(f"{name} is not a member of {group.title}")
        self._change_members(group.id, sorted(set(group.members) - set(usernames)))
        notice = f"{me} removed {', '.join(sorted(set(usernames)))}"
        result = await self._send_group(group.id, pb.DataMessage(), targets=list(group.members),
                                        change=True, notice=notice)
        conversation = group_conversation_id(b64d(group.id))
        with self._store.transaction():
            keys = self._group_keys(conversation)
            for name in sorted(set(usernames)):
                keys.remove_member(name)
            self._put_group_keys(conversation, keys)
        return result

    async def leave_group(self, ref: str) -> GroupSendResult:
        """Leave a group: announce the member list without this account (next revision) to
        every member (own other devices too, which leave with it), then forget the group's keys.
        The history stays readable locally.

        Raises:
            UnknownGroupError, NotAGroupMemberError, SendFailedError.
        """
        group = self._active_group(ref)
        me = self.account.username
        self._change_members(group.id, sorted(set(group.members) - {me}))
        result = await self._send_group(group.id, pb.DataMessage(), targets=list(group.members),
                                        change=True, notice=f"{me} left")
        with self._store.transaction():
            left = replace(self._group_record(group.id), active=False)
            self._put_group(left)
            self._store.delete(K_SENDER_KEYS, b64e(group_conversation_id(b64d(group.id))))
        return replace(result, group=left)

    def _active_group(self, ref: str) -> Group:
        group = self.group(ref)
        if not group.active or self.account.username not in group.members:
            raise NotAGroupMemberError(f"you are not a member of {group.title} any more")
        return group

    async def send_group_text(self, ref: str, text: str) -> GroupSendResult:
        """Send ``text`` to a group (one sender-key message, franked, to every member device).

        Raises:
            UnknownGroupError, NotAGroupMemberError, OversizedError, SendFailedError (no member
            reached; partial failures are listed in the result's ``failed``).
        """
        group = self._active_group(ref)
        return await self._send_group(group.id, pb.DataMessage(body=text),
                                      targets=list(group.members))

    async def send_group_file(
        self,
        ref: str,
        path: Path,
        *,
        caption: str = "",
        content_type: str = DEFAULT_CONTENT_TYPE,
        progress: Progress | None = None,
    ) -> GroupSendResult:
        """Encrypt, upload and send a file to a group (see `send_file`).

        Raises: as `send_file` and `send_group_text`.
        """
        group = self._active_group(ref)
        data = await self._file_message(Path(path), caption, content_type, progress)
        sent = await self._send_group(group.id, data, targets=list(group.members))
        await self._flush_vouchers_quietly()
        return sent

    async def _send_group(
        self,
        gid: str,
        data: pb.DataMessage,
        *,
        targets: list[str],
        change: bool = False,
        notice: str = "",
    ) -> GroupSendResult:
        """Encrypt ``data`` once with this device's sender key and deliver it to every device of
        ``targets`` (and this account's other devices). ``change``: carry the member list
        (a membership change). The message is stored and becomes this device's chain head when
        at least one account received it.

        Raises:
            SendFailedError: no account could be reached (nothing stored).
            OversizedError / DecodeError: ``data`` is not a valid message.
        """
        me = self.account.username
        group_id = b64d(gid)
        conversation = group_conversation_id(group_id)
        record = self._group_record(gid)
        failed: dict[str, str] = {}
        for account in sorted(set(targets) - {me}):
            if not self._contact(account).devices:
                try:
                    await self.refresh_contact(account)
                except TidingsError as exc:
                    failed[account] = exc.code
        if not self._contact(me).devices:
            # Cheap for single-device accounts, and finds own devices linked since.
            await self.refresh_contact(me)
        now = self._clock()
        data.group.CopyFrom(pb.GroupContext(group_id=group_id, revision=record.revision,
                                            title=record.title))
        if change:
            data.group.members.extend(record.members)
        content = self._content(conversation, now)
        content.data.CopyFrom(data)
        franked = frank(content)
        with self._store.transaction():
            record = self._group_record(gid)
            keys = self._group_keys(conversation)
            current = set(self._member_devices(list(record.members)))
            # Only devices of accounts still in the group: removed accounts are handled by the
            # caller after this message (the removal notice must still reach them).
            for account, device in keys.shared_with():
                if (account, device) not in current and account in record.members:
                    # A member device was unlinked since it got this key: it must not read on.
                    keys.remove_member(account, device)
            snapshot = keys.distribution()
            body = keys.encrypt(franked.plaintext, franked.commitment)
            # Saved before any upload: a crash must never make this device reuse a message key.
            self._put_group_keys(conversation, keys)
        first: SendResult | None = None
        delivered: list[str] = []
        devices = 0
        for account in [*sorted(set(targets) - {me} - set(failed)), me]:
            try:
                result, count = await self._deliver_group(
                    account, gid, conversation, snapshot, body, franked.commitment, now
                )
            except TidingsError as exc:
                failed[account] = exc.code
                continue
            if result is not None:
                first = first or result
                devices += count
                if account != me:
                    delivered.append(account)
        if first is None and failed:
            raise SendFailedError(
                "could not deliver the group message to any member "
                f"({', '.join(sorted(set(failed.values())))})"
            )
        with self._store.transaction():
            message = self._store_sent(GROUP_PEER_PREFIX + gid, content, franked,
                                       first.server_timestamp_ms if first else now,
                                       notice=notice, group=gid)
            for account in delivered:
                # Receipts from members come 1:1 and name the sent_at_ms: index them all.
                self._store.put(K_SENT_INDEX, f"{account}\0{now}", message.id.encode())
            group = self._group_record(gid)
        return GroupSendResult(group=group, message=message, delivered=tuple(delivered),
                               failed=failed, devices=devices)

    async def _deliver_group(
        self,
        account: str,
        gid: str,
        conversation: bytes,
        snapshot: pb.SenderKeyDistribution,
        body: bytes,
        commitment: bytes,
        now: int,
    ) -> tuple[SendResult | None, int]:
        """PUT the SENDER_KEY ``body`` to every device of ``account`` (own account: the other
        devices; (None, 0) when there are none), first sending ``snapshot`` (this device's key
        as it was before ``body`` was encrypted) over the 1:1 sessions to the devices that lack
        it. A changed device list is reconciled and the key re-sent.

        Raises:
            SendFailedError: the device list kept changing. UntrustedIdentityError,
            UnknownAccountError, ServerError, TransportError: from the 1:1 distribution or the
            upload.
        """
        me = self.account.username
        force = False
        for _attempt in range(MAX_SEND_ATTEMPTS):
            device_ids = sorted(self._contact(account).devices)
            if account == me and not device_ids:
                return None, 0
            need = self._group_keys(conversation).devices_needing_key(
                [(account, d) for d in device_ids])
            if need or force or not device_ids:
                distribution = self._content(conversation, now)
                distribution.sender_key_distribution.CopyFrom(snapshot)
                # The 1:1 send reconciles the device list with the server (new sessions,
                # dropped devices), so afterwards the contact lists exactly the devices that
                # hold the key.
                await self._send_franked(account, frank(distribution))
                device_ids = sorted(self._contact(account).devices)
                holders = [(account, d) for d in device_ids]
                with self._store.transaction():
                    keys = self._group_keys(conversation)
                    if keys.own.chain_id == snapshot.chain_id:
                        keys.mark_key_sent(holders)
                        self._put_group_keys(conversation, keys)
                force = False
            contact = self._contact(account)
            outgoing = [
                OutgoingEnvelope(
                    device_id=d,
                    registration_id=contact.devices[d].registration_id,
                    type=int(pb.Envelope.SENDER_KEY),
                    body=body,
                    commitment=commitment,
                )
                for d in device_ids
            ]
            try:
                return await self._upload(account, outgoing), len(outgoing)
            except (MismatchedDevicesError, StaleDevicesError):
                # Reconciled; a device that re-registered (stale) lost this key with its old
                # session, and a new one never had it: send the key again.
                force = True
        raise SendFailedError(
            f"could not deliver to {account}: the device list kept changing; try again")

    def _receive_distribution(
        self, envelope: pb.Envelope, content: pb.Content, changed: bool
    ) -> ReceiveEvent:
        """File a sender-key distribution that came over the 1:1 session with its sender,
        under the group conversation it names (inside the receive transaction)."""
        sender, sender_device = envelope.sender, envelope.sender_device
        conversation = content.conversation_id
        keys = self._group_keys(conversation)
        try:
            keys.add_distribution(sender, sender_device, content.sender_key_distribution)
        except (DecodeError, ValueError):
            return self._reject(envelope, "malformed")
        self._put_group_keys(conversation, keys)
        self._store.put(
            K_SK_LINE,
            _line_name(sender, sender_device, content.sender_key_distribution.distribution_id),
            conversation,
        )
        return ReceiveEvent("key", sender, sender_device, b64e(envelope.message_id),
                            identity_changed=changed)

    def _receive_group_message(self, envelope: pb.Envelope) -> ReceiveEvent:
        """Decrypt a SENDER_KEY envelope with the sender device's key, open its franking, apply
        its group context, store it (inside the receive transaction)."""
        mid = b64e(envelope.message_id)
        sender, sender_device = envelope.sender, envelope.sender_device
        if sender != self.account.username and self._contact(sender).blocked_by_user:
            return self._reject(envelope, "blocked")
        try:
            message = codec.decode(pb.SenderKeyMessage, envelope.body)
        except DecodeError as exc:
            return self._reject(envelope, exc.code)
        conversation = self._store.get(
            K_SK_LINE, _line_name(sender, sender_device, message.distribution_id))
        if conversation is None:
            return self._reject(envelope, "unknown_sender_key")
        keys = self._group_keys(conversation)
        try:
            plaintext = keys.decrypt(sender, sender_device, message, envelope.commitment)
        except DuplicateMessageError:
            self._store.add(K_SEEN, mid, b"")
            return ReceiveEvent("duplicate", sender, sender_device, mid)
        except (CryptoError, ProtocolError, DecodeError) as exc:
            return self._reject(envelope, exc.code)
        # The chain advanced: keep it whatever follows (its message key is spent).
        self._put_group_keys(conversation, keys)
        try:
            opened = open_franked(plaintext, envelope.commitment)
            item = ReportItem.from_envelope(envelope, opened)
        except (CryptoError, DecodeError) as exc:
            return self._reject(envelope, exc.code)
        content = opened.content
        if (content.conversation_id != conversation or content.WhichOneof("body") != "data"
                or not content.data.HasField("group")
                or group_conversation_id(content.data.group.group_id) != conversation):
            # A sender-key message must be a group data message of the conversation the
            # sender's key was given for.
            return self._reject(envelope, "wrong_conversation")
        self._store.add(K_SEEN, mid, b"")
        return self._handle_group_data(envelope, content, item, conversation)

    def _handle_group_data(
        self,
        envelope: pb.Envelope,
        content: pb.Content,
        item: ReportItem,
        conversation: bytes,
    ) -> ReceiveEvent:
        me = self.account.username
        sender, sender_device = envelope.sender, envelope.sender_device
        mid = b64e(envelope.message_id)
        context = content.data.group
        gid = b64e(context.group_id)
        stored = self._store.get_json(K_GROUP, gid)
        record = None if stored is None else Group.from_json(stored)
        notice = ""
        if context.members:
            new_members = sorted(set(context.members))
            title = context.title[:MAX_GROUP_TITLE_CHARS]
            if record is None:
                if me not in new_members or sender not in new_members:
                    return self._reject(envelope, "not_a_member")
                record = Group(gid, title, context.revision, tuple(new_members), active=True)
                notice = f"{sender} created the group" if context.revision <= 1 else \
                    f"{sender} added you"
            else:
                if sender not in record.members:
                    return self._reject(envelope, "not_a_member")
                if _supersedes(context.revision, new_members, context.title, record):
                    old = set(record.members)
                    removed, added = old - set(new_members), set(new_members) - old
                    record = replace(record, revision=context.revision,
                                     members=tuple(new_members), title=title,
                                     active=me in new_members)
                    notice = _change_notice(sender, added, removed)
                    if not record.active:
                        self._store.delete(K_SENDER_KEYS, b64e(conversation))
                    elif removed:
                        keys = self._group_keys(conversation)
                        for account in sorted(removed):
                            keys.remove_member(account)
                        self._put_group_keys(conversation, keys)
            self._put_group(record)
        elif record is None or not record.active or sender not in record.members:
            return self._reject(envelope, "not_a_member")
        own = sender == me
        message = self._store_received(envelope, content, item,
                                       peer=GROUP_PEER_PREFIX + gid, incoming=not own,
                                       notice=notice, group=gid)
        return ReceiveEvent("sync" if own else "message", sender, sender_device, mid,
                            message=message)



def _membership_digest(members: list[str], title: str) -> bytes:
    return sha256("\n".join([title, *sorted(members)]).encode("utf-8"))


def _supersedes(revision: int, members: list[str], title: str, record: Group) -> bool:
    """Whether a received membership change replaces the stored view: a higher revision wins;
    at the same revision (two members changed the group concurrently) the larger digest of
    (title, members) wins, so every member ends with the same view whatever the order."""
    if revision != record.revision:
        return revision > record.revision
    return _membership_digest(members, title) > _membership_digest(
        list(record.members), record.title)


def _change_notice(sender: str, added: set[str], removed: set[str]) -> str:
    if removed == {sender} and not added:
        return f"{sender} left"
    parts = []
    if added:
        parts.append(f"added {', '.join(sorted(added))}")
    if removed:
        parts.append(f"removed {', '.join(sorted(removed))}")
    return f"{sender} " + (" and ".join(parts) if parts else "updated the group")


def _line_name(sender: str, device: int, distribution_id: bytes) -> str:
    return f"{sender}\0{device}\0{b64e(distribution_id)}"


