"""Key files of the safety side: the evidence key ring (``evidence.keys``), the audit anchor
key (``audit_anchor.key``), the staff key (``staff.key``, sealing staff TOTP secrets) and
detection's PSI secret and list-signing key (``detection.key``,
``detection_list_signing.key``), kept outside the database (a database dump alone opens no
evidence or voucher, cannot re-anchor the audit log, mints no staff second factor and signs
no list). Created with mode 0600 on first use, atomically, by the one
key-file helper (`tidings.storage.files.load_key_file`), where the file names are defined.

``evidence.keys`` is JSON ``{"active": "<id>", "keys": {"<id>": "<b64url 32 bytes>", ...}}``.
Rotation (`rotate_evidence_key`) adds a key and makes it active; re-encrypt the stored evidence
(`tidings.safety.service.SafetyService.reencrypt_evidence`, or `tidings admin
rotate-evidence-key`, which does both), then old keys may be dropped with `drop_evidence_key`.
In cluster mode every node must read the same files.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from tidings.crypto.psi import check_list_secret, generate_list_secret
from tidings.errors import InvalidKeyError, TidingsError
from tidings.safety.evidence import EVIDENCE_KEY_LEN, EvidenceKeyRing
from tidings.safety.sql.staff import STAFF_KEY_LEN
from tidings.storage.files import load_key_file, read_or_create_private, write_private
from tidings.wire.base64url import b64d, b64e

__all__ = [
    "ANCHOR_KEY_LEN",
    "DETECTION_SIGNING_KEY_LEN",
    "drop_evidence_key",
    "load_anchor_key",
    "load_detection_secret",
    "load_detection_signing_key",
    "load_evidence_keys",
    "load_lawful_signing_key",
    "load_staff_key",
    "rotate_evidence_key",
]

ANCHOR_KEY_LEN = 32
DETECTION_SIGNING_KEY_LEN = 32
"""An Ed25519 seed."""
LAWFUL_SIGNING_KEY_LEN = 32
"""An Ed25519 seed."""


def _new_key_id(existing: set[str]) -> str:
    n = len(existing) + 1
    while f"ev{n}" in existing:
        n += 1
    return f"ev{n}"


def _parse_ring(path: Path, body: bytes) -> tuple[str, dict[str, bytes]]:
    try:
        data = json.loads(body.decode("utf-8"))
        active = data["active"]
        keys = {
            str(k): b64d(v, what="evidence key", max_len=EVIDENCE_KEY_LEN)
            for k, v in data["keys"].items()
        }
    except (ValueError, KeyError, TypeError, AttributeError, TidingsError) as exc:
        raise InvalidKeyError(f"{path} is not a valid evidence key file") from exc
    if not isinstance(active, str):
        raise InvalidKeyError(f"{path} is not a valid evidence key file")
    return active, keys


def _read_ring(path: Path) -> tuple[str, dict[str, bytes]]:
    return _parse_ring(path, path.read_bytes())


def _ring_bytes(active: str, keys: dict[str, bytes]) -> bytes:
    body = {"active": active, "keys": {k: b64e(v) for k, v in sorted(keys.items())}}
    return (json.dumps(body, indent=1) + "\n").encode("utf-8")


def _new_ring() -> bytes:
    key_id = _new_key_id(set())
    return _ring_bytes(key_id, {key_id: os.urandom(EVIDENCE_KEY_LEN)})


def load_evidence_keys(path: Path) -> EvidenceKeyRing:
    """The evidence key ring in ``path``, created (one fresh key, mode 0600) if missing.

    Raises:
        InvalidKeyError: the file is malformed or a key is not 32 bytes.
        OSError: the file cannot be read or created.
    """
    active, keys = _parse_ring(path, read_or_create_private(path, _new_ring))
    return EvidenceKeyRing(keys, active)


def rotate_evidence_key(path: Path) -> str:
    """Add a fresh key to the ring in ``path`` and make it active; returns its id. Old keys stay
    (they still decrypt) until every record is re-encrypted.

    Raises: as `load_evidence_keys`.
    """
    load_evidence_keys(path)
    _, keys = _read_ring(path)
    key_id = _new_key_id(set(keys))
    keys[key_id] = os.urandom(EVIDENCE_KEY_LEN)
    write_private(path, _ring_bytes(key_id, keys))
    return key_id


def drop_evidence_key(path: Path, key_id: str) -> None:
    """Remove a (non-active) key from the ring. Only after re-encryption reported nothing left.

    Raises:
        InvalidKeyError: ``key_id`` is the active key or not in the ring.
    """
    active, keys = _read_ring(path)
    if key_id == active or key_id not in keys:
        raise InvalidKeyError("only a non-active key of the ring can be dropped")
    del keys[key_id]
    write_private(path, _ring_bytes(active, keys))


def load_anchor_key(path: Path) -> bytes:
    """The audit anchor key in ``path`` (32 random bytes, created with mode 0600 if missing).

    Raises:
        InvalidKeyError: the file does not hold exactly 32 bytes.  OSError.
    """
    return load_key_file(path, ANCHOR_KEY_LEN)


def load_staff_key(path: Path) -> bytes:
    """The staff key in ``path`` (32 random bytes, created with mode 0600 if missing): the
    AES-256-GCM key under which staff TOTP secrets are stored
    (`tidings.safety.sql.SqlStaffRepository`). Losing it means every staff member enrols again.

    Raises:
        InvalidKeyError: the file does not hold exactly 32 bytes.  OSError.
    """
    return load_key_file(path, STAFF_KEY_LEN)


def load_detection_secret(path: Path) -> bytes:
    """The PSI secret in ``path`` (``detection.key``: a clamped 32-byte scalar, created with
    mode 0600 if missing): it opens detection vouchers, so it never leaves the server.

    Raises:
        InvalidKeyError: the file does not hold a clamped 32-byte scalar.  OSError.
    """
    secret = read_or_create_private(path, generate_list_secret)
    try:
        return check_list_secret(secret)
    except TidingsError:
        raise InvalidKeyError(f"{path} is not a detection secret") from None


def load_detection_signing_key(path: Path) -> bytes:
    """The Ed25519 seed in ``path`` (``detection_list_signing.key``, 32 random bytes,
    created with mode 0600 if missing) that signs published detection lists.

    Raises:
        InvalidKeyError: the file does not hold exactly 32 bytes.  OSError.
    """
    return load_key_file(path, DETECTION_SIGNING_KEY_LEN)


def load_lawful_signing_key(path: Path) -> bytes:
    """The Ed25519 seed in ``path`` (``lawful_signing.key``, 32 random bytes, created with mode
    0600 if missing) that signs lawful-request production packages' manifests
    (`tidings.safety.lawful_package`).

    Raises:
        InvalidKeyError: the file does not hold exactly 32 bytes.  OSError.
    """
    return load_key_file(path, LAWFUL_SIGNING_KEY_LEN)
