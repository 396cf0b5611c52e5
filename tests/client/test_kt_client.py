"""Key transparency on the device, against a real server (conftest: 0.5 s epochs): the own
list signed at registration and published, the link binding vouched for or alerted on,
removal, head pinning / rollback / fork checks, and contacts' lists checked before PQXDH."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.clients import link_with_code, register, run
from tests.support.kt import vouch, wait_published
from tidings.client.sdk import Client
from tidings.client.sdk.constants import K_KT, K_KT_CONTACT
from tidings.client.tui import kt_event_lines
from tidings.crypto import primitives as p
from tidings.crypto.kt_proofs import EpochHead
from tidings.crypto.kt_tree import HASH_LEN
from tidings.errors import (
    EpochForkError,
    KtHeadRollbackError,
    KtKeyChangedError,
    KtProofError,
)
from tidings.wire.base64url import b64e


def forged_head(server_app: tuple[str, Any], epoch: int, previous: bytes) -> EpochHead:
    """A head the server's own KT key signs over a root no honest tree has."""
    key = server_app[1].state.kt.keys.signing_key
    unsigned = EpochHead(epoch, secrets.token_bytes(HASH_LEN), 1, previous, b"")
    return EpochHead(epoch, unsigned.root, 1, previous, p.ed25519_sign(key, unsigned.body()))


def test_registration_publishes_version_1_and_monitoring_is_quiet(
    tmp_path: Path, server_url: str, names: Callable[[str], str]
) -> None:
    async def main() -> None:
        alice = await register(tmp_path, "a", names("alice"), server_url)
        me = alice.account.username
        await wait_published(alice, me, 1)
        status = await alice.kt_sync()
        assert status["alerts"] == [] and status["device_list_version"] == 1
        assert status["epoch"] >= 1
        head = alice.kt_head()
        assert head is not None and head.epoch >= status["epoch"]
        await alice.aclose()

    run(main())


def test_link_binding_vouched_for_and_a_forged_link_alerted(
    tmp_path: Path, server_url: str, names: Callable[[str], str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def main() -> None:
        alice = await register(tmp_path, "a1", names("alice"), server_url)
        # The only device of its account: a link it cannot check is an alert at once.
        code, _ = await alice.create_link_code()
        forged = code.partition(".")[0] + "." + b64e(secrets.token_bytes(16))
        ghost = await link_with_code(tmp_path, "g", alice, server_url, forged)
        status = await alice.kt_sync()
        assert status["device_list_version"] == 1  # not signed
        [alert] = status["alerts"]
        assert alert["code"] == "kt_unvouched_device"
        assert alert["device_id"] == ghost.account.device_id
        assert f"device {ghost.account.device_id}" in alert["message"]
        await alice.remove_device(ghost.account.device_id)  # never listed: no new version
        assert alice.kt_status()["device_list_version"] == 1

        code, _ = await alice.create_link_code()
        _, dot, secret = code.partition(".")
        assert dot == "." and len(secret) == 22  # 16 bytes, base64url
        alice2 = await link_with_code(tmp_path, "a2", alice, server_url, code)
        devices = {d["device_id"]: d for d in await alice.devices()}
        assert devices[alice2.account.device_id]["link_binding"]
        await vouch(alice, alice2)
        assert alice.kt_status()["device_list_version"] == 2
        # The linked device adopts the published list; nothing new to alert on either side.
        assert (await alice2.kt_sync())["alerts"] == []
        assert alice2.kt_status()["device_list_version"] == 2
        assert len(alice.kt_alerts()) == 1

        # Two devices now: a binding alice cannot check may be alice2's code, so the alert
        # waits for the grace period of directory time; neither device signs it in.
        code, _ = await alice.create_link_code()
        forged = code.partition(".")[0] + "." + b64e(secrets.token_bytes(16))
        ghost2 = await link_with_code(tmp_path, "g2", alice, server_url, forged)
        assert len((await alice.kt_sync())["alerts"]) == 1
        assert (await alice2.kt_sync())["alerts"] == []
        monkeypatch.setattr("tidings.client.sdk.kt.KT_VOUCH_GRACE_MS", 0)
        status = await alice.kt_sync()
        assert status["device_list_version"] == 2
        assert [a["device_id"] for a in status["alerts"]] == [
            ghost.account.device_id, ghost2.account.device_id]
        assert [a["device_id"] for a in (await alice2.kt_sync())["alerts"]] == [
            ghost2.account.device_id]
        monkeypatch.undo()
        # A server code alone (no binding at all) is an alert at once.
        code, _ = await alice.create_link_code()
        bare = await link_with_code(tmp_path, "a4", alice, server_url, code.partition(".")[0])
        alerts = (await alice2.kt_sync())["alerts"]
        assert [a["device_id"] for a in alerts] == [
            ghost2.account.device_id, bare.account.device_id]
        for c in (alice, alice2, ghost, ghost2, bare):
            await c.aclose()

    run(main())


def test_removing_a_device_publishes_the_next_list(
    tmp_path: Path, server_url: str, names: Callable[[str], str]
) -> None:
    async def main() -> None:
        alice = await register(tmp_path, "a1", names("alice"), server_url)
        code, _ = await alice.create_link_code()
        alice2 = await link_with_code(tmp_path, "a2", alice, server_url, code)
        await vouch(alice, alice2)
        await alice.remove_device(alice2.account.device_id)
        assert alice.kt_status()["device_list_version"] == 3
        for _ in range(200):
            signed = await alice._kt_lookup(alice.account.username)
            if signed is not None and signed.version == 3:
                break
            await asyncio.sleep(0.1)
        assert signed is not None and signed.version == 3
        assert [d for d, _ in signed.devices] == [alice.account.device_id]
        assert (await alice.kt_sync())["alerts"] == []
        await alice.aclose()
        await alice2.aclose()

    run(main())


def test_heads_pinned_never_older_and_forks_refused(
    tmp_path: Path, server_url: str, server_app: tuple[str, Any], names: Callable[[str], str]
) -> None:
    async def main() -> None:
        alice = await register(tmp_path, "a", names("alice"), server_url)
        await wait_published(alice, alice.account.username, 1)
        await alice.kt_sync()
        honest = alice.kt_head()
        assert honest is not None

        # A head of the same epoch with another root, validly signed: a fork.
        store = alice._store
        store.put(K_KT, "head", forged_head(server_app, honest.epoch, honest.previous).encode())
        with pytest.raises(EpochForkError):
            await alice.kt_sync()
        assert alice.kt_alerts()[-1]["code"] == "kt_epoch_fork"

        # A head far ahead of what the server now serves: the served one is a rollback.
        store.put(K_KT, "head", forged_head(server_app, honest.epoch + 10_000,
                                            honest.hash()).encode())
        with pytest.raises(KtHeadRollbackError):
            await alice.kt_sync()

        # Another directory key than the one pinned on first sight.
        pin = store.get_json(K_KT, "pin")
        assert pin is not None
        store.put_json(K_KT, "pin", dict(pin, server_key=b64e(secrets.token_bytes(32))))
        with pytest.raises(KtKeyChangedError):
            await alice.kt_sync()
        assert {a["code"] for a in alice.kt_alerts()} >= {
            "kt_epoch_fork", "kt_head_rollback", "kt_key_changed"}
        await alice.aclose()

    run(main())


def test_contact_list_checked_before_pqxdh_and_changes_recorded(
    tmp_path: Path, server_url: str, names: Callable[[str], str]
) -> None:
    async def main() -> None:
        alice = await register(tmp_path, "a1", names("alice"), server_url)
        bob = await register(tmp_path, "b", names("bob"), server_url)
        me = alice.account.username
        await wait_published(bob, me, 1)
        await bob.send_text(me, "hello")
        record = bob._store.get_json(K_KT_CONTACT, me)
        assert record is not None and record["list"]  # the list bob saw for alice
        code, _ = await alice.create_link_code()
        alice2 = await link_with_code(tmp_path, "a2", alice, server_url, code)
        await vouch(alice, alice2)
        sent = await bob.send_text(me, "to both")
        assert sent.devices == 2
        events = bob.trust_events(me)
        assert [(e.kind, e.device_id) for e in events][:1] == [
            ("kt_device_added", alice2.account.device_id)]
        assert kt_event_lines(me, events) == [
            f"⚠ {me}'s signed device list now includes device "
            f"{alice2.account.device_id} (key transparency)."]

        # A served list older than the one seen before is refused.
        stale = bob._store.get_json(K_KT_CONTACT, me)
        assert stale is not None
        bob._store.put_json(K_KT_CONTACT, "carol-not-here", {"list": stale["list"]})
        with pytest.raises(KtProofError):
            await bob._kt_vouched("carol-not-here")
        for c in (alice, alice2, bob):
            await c.aclose()

    run(main())


def test_unpublished_contact_trusted_on_first_use_then_checked(
    tmp_path: Path, server_url: str, names: Callable[[str], str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def main() -> None:
        bob = await register(tmp_path, "b", names("bob"), server_url)
        # An account that has published no list yet (an older account, or before an epoch).
        async def no_first_list(self: Client) -> None:
            return None

        monkeypatch.setattr(Client, "_kt_publish_first", no_first_list)
        carol = await register(tmp_path, "c", names("carol"), server_url)
        monkeypatch.undo()
        name = carol.account.username
        await wait_published(bob, bob.account.username, 1)  # an epoch exists
        assert await bob._kt_vouched(name) is None
        assert bob._kt_pending(name)
        await bob.send_text(name, "first use")  # trusted on first use
        # Carol's device signs version 1 when it next checks; then bob checks what it used.
        assert (await carol.kt_sync())["device_list_version"] == 1
        await wait_published(bob, name, carol.account.device_id)
        await bob.send_text(name, "now vouched")
        assert not bob._kt_pending(name)
        assert bob.trust_events(name) == ()
        await bob.aclose()
        await carol.aclose()

    run(main())


def test_safety_number_covers_the_vouched_device_lists(
    tmp_path: Path, server_url: str, names: Callable[[str], str]
) -> None:
    async def main() -> None:
        alice = await register(tmp_path, "a", names("alice"), server_url)
        bob = await register(tmp_path, "b1", names("bob"), server_url)
        me, them = alice.account.username, bob.account.username
        await wait_published(alice, them, 1)
        before = (await alice.safety_numbers(them)).devices[0].safety_number
        assert (await bob.safety_numbers(me)).devices[0].safety_number == before
        code, _ = await bob.create_link_code()
        bob2 = await link_with_code(tmp_path, "b2", bob, server_url, code)
        await vouch(bob, bob2)
        after = await alice.safety_numbers(them)
        # One number for the conversation, over bob's two vouched devices: it changed.
        assert {d.safety_number for d in after.devices} == {after.devices[0].safety_number}
        assert after.devices[0].safety_number != before
        assert (await bob.safety_numbers(me)).devices[0].safety_number == \
            after.devices[0].safety_number
        await bob2.kt_sync()  # bob's new device adopts the list: the same number
        assert (await bob2.safety_numbers(me)).devices[0].safety_number == \
            after.devices[0].safety_number
        for c in (alice, bob, bob2):
            await c.aclose()

    run(main())


def test_a_name_registered_again_publishes_a_reset_that_contacts_see(
    tmp_path: Path, server_url: str, names: Callable[[str], str]
) -> None:
    async def main() -> None:
        alice = await register(tmp_path, "a", names("alice"), server_url)
        bob = await register(tmp_path, "b1", names("bob"), server_url)
        them = bob.account.username
        await wait_published(alice, them, 1)
        await alice.send_text(them, "hello")
        await bob._transport.delete_account()
        await bob.aclose()
        bob = await register(tmp_path, "b2", them, server_url)  # the name, a new account
        assert bob.kt_status()["device_list_version"] == 2  # a reset after the old list
        for _ in range(200):
            signed = await alice._kt_lookup(them)
            if signed is not None and signed.version == 2:
                break
            await asyncio.sleep(0.1)
        assert signed is not None and signed.reset
        sent = await alice.send_text(them, "is it you?")
        assert sent.devices == 1
        events = alice.trust_events(them)
        assert ("kt_reset", bob.account.device_id) in [(e.kind, e.device_id) for e in events]
        assert any("was reset" in line for line in kt_event_lines(them, events))
        assert (await bob.kt_sync())["alerts"] == []  # its own reset: no alert
        await alice.aclose()
        await bob.aclose()

    run(main())


def test_the_tui_banner_shows_the_alert(
    tmp_path: Path, server_url: str, names: Callable[[str], str]
) -> None:
    from tidings.client.tui import ChatApp

    async def main() -> None:
        alice = await register(tmp_path, "a", names("alice"), server_url)
        code, _ = await alice.create_link_code()
        bare = await link_with_code(tmp_path, "x", alice, server_url, code.partition(".")[0])
        app = ChatApp(alice, listen=False)
        async with app.run_test(size=(120, 40)):
            # Mounting checks the account in the key directory: the device nobody vouched for.
            assert "Key transparency (kt_unvouched_device)" in app.banner_text
            assert f"device {bare.account.device_id}" in app.banner_text
        await alice.aclose()
        await bare.aclose()

    run(main())


def test_an_account_from_before_key_transparency_starts_its_list(
    tmp_path: Path, server_url: str, names: Callable[[str], str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def main() -> None:
        async def no_first_list(self: Client) -> None:
            return None

        monkeypatch.setattr(Client, "_kt_publish_first", no_first_list)
        alice = await register(tmp_path, "a1", names("alice"), server_url)
        monkeypatch.undo()
        code, _ = await alice.create_link_code()
        alice2 = await link_with_code(tmp_path, "a2", alice, server_url, code)
        assert (await alice2.kt_sync())["device_list_version"] == 0  # waits for device 1
        # Its lowest-numbered device signs version 1 of the devices registered now.
        status = await alice.kt_sync()
        assert status["device_list_version"] == 1 and status["alerts"] == []
        await wait_published(alice, alice.account.username, alice2.account.device_id)
        assert (await alice2.kt_sync())["device_list_version"] == 1  # names it: adopted
        await alice.aclose()
        await alice2.aclose()

    run(main())


JUNK: list[Any] = [
    {}, {"head": 1}, {"head": {}}, {"head": {"server_key": "AA", "vrf_key": "AA", "head": "AA"}},
    {"lookup": [], "history": None}, {"lookup": {"head": {}}, "device_lists": "x"},
    {"devices": [{"device_id": "1"}]}, {"proof": 5, "head": {"server_key": None}},
]


@pytest.mark.parametrize("junk", JUNK)
def test_hostile_directory_answers_are_typed_errors(
    tmp_path: Path, server_url: str, names: Callable[[str], str], junk: Any
) -> None:
    from tidings.errors import TidingsError

    async def main() -> None:
        alice = await register(tmp_path, "a", names("alice"), server_url)
        await wait_published(alice, alice.account.username, 1)
        await alice.kt_sync()
        transport = alice._transport

        async def answer(*_: Any) -> Any:
            return junk

        async def devices() -> Any:
            return junk.get("devices", [{"device_id": 9, "identity_key": 3}])

        for name in ("kt_head", "kt_lookup", "kt_history"):
            setattr(transport, name, answer)
        transport.own_devices = devices  # type: ignore[method-assign]
        with pytest.raises(TidingsError):
            await alice.kt_sync()
        with pytest.raises(TidingsError):
            await alice._kt_vouched("anyone")
        await alice.aclose()

    run(main())


def test_a_session_from_an_unvouched_device_is_a_trust_event(
    tmp_path: Path, server_url: str, names: Callable[[str], str]
) -> None:
    async def main() -> None:
        alice = await register(tmp_path, "a", names("alice"), server_url)
        bob = await register(tmp_path, "b", names("bob"), server_url)
        me, them = alice.account.username, bob.account.username
        await wait_published(bob, me, 1)
        await wait_published(alice, them, 1)
        await alice.send_text(them, "from the real alice")
        # A device in alice's account nobody vouched for writes to bob as alice.
        code, _ = await alice.create_link_code()
        ghost = await link_with_code(tmp_path, "g", alice, server_url, code.partition(".")[0])
        await ghost.send_text(them, "it is me, alice")
        got = [(e.sender_device, e.message.body) for e in await bob.poll()
               if e.kind == "message" and e.message is not None]
        assert got == [(1, "from the real alice"), (ghost.account.device_id, "it is me, alice")]
        events = [(e.kind, e.device_id) for e in bob.trust_events(me)]
        assert ("kt_unvouched_sender", ghost.account.device_id) in events
        assert ("kt_unvouched_sender", 1) not in events
        assert any("not in" in line and f"device {ghost.account.device_id}" in line
                   for line in kt_event_lines(me, bob.trust_events(me)))
        for c in (alice, bob, ghost):
            await c.aclose()

    run(main())


def test_published_lists_no_own_device_signed_are_alerts(
    tmp_path: Path, server_url: str, names: Callable[[str], str]
) -> None:
    from tidings.crypto.identity import IdentityKeyPair
    from tidings.crypto.kt_device_list import sign_device_list

    async def main() -> None:
        alice = await register(tmp_path, "a", names("alice"), server_url)
        me, mine = alice.account.username, alice._kt_own()
        assert mine is not None and mine.version == 1
        evil = IdentityKeyPair.generate()
        own = (alice.account.device_id, alice.identity_key)
        # The server's own version 2, adding its device, signed by that device.
        grafted = sign_device_list(me, 2, [own, (9, evil.public)], signer=9,
                                   signer_key=evil, previous=mine)
        alice._kt_compare_history([mine, grafted])
        assert [(a["code"], a["device_id"]) for a in alice.kt_alerts()] == [
            ("kt_unvouched_list", 9)]
        # A reset alice's device did not make (chains, but is no version of hers).
        reset = sign_device_list(me, 2, [(9, evil.public)], signer=9, signer_key=evil,
                                 previous=mine, reset=True)
        alice._kt_compare_history([mine, reset])
        assert alice.kt_alerts()[-1]["code"] == "kt_account_reset"
        # Another version 1 than the one alice signed.
        other = sign_device_list(me, 1, [(9, evil.public)], signer=9, signer_key=evil)
        alice._kt_compare_history([other])
        assert alice.kt_alerts()[-1]["code"] == "kt_foreign_list"
        assert alice._kt_own() == mine  # nothing of these adopted
        await alice.aclose()

    run(main())


def test_a_long_absence_checks_the_remembered_head_instead_of_every_epoch(
    tmp_path: Path, server_url: str, server_app: tuple[str, Any],
    names: Callable[[str], str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def main() -> None:
        alice = await register(tmp_path, "a", names("alice"), server_url)
        await wait_published(alice, alice.account.username, 1)
        await alice.kt_sync()
        remembered = alice.kt_head()
        assert remembered is not None
        monkeypatch.setattr("tidings.client.sdk.kt.MAX_HEAD_GAP", 0)
        fetched: list[int | None] = []
        real = alice._transport.kt_head

        async def counting(epoch: int | None = None) -> Any:
            fetched.append(epoch)
            return await real(epoch)

        alice._transport.kt_head = counting  # type: ignore[method-assign]
        while (await real())["epoch"] <= remembered.epoch + 1:  # type: ignore[index]
            await asyncio.sleep(0.1)
        await alice.kt_sync()
        # The newest, then the remembered one only (one more if an epoch passed meanwhile).
        assert fetched[:2] == [None, remembered.epoch] and len(fetched) <= 3
        head = alice.kt_head()
        assert head is not None and head.epoch > remembered.epoch + 1
        # A remembered head the server no longer serves for its epoch: a fork.
        alice._store.put(K_KT, "head", forged_head(server_app, head.epoch, head.previous).encode())
        while (await real())["epoch"] <= head.epoch + 1:  # type: ignore[index]
            await asyncio.sleep(0.1)
        with pytest.raises(EpochForkError):
            await alice.kt_sync()
        await alice.aclose()

    run(main())


def test_a_witness_requirement_refuses_a_chain_no_witness_signed(
    tmp_path: Path, server_app: tuple[str, Any], names: Callable[[str], str],
) -> None:
    import httpx

    from tidings.client.sdk.kt import WITNESS_GRACE_EPOCHS
    from tidings.crypto.kt_proofs import decode_head, witness_sign
    from tidings.errors import KtWitnessPolicyError, WitnessQuorumError
    from tidings.wire.base64url import b64d

    url, app = server_app
    witness = secrets.token_bytes(32)
    public = p.ed25519_public(witness)
    directory = app.state.kt
    saved = directory.witnesses
    directory.witnesses = frozenset({public})  # the node trusts this witness's co-signatures

    def newest() -> dict[str, Any]:
        body: dict[str, Any] = httpx.get(f"{url}/v1/kt/head", timeout=10).json()
        return body

    async def main() -> None:
        alice = await register(tmp_path, "w", names("alice"), url)
        me = alice.account.username
        await wait_published(alice, me, 1)
        await alice.kt_sync()
        for bad in (([public, public], 1), ([public], 2), ([b"short"], 1), ([public], -1)):
            with pytest.raises(KtWitnessPolicyError):
                alice.set_kt_witnesses(*bad)
        alice.set_kt_witnesses([public], 1)
        start = alice.kt_head().epoch  # type: ignore[union-attr]
        await alice.kt_sync()  # within the grace: no co-signature needed yet
        while newest()["epoch"] <= start + WITNESS_GRACE_EPOCHS + 1:
            await asyncio.sleep(0.2)
        with pytest.raises(WitnessQuorumError):
            await alice.kt_sync()
        assert alice.kt_alerts()[-1]["code"] == "kt_witness_quorum"
        # The witness co-signs the newest head; the device accepts heads again.
        body = newest()
        head = decode_head(b64d(body["server_key"]), b64d(body["head"]))
        posted = httpx.post(f"{url}/v1/kt/cosign/{head.epoch}", timeout=10,
                            json={"cosignature": b64e(witness_sign(witness, head))})
        assert posted.status_code == 200, posted.text
        status = await alice.kt_sync()
        assert status["witnesses"] == {"keys": [b64e(public)], "minimum": 1}
        await alice.aclose()

    try:
        run(main())
    finally:
        directory.witnesses = saved
