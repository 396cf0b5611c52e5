"""Schemathesis hooks for the API-contract run (test_api_contract.py, or the CLI by hand with
``--config-file tests/server/schemathesis.toml``): what no JSON Schema can say.

A schema can say "87 characters of base64url", not "an identity key whose prekeys carry its
valid signatures", so a schema-valid registration with random keys is rightly refused (400
``invalid_signature``). For schemathesis's positive-data check to test the server's acceptance
rather than its cryptography, a *positive* case of the three routes that take signed key
material gets real key material just before it is sent (negative cases are left alone):

- ``POST /v1/accounts``: a fresh device's keys;
- ``POST /v1/devices/link``: a fresh device's keys and a valid provisioning code of a throwaway
  account registered for it;
- ``PUT /v1/keys``: prekeys signed by the authenticated (contract) device's identity;
- ``PUT /v1/kt/device-list``: the contract account's version-1 device list signed by its
  device (accepted once, then 409 ``kt_version_conflict``: an answer about the server's state);
- ``GET /v1/kt/history/{username}``: the contract account's own history (any other is 403);
- ``PUT /v1/messages/{username}``: one message per device id, each ``body`` a well-formed
  protobuf of its ``type`` (the server checks the shape of what it stores, not the end-to-end
  ciphertext).

And ``DELETE /v1/accounts/me`` with the contract device's credentials re-registers the same
account afterwards (same identity and secret, so device 1 again), so one run keeps exercising
every route beyond 401.

The contract device is described by the JSON in ``$TIDINGS_CONTRACT_KIT``: ``{"url",
"username", "identity" (b64 of IdentityKeyPair.to_bytes()), "secret" (b64)}``.
"""

from __future__ import annotations

import functools
import json
import os
import secrets
from typing import Any

import httpx
import schemathesis

from tests.support.devices import NOW_MS, DeviceKit, basic_auth, ratchet_body
from tidings.crypto.device_prekeys import DevicePrekeys
from tidings.crypto.identity import IdentityKeyPair
from tidings.crypto.kt_device_list import sign_device_list
from tidings.wire import codec
from tidings.wire import tidings_pb2 as pb
from tidings.wire.base64url import b64d, b64e
from tidings.wire.codec import IDENTITY_KEY_LEN, MLKEM768_CIPHERTEXT_LEN
from tidings.wire.limits import PROTOCOL_VERSION

KIT_ENV = "TIDINGS_CONTRACT_KIT"
_KEY_FIELDS = (
    "identity_key",
    "signed_prekey",
    "last_resort_kem_prekey",
    "one_time_prekeys",
    "kem_prekeys",
    "secret",
)
_MAX_BATCH = 3  # prekeys per generated upload: enough to exercise the route, cheap to make


@functools.cache
def _contract() -> dict[str, Any]:
    kit: dict[str, Any] = json.loads(os.environ[KIT_ENV])
    kit["pair"] = IdentityKeyPair.from_bytes(b64d(kit["identity"]))
    kit["prekeys"] = DevicePrekeys.generate(
        kit["pair"], now_ms=NOW_MS, one_time_count=0, kem_count=0
    )
    kit["auth"] = basic_auth(f"{kit['username']}.1", kit["secret"])["Authorization"]
    return kit


def _positive(case: schemathesis.Case) -> bool:
    return case.meta is not None and case.meta.generation.mode.is_positive


def _label(case: schemathesis.Case) -> str:
    return f"{case.method.upper()} {case.path}"


def _with_real_keys(device: dict[str, Any], kit: DeviceKit) -> dict[str, Any]:
    keys = kit.device_keys()
    return {**device, **{name: keys[name] for name in _KEY_FIELDS}}


def _throwaway_code(url: str) -> tuple[str, str]:
    """A new account's username and one provisioning code for it."""
    kit = DeviceKit()
    username = f"contract{secrets.token_hex(6)}"
    created = httpx.post(
        f"{url}/v1/accounts", json={"username": username, "device": kit.device_keys()}
    )
    created.raise_for_status()
    kit.username, kit.device_id = username, created.json()["device_id"]
    code = httpx.post(f"{url}/v1/devices/provisioning", headers=kit.auth)
    code.raise_for_status()
    return username, str(code.json()["code"])


@schemathesis.hook
def before_call(ctx: Any, case: schemathesis.Case, kwargs: dict[str, Any]) -> None:
    if _positive(case) and _label(case) == "GET /v1/kt/history/{username}":
        # Only the account's own devices may read its history: ask for the contract's.
        case.path_parameters = {**(case.path_parameters or {}), "username": _contract()["username"]}
    body = case.body
    if not _positive(case) or not isinstance(body, dict):
        return
    label = _label(case)
    if label == "POST /v1/accounts" and isinstance(body.get("device"), dict):
        case.body = {**body, "device": _with_real_keys(body["device"], DeviceKit())}
    elif label == "POST /v1/devices/link" and isinstance(body.get("device"), dict):
        username, code = _throwaway_code(_contract()["url"])
        device = _with_real_keys(body["device"], DeviceKit())
        case.body = {**body, "username": username, "code": code, "device": device}
    elif label == "PUT /v1/keys":
        case.body = _signed_upload(body)
    elif label == "PUT /v1/kt/device-list":
        kit = _contract()
        signed = sign_device_list(
            kit["username"], 1, [(1, kit["pair"].public)], signer=1, signer_key=kit["pair"]
        )
        case.body = {**body, "device_list": b64e(signed.encode())}
    elif label.startswith("PUT /v1/messages/") and isinstance(body.get("messages"), list):
        # One message per device (JSON Schema cannot say "unique by device_id").
        unique = {m.get("device_id"): m for m in reversed(body["messages"]) if isinstance(m, dict)}
        case.body = {**body, "messages": [_well_formed(m) for m in reversed(unique.values())]}


def _well_formed(message: Any) -> Any:
    builders = {
        pb.Envelope.PREKEY: _prekey_body,
        pb.Envelope.RATCHET: ratchet_body,
        pb.Envelope.SENDER_KEY: _sender_key_body,
    }
    if not isinstance(message, dict) or message.get("type") not in builders:
        return message
    return {**message, "body": b64e(builders[message["type"]]())}


def _prekey_body() -> bytes:
    inner = pb.RatchetMessage.FromString(ratchet_body())
    return codec.encode(
        pb.PrekeyMessage(
            version=PROTOCOL_VERSION,
            identity_key=os.urandom(IDENTITY_KEY_LEN),
            base_key=os.urandom(32),
            kem_ciphertext=os.urandom(MLKEM768_CIPHERTEXT_LEN),
            message=inner,
        )
    )


def _sender_key_body() -> bytes:
    return codec.encode(
        pb.SenderKeyMessage(
            version=PROTOCOL_VERSION,
            distribution_id=os.urandom(16),
            ciphertext=os.urandom(48),
            signature=os.urandom(64),
        )
    )


def _signed_upload(body: dict[str, Any]) -> dict[str, Any]:
    """``body`` with every present prekey field replaced by real prekeys of the contract
    device (new ids each time: the server keeps ids unique per device)."""
    kit = _contract()
    pair: IdentityKeyPair = kit["pair"]
    state: DevicePrekeys = kit["prekeys"]
    out = dict(body)
    if out.get("signed_prekey") is not None:
        out["signed_prekey"] = b64e(codec.encode(state.signed_prekey.to_wire()))
    if out.get("last_resort_kem_prekey") is not None:
        out["last_resort_kem_prekey"] = b64e(codec.encode(state.last_resort_kem_prekey.to_wire()))
    if isinstance(out.get("one_time_prekeys"), list):
        made = state.generate_one_time_prekeys(min(len(out["one_time_prekeys"]), _MAX_BATCH))
        out["one_time_prekeys"] = [b64e(codec.encode(k.to_wire())) for k in made]
    if isinstance(out.get("kem_prekeys"), list):
        made_kem = state.generate_kem_prekeys(pair, min(len(out["kem_prekeys"]), _MAX_BATCH))
        out["kem_prekeys"] = [b64e(codec.encode(k.to_wire())) for k in made_kem]
    return out


@schemathesis.hook
def after_call(ctx: Any, case: schemathesis.Case, response: Any) -> None:
    if _label(case) != "DELETE /v1/accounts/me" or response.status_code != 204:
        return
    kit = _contract()
    if response.request.headers.get("Authorization") != kit["auth"]:
        return
    # The contract account is gone: register it again with the same identity and secret.
    device = DeviceKit(identity=kit["pair"], secret=b64d(kit["secret"]))
    again = httpx.post(
        f"{kit['url']}/v1/accounts",
        json={"username": kit["username"], "device": device.device_keys()},
    )
    again.raise_for_status()
