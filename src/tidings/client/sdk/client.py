"""`Client`: the facade of the SDK (lifecycle, registration and linking, history)."""

from __future__ import annotations

import secrets
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from tidings.client.errors import NotRegisteredError, ProfileExistsError, StoreTamperedError
from tidings.client.sdk.constants import (
    K_ACCOUNT,
    K_IDENTITY,
    K_PREKEYS,
    K_REJECTED,
    MAX_REGISTRATION_ID,
    PREKEY_BATCH,
    SELF,
)
from tidings.client.sdk.models import Account, Message
from tidings.client.sdk.reports import ReportsMixin
from tidings.client.store import KdfParams, Store
from tidings.client.transport import Transport, b64d, b64e
from tidings.clock import Clock, now_ms
from tidings.crypto.device_prekeys import DevicePrekeys
from tidings.crypto.franking import ReportItem
from tidings.crypto.identity import IdentityKey, IdentityKeyPair
from tidings.crypto.kt_device_list import LINK_SECRET_LEN, link_binding
from tidings.errors import DecodeError, TidingsError
from tidings.wire import codec
from tidings.wire.base64url import b64d as wire_b64d

# --- the client -----------------------------------------------------------------------------


class Client(ReportsMixin):
    """One registered device. Build with `register`, `link` or `open`; `aclose` when done.

    Every async method may raise `TransportError` (server unreachable), `ServerError` (a typed
    refusal), or `StoreError` subclasses (local store). Not safe for concurrent use by several
    tasks at once: run one operation at a time (the CLI does).
    """

    def __init__(
        self,
        store: Store,
        *,
        transport: Transport | None = None,
        clock: Clock = now_ms,
        auto_delivery_receipts: bool = True,
    ) -> None:
        account = store.get_json(K_ACCOUNT, SELF)
        identity = store.get(K_IDENTITY, SELF)
        prekeys = store.get(K_PREKEYS, SELF)
        if account is None or identity is None or prekeys is None:
            raise NotRegisteredError("this profile has no registered device")
        self._store = store
        self.account = Account.from_json(account)
        try:
            self._identity = IdentityKeyPair.from_bytes(identity)
            self._prekeys = DevicePrekeys.from_bytes(prekeys)
        except TidingsError:
            raise StoreTamperedError("the stored device keys are damaged") from None
        base = transport or Transport(self.account.server_url)
        self._transport = base.with_credentials(self.account.credentials)
        self._owns_transport = transport is None
        self._clock = clock
        self.auto_delivery_receipts = auto_delivery_receipts
        self._pending_receipts: dict[str, list[int]] = {}
        self._prekeys_used = True  # check the server's prekey count on the first batch
        self._kt_senders: set[tuple[str, int, bytes]] = set()  # to check (sdk/kt.py)
        self._detection_list = None  # decoded from the store on first use

    # -- lifecycle ---------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        profile: Path,
        passphrase: str,
        *,
        transport: Transport | None = None,
        clock: Clock = now_ms,
        auto_delivery_receipts: bool = True,
    ) -> Client:
        """Unlock an existing profile.

        Raises:
            ProfileNotFoundError, WrongPassphraseError, StoreTamperedError, NotRegisteredError.
        """
        store = Store.open(profile, passphrase)
        try:
            return cls(
                store,
                transport=transport,
                clock=clock,
                auto_delivery_receipts=auto_delivery_receipts,
            )
        except BaseException:
            store.close()
            raise

    async def aclose(self) -> None:
        """Close the store and (if this client made it) the HTTP connection pool."""
        if self._owns_transport:
            await self._transport.aclose()
        self._store.close()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    @classmethod
    async def register(
        cls,
        profile: Path,
        passphrase: str,
        username: str,
        server_url: str,
        *,
        device_name: str = "primary",
        kdf: KdfParams | None = None,
        transport: Transport | None = None,
        clock: Clock = now_ms,
        prekey_count: int = PREKEY_BATCH,
    ) -> Client:
        """Create a profile and a new account ``username`` on ``server_url``.

        Raises:
            ProfileExistsError: ``profile`` already holds a profile.
            ServerError: the server refused (``username_taken``, ``malformed``...); the new
                profile is removed then.
            TransportError: the server cannot be reached (profile removed too).
        """

        async def post(t: Transport, keys: dict[str, Any]) -> int:
            return await t.create_account(username, keys)

        client = await cls._enroll(
            profile, passphrase, username, server_url, device_name, kdf, transport, clock,
            prekey_count, post,
        )
        await client._kt_publish_first()  # version 1 of the account's signed device list
        return client

    @classmethod
    async def link(
        cls,
        profile: Path,
        passphrase: str,
        username: str,
        code: str,
        server_url: str,
        *,
        device_name: str = "linked",
        kdf: KdfParams | None = None,
        transport: Transport | None = None,
        clock: Clock = now_ms,
        prekey_count: int = PREKEY_BATCH,
    ) -> Client:
        """Create a profile for a new device of the existing account ``username``, using a
        one-time ``code`` made by `create_link_code` on one of its devices.

        The code's part after the dot is the local secret of `create_link_code`: only the
        part before it goes to the server, with the link binding (HMAC under the secret of the
        account and this device's identity key) that lets the existing device vouch for this
        one in the account's signed device list.

        Raises: as `register` (a bad or used code is a `ServerError` from the server);
            DecodeError: the code's secret part is malformed.
        """
        server_code, _, secret_text = code.strip().partition(".")
        secret = wire_b64d(secret_text, what="link secret", max_len=LINK_SECRET_LEN) \
            if secret_text else None
        if secret is not None and len(secret) != LINK_SECRET_LEN:
            raise DecodeError(f"a link code's secret is {LINK_SECRET_LEN} bytes")

        async def post(t: Transport, keys: dict[str, Any]) -> int:
            binding = None
            if secret is not None:
                identity = IdentityKey.decode(b64d(keys["identity_key"]))
                binding = link_binding(secret, username, identity)
            return await t.link_device(username, server_code, keys, binding)

        return await cls._enroll(
            profile, passphrase, username, server_url, device_name, kdf, transport, clock,
            prekey_count, post,
        )

    @classmethod
    async def _enroll(
        cls,
        profile: Path,
        passphrase: str,
        username: str,
        server_url: str,
        device_name: str,
        kdf: KdfParams | None,
        transport: Transport | None,
        clock: Clock,
        prekey_count: int,
        post: Callable[[Transport, dict[str, Any]], Awaitable[int]],
    ) -> Client:
        profile = Path(profile)
        if Store.exists(profile):
            raise ProfileExistsError(f"{profile} already holds a Tidings profile")
        created_dir = not profile.exists()
        identity = IdentityKeyPair.generate()
        prekeys = DevicePrekeys.generate(
            identity, now_ms=clock(), one_time_count=prekey_count, kem_count=prekey_count
        )
        registration_id = 1 + secrets.randbelow(MAX_REGISTRATION_ID)
        secret = secrets.token_bytes(32)
        store = Store.create(profile, passphrase, kdf=kdf)
        own_transport = transport is None
        t = transport or Transport(server_url)
        try:
            # Keys are sealed on disk before they leave the device: a crash after the server
            # accepted them can never leave an account whose private keys are lost.
            with store.transaction():
                store.put(K_IDENTITY, SELF, identity.to_bytes())
                store.put(K_PREKEYS, SELF, prekeys.to_bytes())
            keys = {
                "name": device_name,
                "registration_id": registration_id,
                "identity_key": b64e(identity.public.encode()),
                "signed_prekey": b64e(codec.encode(prekeys.signed_prekey.to_wire())),
                "last_resort_kem_prekey": b64e(
                    codec.encode(prekeys.last_resort_kem_prekey.to_wire())
                ),
                "one_time_prekeys": [
                    b64e(codec.encode(k.to_wire())) for k in prekeys.one_time_prekeys
                ],
                "kem_prekeys": [b64e(codec.encode(k.to_wire())) for k in prekeys.kem_prekeys],
                "secret": b64e(secret),
            }
            device_id = await post(t, keys)
            account = Account(username, device_id, t.base_url, registration_id, secret, device_name)
            store.put_json(K_ACCOUNT, SELF, account.to_json())
        except BaseException:
            store.close()
            if own_transport:
                await t.aclose()
            # Nothing usable was created: remove the profile so the user can try again.
            (profile / "tidings.db").unlink(missing_ok=True)
            if created_dir:
                shutil.rmtree(profile, ignore_errors=True)
            raise
        client = cls(store, transport=t, clock=clock)
        client._owns_transport = own_transport
        return client

    async def devices(self) -> list[dict[str, Any]]:
        """This account's devices as the server lists them."""
        return await self._transport.own_devices()

    # -- history -----------------------------------------------------------------------------

    def messages(self, peer: str | None = None) -> list[Message]:
        """The local history (oldest stored first), optionally of one conversation."""
        messages = [record.message for record in self._message_records()]
        return [m for m in messages if peer is None or m.peer == peer]

    def report_item(self, message_id: str) -> ReportItem | None:
        """The franking material kept beside a received message (None if not kept)."""
        record = self._message_record(message_id)
        if record is None or record.report_item is None:
            return None
        return ReportItem.decode(b64d(record.report_item))

    def rejected(self) -> list[dict[str, Any]]:
        """The envelopes this device refused (no content): sender, device, time, code."""
        return [
            dict(record, message_id=name) for name, record in self._store.items_json(K_REJECTED)
        ]

    @property
    def identity_key(self) -> IdentityKey:
        return self._identity.public

