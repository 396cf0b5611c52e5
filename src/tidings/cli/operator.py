"""The operator commands of `tidings`: `audit verify` checks the tamper-evident audit log,
`admin ...` operates the trust & safety side (staff accounts, evidence keys, the case list;
the hash banks are `tidings.cli.banks`, ``admin bank ...``). They work on a
node's data directory or database directly, not through a client profile."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from tidings.cli._common import JsonOpt, UsageError, emit, fail, iso_utc
from tidings.errors import TidingsError
from tidings.storage.files import AUDIT_ANCHOR_FILE, EVIDENCE_KEYS_FILE

if TYPE_CHECKING:
    from tidings.safety.detection import DetectionService
    from tidings.safety.service import SafetyService

T = TypeVar("T")

audit_cli = typer.Typer(help="Check the tamper-evident audit log.", no_args_is_help=True)
admin_cli = typer.Typer(help="Operate the trust & safety side.", no_args_is_help=True)

DataDirOpt = Annotated[
    Path | None, typer.Option("--data-dir", help="Server data directory (SQLite, key files).")
]
ConfigOpt = Annotated[Path | None, typer.Option("--config", help="Server TOML configuration.")]
DatabaseUrlOpt = Annotated[
    str | None, typer.Option("--database-url", help="Database URL (overrides the data dir).")
]


def server_config(
    config: Path | None, data_dir: Path | None, database_url: str | None
) -> Any:
    from tidings.server.config import ServerConfig

    """The node's configuration: ``config`` (TOML) with the command line's overrides."""
    return ServerConfig.load(config).with_overrides(data_dir=data_dir, database_url=database_url)


@contextmanager
def _node_service(
    as_json: bool,
    data_dir: Path | None,
    database_url: str | None,
    config: Path | None,
    action: str,
    open_node: Callable[[Any], tuple[SafetyService, T]],
) -> Iterator[T]:
    """The frame every operator command shares: ``open_node`` on the node's configuration
    gives the safety service (closed when the block ends) and the service the block uses; a
    typed error raised opening it or inside the block, and a database or file error, become
    the one-line CLI error ("cannot <action> (<kind>)"), exit 1."""
    from sqlalchemy.exc import SQLAlchemyError

    try:
        safety, service = open_node(server_config(config, data_dir, database_url))
        try:
            yield service
        finally:
            safety.close()
    except TidingsError as exc:
        fail(exc, as_json)
    except (SQLAlchemyError, OSError) as exc:
        fail(UsageError(f"cannot {action} ({type(exc).__name__})"), as_json)


def node_safety(
    as_json: bool,
    data_dir: Path | None,
    database_url: str | None,
    config: Path | None,
    action: str = "open the node's database",
) -> AbstractContextManager[SafetyService]:
    """The node's safety service (migrated, `tidings.app.open_safety`), closed when the block
    ends; errors as `_node_service` says."""
    from tidings.app import open_safety

    def open_node(cfg: Any) -> tuple[SafetyService, SafetyService]:
        safety = open_safety(cfg)
        return safety, safety

    return _node_service(as_json, data_dir, database_url, config, action, open_node)


def node_detection(
    as_json: bool,
    data_dir: Path | None,
    database_url: str | None,
    config: Path | None,
    action: str = "open the node's database",
) -> AbstractContextManager[DetectionService]:
    """As `node_safety`, for the node's detection service (`tidings.app.open_detection`)."""
    from tidings.app import open_detection

    return _node_service(as_json, data_dir, database_url, config, action, open_detection)


@audit_cli.command("verify")
def audit_verify(
    data_dir: DataDirOpt = None,
    database_url: DatabaseUrlOpt = None,
    config: ConfigOpt = None,
    anchor_key_file: Annotated[
        Path | None,
        typer.Option(help="Audit anchor key (default <data-dir>/audit_anchor.key if present)."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Verify the audit log's hash chain (and anchors, with the key): exit 1 at the first bad
    entry, naming its seq and why (edited, removed, reordered, inserted, ...)."""
    from sqlalchemy.exc import SQLAlchemyError

    from tidings.safety.audit import verify_chain
    from tidings.safety.sql import SafetyDatabase, SqlAuditRepository
    from tidings.storage.database import sqlite_url

    try:
        cfg = server_config(config, data_dir, database_url)
        key_path = anchor_key_file or cfg.data_dir / AUDIT_ANCHOR_FILE
        anchor = key_path.read_bytes() if key_path.is_file() else None
        if anchor_key_file is not None and anchor is None:
            raise UsageError(f"no anchor key file at {anchor_key_file}")
        db = SafetyDatabase(
            cfg.database_url or sqlite_url(cfg.data_dir), schema=cfg.database_schema
        )
        if db.is_sqlite and not cfg.database_url and not (cfg.data_dir / "tidings.db").exists():
            raise UsageError(f"no database in {cfg.data_dir}")
        try:
            result = verify_chain(SqlAuditRepository(db).entries(), anchor_key=anchor)
        finally:
            db.dispose()
    except TidingsError as exc:
        fail(exc, as_json)
        return
    except (SQLAlchemyError, ValueError, OSError) as exc:
        fail(UsageError(f"cannot read the audit log ({type(exc).__name__})"), as_json)
        return
    data = {
        "ok": result.ok,
        "checked": result.checked,
        "anchored": anchor is not None,
        "head_seq": result.head.seq if result.head else 0,
        "head_hash": result.head.entry_hash.hex() if result.head else None,
        "first_bad_seq": result.first_bad_seq,
        "fault": result.fault.value if result.fault else None,
        "detail": result.detail or None,
    }
    if result.ok:
        head = ""
        if result.head:
            head = f", head seq {result.head.seq} {result.head.entry_hash.hex()[:16]}…"
        note = "" if anchor is not None else " (anchors not checked: no anchor key)"
        text = f"audit log intact: {result.checked} entries{head}{note}"
        emit(as_json, data, text)
        return
    text = (
        f"audit log BROKEN at seq {result.first_bad_seq}: {data['fault']} — {result.detail} "
        f"({result.checked} entries verified before it)"
    )
    if as_json:
        typer.echo(json.dumps(data))
    else:
        typer.echo(text, err=True)
    raise typer.Exit(code=1)


@admin_cli.command("create-staff")
def admin_create_staff(
    username: Annotated[str, typer.Argument(help="Sign-in name (letters, digits, . _ -).")],
    role: Annotated[
        list[str], typer.Option("--role", help="reviewer, lead, legal or admin (repeatable).")
    ],
    child_safety: Annotated[
        bool, typer.Option("--child-safety", help="Request the child-safety clearance.")
    ] = False,
    queue: Annotated[
        list[str] | None, typer.Option("--queue", help="Queue membership (repeatable).")
    ] = None,
    console_url: Annotated[
        str | None,
        typer.Option(help="The console's public URL (default http://<host>:<port>/console)."),
    ] = None,
    data_dir: DataDirOpt = None,
    database_url: DatabaseUrlOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a staff account and print its single-use enrolment link, for its owner: they set
    their password and enrol their authenticator themselves (no secret is ever printed). The
    roles and the clearance stay pending until an admin approves them in the console (audited
    as the command-line operator)."""
    with node_safety(as_json, data_dir, database_url, config, "create the account") as safety:
        cfg = server_config(config, data_dir, database_url)
        issued = safety.create_staff(
            safety.operator(),
            username=username,
            roles=role,
            child_safety=child_safety,
            queues=queue or (),
        )
    account = issued.account
    url = issued.url(console_url or f"http://{cfg.host}:{cfg.port}/console")
    expires = iso_utc(issued.expires_ms)
    pending = [g.label for g in issued.pending_grants]
    data = {
        "id": account.staff_id,
        "username": account.username,
        "roles": sorted(r.value for r in account.roles),
        "pending_grants": pending,
        "enrolment_url": url,
        "expires_at": expires,
    }
    emit(
        as_json,
        data,
        f"created {account.username}; pending approval by an admin: {', '.join(pending)}\n"
        f"  enrolment link (single use, until {expires}; give it to {account.username} only):\n"
        f"  {url}",
    )


@admin_cli.command("rotate-evidence-key")
def admin_rotate_evidence_key(
    data_dir: DataDirOpt = None,
    database_url: DatabaseUrlOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Add a fresh evidence key, make it active, and re-encrypt every stored evidence record
    under it (old keys stay in evidence.keys until you drop them). Restart running nodes (and
    run this again) so they seal new evidence under the new key."""
    from tidings.app import open_safety
    from tidings.safety.keyfile import rotate_evidence_key

    try:
        cfg = server_config(config, data_dir, database_url)
        key_id = rotate_evidence_key(cfg.data_dir / EVIDENCE_KEYS_FILE)
        safety = open_safety(cfg)
        try:
            safety.audit.append(
                actor="operator:cli",
                action="key.rotation",
                target=f"key:{key_id}",
                now_ms=safety.clock(),
                details={"kind": "evidence"},
            )
            done = safety.reencrypt_evidence(actor="operator:cli")
        finally:
            safety.close()
    except TidingsError as exc:
        fail(exc, as_json)
        return
    emit(
        as_json,
        {"active_key_id": key_id, "reencrypted": done},
        f"evidence key {key_id} is active; {done} record(s) re-encrypted",
    )


CASE_LIST_BATCH = 1000
"""Cases `admin cases` reads per query."""


@admin_cli.command("cases")
def admin_cases(
    data_dir: DataDirOpt = None,
    database_url: DatabaseUrlOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Every case, oldest first: id, source (report or detection), subject, category, state
    and queue (the listing is audited as the command-line operator)."""
    from tidings.safety.audit import AuditAction
    from tidings.safety.case_model import CaseRecord

    with node_safety(as_json, data_dir, database_url, config, "read the cases") as safety:
        cases: list[CaseRecord] = []
        while True:
            page = safety.case_repo.list_cases(limit=CASE_LIST_BATCH, offset=len(cases))
            cases.extend(page)
            if len(page) < CASE_LIST_BATCH:
                break
        safety.audit.append(
            actor=safety.operator().staff_id,
            action=AuditAction.CASE_LIST,
            target="case:*",
            now_ms=safety.clock(),
            details={"listed": len(cases)},
        )
    rows = [
        {
            "id": c.case_id,
            "source": c.source.value,
            "subject": c.subject,
            "category": c.category.value,
            "state": c.state.value,
            "queue": c.queue_id,
        }
        for c in cases
    ]
    header = f"{'CASE':<28} {'SOURCE':<10} {'SUBJECT':<20} {'CATEGORY':<26} {'STATE':<22} QUEUE"
    lines = [header] + [
        f"{r['id']:<28} {r['source']:<10} {r['subject']:<20} {r['category']:<26} "
        f"{r['state']:<22} {r['queue']}"
        for r in rows
    ]
    emit(as_json, {"cases": rows}, "\n".join(lines) if rows else "no cases")


@admin_cli.command("inventory")
def admin_inventory(config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """The data inventory lawful requests are scoped against: every category of user data
    this node holds, where, for how long (from its configuration) and the legal process each
    needs; and what it never holds, and why (docs/operations.md, "Data inventory")."""
    from tidings.safety.inventory import NEVER_HELD, RetentionSettings, inventory

    try:
        cfg = server_config(config, None, None)
    except TidingsError as exc:
        fail(exc, as_json)
        return
    categories = inventory(RetentionSettings.from_config(cfg))
    data = {
        "categories": [c.to_json() for c in categories],
        "never_held": [n.to_json() for n in NEVER_HELD],
    }
    lines = []
    for c in categories:
        lines.append(f"{c.title} [{c.key}] — {c.process.value.replace('_', ' ')}")
        lines.append(f"  {c.description}")
        lines.append(f"  kept: {c.retention}")
    lines.append("Never held:")
    lines.extend(f"  {n.what}: {n.why}" for n in NEVER_HELD)
    emit(as_json, data, "\n".join(lines))
