"""Turn one landed file into text rows, or into one readable sentence saying why it cannot be read.

Landed files come from people and tools we do not control, so their content is never a reason to
raise: an unreadable file becomes a `ReadResult` with `rejected_reason`, and lines that do not fit
the header are handed back in `ragged` with their row number. Only programming errors raise.

Every value is handed on as text, exactly as landed (not stripped), so that validation, not the
reader, decides what a malformed value is and quarantines it with a reason. In CSV an empty field
(quoted or not) is null; Parquet values keep what the file stores (null stays null, "" stays "").
"""

from __future__ import annotations

import csv
import gzip
import re
import stat
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from forecasting_pipeline.series_keys import MAX_SERIES_ID_LENGTH, UNSAFE_CHARACTERS, UNSAFE_CHARACTERS_NAMED

SOURCE_ROW = "source_row"
RAW_LINE = "raw_line"
REASON = "reason"
SUPPORTED_SUFFIXES = (".csv", ".csv.gz", ".parquet")
RAGGED_SCHEMA: dict[str, pl.DataType] = {SOURCE_ROW: pl.Int64(), RAW_LINE: pl.Utf8(), REASON: pl.Utf8()}

# Comma first: on a tie (e.g. a one-column header) the commonest convention wins.
_DELIMITERS = (",", ";", "\t", "|")
# pyarrow needs a whole row inside one block; 16 MiB is as fast as the default and rarely too small.
_BLOCK_SIZE = 16 << 20
_MAX_BLOCK_SIZE = (1 << 31) - 1
# A runaway quoted field can swallow the rest of a file; the quarantine does not need all of it.
_MAX_RAW_LINE = 10_000
_MAX_MESSAGE = 500

_UTF8_BOM = b"\xef\xbb\xbf"
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
_UTF32_BOMS = (b"\xff\xfe\x00\x00", b"\x00\x00\xfe\xff")
# Binary formats people land under a .csv name, with what to tell them.
_SIGNATURES = (
    (b"\x1f\x8b", "it is gzip-compressed; name it .csv.gz"),
    (b"PK\x03\x04", "it is a ZIP archive (an .xlsx workbook is one); export it as UTF-8 CSV"),
    (b"PAR1", "it is a Parquet file; name it .parquet"),
)
_UNSAFE = re.compile(UNSAFE_CHARACTERS)
_QUOTED = re.compile(r'"[^"]*"')
# Column names become driver names in JSONB keys, model parameters, MLflow params and the UI.
MAX_COLUMN_NAME_LENGTH = MAX_SERIES_ID_LENGTH
_NON_BLANK = re.compile(rb"[^\s]")
_LINE_END = re.compile(rb"\r\n|\r|\n")
_NOT_LINE_END = re.compile(rb"[^\r\n]")


@dataclass(frozen=True)
class ColumnNames:
    """The roles the caller expects; the reader only uses them to type-check Parquet columns."""

    series_id: str = "unique_id"
    timestamp: str = "ds"
    target: str = "y"


_DEFAULT_COLUMNS = ColumnNames()


# eq=False: comparing two results field by field would compare DataFrames, which is ambiguous.
@dataclass(frozen=True, eq=False)
class ReadResult:
    path: Path
    file_format: str  # "csv", "csv.gz", "parquet", or "unknown" for an unsupported file
    rows: pl.DataFrame | None  # every landed column as Utf8 plus SOURCE_ROW; None when rejected
    ragged: pl.DataFrame  # SOURCE_ROW, RAW_LINE, REASON of lines that do not fit the header
    rejected_reason: str | None  # one line; None when the file could be read
    encoding: str | None = None  # "utf-8", "utf-8-sig", "utf-16", "utf-32"; None for Parquet
    delimiter: str | None = None  # None for Parquet

    @property
    def rows_read(self) -> int:
        """Every data row the file holds, usable or ragged, so callers can account for all of them."""
        if self.rows is None:
            return 0
        return self.rows.height + self.ragged.height


class _RejectedError(Exception):
    """Carries a user-readable reason out of the helpers; never escapes this module."""


@dataclass
class _Progress:
    """What is known about a file so far, so a rejection can still report encoding and delimiter."""

    encoding: str | None = None
    delimiter: str | None = None
    ragged: list[tuple[int | None, str, int, int]] = field(default_factory=list)


def file_format(path: Path) -> str | None:
    """The landed format from the name alone, so unsupported files are refused before being opened."""
    name = path.name.lower()
    for suffix in sorted(SUPPORTED_SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix) and len(name) > len(suffix):
            return suffix[1:]
    return None


def read_landed_file(path: Path, columns: ColumnNames = _DEFAULT_COLUMNS) -> ReadResult:
    """Read `path` as text rows, or say in one line why the whole file cannot be read.

    Never raises on bad file content: the caller can then report every landed file, good or bad,
    instead of one traceback stopping the run.
    """
    path = Path(path)
    fmt = file_format(path)
    progress = _Progress()
    try:
        if fmt is None:
            # A missing path is the more basic problem; an unknown file is never opened.
            if _is_folder(path):
                raise _RejectedError(f"{path} is a folder, not a file")
            raise _RejectedError(_unknown_type_reason(path))
        data = _read_bytes(path)
        if not data:
            raise _RejectedError("empty file")
        if fmt == "parquet":
            rows = _read_parquet(data, columns)
            ragged = _empty_ragged()
        else:
            if fmt == "csv.gz":
                data = _gunzip(data)
            text, start = _as_utf8(data, progress)
            rows = _read_csv(text, start, progress)
            ragged = _ragged_frame(progress.ragged)
    except _RejectedError as exc:
        return _rejected(path, fmt, str(exc), progress.encoding, progress.delimiter)
    return ReadResult(path, fmt, rows, ragged, None, progress.encoding, progress.delimiter)


def discover_files(paths: Iterable[Path]) -> tuple[list[Path], list[ReadResult]]:
    """Expand folders into the files to read, and account for everything that will not be read.

    A folder is searched one level deep, in name order (later files win on repeated rows). Hidden
    files (".DS_Store", ".gitkeep") and sub-folders inside a folder are skipped silently: they are
    filing, not data. A path named explicitly that is missing or of an unknown type is reported.
    """
    found: list[Path] = []
    refused: list[ReadResult] = []
    seen: set[Path] = set()

    def consider(candidate: Path) -> None:
        if file_format(candidate) is None:
            refused.append(_rejected(candidate, None, _unknown_type_reason(candidate)))
            return
        key = candidate.resolve()
        if key not in seen:
            seen.add(key)
            found.append(candidate)

    for raw in paths:
        path = Path(raw)
        try:
            if not _is_folder(path):
                consider(path)
                continue
            children = sorted(path.iterdir(), key=lambda child: child.name)
        except _RejectedError as exc:
            refused.append(_rejected(path, file_format(path), str(exc)))
            continue
        except OSError as exc:
            refused.append(_rejected(path, None, f"cannot read folder {path}: {_os_reason(exc)}"))
            continue
        for child in children:
            if child.name.startswith("."):
                continue
            try:
                if not _is_folder(child):
                    consider(child)
            except _RejectedError as exc:  # e.g. a dangling link left in the landing folder
                refused.append(_rejected(child, file_format(child), str(exc)))
    return found, refused


# --- whole file -------------------------------------------------------------------------------


def _is_folder(path: Path) -> bool:
    """Whether `path` is a folder; a path that cannot be looked at is refused with the reason."""
    # Path.is_dir() and .exists() raise on some errors and hide others; stat says which it was.
    try:
        return stat.S_ISDIR(path.stat().st_mode)
    except (FileNotFoundError, NotADirectoryError):
        raise _RejectedError(f"no such file or folder: {path}") from None
    except OSError as exc:
        raise _RejectedError(f"cannot read {path}: {_os_reason(exc)}") from None


def _read_bytes(path: Path) -> bytes:
    # Whole files in memory: gzip, BOM handling and the UTF-8 check all want the bytes anyway.
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise _RejectedError(f"no such file or folder: {path}") from None
    except IsADirectoryError:
        raise _RejectedError(f"{path} is a folder, not a file") from None
    except OSError as exc:
        raise _RejectedError(f"cannot read {path}: {_os_reason(exc)}") from None


def _gunzip(data: bytes) -> bytes:
    if not data.startswith(b"\x1f\x8b"):
        raise _RejectedError(
            "not a readable gzip file: it does not start with the gzip signature "
            "(a plain CSV file should be named .csv)"
        )
    try:
        text = gzip.decompress(data)
    except EOFError:
        raise _RejectedError(
            "not a readable gzip file: it is truncated (the compressed data ends early)"
        ) from None
    except (OSError, zlib.error) as exc:
        raise _RejectedError(f"not a readable gzip file: {_one_line(str(exc))}") from None
    if not text:
        raise _RejectedError("empty file (nothing inside the gzip file)")
    return text


def _as_utf8(data: bytes, progress: _Progress) -> tuple[bytes, int]:
    """UTF-8 text and where it starts past the BOM; UTF-16/32 with a BOM are transcoded."""
    for boms, codec in ((_UTF32_BOMS, "utf-32"), (_UTF16_BOMS, "utf-16")):
        if data.startswith(boms):
            try:
                text = data.decode(codec)
            except UnicodeDecodeError as exc:
                raise _RejectedError(
                    f"not valid {codec.upper()} text: {exc.reason} at offset {exc.start}; "
                    "save the file as UTF-8"
                ) from None
            checked = _checked_utf8(text.encode("utf-8"), 0)
            progress.encoding = codec
            return checked
    if data.startswith(_UTF8_BOM):
        checked = _checked_utf8(data, len(_UTF8_BOM))
        progress.encoding = "utf-8-sig"
        return checked
    for signature, advice in _SIGNATURES:
        if data.startswith(signature):
            raise _RejectedError(f"not CSV text: {advice}")
    checked = _checked_utf8(data, 0)
    progress.encoding = "utf-8"
    return checked


def _checked_utf8(data: bytes, start: int) -> tuple[bytes, int]:
    """Refuse what pyarrow cannot split as text; slicing is left to the caller, to avoid a copy."""
    nul = data.find(b"\x00", start)
    if nul >= 0:
        raise _RejectedError(
            f"not CSV text: NUL byte at offset {nul} (line {_line_of(data, nul)}); it is a binary file, "
            "or UTF-16 text without a byte-order mark; save the file as UTF-8 CSV"
        )
    # isascii is a fast scan; the one-go decode only runs for files with non-ASCII bytes.
    if not data.isascii():
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _RejectedError(
                f"not UTF-8 text: invalid byte 0x{data[exc.start]:02x} at offset {exc.start} "
                f"(line {_line_of(data, exc.start)}); save the file as UTF-8"
            ) from None
    return data, start


# --- CSV --------------------------------------------------------------------------------------


def _read_csv(data: bytes, start: int, progress: _Progress) -> pl.DataFrame:
    first = _NON_BLANK.search(data, start)
    if first is None:
        raise _RejectedError("empty file (only blank lines, no header)")
    previous_line_end = max(data.rfind(b"\n", start, first.start()), data.rfind(b"\r", start, first.start()))
    header_start = max(start, previous_line_end + 1)
    line_end = _LINE_END.search(data, header_start)
    header_end, data_start = (line_end.start(), line_end.end()) if line_end else (len(data), len(data))
    header = data[header_start:header_end].decode("utf-8")
    if header.count('"') % 2:
        raise _RejectedError(
            "the header line has a double quote that is never closed (a column name cannot span lines)"
        )

    delimiter = _sniff_delimiter(header)
    progress.delimiter = delimiter
    names = _column_names(_split_header(header, delimiter))
    if _NOT_LINE_END.search(data, data_start) is None:
        return pl.DataFrame(schema={**dict.fromkeys(names, pl.Utf8), SOURCE_ROW: pl.Int64})

    table = _parse_csv(pa.py_buffer(data).slice(data_start), names, delimiter, progress)
    return pl.DataFrame(table).with_columns(
        pl.Series(SOURCE_ROW, _good_row_numbers(table.num_rows, progress))
    )


def _good_row_numbers(good: int, progress: _Progress) -> np.ndarray:
    """True data-row numbers of the parsed rows: all numbers except those of the ragged rows."""
    bad = [number for number, *_ in progress.ragged]
    total = good + len(bad)
    if not bad:
        return np.arange(1, total + 1, dtype=np.int64)
    known = [number for number in bad if number is not None]
    if len(known) != len(bad) or len(set(known)) != len(known) or not 1 <= min(known) <= max(known) <= total:
        raise RuntimeError(f"pyarrow numbered the invalid CSV rows unusably: {bad[:10]}")
    keep = np.ones(total, dtype=bool)
    keep[np.asarray(known, dtype=np.int64) - 1] = False
    return np.flatnonzero(keep).astype(np.int64) + 1


def _split_header(header: str, delimiter: str) -> list[str]:
    try:
        return next(csv.reader([header], delimiter=delimiter, quotechar='"'))
    except csv.Error as exc:  # e.g. a "header" that is one enormous field: not a CSV file at all
        raise _RejectedError(f"cannot split the header line into column names: {exc}") from None


def _sniff_delimiter(header: str) -> str:
    """The candidate that occurs most often outside quoted names (comma on a tie): a quoted name
    may hold any delimiter, `"price; EUR"` in a comma file as much as `"a,b"` in a semicolon one."""
    outside = _QUOTED.sub("", header)
    return max(_DELIMITERS, key=outside.count)


def _column_names(raw: list[str]) -> list[str]:
    """Header names as callers will look them up: trimmed, BOM-free, unique and not ours."""
    names = [name.replace("\ufeff", "").strip() or f"column_{i}" for i, name in enumerate(raw, start=1)]
    _check_names(names)
    return names


def _check_names(names: list[str]) -> None:
    """Refuse names that cannot be stored and shown as they are; say which column by position,
    since echoing such a name would itself garble the message."""
    first_seen: dict[str, int] = {}
    for position, name in enumerate(names, start=1):
        if _UNSAFE.search(name):
            raise _RejectedError(f"the name of column {position} contains {UNSAFE_CHARACTERS_NAMED}")
        if len(name) > MAX_COLUMN_NAME_LENGTH:
            raise _RejectedError(
                f"the name of column {position} is {len(name)} characters long; "
                f"at most {MAX_COLUMN_NAME_LENGTH} are allowed"
            )
        if name in first_seen:
            raise _RejectedError(
                f"column {name!r} appears twice (columns {first_seen[name]} and {position}); "
                "every column needs its own name"
            )
        first_seen[name] = position
    if SOURCE_ROW in first_seen:
        raise _RejectedError(f"a column is named {SOURCE_ROW!r}, which the reader reserves for row numbers")


def _parse_csv(body: pa.Buffer, names: list[str], delimiter: str, progress: _Progress) -> pa.Table:
    def keep_ragged(row: pa_csv.InvalidRow) -> str:
        progress.ragged.append((row.number, row.text, row.actual_columns, row.expected_columns))
        return "skip"

    # Single-threaded: only then does pyarrow know each invalid row's number, and on few cores it
    # is as fast as the threaded reader.
    block_size = _BLOCK_SIZE
    while True:
        progress.ragged.clear()
        try:
            return pa_csv.read_csv(
                pa.BufferReader(body),
                read_options=pa_csv.ReadOptions(use_threads=False, column_names=names, block_size=block_size),
                parse_options=pa_csv.ParseOptions(
                    delimiter=delimiter,
                    quote_char='"',
                    double_quote=True,
                    escape_char=False,
                    newlines_in_values=True,
                    ignore_empty_lines=True,
                    invalid_row_handler=keep_ragged,
                ),
                convert_options=pa_csv.ConvertOptions(
                    column_types=dict.fromkeys(names, pa.string()),
                    null_values=[""],
                    strings_can_be_null=True,
                    quoted_strings_can_be_null=True,
                    check_utf8=False,  # already checked for the whole file
                ),
            )
        except pa.ArrowException as exc:
            # A row longer than a block is almost always a quote that is never closed; one block
            # for the whole body lets pyarrow hand it over as a ragged row with its number.
            if "straddl" in str(exc) and block_size < min(body.size + 1, _MAX_BLOCK_SIZE):
                block_size = min(body.size + 1, _MAX_BLOCK_SIZE)
                continue
            raise _RejectedError(f"cannot split the file into CSV rows: {_one_line(str(exc))}") from None


def _ragged_frame(ragged: list[tuple[int | None, str, int, int]]) -> pl.DataFrame:
    if not ragged:
        return _empty_ragged()
    numbers, lines, reasons = [], [], []
    for number, text, actual, expected in ragged:
        reason = f"line has {actual} field{'s' if actual != 1 else ''}, the header has {expected}"
        if text.count('"') % 2:
            reason += "; a double quote is opened and never closed"
        if len(text) > _MAX_RAW_LINE:
            reason += f" (raw_line shows its first {_MAX_RAW_LINE} characters)"
            text = text[:_MAX_RAW_LINE]
        numbers.append(number)
        lines.append(text)
        reasons.append(reason)
    return pl.DataFrame({SOURCE_ROW: numbers, RAW_LINE: lines, REASON: reasons}, schema=RAGGED_SCHEMA)


# --- Parquet ----------------------------------------------------------------------------------

_PARQUET_ERRORS = (pa.ArrowException, OSError, ValueError, EOFError)


def _read_parquet(data: bytes, columns: ColumnNames) -> pl.DataFrame:
    try:
        parquet = pq.ParquetFile(pa.BufferReader(data))
        schema = parquet.schema_arrow
    except _PARQUET_ERRORS as exc:
        raise _RejectedError(f"not a readable Parquet file: {_one_line(str(exc))}") from None
    names = [name.replace("\ufeff", "").strip() for name in schema.names]
    _check_names(names)
    # Types are checked before reading the data, so a wrongly typed file costs only its footer.
    problems = [
        problem
        for name, arrow_type in zip(names, schema.types, strict=True)
        if (problem := _type_problem(name, arrow_type, columns))
    ]
    if problems:
        raise _RejectedError("; ".join(problems))
    try:
        table = parquet.read().rename_columns(names)
    except _PARQUET_ERRORS as exc:
        raise _RejectedError(f"not a readable Parquet file: {_one_line(str(exc))}") from None

    frame = pl.DataFrame(table)
    texts = []
    for name in frame.columns:
        try:
            texts.append(frame[name].cast(pl.Utf8))
        except pl.exceptions.PolarsError as exc:
            raise _RejectedError(
                f"Parquet column {name!r} cannot be read as text: {_one_line(str(exc))}"
            ) from None
    for column in texts:
        # CSV text with a NUL is refused as binary before parsing; Parquet strings may hold one,
        # and PostgreSQL text (and JSON) cannot store it, not even in quarantine.
        nul = column.str.contains("\x00", literal=True).arg_true()
        if nul.len():
            raise _RejectedError(
                f"Parquet column {column.name!r} holds a NUL character (row {nul[0] + 1}), "
                "which PostgreSQL text cannot store; remove it and land the file again"
            )
    numbers = pl.int_range(1, frame.height + 1, dtype=pl.Int64, eager=True).alias(SOURCE_ROW)
    return pl.DataFrame([*texts, numbers])


def _type_problem(name: str, arrow_type: pa.DataType, columns: ColumnNames) -> str | None:
    value_type = arrow_type.value_type if pa.types.is_dictionary(arrow_type) else arrow_type
    text = _is_text(value_type) or pa.types.is_null(value_type)
    if name == columns.timestamp:
        ok = text or pa.types.is_timestamp(value_type) or pa.types.is_date(value_type)
        expected = "a timestamp, date or text"
    elif name == columns.target:
        ok = text or _is_number(value_type)
        expected = "a number or text"
    elif name == columns.series_id:
        ok = text or pa.types.is_integer(value_type)
        expected = "text or an integer"
    else:
        ok = text or _is_number(value_type) or _is_flat_other(value_type)
        expected = "text, a number, a boolean, a date, a time or a timestamp"
    if ok:
        return None
    shown = str(arrow_type)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return f"Parquet column {name!r} has type {shown}; expected {expected}"


def _is_text(arrow_type: pa.DataType) -> bool:
    return (
        pa.types.is_string(arrow_type)
        or pa.types.is_large_string(arrow_type)
        or pa.types.is_string_view(arrow_type)
    )


def _is_number(arrow_type: pa.DataType) -> bool:
    return (
        pa.types.is_integer(arrow_type) or pa.types.is_floating(arrow_type) or pa.types.is_decimal(arrow_type)
    )


def _is_flat_other(arrow_type: pa.DataType) -> bool:
    # Binary is allowed here because some writers store text without the UTF-8 annotation; bytes
    # that are not UTF-8 are refused when cast.
    unprintable_time = pa.types.is_duration(arrow_type) or pa.types.is_interval(arrow_type)
    return (
        pa.types.is_boolean(arrow_type)
        or (pa.types.is_temporal(arrow_type) and not unprintable_time)
        or pa.types.is_binary(arrow_type)
        or pa.types.is_large_binary(arrow_type)
    )


# --- small helpers ----------------------------------------------------------------------------


def _rejected(
    path: Path, fmt: str | None, reason: str, encoding: str | None = None, delimiter: str | None = None
) -> ReadResult:
    return ReadResult(path, fmt or "unknown", None, _empty_ragged(), _one_line(reason), encoding, delimiter)


def _empty_ragged() -> pl.DataFrame:
    return pl.DataFrame(schema=RAGGED_SCHEMA)


def _unknown_type_reason(path: Path) -> str:
    shown = f"'{path.suffix.lower()}'" if path.suffix else "(no suffix)"
    return f"unknown file type {shown}: land .csv, .csv.gz or .parquet"


def _line_of(data: bytes, offset: int) -> int:
    return data.count(b"\n", 0, offset) + 1


def _os_reason(exc: OSError) -> str:
    return exc.strerror.lower() if exc.strerror else _one_line(str(exc))


def _one_line(message: str) -> str:
    """Library messages can span lines; a rejection reason is shown in one table cell."""
    text = "; ".join(part.strip() for part in message.splitlines() if part.strip())
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 3] + "..."
