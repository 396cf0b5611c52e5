"""`tidings admin detection ...`: build and publish the blinded detection list, and show
its state (docs/detection.md "On the server", docs/operations.md). On a node's data
directory or database, like the other admin commands; audited as the command-line operator."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import typer

from tidings.cli._common import JsonOpt, emit, fail
from tidings.cli.operator import ConfigOpt, DatabaseUrlOpt, DataDirOpt, server_config
from tidings.errors import TidingsError

detection_cli = typer.Typer(
    help="Publish the blinded list devices match against; show its state.",
    no_args_is_help=True,
)


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds")


@detection_cli.command("build-list")
def detection_build_list(
    data_dir: DataDirOpt = None,
    database_url: DatabaseUrlOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Build a new list version from the device-eligible PDQ entries of the hash banks (two
    sources in two jurisdictions), with the configured detection_threshold; store it where
    every node serves it, sign its digest and publish it. Progress goes to stderr."""
    from tidings.app import open_detection

    try:
        cfg = server_config(config, data_dir, database_url)
        safety, detection = open_detection(cfg)
        try:
            record = detection.build_list(
                actor="operator:cli", progress=lambda line: typer.echo(line, err=True)
            )
        finally:
            safety.close()
    except TidingsError as exc:
        fail(exc, as_json)
        return
    data = {
        "version": record.version,
        "digest": record.digest.hex(),
        "threshold": record.threshold,
        "entries": record.entry_count,
        "keys": record.key_count,
        "bytes": record.size,
        "bank_list_version": record.bank_list_version,
        "created_at": _when(record.created_ms),
    }
    emit(
        as_json,
        data,
        f"published detection list version {record.version}: {record.entry_count} hashes, "
        f"{record.size} bytes, threshold {record.threshold}\n  digest {record.digest.hex()}",
    )


@detection_cli.command("status")
def detection_status(
    data_dir: DataDirOpt = None,
    database_url: DatabaseUrlOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The published list (version, digest, threshold, size, whether the banks changed since),
    the configured threshold, and how many vouchers wait to be processed."""
    from tidings.app import open_detection

    try:
        cfg = server_config(config, data_dir, database_url)
        safety, detection = open_detection(cfg)
        try:
            data: dict[str, Any] = detection.status()
        finally:
            safety.close()
    except TidingsError as exc:
        fail(exc, as_json)
        return
    current = data["list"]
    if current is None:
        text = (
            f"no detection list published (threshold {data['threshold']}; "
            "run `tidings admin detection build-list`)"
        )
    else:
        notes = []
        if current["threshold"] != data["threshold"]:
            notes.append(f"built for threshold {current['threshold']}: rebuild it")
        if not current["bank_list_current"]:
            notes.append("the banks changed since: rebuild to publish the changes")
        if not current["stored"]:
            notes.append("its bytes are missing from the store: rebuild it")
        text = (
            f"detection list version {current['version']} ({_when(current['created_ms'])}): "
            f"{current['entries']} hashes, {current['bytes']} bytes, threshold "
            f"{current['threshold']}\n  digest {current['digest']}\n"
            f"  pending vouchers {data['pending_vouchers']}"
            + "".join(f"\n  note: {n}" for n in notes)
        )
    emit(as_json, data, text)
