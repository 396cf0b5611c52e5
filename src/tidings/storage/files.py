"""Files at rest: the one home for creating the server's private directories and files.

Everything the server keeps on disk (the SQLite database and its ``-wal``/``-shm``, key files,
attachments and their ``.part`` uploads) is readable by the server's user only: directories
0700, files 0600, whatever the process umask (``os.mkdir``/``os.open`` modes are masked by the
umask, so each creation is followed by an explicit ``chmod``). A data directory left wider by
an older version or by hand is tightened at start by `tighten_tree`.

Key files (the one key-file helper, `load_key_file` / `read_or_create_private`, and the file
names, defined once): the server franking key (``franking.key``), the evidence key ring
(``evidence.keys``), the audit anchor key (``audit_anchor.key``) and the staff key
(``staff.key``), detection's PSI secret (``detection.key``) and list-signing key
(``detection_list_signing.key``), and key transparency's head-signing key (``kt_signing.key``)
and VRF secret (``kt_vrf.key``) live in the data directory, created on first start by an
atomic write (a crash never leaves a short or empty key file: the bytes are written and
fsynced under a temporary name, then linked into place) with mode 0600. The helper lives
here, in storage, because it is file I/O (``tidings.crypto`` does none) and storage sits below
both of its users, ``tidings.server`` (the franking and KT keys) and ``tidings.safety`` (the
others), so neither imports the other.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from tidings.errors import InvalidKeyError

__all__ = [
    "AUDIT_ANCHOR_FILE",
    "DETECTION_KEY_FILE",
    "DETECTION_SIGNING_KEY_FILE",
    "EVIDENCE_KEYS_FILE",
    "FRANKING_KEY_FILE",
    "KT_SIGNING_KEY_FILE",
    "KT_VRF_KEY_FILE",
    "LAWFUL_SIGNING_KEY_FILE",
    "PRIVATE_DIR_MODE",
    "PRIVATE_FILE_MODE",
    "STAFF_KEY_FILE",
    "create_private_file",
    "ensure_private_dir",
    "load_key_file",
    "open_private",
    "read_or_create_private",
    "remove_stale_files",
    "tighten_tree",
    "write_private",
]

PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600
_GROUP_OTHER = 0o077

FRANKING_KEY_FILE = "franking.key"
"""The server franking key (default name in the data directory; ``franking_key_file``)."""
EVIDENCE_KEYS_FILE = "evidence.keys"
"""The evidence key ring (JSON, `tidings.safety.keyfile`)."""
AUDIT_ANCHOR_FILE = "audit_anchor.key"
"""The audit log's anchor key."""
STAFF_KEY_FILE = "staff.key"
"""The key sealing staff TOTP secrets."""
DETECTION_KEY_FILE = "detection.key"
"""The PSI secret scalar that opens detection vouchers (``detection_key_file``)."""
DETECTION_SIGNING_KEY_FILE = "detection_list_signing.key"
"""The Ed25519 seed that signs published detection lists (``detection_signing_key_file``)."""
LAWFUL_SIGNING_KEY_FILE = "lawful_signing.key"
"""The Ed25519 seed that signs lawful-request production packages' manifests."""
KT_SIGNING_KEY_FILE = "kt_signing.key"
"""The Ed25519 seed that signs key-transparency epoch heads (`tidings.server.kt_directory`)."""
KT_VRF_KEY_FILE = "kt_vrf.key"
"""The VRF secret that makes key-transparency labels (`tidings.server.kt_directory`)."""


def ensure_private_dir(path: Path) -> Path:
    """Create ``path`` and any missing parents with mode 0700 (whatever the umask); returns
    ``path``. An existing directory is left as it is (`tighten_tree` narrows it).

    Raises:
        OSError: a component cannot be created (or exists and is not a directory).
    """
    missing: list[Path] = []
    current = path
    while not current.exists():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=PRIVATE_DIR_MODE)
        except FileExistsError:
            continue  # created meanwhile by another process (a node starting beside us)
        os.chmod(directory, PRIVATE_DIR_MODE)
    if not path.is_dir():
        raise NotADirectoryError(f"{path} is not a directory")
    return path


def _private_fd(path: Path) -> int:
    """A new file at ``path`` opened for writing, mode exactly 0600.

    Raises: FileExistsError (the file exists), OSError.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, PRIVATE_FILE_MODE)
    try:
        os.fchmod(fd, PRIVATE_FILE_MODE)  # the umask may have taken owner bits away
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_private(path: Path) -> BinaryIO:
    """Create ``path`` (it must not exist) with mode 0600 and open it for binary writing.

    Raises:
        FileExistsError: ``path`` exists.  OSError: it cannot be created.
    """
    return os.fdopen(_private_fd(path), "wb")


def create_private_file(path: Path) -> bool:
    """Create ``path`` empty with mode 0600 if it does not exist; returns whether it did. An
    existing file is left alone.

    Raises:
        OSError: the file cannot be created (e.g. its directory is missing).
    """
    try:
        os.close(_private_fd(path))
    except FileExistsError:
        return False
    return True


def write_private(path: Path, data: bytes, *, create_only: bool = False) -> None:
    """Write ``data`` to ``path`` atomically (temporary file, fsync, rename) with mode 0600;
    a missing parent directory is created 0700. ``create_only``: leave an existing file alone
    (two nodes starting together both keep the first file written).

    Raises:
        OSError: the file cannot be written.
    """
    ensure_private_dir(path.parent)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        with open_private(tmp) as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        if create_only:
            with contextlib.suppress(FileExistsError):
                os.link(tmp, path)
        else:
            os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def _fsync_dir(directory: Path) -> None:
    """Make a rename or link in ``directory`` durable (the file's own fsync does not cover its
    directory entry: after a power loss the new name could be missing)."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_or_create_private(path: Path, initial: Callable[[], bytes]) -> bytes:
    """The contents of ``path``; a missing file is first created from ``initial()`` with
    `write_private` (``create_only``: when two nodes start together, both read the file the
    first one wrote).

    Raises:
        OSError: the file cannot be created or read.
    """
    if not path.exists():
        write_private(path, initial(), create_only=True)
    return path.read_bytes()


def load_key_file(path: Path, length: int) -> bytes:
    """A raw secret key file: exactly ``length`` bytes, created from the operating system's
    CSPRNG (mode 0600, atomically) if missing.

    Raises:
        InvalidKeyError: the file exists but does not hold exactly ``length`` bytes (short,
            empty, or not a raw key); the message names the path, never the contents.
        OSError: the file cannot be created or read.
    """
    key = read_or_create_private(path, lambda: os.urandom(length))
    if len(key) != length:
        raise InvalidKeyError(f"{path} must hold exactly {length} bytes")
    return key


def _tighten(path: Path, mode: int, changed: list[Path], failed: list[Path]) -> None:
    if not mode & _GROUP_OTHER:
        return
    try:
        os.chmod(path, stat.S_IMODE(mode) & ~_GROUP_OTHER)
    except FileNotFoundError:
        return  # removed meanwhile (a purge, another node): nothing left to protect
    except PermissionError:
        failed.append(path)  # not ours (e.g. a shared volume): the caller reports it
        return
    changed.append(path)


def tighten_tree(root: Path) -> tuple[list[Path], list[Path]]:
    """Take group and other permissions away from ``root`` and every directory and regular
    file below it (owner bits are kept, so an existing file becomes at most 0600 and a
    directory at most 0700). Symbolic links are neither changed nor followed, except ``root``
    itself. Returns ``(changed, failed)``: the paths narrowed, and those that could not be
    (owned by another user); files vanishing meanwhile are skipped.

    Raises:
        OSError: ``root`` cannot be read.
    """
    changed: list[Path] = []
    failed: list[Path] = []
    _tighten(root, root.stat().st_mode, changed, failed)
    for directory, dirnames, filenames in os.walk(root):
        for name in (*dirnames, *filenames):
            path = Path(directory, name)
            try:
                mode = path.lstat().st_mode
            except FileNotFoundError:
                continue
            if stat.S_ISDIR(mode) or stat.S_ISREG(mode):
                _tighten(path, mode, changed, failed)
    return changed, failed


def remove_stale_files(
    directory: Path, *, suffix: str, max_age_s: float, now_s: float | None = None
) -> int:
    """Delete the regular files of ``directory`` (not below it) whose name ends with ``suffix``
    and that were last modified more than ``max_age_s`` seconds before ``now_s`` (default: the
    wall clock, which file mtimes use). Returns how many went; a missing directory, or a file
    removed meanwhile by someone else, counts nothing.

    Raises:
        OSError: the directory cannot be listed, or a file cannot be deleted.
    """
    cutoff = (time.time() if now_s is None else now_s) - max_age_s
    removed = 0
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return 0
    for entry in entries:
        if not entry.name.endswith(suffix):
            continue
        try:
            if not entry.is_file(follow_symlinks=False) or entry.stat().st_mtime > cutoff:
                continue
            os.unlink(entry.path)
        except FileNotFoundError:
            continue
        removed += 1
    return removed
