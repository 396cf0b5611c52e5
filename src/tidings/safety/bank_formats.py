"""Hash-bank files: the formats the field exchanges hashes in, read (import, removal) and
written (export) so that an export imports back to the same entries.

- ``csv``: rows of ``signal_type,signal_value`` (``pdq,<64 hex>``); a header row is optional.
  With a header, the value column may be called ``signal_value`` or ``signal_str`` (the
  `threatexchange` CLI's ``dataset -P --csv`` export), and a ``quality`` column is read; other
  columns are ignored, with a note. Without one, columns after the second are ignored, with a
  note. Export writes ``signal_type,signal_value,quality``.
- ``te``: the `threatexchange` library's signal-type names, one ``<type> <value>`` per line, as
  its CLI prints signals (``threatexchange dataset -P -S``; further fields are ignored, with a
  note). Its names: ``pdq``, ``video_md5`` and ``video_sha256`` (the MD5/SHA-256 signal types
  of threatexchange 1.x), ``photo_md5`` (its 0.x name) and ours (``md5``, ``sha256``).
  Export writes ``pdq``, ``video_md5`` and ``video_sha256``, the names threatexchange 1.x
  parses.
- ``jsonl``: one JSON object per line: ``{"signal_type": "pdq", "signal_value": "…",
  "quality": 90}`` (``signal_str`` accepted for the value; other keys ignored, with a note).

Signal-type names and values are checked here (`tidings.safety.bank_model.signal_row`), not by
the `threatexchange` package: it is not a runtime dependency (its validators are the same
regular expressions; the tests check ours agree with it). Every refusal is a `BankImportError`
naming the first bad line; blank lines and lines starting with ``#`` are skipped.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from tidings.errors import BankImportError
from tidings.safety.bank_model import BankEntry, SignalRow, SignalType, signal_row

__all__ = [
    "MAX_BANK_FILE_BYTES",
    "MAX_BANK_FILE_ROWS",
    "MAX_BANK_LINE_CHARS",
    "TE_EXPORT_NAMES",
    "TE_SIGNAL_NAMES",
    "BankFileFormat",
    "ParsedBankFile",
    "bank_file_format",
    "export_lines",
    "parse_bank_file",
]

MAX_BANK_FILE_BYTES = 512 * 1024 * 1024
"""Largest bank file read (a 64-hex-digit row is ~70 bytes: several million rows)."""
MAX_BANK_FILE_ROWS = 5_000_000
"""Most rows one file may hold (one transaction applies them all)."""
MAX_BANK_LINE_CHARS = 4096


class BankFileFormat(StrEnum):
    CSV = "csv"
    TE = "te"
    JSONL = "jsonl"


TE_SIGNAL_NAMES: Mapping[str, SignalType] = {
    "pdq": SignalType.PDQ,
    "md5": SignalType.MD5,
    "video_md5": SignalType.MD5,
    "photo_md5": SignalType.MD5,
    "sha256": SignalType.SHA256,
    "video_sha256": SignalType.SHA256,
}
"""Signal-type names read in every format (ours and `threatexchange`'s), lower case."""
TE_EXPORT_NAMES: Mapping[SignalType, str] = {
    SignalType.PDQ: "pdq",
    SignalType.MD5: "video_md5",
    SignalType.SHA256: "video_sha256",
}

_VALUE_COLUMNS = ("signal_value", "signal_str")


@dataclass(frozen=True, slots=True)
class ParsedBankFile:
    rows: list[SignalRow]
    notes: list[str] = field(default_factory=list)


def bank_file_format(name: BankFileFormat | str) -> BankFileFormat:
    """The format called ``name``. Raises BankImportError: not csv, te or jsonl."""
    try:
        return BankFileFormat(name)
    except ValueError:
        raise BankImportError("the format is csv, te or jsonl") from None


def _signal_type(name: str, line: int) -> SignalType:
    found = TE_SIGNAL_NAMES.get(name.strip().lower())
    if found is None:
        raise BankImportError(
            "unknown signal type (pdq, md5, sha256, or threatexchange's video_md5, "
            "photo_md5, video_sha256)",
            line=line,
        )
    return found


def _quality(text: object, line: int) -> int | None:
    if text is None or text == "":
        return None
    if isinstance(text, bool):
        raise BankImportError("a quality is a whole number", line=line)
    if isinstance(text, int):
        return text
    if isinstance(text, str) and text.strip().isdigit():
        return int(text.strip())
    raise BankImportError("a quality is a whole number", line=line)


def _lines(text: str) -> Iterator[tuple[int, str]]:
    """(line number, line) of the non-blank, non-comment lines."""
    for number, line in enumerate(text.splitlines(), start=1):
        if len(line) > MAX_BANK_LINE_CHARS:
            raise BankImportError(f"longer than {MAX_BANK_LINE_CHARS} characters", line=number)
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            yield number, line


def _parse_csv(text: str, notes: list[str]) -> Iterator[SignalRow]:
    header: dict[str, int] | None = None
    first = True
    for number, line in _lines(text):
        try:
            cells = next(csv.reader([line]))
        except csv.Error:
            raise BankImportError("not a CSV row", line=number) from None
        cells = [c.strip() for c in cells]
        is_header = first and cells[0].lower() == "signal_type"
        first = False
        if is_header:
            header = {name.lower(): i for i, name in enumerate(cells)}
            value_at = next((header[c] for c in _VALUE_COLUMNS if c in header), None)
            if value_at is None:
                raise BankImportError("the header names no signal_value column", line=number)
            known = {"signal_type", "quality", *_VALUE_COLUMNS}
            extra = [name for name in header if name not in known]
            if extra:
                notes.append(f"ignored column(s): {', '.join(extra)[:200]}")
            continue
        if header is None:
            if len(cells) < 2:
                raise BankImportError("a row is signal_type,signal_value", line=number)
            if len(cells) > 2 and not any(n.startswith("ignored column") for n in notes):
                notes.append("ignored columns after the second (no header row)")
            yield signal_row(number, _signal_type(cells[0], number), cells[1])
            continue
        value_at = next(header[c] for c in _VALUE_COLUMNS if c in header)
        if len(cells) <= max(header["signal_type"], value_at):
            raise BankImportError("the row has fewer columns than the header", line=number)
        quality_at = header.get("quality")
        quality = cells[quality_at] if quality_at is not None and quality_at < len(cells) else ""
        yield signal_row(
            number,
            _signal_type(cells[header["signal_type"]], number),
            cells[value_at],
            _quality(quality, number),
        )


def _parse_te(text: str, notes: list[str]) -> Iterator[SignalRow]:
    for number, line in _lines(text):
        words = line.split()
        if len(words) < 2:
            raise BankImportError("a row is '<signal type> <value>'", line=number)
        if len(words) > 2 and not notes:
            notes.append("ignored fields after the value (collaboration, metadata)")
        yield signal_row(number, _signal_type(words[0], number), words[1])


def _parse_jsonl(text: str, notes: list[str]) -> Iterator[SignalRow]:
    ignored: set[str] = set()
    for number, line in _lines(text):
        try:
            item = json.loads(line)
        except ValueError:
            raise BankImportError("not a JSON object", line=number) from None
        if not isinstance(item, dict):
            raise BankImportError("not a JSON object", line=number)
        kind = item.get("signal_type")
        value = next((item[c] for c in _VALUE_COLUMNS if c in item), None)
        if not isinstance(kind, str) or not isinstance(value, str):
            raise BankImportError("needs string signal_type and signal_value", line=number)
        ignored |= set(item) - {"signal_type", "quality", *_VALUE_COLUMNS}
        yield signal_row(
            number, _signal_type(kind, number), value, _quality(item.get("quality"), number)
        )
    if ignored:
        notes.append(f"ignored key(s): {', '.join(sorted(ignored))[:200]}")


_PARSERS: Mapping[BankFileFormat, Callable[[str, list[str]], Iterator[SignalRow]]] = {
    BankFileFormat.CSV: _parse_csv,
    BankFileFormat.TE: _parse_te,
    BankFileFormat.JSONL: _parse_jsonl,
}


def parse_bank_file(
    data: bytes,
    file_format: BankFileFormat | str = BankFileFormat.CSV,
    *,
    progress: Callable[[int], None] | None = None,
) -> ParsedBankFile:
    """Every row of ``data`` (UTF-8, a BOM allowed) in ``file_format``, checked; notes say
    what was ignored. ``progress(rows)`` is called every 100,000 rows.

    Raises:
        BankImportError: an unknown format, a file over `MAX_BANK_FILE_BYTES` or
            `MAX_BANK_FILE_ROWS`, not UTF-8, no rows, or a bad row (naming its line).
    """
    kind = bank_file_format(file_format)
    if len(data) > MAX_BANK_FILE_BYTES:
        raise BankImportError(f"the file is larger than {MAX_BANK_FILE_BYTES} bytes")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise BankImportError("not UTF-8 text", line=line) from None
    notes: list[str] = []
    rows: list[SignalRow] = []
    for row in _PARSERS[kind](text, notes):
        rows.append(row)
        if len(rows) > MAX_BANK_FILE_ROWS:
            raise BankImportError(f"more than {MAX_BANK_FILE_ROWS} rows", line=row.line)
        if progress is not None and len(rows) % 100_000 == 0:
            progress(len(rows))
    if not rows:
        raise BankImportError("the file holds no rows")
    return ParsedBankFile(rows, notes)


def export_lines(
    entries: Iterable[BankEntry], file_format: BankFileFormat | str = BankFileFormat.CSV
) -> Iterator[str]:
    """The lines (without line ends) of ``entries`` in ``file_format``; `parse_bank_file`
    reads them back to the same (type, value, quality) rows.

    Raises:
        BankImportError: an unknown format.
    """
    kind = bank_file_format(file_format)
    if kind is BankFileFormat.CSV:
        yield "signal_type,signal_value,quality"
    for entry in entries:
        quality = entry.quality
        if kind is BankFileFormat.CSV:
            yield f"{entry.signal_type.value},{entry.value},{'' if quality is None else quality}"
        elif kind is BankFileFormat.TE:
            yield f"{TE_EXPORT_NAMES[entry.signal_type]} {entry.value}"
        else:
            item: dict[str, object] = {
                "signal_type": entry.signal_type.value,
                "signal_value": entry.value,
            }
            if quality is not None:
                item["quality"] = quality
            yield json.dumps(item, separators=(",", ":"))
