"""A lawful request's production package (docs/operations.md "Lawful requests"): a
directory of three files and a signature, verifiable offline with `tidings audit package DIR`.

- ``production.json`` — the request (who asked, under what, the scope kept) and, per scoped
  category, exactly the fields the data inventory lists for it.
- ``production.html`` — the same, readable (self-contained: no scripts, no external assets).
- ``manifest.json`` — ``{"format", "request_id", "created_ms", "public_key", "files":
  {name: sha256 hex}}``, the SHA-256 of each file above.
- ``manifest.sig`` — the Ed25519 signature (hex) of the exact bytes of ``manifest.json``,
  under the provider's package signing key (``lawful_signing.key``).

The same files travel as one zip archive (`package_zip`, what the console and the portal
download and the provider keeps, `tidings.safety.lawful_model.StoredPackage`): flat, stored
in name order with a fixed timestamp, so one package is always the same bytes.

`verify_package` checks a directory or a zip archive: the signature (under the manifest's
public key, or a pinned one: the manifest's own key proves integrity, a pinned key also proves
who signed), that the package holds exactly the files the manifest names, and each file's
hash. Any difference raises `PackageVerificationError`. `read_package_zip` refuses archives
with directories, paths (no "zip slip"), duplicate or too many members, members larger than
`MAX_PACKAGE_FILE_BYTES` and bad CRCs before anything is used.
"""

from __future__ import annotations

import html
import io
import json
import struct
import zipfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tidings.crypto.primitives import ed25519_public, ed25519_sign, ed25519_verify, sha256
from tidings.errors import PackageVerificationError, TidingsError
from tidings.wire.base64url import b64d, b64e

__all__ = [
    "MANIFEST_FILE",
    "PACKAGE_FORMAT",
    "SIGNATURE_FILE",
    "Package",
    "build_package",
    "package_zip",
    "read_package_zip",
    "verify_files",
    "verify_package",
    "write_package",
]

PACKAGE_FORMAT = "tidings-lawful-package/1"
MANIFEST_FILE = "manifest.json"
SIGNATURE_FILE = "manifest.sig"
JSON_FILE = "production.json"
HTML_FILE = "production.html"
MAX_PACKAGE_FILE_BYTES = 256 * 1024 * 1024
"""Largest file `verify_package` reads (a package is records, not media)."""
MAX_ZIP_MEMBERS = 16
"""A package has four files; an archive with more members than this is refused unread."""
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)
_ZIP_ERRORS = (
    zipfile.BadZipFile, zlib.error, struct.error, OSError, ValueError, EOFError,
    NotImplementedError, RuntimeError, KeyError, IndexError, OverflowError,
)
"""What `zipfile` raises for a malformed archive: a bad CRC or header, a truncated or
encrypted member, an unknown compression method or version, a bad name encoding."""


@dataclass(frozen=True, slots=True)
class Package:
    """The files of one package, by name, and the SHA-256 (hex) of its manifest."""

    files: Mapping[str, bytes]
    manifest_sha256: str


def _sha256(data: bytes) -> str:
    return sha256(data).hex()


def _cell(value: Any) -> str:
    if isinstance(value, (dict, list)):
        value = json.dumps(value, sort_keys=True)
    return html.escape("" if value is None else str(value))


def render_html(production: Mapping[str, Any]) -> str:
    """The readable rendering of ``production.json``'s content (every value escaped)."""
    request = production["request"]
    parts = [
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">",
        f"<title>Production for {_cell(request['request_id'])}</title>",
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;"
        "margin-bottom:1.5em}td,th{border:1px solid #999;padding:4px 8px;text-align:left;"
        "vertical-align:top}</style></head><body>",
        f"<h1>Production for request {_cell(request['request_id'])}</h1>",
        "<table>",
    ]
    for key in ("agency", "officer_name", "officer_email", "country", "case_number", "kind",
                "legal_basis", "account", "scope"):
        parts.append(f"<tr><th>{_cell(key)}</th><td>{_cell(request.get(key))}</td></tr>")
    parts.append("</table>")
    for category in production["categories"]:
        parts.append(f"<h2>{_cell(category['title'])} ({_cell(category['key'])})</h2>")
        rows: list[dict[str, Any]] = category["records"]
        if not rows:
            parts.append("<p>No records.</p>")
            continue
        columns = sorted({c for row in rows for c in row})
        parts.append("<table><tr>" + "".join(f"<th>{_cell(c)}</th>" for c in columns) + "</tr>")
        for row in rows:
            parts.append("<tr>" + "".join(f"<td>{_cell(row.get(c))}</td>" for c in columns)
                         + "</tr>")
        parts.append("</table>")
    parts.append("<h2>Never produced</h2><ul>")
    for item in production["never_produced"]:
        parts.append(f"<li>{_cell(item)}</li>")
    parts.append("</ul></body></html>\n")
    return "".join(parts)


def build_package(
    production: Mapping[str, Any], *, signing_key: bytes, created_ms: int
) -> Package:
    """The package of ``production`` (``{"request": {...}, "categories": [...],
    "never_produced": [...]}``), signed under ``signing_key`` (an Ed25519 seed)."""
    body = (json.dumps(production, sort_keys=True, indent=1) + "\n").encode("utf-8")
    page = render_html(production).encode("utf-8")
    files = {JSON_FILE: body, HTML_FILE: page}
    manifest = {
        "format": PACKAGE_FORMAT,
        "request_id": production["request"]["request_id"],
        "created_ms": created_ms,
        "public_key": b64e(ed25519_public(signing_key)),
        "files": {name: _sha256(data) for name, data in sorted(files.items())},
    }
    manifest_bytes = (json.dumps(manifest, sort_keys=True, indent=1) + "\n").encode("utf-8")
    signature = ed25519_sign(signing_key, manifest_bytes).hex() + "\n"
    files[MANIFEST_FILE] = manifest_bytes
    files[SIGNATURE_FILE] = signature.encode("ascii")
    return Package(files=files, manifest_sha256=_sha256(manifest_bytes))


def write_package(package: Package, directory: Path) -> None:
    """Write the package's files into ``directory`` (created; it must be empty or new).
    Raises `FileExistsError` when it holds anything, OSError."""
    directory.mkdir(parents=True, exist_ok=True)
    if any(directory.iterdir()):
        raise FileExistsError(f"{directory} is not empty")
    for name, data in package.files.items():
        (directory / name).write_bytes(data)


def package_zip(package: Package) -> bytes:
    """The package as one zip archive (module docstring): the same bytes for the same
    package."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(package.files):
            info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, package.files[name])
    return out.getvalue()


def read_package_zip(data: bytes) -> dict[str, bytes]:
    """The files of a package archive, by name.

    Raises:
        PackageVerificationError: not a zip archive, more than `MAX_ZIP_MEMBERS` members, a
            member that is a directory, has a path or a duplicate name, is larger than
            `MAX_PACKAGE_FILE_BYTES` (as declared or as read), or fails its CRC.
    """
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except _ZIP_ERRORS:
        raise PackageVerificationError("not a zip archive") from None
    with archive:
        members = archive.infolist()
        if len(members) > MAX_ZIP_MEMBERS:
            raise PackageVerificationError("the archive has more members than a package")
        files: dict[str, bytes] = {}
        for info in members:
            name = info.filename
            if (
                not name or "/" in name or "\\" in name or name in (".", "..")
                or not name.isprintable() or name in files
            ):
                raise PackageVerificationError(
                    "the archive holds a directory, a path or a duplicate name"
                )
            if info.file_size > MAX_PACKAGE_FILE_BYTES:
                raise PackageVerificationError(f"{name} is larger than a package file may be")
            try:
                with archive.open(info) as member:
                    body = member.read(MAX_PACKAGE_FILE_BYTES + 1)
            except _ZIP_ERRORS:
                raise PackageVerificationError(f"{name} cannot be read from the archive") from None
            if len(body) > MAX_PACKAGE_FILE_BYTES:
                raise PackageVerificationError(f"{name} is larger than a package file may be")
            files[name] = body
    return files


def _read(path: Path) -> bytes:
    if not path.is_file() or path.is_symlink():
        raise PackageVerificationError(f"{path.name} is missing or not a regular file")
    if path.stat().st_size > MAX_PACKAGE_FILE_BYTES:
        raise PackageVerificationError(f"{path.name} is larger than a package file may be")
    return path.read_bytes()


def _directory_files(directory: Path) -> dict[str, bytes]:
    names = sorted(p.name for p in directory.iterdir())
    if len(names) > MAX_ZIP_MEMBERS:
        raise PackageVerificationError("the directory holds more files than a package")
    return {name: _read(directory / name) for name in names}


def verify_package(path: Path, *, public_key: bytes | None = None) -> dict[str, Any]:
    """Check the package at ``path``, a directory or a zip archive (module docstring), and
    return its manifest.

    Raises:
        PackageVerificationError: neither a package directory nor an archive (see
            `read_package_zip`), or as `verify_files`.
    """
    if path.is_dir():
        files = _directory_files(path)
    elif path.is_file():
        files = read_package_zip(_read(path))
    else:
        raise PackageVerificationError("a package is a directory or a zip archive")
    return verify_files(files, public_key=public_key)


def verify_files(files: Mapping[str, bytes], *, public_key: bytes | None = None) -> dict[str, Any]:
    """Check a package's files, by name, and return its manifest.

    Raises:
        PackageVerificationError: no manifest or signature, a malformed manifest, a
            signature that does not verify (or a key other than ``public_key``), a file
            missing, added or changed.
    """
    if MANIFEST_FILE not in files or SIGNATURE_FILE not in files:
        raise PackageVerificationError("the package has no signed manifest")
    manifest_bytes = files[MANIFEST_FILE]
    try:
        signature = bytes.fromhex(files[SIGNATURE_FILE].decode("ascii").strip())
        manifest = json.loads(manifest_bytes)
        key = b64d(manifest["public_key"], what="public key", max_len=32)
        listed = dict(manifest["files"])
        fmt = manifest["format"]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError, TidingsError) as exc:
        raise PackageVerificationError("the manifest or its signature is malformed") from exc
    if fmt != PACKAGE_FORMAT:
        raise PackageVerificationError("not a Tidings lawful-request package")
    if public_key is not None and key != public_key:
        raise PackageVerificationError("the package is signed by another key than the pinned one")
    try:
        ed25519_verify(key, manifest_bytes, signature)
    except TidingsError:
        raise PackageVerificationError("the manifest's signature does not verify") from None
    present = set(files) - {MANIFEST_FILE, SIGNATURE_FILE}
    if present != set(listed):
        raise PackageVerificationError(
            "the package's files differ from the manifest's: "
            f"missing {sorted(set(listed) - present)}, extra {sorted(present - set(listed))}"
        )
    for name, digest in sorted(listed.items()):
        if not isinstance(digest, str) or _sha256(files[name]) != digest:
            raise PackageVerificationError(f"{name} does not match its hash in the manifest")
    return dict(manifest)
