"""Prekeys: keeping the server stocked with one-time prekeys and rotating signed ones."""

from __future__ import annotations

from typing import Any

from tidings.client.sdk.constants import K_PREKEYS, PREKEY_BATCH, PREKEY_LOW_WATERMARK, SELF
from tidings.client.sdk.core import ClientCore
from tidings.client.transport import b64e
from tidings.crypto.device_prekeys import DevicePrekeys
from tidings.wire import codec


class PrekeysMixin(ClientCore):
    """Prekeys, a part of `Client`."""

    async def refresh_prekeys(self) -> dict[str, int]:
        """Top up one-time prekeys on the server when it holds fewer than
        `PREKEY_LOW_WATERMARK` of a kind, and rotate the signed prekeys when due.

        New private keys are sealed in the store before their public halves are uploaded.
        Returns how many keys of each kind were uploaded.
        """
        one_time, kem = await self._transport.key_count()
        upload: dict[str, Any] = {}
        uploaded = {"one_time": 0, "kem": 0, "signed": 0}
        now = self._clock()
        with self._store.transaction():
            # Fresh state under the write lock (another process may have consumed keys).
            self._reload_prekeys()
            self._extend_prekeys(one_time, kem, now, upload, uploaded)
            if upload:
                self._store.put(K_PREKEYS, SELF, self._prekeys.to_bytes())
        if upload:
            await self._transport.put_keys(upload)
        return uploaded

    def _extend_prekeys(
        self, one_time: int, kem: int, now: int, upload: dict[str, Any], uploaded: dict[str, int]
    ) -> None:
        if one_time < PREKEY_LOW_WATERMARK:
            new = self._prekeys.generate_one_time_prekeys(PREKEY_BATCH)
            upload["one_time_prekeys"] = [b64e(codec.encode(k.to_wire())) for k in new]
            uploaded["one_time"] = len(new)
        if kem < PREKEY_LOW_WATERMARK:
            new_kem = self._prekeys.generate_kem_prekeys(self._identity, PREKEY_BATCH)
            upload["kem_prekeys"] = [b64e(codec.encode(k.to_wire())) for k in new_kem]
            uploaded["kem"] = len(new_kem)
        if self._prekeys.rotation_due(now):
            signed, last_resort = self._prekeys.rotate_signed_prekeys(self._identity, now_ms=now)
            upload["signed_prekey"] = b64e(codec.encode(signed.to_wire()))
            upload["last_resort_kem_prekey"] = b64e(codec.encode(last_resort.to_wire()))
            uploaded["signed"] = 1

    def _reload_prekeys(self) -> None:
        data = self._store.get(K_PREKEYS, SELF)
        if data is not None:
            self._prekeys = DevicePrekeys.from_bytes(data)
