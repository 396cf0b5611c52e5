"""`tidings admin lawful list|show ID`: the operator's read-only view of lawful requests
(docs/operations.md "Lawful requests"), each read audited as the command-line operator; and
`tidings audit package DIR|ZIP`: verify a production package offline (its manifest's Ed25519
signature and every file's SHA-256), exit 1 on any mismatch.

Intake, verification, scoping, production and delivery are legal's, each under the person who
takes it (`SafetyService.lawful`): not here."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from tidings.cli._common import JsonOpt, UsageError, emit, fail, iso_utc, iso_utc_or_dash
from tidings.cli.operator import ConfigOpt, DatabaseUrlOpt, DataDirOpt, node_safety, server_config
from tidings.errors import TidingsError

lawful_cli = typer.Typer(
    help="Lawful requests: list them, show one (read-only, audited).",
    no_args_is_help=True,
)


def _read(action: str, request_id: str | None, data_dir: Path | None, database_url: str | None,
          config: Path | None, as_json: bool) -> list[dict[str, Any]]:
    with node_safety(as_json, data_dir, database_url, config, action) as safety:
        actor = safety.operator().staff_id
        if request_id is None:
            return [r.to_json() for r in safety.lawful.list_as(actor)]
        return [safety.lawful.show_as(actor, request_id).to_json()]
    return []  # not reached: fail exits


@lawful_cli.command("list")
def lawful_list(
    data_dir: DataDirOpt = None,
    database_url: DatabaseUrlOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Every request, oldest first: id, type, country, account, state, due date."""
    rows = _read("read the lawful requests", None, data_dir, database_url, config, as_json)
    header = f"{'REQUEST':<22} {'TYPE':<15} {'CC':<3} {'ACCOUNT':<16} {'STATE':<10} DUE"
    lines = [header] + [
        f"{r['request_id']:<22} {r['kind']:<15} {r['country']:<3} {r['account']:<16} "
        f"{r['state']:<10} {iso_utc_or_dash(r['due_ms'])}"
        + ("" if r["domain_allowed"] else "  (unverified domain)")
        for r in rows
    ]
    emit(as_json, {"requests": rows}, "\n".join(lines) if rows else "no lawful requests")


@lawful_cli.command("show")
def lawful_show(
    request_id: Annotated[str, typer.Argument(help="The request's id (from `list`).")],
    data_dir: DataDirOpt = None,
    database_url: DatabaseUrlOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """One request: who asked, under what, the scope asked for and kept (and why the rest was
    dropped), each step's time, the package's manifest hash, the user notice."""
    (r,) = _read("read the lawful request", request_id, data_dir, database_url, config, as_json)
    lines = [
        f"request {r['request_id']} ({r['kind']}, {r['state']}) for account {r['account']}",
        f"  from {r['officer_name']} <{r['officer_email']}> of {r['agency']} ({r['country']})"
        + ("" if r["domain_allowed"] else " - unverified domain"),
        f"  case {r['case_number']}; received {iso_utc_or_dash(r['received_ms'])}, due "
        f"{iso_utc_or_dash(r['due_ms'])}",
        f"  legal basis: {r['legal_basis']}",
        f"  asked for {', '.join(r['requested']) or '-'}; kept {', '.join(r['scope']) or '-'}",
    ]
    lines += [f"  dropped {k}: {why}" for k, why in sorted(r["dropped"].items())]
    for key in ("verified_ms", "produced_ms", "delivered_ms", "closed_ms", "ndo_until_ms",
                "notice_due_ms"):
        if r[key] is not None:
            lines.append(f"  {key.removesuffix('_ms').replace('_', ' ')}: {iso_utc(r[key])}")
    for key in ("justification", "reject_reason", "hold_id", "manifest_sha256"):
        if r[key]:
            lines.append(f"  {key.replace('_', ' ')}: {r[key]}")
    emit(as_json, r, "\n".join(lines))


@lawful_cli.command("public-key")
def lawful_public_key(
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The public key production packages are signed with (base64url), to give requesters for
    `tidings audit package --public-key` (the signing key file is created if missing)."""
    from tidings.crypto.primitives import ed25519_public
    from tidings.safety.keyfile import load_lawful_signing_key
    from tidings.storage.files import LAWFUL_SIGNING_KEY_FILE
    from tidings.wire.base64url import b64e

    try:
        cfg = server_config(config, data_dir, None)
        seed = load_lawful_signing_key(cfg.data_dir / LAWFUL_SIGNING_KEY_FILE)
        public = b64e(ed25519_public(seed))
    except TidingsError as exc:
        fail(exc, as_json)
        return
    except OSError as exc:
        fail(UsageError(f"cannot read the signing key ({type(exc).__name__})"), as_json)
        return
    emit(as_json, {"public_key": public}, public)


def audit_package(
    package: Annotated[
        Path, typer.Argument(help="The package: its zip archive, or a directory of its files.")
    ],
    public_key: Annotated[
        str | None,
        typer.Option(help="The provider's package public key (base64url) to pin; default: "
                     "the key the manifest names."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Verify a lawful-request production package offline: the manifest's signature and every
    file's SHA-256; exit 1 on any mismatch."""
    from tidings.safety.lawful_package import verify_package
    from tidings.wire.base64url import b64d

    try:
        pinned = None if public_key is None else b64d(public_key, what="public key", max_len=32)
        manifest = verify_package(package, public_key=pinned)
    except TidingsError as exc:
        fail(exc, as_json)
        return
    data = {"ok": True, "request_id": manifest["request_id"],
            "public_key": manifest["public_key"], "files": manifest["files"]}
    emit(as_json, data, f"package of {manifest['request_id']} verifies: "
         f"{len(manifest['files'])} files, signed by {manifest['public_key']}")
