"""Key files: one helper (`tidings.storage.files.load_key_file`) creates the franking key, the
audit anchor and the staff key, and the evidence key ring goes through the same atomic create;
a crash mid-write never leaves a short key file, a wrong length or corrupt file is a typed
`InvalidKeyError`, files are 0600 whatever the umask, and the file names are defined once."""

from __future__ import annotations

import ast
import json
import os
import signal
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.server.conftest import make_config
from tidings.errors import InvalidKeyError
from tidings.safety.keyfile import (
    drop_evidence_key,
    load_anchor_key,
    load_evidence_keys,
    load_staff_key,
    rotate_evidence_key,
)
from tidings.server.state import load_franking_key
from tidings.storage import files
from tidings.storage.files import (
    AUDIT_ANCHOR_FILE,
    EVIDENCE_KEYS_FILE,
    FRANKING_KEY_FILE,
    KT_SIGNING_KEY_FILE,
    KT_VRF_KEY_FILE,
    STAFF_KEY_FILE,
    load_key_file,
    read_or_create_private,
    write_private,
)

SRC = Path(__file__).resolve().parents[2] / "src" / "tidings"
KEY_FILE_NAMES = (
    FRANKING_KEY_FILE, EVIDENCE_KEYS_FILE, AUDIT_ANCHOR_FILE, STAFF_KEY_FILE,
    KT_SIGNING_KEY_FILE, KT_VRF_KEY_FILE,
)

RAW_LOADERS: dict[str, Callable[[Path], bytes]] = {
    "anchor": load_anchor_key,
    "staff": load_staff_key,
    "franking": lambda path: load_franking_key(
        make_config(path.parent / "data", franking_key_file=path)
    ),
}


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


@pytest.mark.parametrize("loader", sorted(RAW_LOADERS))
def test_raw_key_files_are_created_private_once_and_then_kept(
    tmp_path: Path, umask: int, loader: str
) -> None:
    path = tmp_path / "keys" / "k.key"
    key = RAW_LOADERS[loader](path)
    assert len(key) == 32 and path.read_bytes() == key
    assert _mode(path) == 0o600 and _mode(path.parent) == 0o700
    assert RAW_LOADERS[loader](path) == key  # not regenerated
    assert load_key_file(tmp_path / "other.key", 32) != key  # fresh CSPRNG bytes per file


@pytest.mark.parametrize("loader", sorted(RAW_LOADERS))
@pytest.mark.parametrize("content", [b"", b"k" * 31, b"k" * 33, b"k" * 64])
def test_a_raw_key_file_of_the_wrong_length_is_an_invalid_key(
    tmp_path: Path, loader: str, content: bytes
) -> None:
    path = tmp_path / "k.key"
    path.write_bytes(content)
    with pytest.raises(InvalidKeyError, match="exactly 32 bytes") as caught:
        RAW_LOADERS[loader](path)
    assert str(path) in str(caught.value) and "kkk" not in str(caught.value)
    assert path.read_bytes() == content  # a bad file is reported, never replaced


def test_an_interrupted_write_leaves_no_key_file_and_the_next_start_creates_a_whole_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / FRANKING_KEY_FILE

    def disk_gone(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files.os, "fsync", disk_gone)
    with pytest.raises(OSError, match="No space"):
        load_key_file(path, 32)
    assert not path.exists() and _leftovers(tmp_path) == []
    monkeypatch.undo()
    assert len(load_key_file(path, 32)) == 32


CRASH_MID_WRITE = """
import os, signal, sys
from pathlib import Path
from tidings.storage import files

real_open = files.open_private

class HalfThenDie:
    def __init__(self, out):
        self._out = out
    def __enter__(self):
        return self
    def __exit__(self, *exc):
        return False
    def write(self, data):
        self._out.write(data[: len(data) // 2])
        self._out.flush()
        os.fsync(self._out.fileno())
        os.kill(os.getpid(), signal.SIGKILL)  # the process dies mid-write, no cleanup runs

files.open_private = lambda path: HalfThenDie(real_open(path))
files.load_key_file(Path(sys.argv[1]), 32)
"""


def test_a_process_killed_mid_write_never_leaves_a_short_key_file(tmp_path: Path) -> None:
    path = tmp_path / "data" / AUDIT_ANCHOR_FILE
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC.parent), *sys.path])}
    done = subprocess.run(
        [sys.executable, "-c", CRASH_MID_WRITE, str(path)], env=env, timeout=60, check=False
    )
    assert done.returncode == -signal.SIGKILL
    assert not path.exists()  # only the temporary file got the 16 bytes
    [leftover] = _leftovers(path.parent)
    assert (path.parent / leftover).stat().st_size == 16 and _mode(path.parent / leftover) == 0o600
    key = load_anchor_key(path)  # the next start is not confused by the leftover
    assert len(key) == 32 and path.read_bytes() == key


def test_the_first_of_two_racing_creators_wins(tmp_path: Path) -> None:
    path = tmp_path / STAFF_KEY_FILE
    first = b"A" * 32

    def other_node_writes_first() -> bytes:
        write_private(path, first, create_only=True)  # another node, between exists and link
        return b"B" * 32

    assert read_or_create_private(path, other_node_writes_first) == first
    assert path.read_bytes() == first and _leftovers(tmp_path) == []


def test_evidence_key_ring_is_created_private_and_rotates_atomically(
    tmp_path: Path, umask: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "data" / EVIDENCE_KEYS_FILE
    ring = load_evidence_keys(path)
    assert ring.key_ids == {ring.active_key_id} and _mode(path) == 0o600
    before = path.read_bytes()

    def crash(src: object, dst: object) -> None:
        raise OSError(5, "I/O error")

    monkeypatch.setattr(files.os, "replace", crash)
    with pytest.raises(OSError):
        rotate_evidence_key(path)
    assert path.read_bytes() == before and _leftovers(path.parent) == []
    monkeypatch.undo()
    new_id = rotate_evidence_key(path)
    assert load_evidence_keys(path).active_key_id == new_id and _mode(path) == 0o600
    drop_evidence_key(path, ring.active_key_id)
    assert load_evidence_keys(path).key_ids == {new_id}


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b'{"active": "ev1", "keys": {"ev1": "',  # a short (torn) file
        b"\xff\xfe not utf-8",
        b'{"active": 1, "keys": {}}',
        b'{"active": "ev1", "keys": {"ev1": "c2hvcnQ"}}',  # a 5-byte key
        b'{"active": "ev2", "keys": {"ev1": "' + b"A" * 43 + b'"}}',  # active not in the ring
        b"[]",
    ],
)
def test_a_corrupt_evidence_key_ring_is_an_invalid_key(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / EVIDENCE_KEYS_FILE
    path.write_bytes(content)
    with pytest.raises(InvalidKeyError):
        load_evidence_keys(path)
    assert path.read_bytes() == content


def test_a_valid_ring_round_trips(tmp_path: Path) -> None:
    path = tmp_path / EVIDENCE_KEYS_FILE
    load_evidence_keys(path)
    data = json.loads(path.read_text("utf-8"))
    assert set(data) == {"active", "keys"} and list(data["keys"]) == [data["active"]]


def _names_outside_the_home() -> list[str]:
    found = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        if rel == "storage/files.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                for name in KEY_FILE_NAMES:
                    if node.value == name or node.value.endswith("/" + name):
                        found.append(f"{rel}:{node.lineno} spells {name!r}")
    return found


def test_key_file_names_are_defined_once() -> None:
    """Code names a key file only through the `tidings.storage.files` constants (docstrings
    and help texts may mention them; a string that *is* the name may not)."""
    assert _names_outside_the_home() == []
