"""Key transparency on the device (docs/key-transparency.md "Clients"), a part of `Client`.

- **Heads.** The directory's KT signing key and VRF key are pinned on first sight; every head
  must verify under the pinned key, never be older than the newest head this device verified,
  extend it (`check_successor` over every epoch in between, at most `MAX_HEAD_GAP` fetched;
  beyond that the head served for the remembered epoch must still be the remembered one) and
  equal it for the same epoch (`check_no_fork`). The newest verified head is stored.
- **The own account.** Registration signs version 1 of the account's device list (this device)
  and submits it. `kt_sync` (also run by `poll`, at most every `KT_POLL_INTERVAL_MS`, and by
  `tidings status`) reads the account's published history, checks every list's proof and
  chain, and compares the registered devices with the list this device knows: a device linked
  with a code this device made (its link binding verifies under the code's local secret) is
  vouched for in the next list; any other device, a published list no device of the account
  signed, or a reset this device did not make is an *alert* (stored, shown by `tidings status`
  and the TUI banner).
- **Contacts.** Before a session is started with a contact's device (`_kt_vouched`, from the
  outbox's device reconciliation), the contact's entry is looked up and verified against the
  newest verified head, the served list checked against the entry and, against the list this
  device last saw for the contact, chained (`verify_chain`). A device not in the list is
  refused (`UnvouchedDeviceError`); a changed list is a trust event of the conversation. An
  account with no published list yet is trusted on first use until its list appears.
"""

from __future__ import annotations

import contextlib
import secrets
from typing import Any

from tidings.client.errors import TransportError
from tidings.client.sdk.constants import (
    K_KT,
    K_KT_CONTACT,
    KT_POLL_INTERVAL_MS,
    KT_VOUCH_GRACE_MS,
    MAX_HEAD_GAP,
    MAX_KT_ALERTS,
    MAX_LINK_SECRETS,
)
from tidings.client.sdk.models import ContactSafety
from tidings.client.sdk.trust import TrustMixin
from tidings.client.transport import b64d, b64e
from tidings.crypto.identity import IdentityKey
from tidings.crypto.kt_device_list import (
    LINK_SECRET_LEN,
    SignedDeviceList,
    added_devices,
    check_link_binding,
    decode_device_list,
    sign_device_list,
    verify_chain,
)
from tidings.crypto.kt_proofs import (
    EpochHead,
    check_device_list,
    check_no_fork,
    check_successor,
    decode_cosignatures,
    decode_head,
    decode_history,
    verify_history,
    verify_lookup,
    verify_witnesses,
)
from tidings.errors import (
    DeviceListChainError,
    EpochForkError,
    KtHeadRollbackError,
    KtKeyChangedError,
    KtProofError,
    KtWitnessPolicyError,
    TidingsError,
    UnvouchedDeviceError,
    WitnessQuorumError,
)

WITNESS_GRACE_EPOCHS = 10
"""With a witness requirement, how many epochs a head may be ahead of the newest co-signed
head on its chain (witnesses sign each head some time after it is published)."""
MAX_TRUSTED_WITNESSES = 32
"""As many witnesses as a head can carry co-signatures of (`kt_proofs.MAX_WITNESSES`)."""
LINK_SECRET_TTL_MS = 10 * 60 * 1000
"""A link code's local secret is kept as long as the server's code lives (10 minutes)."""

Pair = tuple[int, bytes]
"""(device id, encoded identity key)."""


def _pairs(signed: SignedDeviceList | None) -> set[Pair]:
    return set() if signed is None else {(d, k.encode()) for d, k in signed.devices}


def _obj(body: object, what: str) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise KtProofError(f"the directory's answer has no {what}")
    return body


class KtMixin(TrustMixin):
    """Key transparency, a part of `Client` (module docstring)."""

    # -- heads -------------------------------------------------------------------------------

    def kt_head(self) -> EpochHead | None:
        """The newest epoch head this device verified (None before the first)."""
        pin = self._store.get_json(K_KT, "pin")
        data = self._store.get(K_KT, "head")
        if pin is None or data is None:
            return None
        return decode_head(b64d(pin["server_key"]), data)

    async def _kt_accept(self, body: dict[str, Any]) -> tuple[EpochHead, bytes]:
        """Check a served head (``KtHead`` JSON) as the module docstring says and store it;
        returns it with the pinned VRF key.

        Raises:
            KtKeyChangedError, InvalidSignatureError, DecodeError, KtHeadRollbackError,
            EpochForkError.
        """
        server_key, vrf_key = b64d(body.get("server_key")), b64d(body.get("vrf_key"))
        pin = self._store.get_json(K_KT, "pin")
        if pin is None:
            pin = {"server_key": b64e(server_key), "vrf_key": b64e(vrf_key)}
            self._store.put_json(K_KT, "pin", pin)
        elif pin != {"server_key": b64e(server_key), "vrf_key": b64e(vrf_key)}:
            raise KtKeyChangedError(
                "the key directory's signing or VRF key is not the one this device pinned"
            )
        head = decode_head(server_key, b64d(body.get("head")))
        last = self.kt_head()
        if last is not None:
            if head.epoch < last.epoch:
                raise KtHeadRollbackError(
                    f"the directory served epoch {head.epoch}; epoch {last.epoch} was verified"
                )
            if head.epoch == last.epoch:
                check_no_fork(last, head)
            elif head.epoch - last.epoch <= MAX_HEAD_GAP:
                previous = last
                for epoch in range(last.epoch + 1, head.epoch):
                    previous_body = await self._transport.kt_head(epoch)
                    between = decode_head(server_key, b64d(_obj(previous_body, "head").get("head")))
                    if between.epoch != epoch:
                        raise EpochForkError(f"the directory served another head for {epoch}")
                    check_successor(previous, between)
                    previous = between
                check_successor(previous, head)
            else:
                again = await self._transport.kt_head(last.epoch)
                check_no_fork(last, decode_head(server_key, b64d(_obj(again, "head").get("head"))))
        await self._kt_check_witnesses(head, body.get("cosignatures"), server_key)
        if last is None or head.epoch > last.epoch:
            self._store.put(K_KT, "head", head.encode())
        return head, vrf_key

    # -- witnesses ----------------------------------------------------------------------------

    def set_kt_witnesses(self, keys: list[bytes], minimum: int) -> None:
        """Require ``minimum`` of the witnesses ``keys`` (Ed25519 public keys; 0: no
        requirement, the default): the heads this device accepts must chain back, within
        `WITNESS_GRACE_EPOCHS`, to a head that many of them co-signed. Witnesses co-sign each
        head some time after it is published, so the newest head is allowed to be unsigned;
        a fork shown to this device alone is never co-signed by witnesses who follow the
        honest log, so it is refused after at most that many epochs.

        Raises: `KtWitnessPolicyError` for keys that are not 32 bytes, duplicates, more than
        `MAX_TRUSTED_WITNESSES`, or a minimum outside 0..len(keys)."""
        if (
            any(len(k) != 32 for k in keys) or len(set(keys)) != len(keys)
            or len(keys) > MAX_TRUSTED_WITNESSES or not 0 <= minimum <= len(keys)
        ):
            raise KtWitnessPolicyError(
                "witness keys are distinct 32-byte Ed25519 keys (at most "
                f"{MAX_TRUSTED_WITNESSES}) and the minimum is between 0 and their number"
            )
        head = self.kt_head()
        self._store.put_json(K_KT, "witnesses", {
            "keys": [b64e(k) for k in keys], "minimum": minimum,
            # The grace starts now: the heads verified so far were accepted without witnesses.
            "witnessed_epoch": 0 if head is None else head.epoch,
        })

    def kt_witnesses(self) -> tuple[list[bytes], int]:
        """The trusted witness keys and how many of them must co-sign a head."""
        policy = self._store.get_json(K_KT, "witnesses") or {"keys": [], "minimum": 0}
        return [b64d(k) for k in policy["keys"]], int(policy["minimum"])

    def _kt_quorum(self, head: EpochHead, cosignatures: object) -> bool:
        keys, minimum = self.kt_witnesses()
        if not isinstance(cosignatures, str):
            return False
        try:
            verify_witnesses(head, decode_cosignatures(b64d(cosignatures)), keys, minimum)
        except WitnessQuorumError:
            return False
        return True

    async def _kt_check_witnesses(self, head: EpochHead, cosignatures: object,
                                  server_key: bytes) -> None:
        """Apply the witness requirement (`set_kt_witnesses`) to ``head``, just verified.

        Raises: `WitnessQuorumError` when no head within `WITNESS_GRACE_EPOCHS` before it,
        on its chain, has the quorum; `EpochForkError` (`check_successor`) when an earlier
        head the server serves does not chain to it; DecodeError."""
        policy = self._store.get_json(K_KT, "witnesses")
        if policy is None or int(policy["minimum"]) == 0:
            return
        witnessed = int(policy["witnessed_epoch"])
        found = head.epoch if self._kt_quorum(head, cosignatures) else None
        if found is None and head.epoch - witnessed > WITNESS_GRACE_EPOCHS:
            later = head
            lowest = head.epoch - WITNESS_GRACE_EPOCHS
            for epoch in range(head.epoch - 1, lowest - 1, -1):
                body = _obj(await self._transport.kt_head(epoch), "head")
                earlier = decode_head(server_key, b64d(body.get("head")))
                check_successor(earlier, later)  # on this device's chain, or a fork
                if self._kt_quorum(earlier, body.get("cosignatures")):
                    found = epoch
                    break
                later = earlier
            if found is None:
                raise WitnessQuorumError(
                    f"no head of the last {WITNESS_GRACE_EPOCHS} epochs before epoch "
                    f"{head.epoch} has the co-signatures of {policy['minimum']} trusted "
                    "witnesses"
                )
        if found is not None and found > witnessed:
            self._store.put_json(K_KT, "witnesses", {**policy, "witnessed_epoch": found})

    async def _kt_lookup(self, username: str) -> SignedDeviceList | None:
        """``username``'s published list, verified against the newest head (None: the
        account has no entry, or no epoch is published yet).

        Raises: the errors of `_kt_accept`, KtProofError, VrfProofError, DecodeError."""
        body = await self._transport.kt_lookup(username)
        if body is None:
            return None
        head, vrf_key = await self._kt_accept(_obj(body.get("head"), "head"))
        found = verify_lookup(vrf_key, username, head.root, b64d(body.get("proof")))
        if found.entry is None:
            return None
        if not isinstance(body.get("device_list"), str):
            raise KtProofError("the directory served no device list for the entry")
        signed = decode_device_list(b64d(body["device_list"]))
        check_device_list(found.entry, signed)
        if signed.account != username:
            raise KtProofError("the directory served another account's device list")
        return signed

    # -- alerts ------------------------------------------------------------------------------

    def kt_alerts(self) -> list[dict[str, Any]]:
        """What self-monitoring found (oldest first): ``code``, ``device_id`` (or None),
        ``message``, ``at_ms`` and, once the device named is removed, ``resolved_at_ms``."""
        record = self._store.get_json(K_KT, "alerts") or {}
        return list(record.get("alerts", []))

    def _kt_alert(self, code: str, message: str, device_id: int | None = None) -> None:
        alerts = self.kt_alerts()
        if any(a["code"] == code and a["device_id"] == device_id and a["message"] == message
               for a in alerts):
            return
        alerts.append({"code": code, "device_id": device_id, "message": message,
                       "at_ms": self._clock()})
        self._store.put_json(K_KT, "alerts", {"alerts": alerts[-MAX_KT_ALERTS:]})

    def _kt_resolve(self, registered: set[int]) -> None:
        """Mark `kt_unvouched_device` alerts of devices no longer registered (removed) as
        resolved: they stay in the record, shown as such."""
        alerts = self.kt_alerts()
        changed = False
        for alert in alerts:
            if (alert["code"] == "kt_unvouched_device" and alert["device_id"] not in registered
                    and not alert.get("resolved_at_ms")):
                alert["resolved_at_ms"] = self._clock()
                changed = True
        if changed:
            self._store.put_json(K_KT, "alerts", {"alerts": alerts})

    def kt_status(self) -> dict[str, Any]:
        """For ``tidings status``: the alerts, the newest verified epoch and the version of
        this device's known list."""
        head = self.kt_head()
        known = self._kt_own()
        keys, minimum = self.kt_witnesses()
        return {
            "alerts": self.kt_alerts(),
            "witnesses": {"keys": [b64e(k) for k in keys], "minimum": minimum},
            "epoch": 0 if head is None else head.epoch,
            "device_list_version": 0 if known is None else known.version,
        }

    # -- the own account ---------------------------------------------------------------------

    def _kt_own(self) -> SignedDeviceList | None:
        """The newest list of this account this device signed or accepted."""
        record = self._store.get_json(K_KT, "own")
        if record is None or not record.get("list"):
            return None
        return decode_device_list(b64d(record["list"]))

    def _kt_own_hashes(self) -> dict[int, str]:
        record = self._store.get_json(K_KT, "own") or {}
        return {int(v): str(h) for v, h in (record.get("hashes") or {}).items()}

    def _kt_keep_own(self, signed: SignedDeviceList) -> None:
        hashes = self._kt_own_hashes()
        hashes[signed.version] = b64e(signed.hash())
        self._store.put_json(K_KT, "own", {
            "list": b64e(signed.encode()),
            "hashes": {str(v): h for v, h in hashes.items()},
        })

    async def _kt_publish(
        self, devices: list[Pair], *, after: SignedDeviceList | None = None, reset: bool = False
    ) -> SignedDeviceList:
        """Sign and submit this account's next list naming ``devices`` (after the known list,
        or ``after``; ``reset``: a reset, signed by this device in it).

        Raises: ServerError (``kt_device_list_mismatch``, ``kt_version_conflict``...)."""
        known = self._kt_own() if after is None else after
        signed = sign_device_list(
            self.account.username,
            1 if known is None else known.version + 1,
            [(d, IdentityKey.decode(k)) for d, k in sorted(set(devices))],
            signer=self.account.device_id,
            signer_key=self._identity,
            previous=known,
            reset=reset,
        )
        await self._transport.kt_submit(signed.encode())
        self._kt_keep_own(signed)
        return signed

    async def _kt_publish_first(self) -> None:
        """Right after registration: `_kt_start_list` (a failure is retried by `kt_sync`)."""
        with contextlib.suppress(TidingsError):
            await self._kt_start_list(await self._kt_lookup(self.account.username))

    async def _kt_start_list(self, published: SignedDeviceList | None) -> None:
        """This account's first list, this device alone: version 1, or, when the name already
        has a published list (an account deleted and its name registered again), a *reset*
        after it, which every contact sees (docs/key-transparency.md, "Publication")."""
        own = [(self.account.device_id, self._identity.public.encode())]
        if published is None:
            await self._kt_publish(own)
        else:
            await self._kt_publish(own, after=published, reset=True)

    def _kt_add_link_secret(self, secret: bytes) -> None:
        record = self._store.get_json(K_KT, "links") or {}
        now = self._clock()
        links = [s for s in record.get("secrets", []) if int(s["expires_at_ms"]) > now]
        links.append({"secret": b64e(secret), "expires_at_ms": now + LINK_SECRET_TTL_MS})
        self._store.put_json(K_KT, "links", {"secrets": links[-MAX_LINK_SECRETS:]})

    def _kt_link_secret(self, identity: IdentityKey, binding: bytes) -> str | None:
        """The pending link secret (base64url) ``binding`` verifies under, if any."""
        record = self._store.get_json(K_KT, "links") or {}
        now = self._clock()
        for entry in record.get("secrets", []):
            if int(entry["expires_at_ms"]) > now and check_link_binding(
                b64d(entry["secret"]), self.account.username, identity, binding
            ):
                return str(entry["secret"])
        return None

    def _kt_drop_link_secrets(self, used: set[str]) -> None:
        record = self._store.get_json(K_KT, "links") or {}
        kept = [s for s in record.get("secrets", []) if s["secret"] not in used]
        self._store.put_json(K_KT, "links", {"secrets": kept})

    async def create_link_code(self) -> tuple[str, int]:
        """A one-time code (and its expiry, ms) with which a new device joins this account:
        the server's code, a dot and a 16-byte secret only this device knows (the server never
        sees it), which binds the new device's identity key to the code the user carried."""
        code, expires = await self._transport.create_provisioning_code()
        secret = secrets.token_bytes(LINK_SECRET_LEN)
        self._kt_add_link_secret(secret)
        return f"{code}.{b64e(secret)}", expires

    def _kt_check_history(self, history: dict[str, Any], head: EpochHead,
                          vrf_key: bytes) -> list[SignedDeviceList]:
        """The account's published lists, oldest first, each checked against its entry."""
        lookup = _obj(history.get("lookup"), "lookup")
        me = self.account.username
        found = verify_lookup(vrf_key, me, head.root, b64d(lookup.get("proof")))
        entries = decode_history(b64d(history.get("history")))
        raw = history.get("device_lists")
        if not isinstance(raw, list):
            raise KtProofError("the directory's history has no device lists")
        lists = [decode_device_list(b64d(x)) for x in raw]
        if found.entry is None:
            if entries or lists:
                raise KtProofError("a history for an account the lookup says is absent")
            return []
        verify_history(found.label, found.entry, entries)
        if len(entries) != len(lists):
            raise KtProofError("the history and its device lists differ in length")
        for entry, signed in zip(entries, lists, strict=True):
            check_device_list(entry, signed)
            if signed.account != me:
                raise KtProofError("the history holds another account's device list")
        return lists[::-1]

    def _kt_compare_history(self, lists: list[SignedDeviceList]) -> None:
        """Alert on published lists this account's devices did not sign; adopt the newest
        published list when it validly extends the known one (another own device signed it,
        or this device was linked and has none yet)."""
        hashes = self._kt_own_hashes()
        known = self._kt_own()
        # Versions before the first one this device signed or accepted are not its to judge
        # (a name's earlier accounts, the time before this device was linked); their chain is.
        first = min(hashes) if hashes else None
        previous: SignedDeviceList | None = None
        trusted = True
        for signed in lists:
            mine = hashes.get(signed.version)
            if first is None or signed.version < first:
                pass
            elif mine is not None and mine != b64e(signed.hash()):
                self._kt_alert("kt_foreign_list", f"the directory holds a version "
                               f"{signed.version} of your device list your devices did not sign")
                trusted = False
            elif mine is None and signed.reset:
                self._kt_alert("kt_account_reset", f"your account's device list was reset "
                               f"(version {signed.version}) by device {signed.signer}")
                trusted = False
            try:
                verify_chain(previous, signed)
            except DeviceListChainError as exc:
                named: tuple[int | None, ...] = exc.device_ids or (None,)
                for device_id in named:
                    self._kt_alert("kt_unvouched_list", f"version {signed.version} of your "
                                   "device list is not signed by a device of yours", device_id)
                trusted = False
            previous = signed
        newest = lists[-1] if lists else None
        if not trusted or newest is None:
            return
        if known is None:
            # A linked device adopts its account's list once the list names it.
            own = (self.account.device_id, self._identity.public.encode())
            if own in _pairs(newest):
                self._kt_keep_own(newest)
        elif newest.version > known.version:
            self._kt_keep_own(newest)

    async def kt_sync(self) -> dict[str, Any]:
        """Monitor this account in the key directory and vouch for devices linked with this
        device's codes (module docstring). Returns `kt_status`.

        Raises:
            KtProofError, VrfProofError, EpochForkError, KtHeadRollbackError,
            KtKeyChangedError, InvalidSignatureError, DecodeError: the directory's answers do
                not verify (also stored as an alert with that code).
            ServerError, TransportError.
        """
        try:
            await self._kt_sync()
        except TidingsError as exc:
            if exc.code.startswith(("kt_", "invalid_", "malformed", "truncated")):
                self._kt_alert(exc.code, exc.message)
            raise
        finally:
            self._store.put_json(K_KT, "checked", {"at_ms": self._clock()})
        return self.kt_status()

    async def _kt_sync(self) -> None:
        me = self.account.username
        latest = await self._transport.kt_head()
        if latest is not None:
            await self._kt_accept(latest)
        history = await self._transport.kt_history(me)
        published: list[SignedDeviceList] = []
        if history is not None:
            head, vrf_key = await self._kt_accept(
                _obj(_obj(history.get("lookup"), "lookup").get("head"), "head")
            )
            published = self._kt_check_history(history, head, vrf_key)
            self._kt_compare_history(published)
        known = self._kt_own()
        registered = await self._transport.own_devices()
        pairs: list[Pair] = []
        vouch: list[Pair] = []
        used: set[str] = set()
        waiting: dict[str, int] = {}
        for device in registered:
            device_id = device.get("device_id")
            if isinstance(device_id, bool) or not isinstance(device_id, int):
                raise TransportError("the server sent a malformed device list")
            key = IdentityKey.decode(b64d(device.get("identity_key")))
            pair = (device_id, key.encode())
            pairs.append(pair)
            if device_id == self.account.device_id or pair in _pairs(known):
                continue
            binding = device.get("link_binding")
            secret = None if not isinstance(binding, str) else self._kt_link_secret(
                key, b64d(binding))
            if secret is not None:
                vouch.append(pair)
                used.add(secret)
            elif known is not None and self._kt_unvouched_now(known, pair, binding, waiting):
                self._kt_alert(
                    "kt_unvouched_device",
                    f"device {device_id} was added to your account without a link code "
                    "from one of your devices: it is not in your signed device list",
                    device_id,
                )
        self._store.put_json(K_KT, "waiting", {"devices": waiting})
        self._kt_resolve({p[0] for p in pairs})
        if known is None:
            # No list yet: the only device of an account (its first submission failed, or
            # the name was registered again) starts one; a linked device waits for its
            # account's list. An account of several devices from before key transparency:
            # its lowest-numbered device signs version 1 of the devices registered now.
            ids = sorted(p[0] for p in pairs)
            if ids == [self.account.device_id]:
                await self._kt_start_list(published[-1] if published else None)
            elif not published and ids and ids[0] == self.account.device_id:
                await self._kt_publish(pairs)
        elif vouch:
            listed = _pairs(known) | set(vouch)
            await self._kt_publish(sorted(p for p in listed if p in set(pairs)))
            self._kt_drop_link_secrets(used)

    def _kt_unvouched_now(
        self, known: SignedDeviceList, pair: Pair, binding: object, waiting: dict[str, int]
    ) -> bool:
        """Whether a registered device missing from the known list is an alert now. At once
        when it has no link binding, or when this device is the only one of the known list
        (no other device could have made its code); otherwise another device of the account
        may have made the code and not yet vouched for it: the alert waits until the
        directory's time is `KT_VOUCH_GRACE_MS` past the first head it was noticed at (the
        pending devices go into ``waiting``)."""
        if not isinstance(binding, str) or [d for d, _ in known.devices] == [
            self.account.device_id
        ]:
            return True
        name = f"{pair[0]}:{b64e(pair[1])}"
        before = (self._store.get_json(K_KT, "waiting") or {}).get("devices", {})
        head = self.kt_head()
        now = 0 if head is None else head.time_ms
        first = int(before.get(name, now))
        waiting[name] = first
        return now - first >= KT_VOUCH_GRACE_MS

    async def _kt_poll(self) -> None:
        """`kt_sync` from `poll`, at most every `KT_POLL_INTERVAL_MS`; its failures are kept as
        alerts, never raised (receiving goes on)."""
        checked = self._store.get_json(K_KT, "checked") or {}
        if self._clock() - int(checked.get("at_ms", 0)) < KT_POLL_INTERVAL_MS:
            return
        with contextlib.suppress(TidingsError):
            await self.kt_sync()

    async def remove_device(self, device_id: int) -> None:
        """Remove one of this account's devices and publish the next list without it.

        Raises:
            UnknownDeviceError, LastDeviceError (ServerError), TransportError.
        """
        await self._transport.delete_device(device_id)
        known = self._kt_own()
        if known is not None and known.device(device_id) is not None:
            await self._kt_publish([p for p in _pairs(known) if p[0] != device_id])

    # -- contacts ----------------------------------------------------------------------------

    async def _kt_vouched(self, username: str) -> set[Pair] | None:
        """The (device id, identity key) pairs ``username``'s published list vouches for
        (module docstring); None while the account has no published list (trust on first
        use). A changed list is recorded as a trust event of the contact.

        Raises:
            KtProofError (also for a list older than the one seen before, or a vanished
            entry), DeviceListChainError, and the errors of `_kt_lookup`.
        """
        signed = await self._kt_lookup(username)
        record = self._store.get_json(K_KT_CONTACT, username) or {}
        last = None if not record.get("list") else decode_device_list(b64d(record["list"]))
        if signed is None:
            if last is not None:
                raise KtProofError(f"the directory no longer has {username}'s device list")
            self._store.put_json(K_KT_CONTACT, username, {"list": None, "tofu": True})
            return None
        if last is not None and signed.version < last.version:
            raise KtProofError(f"the directory served an older device list of {username}")
        if last is None or signed.hash() != last.hash():
            if last is None and signed.version == 1:
                verify_chain(None, signed)
            elif last is not None and signed.version == last.version + 1:
                verify_chain(last, signed)
            with self._store.transaction():
                contact = self._contact(username)
                if signed.reset:
                    contact.note("kt_reset", signed.signer, self._clock())
                if last is not None or record.get("tofu"):
                    known = set(_pairs(last)) | {
                        (d, b64d(r.identity)) for d, r in contact.devices.items()
                    }
                    for device_id, key in added_devices(None, signed):
                        if (device_id, key.encode()) not in known:
                            contact.note("kt_device_added", device_id, self._clock())
                self._put_contact(username, contact)
                self._store.put_json(K_KT_CONTACT, username, {"list": b64e(signed.encode())})
        vouched = _pairs(signed)
        if username == self.account.username:
            vouched |= _pairs(self._kt_own())
        return vouched

    async def _kt_check_devices(self, username: str, devices: dict[int, bytes]) -> None:
        """Refuse to encrypt to any of ``devices`` (id -> identity key) that ``username``'s
        published list does not vouch for.

        Raises:
            UnvouchedDeviceError: naming those devices; the errors of `_kt_vouched`."""
        if not devices:
            return
        vouched = await self._kt_vouched(username)
        if vouched is None:
            return
        bad = tuple(sorted(d for d, key in devices.items() if (d, key) not in vouched))
        if bad:
            with self._store.transaction():
                contact = self._contact(username)
                for device_id in bad:
                    if not any(e.kind == "kt_unvouched_device" and e.device_id == device_id
                               for e in contact.events):
                        contact.note("kt_unvouched_device", device_id, self._clock())
                self._put_contact(username, contact)
            names = ", ".join(map(str, bad))
            raise UnvouchedDeviceError(
                f"device {names} of {username} is not in {username}'s signed device list in "
                "the key directory: nothing was encrypted to it",
                bad,
                username,
            )

    async def safety_numbers(self, username: str) -> ContactSafety:
        """As `TrustMixin.safety_numbers`, over both sides' vouched device lists: the
        contact's published list is looked up and verified first (when that fails, the list
        verified last, else the pinned keys, are used)."""
        if username != self.account.username:
            with contextlib.suppress(TidingsError):
                await self._kt_vouched(username)
        return await super().safety_numbers(username)

    def _kt_note_sender(self, username: str, device_id: int, identity: bytes) -> None:
        """A session was started by ``username``'s device ``device_id``: check after the
        batch (`_kt_check_senders`) that its published list vouches for it."""
        self._kt_senders.add((username, device_id, identity))

    async def _kt_check_senders(self) -> None:
        """For each device that started a session in the last batch, look its account up; one
        the published list does not vouch for is a trust event of the conversation
        (``kt_unvouched_sender``: its messages are shown, with the banner). Best effort: a
        failed lookup is left for the next send, which checks before encrypting."""
        senders, self._kt_senders = self._kt_senders, set()
        for username, device_id, identity in sorted(senders):
            try:
                vouched = await self._kt_vouched(username)
            except TidingsError:
                continue
            if vouched is None or (device_id, identity) in vouched:
                continue
            with self._store.transaction():
                contact = self._contact(username)
                contact.note("kt_unvouched_sender", device_id, self._clock())
                self._put_contact(username, contact)

    def _kt_pending(self, username: str) -> bool:
        """Whether ``username`` was trusted on first use and its list is still awaited."""
        record = self._store.get_json(K_KT_CONTACT, username)
        return record is not None and bool(record.get("tofu")) and not record.get("list")
