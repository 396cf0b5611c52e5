"""Fuzz targets for key transparency's decoders of untrusted bytes (issue 12): the VRF proof and
public key a client verifies before trusting a directory label."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from tidings.crypto import vrf

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
