"""Unit tests of the encrypted local store."""

from __future__ import annotations

import sqlite3
import stat
from pathlib import Path

import pytest

from tidings.client.errors import (
    ProfileExistsError,
    ProfileNotFoundError,
    StoreError,
    StoreTamperedError,
    WrongPassphraseError,
)
from tidings.client.store import DB_FILE, KdfParams, Store


def make(tmp_path: Path, passphrase: str = "correct horse") -> Store:
    return Store.create(tmp_path / "p", passphrase, kdf=KdfParams.fast_for_tests())


def raw_rows(tmp_path: Path) -> list[tuple[str, bytes, bytes]]:
    db = sqlite3.connect(tmp_path / "p" / DB_FILE)
    try:
        return [(k, bytes(i), bytes(v)) for k, i, v in
                db.execute("SELECT kind, id, value FROM records ORDER BY rowid")]
    finally:
        db.close()


def test_roundtrip_and_reopen(tmp_path: Path) -> None:
    store = make(tmp_path)
    store.put("session", "alice", b"secret-state")
    store.put_json("contact", "bob", {"verified": True})
    store.close()
    store = Store.open(tmp_path / "p", "correct horse")
    assert store.get("session", "alice") == b"secret-state"
    assert store.get_json("contact", "bob") == {"verified": True}
    assert store.get("session", "nobody") is None
    assert store.items("session") == [("alice", b"secret-state")]
    store.close()


def test_nothing_in_the_clear(tmp_path: Path) -> None:
    store = make(tmp_path)
    store.put("contact", "alice-the-contact", b"very-private-plaintext")
    store.close()
    data = (tmp_path / "p" / DB_FILE).read_bytes()
    assert b"alice-the-contact" not in data
    assert b"very-private-plaintext" not in data
    assert b"correct horse" not in data


def test_file_permissions(tmp_path: Path) -> None:
    make(tmp_path).close()
    mode = stat.S_IMODE((tmp_path / "p" / DB_FILE).stat().st_mode)
    assert mode & 0o077 == 0


def test_wrong_passphrase(tmp_path: Path) -> None:
    make(tmp_path).close()
    with pytest.raises(WrongPassphraseError) as info:
        Store.open(tmp_path / "p", "wrong")
    assert info.value.code == "wrong_passphrase"
    assert "wrong" not in info.value.message.replace("wrong passphrase", "")


def test_missing_and_existing_profile(tmp_path: Path) -> None:
    with pytest.raises(ProfileNotFoundError):
        Store.open(tmp_path / "none", "x")
    make(tmp_path).close()
    with pytest.raises(ProfileExistsError):
        make(tmp_path)
    with pytest.raises(StoreError):
        Store.create(tmp_path / "q", "")


def test_tampered_row_detected(tmp_path: Path) -> None:
    store = make(tmp_path)
    store.put("identity", "self", b"k" * 65)
    store.close()
    db = sqlite3.connect(tmp_path / "p" / DB_FILE)
    kind, row_id, value = next(r for r in raw_rows(tmp_path) if r[0] == "identity")
    flipped = value[:-1] + bytes([value[-1] ^ 1])
    db.execute("UPDATE records SET value = ? WHERE kind = ? AND id = ?", (flipped, kind, row_id))
    db.commit()
    db.close()
    store = Store.open(tmp_path / "p", "correct horse")
    with pytest.raises(StoreTamperedError):
        store.get("identity", "self")
    store.close()


def test_swapped_rows_detected(tmp_path: Path) -> None:
    store = make(tmp_path)
    store.put("session", "alice", b"alice-state")
    store.put("session", "mallory", b"mallory-state")
    store.close()
    (_, id_a, val_a), (_, id_m, val_m) = raw_rows(tmp_path)
    db = sqlite3.connect(tmp_path / "p" / DB_FILE)
    db.execute("UPDATE records SET value = ? WHERE id = ?", (val_m, id_a))
    db.execute("UPDATE records SET value = ? WHERE id = ?", (val_a, id_m))
    db.commit()
    db.close()
    store = Store.open(tmp_path / "p", "correct horse")
    with pytest.raises(StoreTamperedError):
        store.get("session", "alice")
    with pytest.raises(StoreTamperedError):
        store.items("session")
    store.close()


def test_row_moved_to_other_kind_detected(tmp_path: Path) -> None:
    store = make(tmp_path)
    store.put("message", "x", b"data")
    store.close()
    db = sqlite3.connect(tmp_path / "p" / DB_FILE)
    db.execute("UPDATE records SET kind = 'contact'")
    db.commit()
    db.close()
    store = Store.open(tmp_path / "p", "correct horse")
    with pytest.raises(StoreTamperedError):
        store.items("contact")
    store.close()


def test_kdf_parameters_tampered(tmp_path: Path) -> None:
    make(tmp_path).close()
    db = sqlite3.connect(tmp_path / "p" / DB_FILE)
    db.execute("UPDATE meta SET value = ? WHERE name = 'kdf'", (b"{not json",))
    db.commit()
    db.close()
    with pytest.raises(StoreTamperedError):
        Store.open(tmp_path / "p", "correct horse")


def test_transaction_rolls_back(tmp_path: Path) -> None:
    store = make(tmp_path)
    store.put("seen", "a", b"")
    with pytest.raises(RuntimeError), store.transaction():
        store.put("seen", "b", b"")
        with store.transaction():  # nested joins the outer one
            store.put("seen", "c", b"")
        raise RuntimeError("boom")
    assert [n for n, _ in store.items("seen")] == ["a"]
    assert store.add("seen", "a", b"") is False
    assert store.add("seen", "d", b"") is True
    assert store.delete("seen", "d") is True
    assert store.count("seen") == 1
    store.close()


def test_default_kdf_parameters_are_memory_hard() -> None:
    params = KdfParams.default()
    assert params.mem >= 64 * 1024 * 1024 and params.ops >= 3 and len(params.salt) == 16
    assert KdfParams.from_json(params.to_json()) == params
