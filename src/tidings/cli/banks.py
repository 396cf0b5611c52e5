"""`tidings admin bank ...`: the operator's hash-bank commands (create, import, remove, list,
export, entries), on a node's data directory or database like the other admin commands, as
the command-line operator (every change and view audited as ``operator:cli``).

Every command prints one line (or one JSON object with --json), and a refusal is the one-line
typed error (a bad row names its line; nothing from that file was applied) with exit code 1.
Progress of a large import goes to stderr.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from tidings.cli._common import JsonOpt, UsageError, emit, fail, iso_utc
from tidings.cli.operator import ConfigOpt, DatabaseUrlOpt, DataDirOpt, node_safety

if TYPE_CHECKING:
    from tidings.safety.bank_model import BankEntry

bank_cli = typer.Typer(
    help="Hash banks of known illegal images (PDQ, MD5, SHA-256) and their sources.",
    no_args_is_help=True,
)

NameArg = Annotated[str, typer.Argument(help="The bank's name.")]
FormatOpt = Annotated[
    str, typer.Option("--format", help="csv (signal_type,signal_value), te or jsonl.")
]
SourceOpt = Annotated[str, typer.Option("--source", help="The supplying organisation.")]


def _iso(ms: int | None) -> str | None:
    return None if ms is None else iso_utc(ms)


def _read(path: Path) -> bytes:
    """The file's bytes. Raises UsageError: unreadable, or larger than the bank-file limit."""
    from tidings.safety.bank_formats import MAX_BANK_FILE_BYTES

    try:
        if path.stat().st_size > MAX_BANK_FILE_BYTES:
            raise UsageError(f"{path} is larger than {MAX_BANK_FILE_BYTES} bytes")
        return path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {path} ({type(exc).__name__})") from None


def _n(count: int, one: str, many: str) -> str:
    return f"{count} {one if count == 1 else many}"


def _progress(rows: int) -> None:
    typer.echo(f"read {rows:,} rows…", err=True)


def _entry_json(entry: BankEntry) -> dict[str, Any]:
    return {
        "signal_type": entry.signal_type.value,
        "value": entry.value,
        "quality": entry.quality,
        "added_at": _iso(entry.added_ms),
        "removed_at": _iso(entry.removed_ms),
        "device_eligible": entry.device_eligible,
        "sources": [
            {
                "organisation": s.organisation,
                "jurisdiction": s.jurisdiction,
                "added_at": _iso(s.added_ms),
                "removed_at": _iso(s.removed_ms),
            }
            for s in entry.sources
        ],
    }


def _entry_line(entry: BankEntry) -> str:
    state = "removed" if not entry.active else "device" if entry.device_eligible else "server"
    sources = ", ".join(f"{s.organisation} ({s.jurisdiction})" for s in entry.active_sources)
    return f"{entry.signal_type.value:<7} {entry.value} {state:<7} {sources}"


@bank_cli.command("create")
def bank_create(
    name: NameArg,
    category: Annotated[
        str, typer.Option("--category", help="e.g. child_sexual_exploitation, terrorism.")
    ],
    description: Annotated[str, typer.Option("--description", help="What the bank holds.")] = "",
    data_dir: DataDirOpt = None,
    database_url: DatabaseUrlOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create an empty hash bank."""
    with node_safety(as_json, data_dir, database_url, config) as safety:
        bank = safety.banks.create_bank(
            safety.operator(), name=name, category=category, description=description
        )
        data = {"name": bank.name, "category": bank.category.value, "id": bank.bank_id}
        emit(as_json, data, f"created bank {bank.name} ({bank.category.value})")


@bank_cli.command("import")
def bank_import(
    name: NameArg,
    file: Annotated[Path, typer.Argument(help="The file of hashes.")],
    source: SourceOpt,
    jurisdiction: Annotated[
        str, typer.Option("--jurisdiction", help="The source's ISO 3166-1 alpha-2 country code.")
    ],
    file_format: FormatOpt = "csv",
    data_dir: DataDirOpt = None,
    database_url: DatabaseUrlOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Import hashes supplied by one organisation (incremental: rows it already supplied
    change nothing). A hash reaches devices once sources in two jurisdictions supplied it."""
    with node_safety(as_json, data_dir, database_url, config) as safety:
        result = safety.banks.import_file(
            safety.operator(),
            name,
            _read(file),
            organisation=source,
            jurisdiction=jurisdiction,
            file_format=file_format,
            progress=_progress,
        )
        o = result.outcome
        for note in result.notes:
            typer.echo(f"note: {note}", err=True)
        data = {
            "bank": name,
            "rows": o.rows,
            "entries_added": o.entries_added,
            "sources_added": o.sources_added,
            "unchanged": o.unchanged,
            "list_version": o.list_version,
            "notes": result.notes,
        }
        emit(
            as_json,
            data,
            f"imported {_n(o.rows, 'row', 'rows')} into {name}: "
            f"{_n(o.entries_added, 'new entry', 'new entries')}, "
            f"{_n(o.sources_added, 'new source', 'new sources')}, {o.unchanged} unchanged; "
            f"list version {o.list_version}",
        )


@bank_cli.command("remove")
def bank_remove(
    name: NameArg,
    source: SourceOpt,
    file: Annotated[Path | None, typer.Argument(help="A file of the hashes to withdraw.")] = None,
    value: Annotated[
        list[str] | None, typer.Option("--value", help="A hash to withdraw (repeatable).")
    ] = None,
    signal_type: Annotated[
        str, typer.Option("--signal-type", help="The type of the --value hashes.")
    ] = "pdq",
    file_format: FormatOpt = "csv",
    data_dir: DataDirOpt = None,
    database_url: DatabaseUrlOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Withdraw one organisation's supply of hashes (from FILE or --value); an entry whose
    last source this was leaves every list at once (kept for history)."""
    if (file is None) == (not value):
        fail(UsageError("give either FILE or --value"), as_json)
    with node_safety(as_json, data_dir, database_url, config) as safety:
        if file is not None:
            result = safety.banks.remove_file(
                safety.operator(),
                name,
                _read(file),
                organisation=source,
                file_format=file_format,
            )
        else:
            result = safety.banks.remove_values(
                safety.operator(),
                name,
                value or [],
                organisation=source,
                signal_type=signal_type,
            )
        o = result.outcome
        data = {
            "bank": name,
            "rows": o.rows,
            "sources_removed": o.sources_removed,
            "entries_removed": o.entries_removed,
            "not_found": o.not_found,
            "list_version": o.list_version,
        }
        emit(
            as_json,
            data,
            f"withdrew {_n(o.sources_removed, 'source', 'sources')} from {name}: "
            f"{_n(o.entries_removed, 'entry', 'entries')} removed, "
            f"{o.not_found} not supplied by {source}; list version {o.list_version}",
        )


@bank_cli.command("list")
def bank_list(
    data_dir: DataDirOpt = None,
    database_url: DatabaseUrlOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Every bank with its active, device-eligible and removed entry counts."""
    with node_safety(as_json, data_dir, database_url, config) as safety:
        summaries = safety.banks.list_banks(safety.operator())
        version = safety.banks.list_version()
        banks = [
            {
                "name": s.bank.name,
                "category": s.bank.category.value,
                "description": s.bank.description,
                "created_at": _iso(s.bank.created_ms),
                "active": s.counts.active,
                "device_eligible": s.counts.device_eligible,
                "removed": s.counts.removed,
            }
            for s in summaries
        ]
        lines = [f"{'BANK':<24} {'CATEGORY':<28} {'ACTIVE':>9} {'DEVICE':>9} {'REMOVED':>9}"]
        lines += [
            f"{b['name']:<24} {b['category']:<28} {b['active']:>9} "
            f"{b['device_eligible']:>9} {b['removed']:>9}"
            for b in banks
        ]
        lines.append(f"list version {version}")
        emit(as_json, {"banks": banks, "list_version": version}, "\n".join(lines))


@bank_cli.command("export")
def bank_export(
    name: NameArg,
    file_format: FormatOpt = "csv",
    output: Annotated[
        Path | None, typer.Option("--output", help="Write here instead of stdout.")
    ] = None,
    data_dir: DataDirOpt = None,
    database_url: DatabaseUrlOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Write the bank's active entries in a format `admin bank import` reads back. With
    --json (which needs --output), print a summary object."""
    if as_json and output is None:
        fail(UsageError("--json needs --output (the export itself goes to stdout)"), as_json)
    with node_safety(as_json, data_dir, database_url, config) as safety:
        lines = safety.banks.export(safety.operator(), name, file_format)
        count = 0
        try:
            out = output.open("w", encoding="utf-8") if output else sys.stdout
            try:
                for line in lines:
                    out.write(line + "\n")
                    count += 1
            finally:
                if output:
                    out.close()
        except OSError as exc:
            raise UsageError(f"cannot write {output} ({type(exc).__name__})") from None
        if output is not None:
            rows = count - 1 if file_format == "csv" else count  # less the header
            data = {"bank": name, "format": file_format, "entries": rows}
            data["output"] = str(output)
            text = f"exported {_n(rows, 'entry', 'entries')} of {name} to {output}"
            emit(as_json, data, text)


@bank_cli.command("entries")
def bank_entries(
    name: NameArg,
    signal_type: Annotated[
        str | None, typer.Option("--signal-type", help="Only pdq, md5 or sha256.")
    ] = None,
    eligible: Annotated[
        bool | None,
        typer.Option("--eligible/--not-eligible", help="Only device-eligible ones (or not)."),
    ] = None,
    removed: Annotated[bool, typer.Option("--removed", help="Include removed entries.")] = False,
    limit: Annotated[int, typer.Option(help="Entries per page (at most 500).")] = 100,
    offset: Annotated[int, typer.Option(help="Skip this many.")] = 0,
    data_dir: DataDirOpt = None,
    database_url: DatabaseUrlOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """One page of a bank's entries with their sources and eligibility."""
    from tidings.safety.bank_model import EntryFilter, SignalType

    with node_safety(as_json, data_dir, database_url, config) as safety:
        try:
            kind = SignalType(signal_type) if signal_type else None
        except ValueError:
            raise UsageError("the signal type is pdq, md5 or sha256") from None
        where = EntryFilter(kind, eligible, removed)
        page = safety.banks.entries(safety.operator(), name, where, limit=limit, offset=offset)
        entries = [_entry_json(e) for e in page.entries]
        lines = [_entry_line(e) for e in page.entries]
        lines.append(f"{page.offset + len(entries)} of {page.total}")
        data = {"bank": name, "total": page.total, "offset": offset, "entries": entries}
        emit(as_json, data, "\n".join(lines))
