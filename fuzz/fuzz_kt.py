"""Fuzz targets for key transparency's decoders of untrusted bytes (issue 12): the VRF proof and
public key a client verifies before trusting a directory label, the signed device list, and every
directory proof (lookup, history, audit, epoch head, witness co-signatures)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from tidings.crypto import kt_device_list, kt_tree, vrf
from tidings.crypto import kt_proofs as kp
from tidings.crypto.identity import IdentityKeyPair

TargetSpec = tuple[str, Callable[[bytes], object], list[bytes]]


def kt_targets() -> Iterator[TargetSpec]:
    secret = bytes(range(32))
    public = vrf.vrf_keygen(secret)
    alpha = b"alice@example.org"
    pi = vrf.prove(secret, alpha)

    def verify_all(data: bytes) -> bytes:
        """public key (32) || proof (80) || alpha: every input the verifier decodes."""
        return vrf.verify(
            data[: vrf.PUBLIC_LEN],
            data[vrf.PUBLIC_LEN + vrf.PROOF_LEN :],
            data[vrf.PUBLIC_LEN : vrf.PUBLIC_LEN + vrf.PROOF_LEN],
        )

    def verify_proof(data: bytes) -> bytes:
        """proof || alpha under a fixed valid key: mutations reach the proof checks."""
        return vrf.verify(public, data[vrf.PROOF_LEN :], data[: vrf.PROOF_LEN])

    yield "kt.vrf_verify", verify_all, [public + pi + alpha]
    yield "kt.vrf_proof", verify_proof, [pi + alpha]
    yield "kt.vrf_proof_to_hash", vrf.proof_to_hash, [pi]


def kt_directory_targets() -> Iterator[TargetSpec]:
    vrf_secret = bytes(range(32))
    vrf_public = vrf.vrf_keygen(vrf_secret)
    server_key = bytes([7]) * 32
    server_public = vrf.vrf_keygen(server_key)  # an Ed25519 public key, as the VRF's is
    tree = kt_tree.EpochTree()
    labels = {name: kp.account_label(vrf_secret, name)[0] for name in ("alice", "bob", "carol")}
    kp.make_audit(tree, {label: bytes([i]) * 32 for i, label in enumerate(labels.values())})
    old_root = tree.root()
    audit, _ = kp.make_audit(
        tree, {labels["alice"]: bytes(32), kp.account_label(vrf_secret, "dave")[0]: bytes(32)}
    )
    root = tree.root()
    head = kp.sign_head(server_key, tree.epoch, root, 1_000, None)
    phone = IdentityKeyPair(bytes([1]) * 32, bytes([2]) * 32)
    device_list = kt_device_list.sign_device_list(
        "alice", 1, [(1, phone.public)], signer=1, signer_key=phone
    )

    def lookup(data: bytes) -> object:
        return kp.verify_lookup(vrf_public, "alice", root, data)

    def lookup_absent(data: bytes) -> object:
        return kp.verify_lookup(vrf_public, "erin", root, data)

    def audit_verify(data: bytes) -> object:
        return kp.verify_audit(old_root, root, tree.epoch, data)

    def head_decode(data: bytes) -> object:
        return kp.decode_head(server_public, data)

    def device_list_chain(data: bytes) -> object:
        kt_device_list.verify_chain(None, kt_device_list.decode_device_list(data))
        return None

    history = kp.encode_history(tree.history(labels["alice"]))
    yield "kt.lookup", lookup, [kp.make_lookup(tree, vrf_secret, "alice")]
    yield "kt.lookup_absent", lookup_absent, [kp.make_lookup(tree, vrf_secret, "erin")]
    yield "kt.history", kp.decode_history, [history]
    yield "kt.audit", audit_verify, [audit]
    yield "kt.epoch_head", head_decode, [head.encode()]
    yield (
        "kt.cosignatures",
        kp.decode_cosignatures,
        [kp.encode_cosignatures([kp.witness_sign(bytes([9]) * 32, head)])],
    )
    yield "kt.device_list", device_list_chain, [device_list.encode()]


def kt_auditor_targets() -> Iterator[TargetSpec]:
    """The auditor and the witness (`tidings.client.kt_audit`) over arbitrary server answers:
    a JSON object of path -> answer body; whatever it holds, a run returns its result (a
    failure is a value), never raises anything."""
    import json

    from tidings.client.kt_audit import audit_log, witness_round
    from tidings.errors import DecodeError
    from tidings.wire.base64url import b64e

    server_key = bytes([9]) * 32
    server_public = vrf.vrf_keygen(server_key)  # the Ed25519 public key of that seed
    tree = kt_tree.EpochTree()
    label = kp.account_label(bytes(range(32)), "alice")[0]
    audit, _ = kp.make_audit(tree, {label: bytes(32)})
    head = kp.sign_head(server_key, 1, tree.root(), 5_000, None)
    served = {
        "head": b64e(head.encode()),
        "server_key": b64e(server_public),
        "cosignatures": b64e(kp.encode_cosignatures([kp.witness_sign(bytes(32), head)])),
    }
    seed = json.dumps(
        {"/v1/kt/head": served, "/v1/kt/head/1": served, "/v1/kt/audit/1": {"proof": b64e(audit)}}
    ).encode()

    class Answers:
        def __init__(self, answers: dict[str, object]) -> None:
            self.answers = answers

        def get(self, path: str) -> tuple[int, object]:
            return (200, self.answers[path]) if path in self.answers else (404, None)

        def post(self, path: str, body: dict[str, object]) -> tuple[int, object]:
            return 200, {}

    def answers(data: bytes) -> Answers:
        try:
            parsed = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            raise DecodeError("not JSON") from None
        if not isinstance(parsed, dict):
            raise DecodeError("not a JSON object")
        return Answers(parsed)

    def audit_run(data: bytes) -> object:
        witness = vrf.vrf_keygen(bytes(32))
        return audit_log(answers(data), witnesses={witness}, min_witnesses=1)

    def witness_run(data: bytes) -> object:
        return witness_round(answers(data), bytes(32), 5_000)

    yield "kt.auditor", audit_run, [seed]
    yield "kt.witness", witness_run, [seed]
