"""Lawful requests' packages as kept and downloaded (memory, SQLite, PostgreSQL): the zip
archive legal downloads and the requester fetches through the portal verifies offline (also
with `tidings audit package ZIP`); the portal gets it only once delivered and only with its
access key; archives with paths, directories, duplicates, too many members or bad CRCs are
refused; the actions offered per state and type are the table's."""

from __future__ import annotations

import io
import json
import warnings
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.safety.test_lawful import World, _audit, _portal_fields
from tests.safety.test_lawful import world as lawful_world  # noqa: F401 (the fixture)
from tidings.cli import cli
from tidings.crypto.primitives import ed25519_public
from tidings.errors import (
    InvalidLawfulRequestError,
    NotFoundError,
    PackageVerificationError,
    PermissionDeniedError,
)
from tidings.safety.audit import AuditAction
from tidings.safety.lawful_model import (
    TRANSITIONS,
    LawfulRequest,
    RequestAction,
    RequestState,
    RequestType,
    allowed_actions,
)
from tidings.safety.lawful_package import (
    MAX_ZIP_MEMBERS,
    read_package_zip,
    verify_files,
    verify_package,
)
from tidings.wire.base64url import b64e

A, S = RequestAction, RequestState


@pytest.fixture
def world(lawful_world: World) -> World:  # noqa: F811 (the imported fixture)
    """test_lawful's world (memory, SQLite, PostgreSQL)."""
    return lawful_world


def _delivered_through_portal(world: World) -> tuple[str, str]:
    lawful, legal = world.safety.lawful, world.legal
    intake = lawful.submit(**_portal_fields(world))
    rid = intake.request.request_id
    access = lawful.confirm(rid, intake.token)
    lawful.review(legal, rid)
    lawful.scope(legal, rid)
    return rid, access.key


def test_the_kept_archive_is_the_package_and_verifies_offline(
    world: World, tmp_path: Path
) -> None:
    lawful, legal = world.safety.lawful, world.legal
    rid, _ = _delivered_through_portal(world)
    with pytest.raises(NotFoundError, match="produce it first"):
        lawful.package(legal, rid)
    produced, package = lawful.produce(legal, rid)
    stored = lawful.package(legal, rid)
    assert stored.manifest_sha256 == produced.manifest_sha256 == package.manifest_sha256
    assert read_package_zip(stored.archive) == dict(package.files)
    assert stored.filename == f"tidings-{rid}-package.zip"
    path = tmp_path / stored.filename
    path.write_bytes(stored.archive)
    manifest = verify_package(path, public_key=ed25519_public(world.key))
    assert manifest["request_id"] == rid
    ok = CliRunner().invoke(cli, ["audit", "package", str(path), "--json",
                                  "--public-key", b64e(ed25519_public(world.key))])
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.stdout)["request_id"] == rid
    downloads = [e for e in _audit(world) if e.action == AuditAction.LAWFUL_PACKAGE]
    assert [e.actor for e in downloads] == [legal.staff_id]
    with pytest.raises(PermissionDeniedError):
        lawful.package(world.reviewer, rid)


def test_a_new_production_replaces_the_kept_archive(world: World) -> None:
    lawful, legal = world.safety.lawful, world.legal
    rid, _ = _delivered_through_portal(world)
    lawful.produce(legal, rid)
    # The same request cannot be produced twice (the table); the repository replaces by id.
    stored = lawful.repository.get_package(rid)
    assert stored is not None
    again = type(stored)(rid, "0" * 64, stored.created_ms + 1, b"new")
    lawful.repository.put_package(again)
    assert lawful.repository.get_package(rid) == again
    with pytest.raises(NotFoundError):  # not the package the request records
        lawful.package(legal, rid)


def test_the_portal_gets_the_package_only_once_delivered_and_with_its_key(world: World) -> None:
    lawful, legal = world.safety.lawful, world.legal
    rid, key = _delivered_through_portal(world)
    with pytest.raises(NotFoundError) as before:
        lawful.portal_package(rid, key)
    lawful.produce(legal, rid)
    with pytest.raises(NotFoundError) as produced_only:
        lawful.portal_package(rid, key)
    assert before.value.message == produced_only.value.message  # no oracle
    lawful.deliver(legal, rid)
    with pytest.raises(NotFoundError):
        lawful.portal_package(rid, key + "x")
    stored = lawful.portal_package(rid, key)
    assert verify_files(read_package_zip(stored.archive))["request_id"] == rid
    (download,) = [e for e in _audit(world) if e.action == AuditAction.LAWFUL_PACKAGE]
    assert download.actor == "requester:dscully@fbi.gov"


def _zip(members: list[tuple[str, bytes]]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, data in members:
            archive.writestr(name, data)
    return out.getvalue()


@pytest.mark.parametrize(
    "members",
    [
        [("../manifest.json", b"{}")],
        [("sub/manifest.json", b"{}")],
        [("/etc/passwd", b"x")],
        [("a\\b", b"x")],
        [("dir/", b"")],
        [("a", b"1"), ("a", b"2")],
        [(f"f{i}", b"x") for i in range(MAX_ZIP_MEMBERS + 1)],
    ],
    ids=["dotdot", "subdir", "absolute", "backslash", "directory", "duplicate", "too-many"],
)
def test_archives_with_paths_or_too_much_are_refused(members: list[tuple[str, bytes]]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns of the duplicate name it writes
        data = _zip(members)
    with pytest.raises(PackageVerificationError):
        read_package_zip(data)


def test_a_corrupt_or_foreign_archive_is_refused(world: World) -> None:
    lawful, legal = world.safety.lawful, world.legal
    rid, _ = _delivered_through_portal(world)
    lawful.produce(legal, rid)
    archive = lawful.package(legal, rid).archive
    with pytest.raises(PackageVerificationError, match="not a zip"):
        read_package_zip(b"PK\x03\x04 not really")
    # Flip one byte inside the first member's data: its CRC no longer matches.
    header = zipfile.ZipFile(io.BytesIO(archive)).infolist()[0]
    offset = header.header_offset + 30 + len(header.filename) + 2
    corrupt = archive[:offset] + bytes([archive[offset] ^ 0xFF]) + archive[offset + 1:]
    with pytest.raises(PackageVerificationError):
        read_package_zip(corrupt)
    files = read_package_zip(archive)
    files["extra.txt"] = b"added"
    with pytest.raises(PackageVerificationError, match="differ from the manifest"):
        verify_files(files)
    del files["extra.txt"]
    files["production.json"] += b" "
    with pytest.raises(PackageVerificationError, match="does not match its hash"):
        verify_files(files)
    with pytest.raises(PackageVerificationError, match="no signed manifest"):
        verify_files({"production.json": b"{}"})


def _request(kind: RequestType, state: RequestState) -> LawfulRequest:
    return LawfulRequest(
        request_id="lr_x", agency="a", officer_name="o", officer_email="o@x.gov", country="US",
        case_number="c", legal_basis="b", kind=kind, account="alice", requested="[]",
        received_ms=0, due_ms=1, received_by="portal", domain_allowed=True, state=state,
    )


def test_the_actions_offered_are_the_tables_and_the_types() -> None:
    for state in RequestState:
        for kind in RequestType:
            offered = allowed_actions(_request(kind, state))
            assert set(offered) <= {a for (s, a) in TRANSITIONS if s is state}
    assert allowed_actions(_request(RequestType.SUBPOENA, S.IN_REVIEW)) == [A.SCOPE, A.REJECT]
    assert allowed_actions(_request(RequestType.PRESERVATION, S.IN_REVIEW)) == [A.REJECT, A.CLOSE]
    assert allowed_actions(_request(RequestType.EMERGENCY, S.SCOPED)) == [A.PRODUCE, A.REJECT]
    assert allowed_actions(_request(RequestType.PRESERVATION, S.SCOPED)) == [A.REJECT]
    assert allowed_actions(_request(RequestType.COURT_ORDER, S.CLOSED)) == []


def test_a_preservation_request_is_never_scoped(world: World) -> None:
    lawful, legal = world.safety.lawful, world.legal
    intake = world.receive(kind=RequestType.PRESERVATION, scope=[])
    rid = intake.request.request_id
    lawful.verify(rid, intake.token)
    lawful.review(legal, rid)
    before = lawful.repository.get(rid)
    with pytest.raises(InvalidLawfulRequestError, match="produces nothing"):
        lawful.scope(legal, rid)
    assert lawful.repository.get(rid) == before
    assert lawful.close(legal, rid).state is RequestState.CLOSED
