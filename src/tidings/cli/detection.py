"""`tidings admin detection ...`: build and publish the blinded detection list, and show
its state (docs/detection.md "On the server", docs/operations.md). On a node's data
directory or database, like the other admin commands; audited as the command-line operator.

`tidings audit detection-list URL` is the outsider's check of what a server publishes (no data
directory, no account): registered on the ``audit`` group by `tidings.cli`."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from tidings.cli._common import JsonOpt, emit, fail, iso_utc
from tidings.cli.operator import ConfigOpt, DatabaseUrlOpt, DataDirOpt, node_detection
from tidings.errors import TidingsError

detection_cli = typer.Typer(
    help="Publish the blinded list devices match against; show its state.",
    no_args_is_help=True,
)


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
    with node_detection(as_json, data_dir, database_url, config) as detection:
        record = detection.build_list(
            actor="operator:cli", progress=lambda line: typer.echo(line, err=True)
        )
    data = {
        "version": record.version,
        "digest": record.digest.hex(),
        "threshold": record.threshold,
        "entries": record.entry_count,
        "keys": record.key_count,
        "bytes": record.size,
        "bank_list_version": record.bank_list_version,
        "created_at": iso_utc(record.created_ms),
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
    with node_detection(as_json, data_dir, database_url, config) as detection:
        data: dict[str, Any] = detection.status()
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
            f"detection list version {current['version']} ({iso_utc(current['created_ms'])}): "
            f"{current['entries']} hashes, {current['bytes']} bytes, threshold "
            f"{current['threshold']}\n  digest {current['digest']}\n"
            f"  pending vouchers {data['pending_vouchers']}"
            + "".join(f"\n  note: {n}" for n in notes)
        )
    emit(as_json, data, text)


def audit_detection_list(
    url: Annotated[str, typer.Argument(help="The server's base URL.")],
    expect_key: Annotated[
        str | None,
        typer.Option(
            "--expect-key",
            help="The list-signing public key (base64url) the signature must be made with.",
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Check a server's published detection list from outside: its signed digest verifies
    (with --expect-key, under that key), and the list it serves has exactly that size, digest,
    version and threshold. Prints what every client of the server checks its list against;
    exit 1 when anything differs."""
    import asyncio

    from tidings.client.detection_list import MAX_LIST_BYTES, PublishedList
    from tidings.client.transport import Transport
    from tidings.crypto.psi import BlindedList
    from tidings.errors import DetectionListMissingError, DetectionListRefusedError
    from tidings.wire.base64url import b64d

    async def check() -> tuple[PublishedList, BlindedList]:
        expected = None if expect_key is None else b64d(expect_key, what="--expect-key")
        async with Transport(url) as transport:
            doc = await transport.detection_list_digest()
            if doc is None:
                raise DetectionListMissingError(f"{url} publishes no detection list")
            published = PublishedList.from_json(doc)
            published.verify(pinned_key=expected)
            data = await transport.detection_list(MAX_LIST_BYTES)
            if data is None:
                raise DetectionListRefusedError("the digest is published but no list is served")
        return published, published.check_list(data)

    try:
        published, blinded = asyncio.run(check())
    except TidingsError as exc:
        fail(exc, as_json)
        return
    params = blinded.params
    data = {
        "ok": True,
        "url": url,
        "version": published.version,
        "digest": published.digest.hex(),
        "threshold": published.threshold,
        "created_at": iso_utc(published.created_ms),
        "bytes": published.size,
        "signing_public_key": published.to_json()["signing_public_key"],
        "key_pinned": expect_key is not None,
        "slots": blinded.slot_count,
        "parameters": {
            "tables": params.tables,
            "bits_per_key": params.bits_per_key,
            "tag_dimension": params.tag_dimension,
            "synthetic_rate_ppm": params.synthetic_rate_ppm,
            "window_size": params.window_size,
        },
    }
    pinned = "" if expect_key else " (signing key not pinned: pass --expect-key to pin it)"
    emit(
        as_json,
        data,
        f"detection list of {url} verified: version {published.version}, threshold "
        f"{published.threshold}, {published.size} bytes\n  digest {published.digest.hex()}\n"
        f"  signed by {data['signing_public_key']}{pinned}",
    )
