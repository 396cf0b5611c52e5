"""The client's local store: one SQLite file per profile directory, every secret sealed at rest.

Layout of a profile directory (created with mode 0700)::

    tidings.db      SQLite (mode 0600)
      meta(name PRIMARY KEY, value)            plaintext: format, KDF parameters + salt, check row
      records(kind, id, value, PK(kind, id))   sealed rows

**Key derivation.** ``master = Argon2id(passphrase, salt, ops, mem)`` (libsodium
``crypto_pwhash`` ALG_ARGON2ID13, 32-byte output), with a random 16-byte salt and the parameters
stored in ``meta`` at creation. The defaults (`KdfParams.default`: 3 passes, 64 MiB) take about
0.1 s here; tests pass cheaper parameters. Two subkeys are derived with HKDF-SHA256 (empty
salt): the *seal key* (info ``Tidings_Store_Seal_v1``) and the *index key* (info
``Tidings_Store_Index_v1``). The passphrase and the master key are never written anywhere.

**Rows.** A row is addressed by ``(kind, name)``, e.g. ``("session", "alice.2")``. On disk::

    id    = HMAC-SHA256(index key, u16(len kind) || kind || UTF-8(name))        -- 32 bytes
    value = 0x01 || nonce (24) || XChaCha20-Poly1305(seal key, nonce,
                plaintext = u16(len name) || UTF-8(name) || data,
                associated data = "Tidings_Store_Row_v1" || u16(len kind) || kind || id)

so account names, contact names and message ids are not visible in the file, a row cannot be
moved to another ``(kind, name)`` (the AEAD fails: `StoreTamperedError`), and a wrong passphrase
is detected on open by the sealed check row in ``meta`` (`WrongPassphraseError`). What the file
does reveal: how many rows of each kind exist, their sizes, and the insertion order.

Not covered: rolling the whole file back to an older copy (an attacker with disk access can
restore yesterday's database); deleting rows. The store is synchronous (SQLite calls are short);
the async SDK calls it from its event loop.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nacl.bindings as sodium
import nacl.exceptions
import nacl.pwhash.argon2id as argon2id

from tidings.client.errors import (
    ProfileExistsError,
    ProfileNotFoundError,
    StoreError,
    StoreTamperedError,
    WrongPassphraseError,
)
from tidings.crypto.primitives import hkdf_sha256, hmac_sha256, random_bytes
from tidings.wire import binary

STORE_FORMAT = 1
"""Version of the database layout (``meta.format``)."""

ROW_FORMAT = 1
"""First byte of every sealed value."""

DB_FILE = "tidings.db"

SEAL_INFO = b"Tidings_Store_Seal_v1"
INDEX_INFO = b"Tidings_Store_Index_v1"
ROW_AD_LABEL = b"Tidings_Store_Row_v1"
_CHECK_PLAINTEXT = b"Tidings store check v1"

_NONCE_LEN = sodium.crypto_aead_xchacha20poly1305_ietf_NPUBBYTES

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS records (
    kind TEXT NOT NULL,
    id BLOB NOT NULL,
    value BLOB NOT NULL,
    PRIMARY KEY (kind, id)
);
"""


@dataclass(frozen=True, slots=True)
class KdfParams:
    """Argon2id parameters of a profile: ``ops`` passes over ``mem`` bytes, and the salt."""

    ops: int
    mem: int
    salt: bytes

    @classmethod
    def default(cls) -> KdfParams:
        """3 passes over 64 MiB (about 0.1 s on the project machine), fresh random salt."""
        return cls(ops=3, mem=64 * 1024 * 1024, salt=random_bytes(argon2id.SALTBYTES))

    @classmethod
    def fast_for_tests(cls) -> KdfParams:
        """The libsodium minimum (1 pass, 8 KiB): for tests only, never for real profiles."""
        return cls(ops=argon2id.OPSLIMIT_MIN, mem=argon2id.MEMLIMIT_MIN, salt=random_bytes(16))

    def to_json(self) -> str:
        return json.dumps(
            {"alg": "argon2id13", "ops": self.ops, "mem": self.mem, "salt": self.salt.hex()}
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> KdfParams:
        """Raises StoreTamperedError: the stored parameters are not readable."""
        try:
            data = json.loads(text)
            if data["alg"] != "argon2id13":
                raise ValueError("unknown KDF")
            params = cls(
                ops=int(data["ops"]), mem=int(data["mem"]), salt=bytes.fromhex(data["salt"])
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise StoreTamperedError(
                "the profile's key-derivation parameters are unreadable"
            ) from exc
        if len(params.salt) != argon2id.SALTBYTES:
            raise StoreTamperedError("the profile's key-derivation salt is malformed")
        return params

    def derive(self, passphrase: str) -> bytes:
        """The 32-byte master key. Raises StoreError for parameters libsodium refuses."""
        try:
            return bytes(
                argon2id.kdf(
                    32,
                    passphrase.encode("utf-8"),
                    self.salt,
                    opslimit=self.ops,
                    memlimit=self.mem,
                )
            )
        except (nacl.exceptions.RuntimeError, nacl.exceptions.ValueError, ValueError) as exc:
            raise StoreError("the profile's key-derivation parameters are not usable") from exc


def _lp(data: bytes) -> bytes:
    return binary.u16(len(data)) + data


class Store:
    """An open, unlocked profile store. Create with `create` or `open`; `close` when done.

    Every method may raise `StoreError` for an unusable database file. Reads of a row that fails
    authentication raise `StoreTamperedError`; the store never returns unauthenticated data.
    """

    def __init__(self, directory: Path, connection: sqlite3.Connection, master: bytes) -> None:
        self._directory = directory
        self._db = connection
        self._seal_key = hkdf_sha256(master, salt=b"", info=SEAL_INFO, length=32)
        self._index_key = hkdf_sha256(master, salt=b"", info=INDEX_INFO, length=32)
        self._depth = 0

    # -- lifecycle ---------------------------------------------------------------------------

    @staticmethod
    def exists(directory: Path) -> bool:
        """Whether ``directory`` holds a profile database."""
        return (Path(directory) / DB_FILE).is_file()

    @classmethod
    def create(cls, directory: Path, passphrase: str, *, kdf: KdfParams | None = None) -> Store:
        """Create a new profile in ``directory`` (made if missing) locked by ``passphrase``.

        Raises:
            ProfileExistsError: the directory already holds a profile.
            StoreError: the passphrase is empty, or the directory is not writable.
        """
        if not passphrase:
            raise StoreError("the passphrase must not be empty")
        directory = Path(directory)
        if cls.exists(directory):
            raise ProfileExistsError(f"{directory} already holds a Tidings profile")
        params = kdf or KdfParams.default()
        try:
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            path = directory / DB_FILE
            # Create the file with owner-only permissions before SQLite opens it.
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o600))
            db = cls._connect(path)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(
                f"cannot create a profile in {directory}: {exc.__class__.__name__}"
            ) from exc
        store = cls(directory, db, params.derive(passphrase))
        with store.transaction():
            store._exec(
                "INSERT INTO meta(name, value) VALUES ('format', ?), ('kdf', ?), ('check', ?)",
                (
                    str(STORE_FORMAT).encode(),
                    params.to_json().encode(),
                    store._seal("meta", "check", _CHECK_PLAINTEXT),
                ),
            )
        return store

    @classmethod
    def open(cls, directory: Path, passphrase: str) -> Store:
        """Open and unlock the profile in ``directory``.

        Raises:
            ProfileNotFoundError: no profile there.
            WrongPassphraseError: ``passphrase`` does not unlock it.
            StoreTamperedError: the metadata is damaged.
            StoreError: the file is not a usable database or of an unknown format.
        """
        directory = Path(directory)
        if not cls.exists(directory):
            raise ProfileNotFoundError(
                f"no Tidings profile in {directory} (run `tidings register` or `tidings link`)"
            )
        try:
            db = cls._connect(directory / DB_FILE)
            meta = dict(db.execute("SELECT name, value FROM meta").fetchall())
        except sqlite3.Error as exc:
            raise StoreError(f"the profile database in {directory} is not readable") from exc
        if meta.get("format") != str(STORE_FORMAT).encode():
            db.close()
            raise StoreError("the profile was written by an unsupported version of Tidings")
        try:
            params = KdfParams.from_json(meta["kdf"])
            check = meta["check"]
        except (KeyError, StoreTamperedError):
            db.close()
            raise StoreTamperedError("the profile's metadata is damaged") from None
        store = cls(directory, db, params.derive(passphrase))
        try:
            ok = store._unseal("meta", "check", check) == _CHECK_PLAINTEXT
        except StoreTamperedError:
            ok = False
        if not ok:
            db.close()
            raise WrongPassphraseError("wrong passphrase for this profile")
        return store

    @staticmethod
    def _connect(path: Path) -> sqlite3.Connection:
        # Autocommit mode: transactions are explicit (`transaction`), so a received message, its
        # session state and its dedupe mark are written together or not at all.
        db = sqlite3.connect(path, isolation_level=None, timeout=10.0)
        db.execute("PRAGMA foreign_keys=ON")
        db.execute("PRAGMA synchronous=FULL")
        db.executescript(_SCHEMA)
        return db

    def close(self) -> None:
        """Close the database. The store must not be used afterwards."""
        self._db.close()

    @property
    def directory(self) -> Path:
        return self._directory

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """All writes inside happen atomically (nested uses join the outer transaction).

        Raises:
            StoreError: the database is locked for too long or cannot be written.
        """
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        self._exec("BEGIN IMMEDIATE")
        self._depth = 1
        try:
            yield
        except BaseException:
            self._depth = 0
            self._db.execute("ROLLBACK")
            raise
        self._depth = 0
        self._exec("COMMIT")

    # -- sealing -----------------------------------------------------------------------------

    def _row_id(self, kind: str, name: str) -> bytes:
        return hmac_sha256(self._index_key, _lp(kind.encode()) + name.encode("utf-8"))

    def _ad(self, kind: str, row_id: bytes) -> bytes:
        return ROW_AD_LABEL + _lp(kind.encode()) + row_id

    def _seal(self, kind: str, name: str, data: bytes) -> bytes:
        nonce = random_bytes(_NONCE_LEN)
        sealed = sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(
            _lp(name.encode("utf-8")) + bytes(data),
            self._ad(kind, self._row_id(kind, name)),
            nonce,
            self._seal_key,
        )
        return bytes((ROW_FORMAT,)) + nonce + sealed

    def _unseal_any(self, kind: str, row_id: bytes, value: bytes) -> tuple[str, bytes]:
        if len(value) < 1 + _NONCE_LEN or value[0] != ROW_FORMAT:
            raise StoreTamperedError(f"a stored {kind} row is damaged")
        try:
            plain = sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(
                value[1 + _NONCE_LEN :],
                self._ad(kind, row_id),
                value[1 : 1 + _NONCE_LEN],
                self._seal_key,
            )
        except nacl.exceptions.CryptoError:
            raise StoreTamperedError(
                f"a stored {kind} row fails authentication (altered or moved on disk)"
            ) from None
        length = int.from_bytes(plain[:2], "big")
        try:
            name = plain[2 : 2 + length].decode("utf-8")
        except UnicodeDecodeError:
            raise StoreTamperedError(f"a stored {kind} row is damaged") from None
        if self._row_id(kind, name) != row_id:
            raise StoreTamperedError(f"a stored {kind} row is under the wrong index")
        return name, plain[2 + length :]

    def _unseal(self, kind: str, name: str, value: bytes) -> bytes:
        got, data = self._unseal_any(kind, self._row_id(kind, name), value)
        if got != name:
            raise StoreTamperedError(f"a stored {kind} row is under the wrong index")
        return data

    def _exec(self, sql: str, params: tuple[object, ...] = ()) -> sqlite3.Cursor:
        try:
            return self._db.execute(sql, params)
        except sqlite3.Error as exc:
            raise StoreError(f"local store error: {exc.__class__.__name__}") from exc

    # -- rows --------------------------------------------------------------------------------

    def get(self, kind: str, name: str) -> bytes | None:
        """The data stored under ``(kind, name)``, or None.

        Raises:
            StoreTamperedError: the row fails authentication.
        """
        row = self._exec(
            "SELECT value FROM records WHERE kind = ? AND id = ?", (kind, self._row_id(kind, name))
        ).fetchone()
        return None if row is None else self._unseal(kind, name, bytes(row[0]))

    def put(self, kind: str, name: str, data: bytes) -> None:
        """Store ``data`` under ``(kind, name)``, replacing what was there (the row keeps its
        position in `items` order)."""
        self._exec(
            "INSERT INTO records(kind, id, value) VALUES (?, ?, ?) "
            "ON CONFLICT(kind, id) DO UPDATE SET value = excluded.value",
            (kind, self._row_id(kind, name), self._seal(kind, name, data)),
        )

    def add(self, kind: str, name: str, data: bytes) -> bool:
        """Store ``data`` under ``(kind, name)`` unless a row is there; True if it was added."""
        cursor = self._exec(
            "INSERT OR IGNORE INTO records(kind, id, value) VALUES (?, ?, ?)",
            (kind, self._row_id(kind, name), self._seal(kind, name, data)),
        )
        return cursor.rowcount == 1

    def contains(self, kind: str, name: str) -> bool:
        row = self._exec(
            "SELECT 1 FROM records WHERE kind = ? AND id = ?", (kind, self._row_id(kind, name))
        ).fetchone()
        return row is not None

    def delete(self, kind: str, name: str) -> bool:
        """Delete ``(kind, name)``; True if a row was there."""
        cursor = self._exec(
            "DELETE FROM records WHERE kind = ? AND id = ?", (kind, self._row_id(kind, name))
        )
        return cursor.rowcount == 1

    def items(self, kind: str) -> list[tuple[str, bytes]]:
        """Every ``(name, data)`` of ``kind``, in insertion order.

        Raises:
            StoreTamperedError: a row fails authentication.
        """
        rows = self._exec(
            "SELECT id, value FROM records WHERE kind = ? ORDER BY rowid", (kind,)
        ).fetchall()
        return [self._unseal_any(kind, bytes(i), bytes(v)) for i, v in rows]

    def count(self, kind: str) -> int:
        row = self._exec("SELECT COUNT(*) FROM records WHERE kind = ?", (kind,)).fetchone()
        return int(row[0])

    # -- JSON convenience --------------------------------------------------------------------

    def get_json(self, kind: str, name: str) -> dict[str, Any] | None:
        """`get`, parsed as a JSON object. Raises StoreTamperedError for a non-object."""
        data = self.get(kind, name)
        if data is None:
            return None
        return _parse_json(kind, data)

    def put_json(self, kind: str, name: str, value: dict[str, Any]) -> None:
        self.put(kind, name, json.dumps(value, separators=(",", ":")).encode())

    def items_json(self, kind: str) -> list[tuple[str, dict[str, Any]]]:
        return [(name, _parse_json(kind, data)) for name, data in self.items(kind)]


def _parse_json(kind: str, data: bytes) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except ValueError:
        raise StoreTamperedError(f"a stored {kind} row is damaged") from None
    if not isinstance(value, dict):
        raise StoreTamperedError(f"a stored {kind} row is damaged")
    return value
