"""The reader on files people actually landed: bad ones are refused in one line, odd ones read fully."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from forecasting_pipeline.ingestion.reader import (
    SOURCE_ROW,
    SUPPORTED_SUFFIXES,
    ColumnNames,
    ReadResult,
    discover_files,
    file_format,
    read_landed_file,
)

GOOD_CSV = "unique_id,ds,y\nA,2024-01-01,1.5\nA,2024-01-02,2\nB,2024-01-01,3\n"


def _write(path: Path, content: bytes | str) -> Path:
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


def _readable(result: ReadResult) -> pl.DataFrame:
    """The rows, after asserting the file was accepted; keeps each test to its point."""
    assert result.rejected_reason is None, result.rejected_reason
    assert result.rows is not None
    return result.rows


def _refused(result: ReadResult) -> str:
    """The reason, after asserting the whole file was refused in one clean line."""
    reason = result.rejected_reason
    assert reason is not None, "expected the file to be refused"
    assert "\n" not in reason and "Traceback" not in reason
    assert result.rows is None and result.rows_read == 0 and result.ragged.is_empty()
    return reason


def _columns(rows: pl.DataFrame) -> dict[str, list[object]]:
    return rows.to_dict(as_series=False)


def _parquet(path: Path, table: pa.Table) -> Path:
    pq.write_table(table, path)
    return path


# --- files refused as a whole --------------------------------------------------------------------


def test_missing_path_is_refused(tmp_path: Path) -> None:
    result = read_landed_file(tmp_path / "gone.csv")
    assert "no such file or folder" in _refused(result)
    assert result.file_format == "csv"


def test_unreadable_path_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write(tmp_path / "locked.csv", GOOD_CSV)

    def denied(self: Path) -> bytes:
        raise PermissionError(13, "Permission denied", str(self))

    # chmod cannot lock out root, which the tests may run as; the reader sees the same error.
    monkeypatch.setattr(Path, "read_bytes", denied)
    assert "cannot read" in (reason := _refused(read_landed_file(path)))
    assert "permission denied" in reason


def test_folder_given_as_file_is_refused(tmp_path: Path) -> None:
    assert "is a folder" in _refused(read_landed_file(tmp_path))


def test_empty_file_is_refused(tmp_path: Path) -> None:
    assert _refused(read_landed_file(_write(tmp_path / "empty.csv", b""))) == "empty file"
    assert "empty file" in _refused(read_landed_file(_write(tmp_path / "empty.parquet", b""))).lower()
    assert "empty file" in _refused(read_landed_file(_write(tmp_path / "blank.csv", "\r\n \n\n")))
    assert "empty file" in _refused(read_landed_file(_write(tmp_path / "e.csv.gz", gzip.compress(b""))))


def test_broken_parquet_is_refused(tmp_path: Path) -> None:
    whole = _parquet(tmp_path / "whole.parquet", pa.table({"y": [1.0, 2.0]})).read_bytes()
    broken = _write(tmp_path / "broken.parquet", whole[: len(whole) // 2])
    assert _refused(read_landed_file(broken)).startswith("not a readable Parquet file: ")


def test_latin1_text_is_refused_with_the_byte_and_offset(tmp_path: Path) -> None:
    content = "unique_id,ds,y\nCaf\xe9,2024-01-01,1\n".encode("latin-1")
    reason = _refused(read_landed_file(_write(tmp_path / "latin1.csv", content)))
    assert "not UTF-8 text: invalid byte 0xe9 at offset 18" in reason
    assert "line 2" in reason and "save the file as UTF-8" in reason


def test_binary_files_named_csv_are_refused(tmp_path: Path) -> None:
    noise = bytes(range(256)) * 4
    assert "not CSV text" in _refused(read_landed_file(_write(tmp_path / "noise.csv", noise)))
    zipped = b"PK\x03\x04" + b"\x14\x00" * 20
    assert "ZIP archive" in _refused(read_landed_file(_write(tmp_path / "book.csv", zipped)))
    gzipped = gzip.compress(GOOD_CSV.encode())
    assert ".csv.gz" in _refused(read_landed_file(_write(tmp_path / "packed.csv", gzipped)))
    invalid = b"a,b\n\x80\x81,1\n"
    assert "not UTF-8 text" in _refused(read_landed_file(_write(tmp_path / "bytes.csv", invalid)))


def test_utf16_without_bom_is_refused(tmp_path: Path) -> None:
    content = GOOD_CSV.encode("utf-16-le")
    assert "UTF-16" in _refused(read_landed_file(_write(tmp_path / "nobom.csv", content)))


def test_corrupt_gzip_is_refused(tmp_path: Path) -> None:
    packed = gzip.compress(GOOD_CSV.encode())
    truncated = _write(tmp_path / "cut.csv.gz", packed[:-12])
    assert _refused(read_landed_file(truncated)).startswith("not a readable gzip file: ")
    plain = _write(tmp_path / "plain.csv.gz", GOOD_CSV)
    assert _refused(read_landed_file(plain)).startswith("not a readable gzip file: ")


def test_unknown_file_type_is_refused(tmp_path: Path) -> None:
    result = read_landed_file(_write(tmp_path / "sales.xlsx", b"PK\x03\x04"))
    assert _refused(result) == "unknown file type '.xlsx': land .csv, .csv.gz or .parquet"
    assert result.file_format == "unknown"


def test_parquet_timestamp_of_wrong_type_is_refused(tmp_path: Path) -> None:
    table = pa.table({"unique_id": ["A"], "ds": pa.array([1_700_000_000], pa.int64()), "y": [1.0]})
    reason = _refused(read_landed_file(_parquet(tmp_path / "epoch.parquet", table)))
    assert reason == "Parquet column 'ds' has type int64; expected a timestamp, date or text"


def test_parquet_target_and_series_of_wrong_type_are_refused(tmp_path: Path) -> None:
    table = pa.table({"unique_id": [1.5], "ds": ["2024-01-01"], "y": [True]})
    reason = _refused(read_landed_file(_parquet(tmp_path / "types.parquet", table)))
    assert "Parquet column 'unique_id' has type double; expected text or an integer" in reason
    assert "Parquet column 'y' has type bool; expected a number or text" in reason


def test_parquet_roles_follow_the_callers_column_names(tmp_path: Path) -> None:
    table = pa.table({"when": pa.array([1.0]), "ds": pa.array([1])})
    reason = _refused(
        read_landed_file(_parquet(tmp_path / "p.parquet", table), ColumnNames(timestamp="when"))
    )
    assert "'when' has type double" in reason


def test_duplicate_header_names_are_refused(tmp_path: Path) -> None:
    reason = _refused(read_landed_file(_write(tmp_path / "dup.csv", "unique_id,y, y \nA,1,2\n")))
    assert "column 'y' appears twice (columns 2 and 3)" in reason


# --- odd but valid files ------------------------------------------------------------------------


def test_plain_csv_reads_every_value_as_text(tmp_path: Path) -> None:
    result = read_landed_file(_write(tmp_path / "plain.csv", GOOD_CSV))
    rows = _readable(result)
    assert rows.schema == {"unique_id": pl.Utf8, "ds": pl.Utf8, "y": pl.Utf8, SOURCE_ROW: pl.Int64}
    assert _columns(rows) == {
        "unique_id": ["A", "A", "B"],
        "ds": ["2024-01-01", "2024-01-02", "2024-01-01"],
        "y": ["1.5", "2", "3"],
        SOURCE_ROW: [1, 2, 3],
    }
    assert (result.file_format, result.encoding, result.delimiter) == ("csv", "utf-8", ",")
    assert result.ragged.is_empty() and result.rows_read == 3


def test_values_keep_whitespace_and_empty_fields_are_null(tmp_path: Path) -> None:
    content = 'unique_id,ds,y,note\n A ,2024-01-01, 1 ,\nB,2024-01-02,"",NA\n'
    rows = _readable(read_landed_file(_write(tmp_path / "spaces.csv", content)))
    assert _columns(rows)["unique_id"] == [" A ", "B"]
    assert _columns(rows)["y"] == [" 1 ", None]
    assert _columns(rows)["note"] == [None, "NA"]


def test_bom_and_crlf_are_read(tmp_path: Path) -> None:
    content = b"\xef\xbb\xbf unique_id ,ds,y\r\nA,2024-01-01,1\r\nB,2024-01-02,2\r\n"
    result = read_landed_file(_write(tmp_path / "bom.csv", content))
    rows = _readable(result)
    assert rows.columns == ["unique_id", "ds", "y", SOURCE_ROW]
    assert _columns(rows)["y"] == ["1", "2"]
    assert _columns(rows)[SOURCE_ROW] == [1, 2]
    assert result.encoding == "utf-8-sig"


def test_quoted_ids_with_commas_and_slashes(tmp_path: Path) -> None:
    content = (
        'unique_id,ds,y\n"Store, North",2024-01-01,1\nT-shirt S/M,2024-01-01,2\n"say ""hi""",2024-01-01,3\n'
    )
    rows = _readable(read_landed_file(_write(tmp_path / "quoted.csv", content)))
    assert _columns(rows)["unique_id"] == ["Store, North", "T-shirt S/M", 'say "hi"']
    assert _columns(rows)[SOURCE_ROW] == [1, 2, 3]


def test_multiline_quoted_field_is_one_row(tmp_path: Path) -> None:
    content = 'unique_id,ds,y,note\nA,2024-01-01,1,"two\nlines"\nA,2024-01-02,2,x\nA,2024-01-03\n'
    result = read_landed_file(_write(tmp_path / "multi.csv", content))
    rows = _readable(result)
    assert _columns(rows)["note"] == ["two\nlines", "x"]
    assert _columns(rows)[SOURCE_ROW] == [1, 2]
    assert result.ragged[SOURCE_ROW].to_list() == [3]


def test_reordered_columns_with_extra_text_column(tmp_path: Path) -> None:
    content = "note,y,ds,unique_id\npromo week,1.5,2024-01-01,A\n,2.5,2024-01-02,A\n"
    rows = _readable(read_landed_file(_write(tmp_path / "reordered.csv", content)))
    assert rows.columns == ["note", "y", "ds", "unique_id", SOURCE_ROW]
    assert _columns(rows) == {
        "note": ["promo week", None],
        "y": ["1.5", "2.5"],
        "ds": ["2024-01-01", "2024-01-02"],
        "unique_id": ["A", "A"],
        SOURCE_ROW: [1, 2],
    }


def test_gzip_csv_is_read(tmp_path: Path) -> None:
    path = _write(tmp_path / "packed.CSV.GZ", gzip.compress(GOOD_CSV.encode()))
    result = read_landed_file(path)
    assert _columns(_readable(result))["y"] == ["1.5", "2", "3"]
    assert result.file_format == "csv.gz" and result.rows_read == 3


def test_iso_timestamps_with_z_are_kept_verbatim(tmp_path: Path) -> None:
    content = "unique_id,ds,y\nA,2024-01-01T00:00:00Z,1\nA,2024-01-01T01:00:00.5+02:00,2\n"
    rows = _readable(read_landed_file(_write(tmp_path / "iso.csv", content)))
    assert _columns(rows)["ds"] == ["2024-01-01T00:00:00Z", "2024-01-01T01:00:00.5+02:00"]


@pytest.mark.parametrize("delimiter", [";", "\t", "|"])
def test_other_delimiters_are_sniffed(tmp_path: Path, delimiter: str) -> None:
    content = GOOD_CSV.replace(",", delimiter).replace("1.5", "1,5")
    result = read_landed_file(_write(tmp_path / "delimited.csv", content))
    assert result.delimiter == delimiter
    assert _columns(_readable(result))["y"] == ["1,5", "2", "3"]


def test_single_column_file_is_read(tmp_path: Path) -> None:
    rows = _readable(read_landed_file(_write(tmp_path / "one.csv", "unique_id\nA\nB\n")))
    assert _columns(rows) == {"unique_id": ["A", "B"], SOURCE_ROW: [1, 2]}


@pytest.mark.parametrize("codec", ["utf-16-le", "utf-16-be"])
def test_utf16_with_bom_is_transcoded(tmp_path: Path, codec: str) -> None:
    content = "\ufeff" + GOOD_CSV.replace("A,", "Åsa,")
    result = read_landed_file(_write(tmp_path / "wide.csv", content.encode(codec)))
    rows = _readable(result)
    assert rows.columns == ["unique_id", "ds", "y", SOURCE_ROW]
    assert _columns(rows)["unique_id"] == ["Åsa", "Åsa", "B"]
    assert result.encoding == "utf-16"


def test_header_only_file_reads_zero_rows(tmp_path: Path) -> None:
    result = read_landed_file(_write(tmp_path / "header.csv", "unique_id,ds,y\r\n"))
    rows = _readable(result)
    assert rows.columns == ["unique_id", "ds", "y", SOURCE_ROW] and rows.is_empty()
    assert result.ragged.is_empty() and result.rows_read == 0
    no_newline = _readable(read_landed_file(_write(tmp_path / "bare.csv", "unique_id;ds;y")))
    assert no_newline.columns == ["unique_id", "ds", "y", SOURCE_ROW] and no_newline.is_empty()


def test_parquet_with_timestamp_and_float_target(tmp_path: Path) -> None:
    table = pa.table(
        {
            "unique_id": pa.array(["A", "B"]).dictionary_encode(),
            "ds": pa.array([datetime(2016, 10, 30), datetime(2016, 10, 31, 6, 30)], pa.timestamp("us")),
            "utc": pa.array([datetime(2016, 10, 30, tzinfo=UTC)] * 2, pa.timestamp("ms", tz="UTC")),
            "y": [1.5, None],
            "note": ["", None],
        }
    )
    result = read_landed_file(_parquet(tmp_path / "obs.parquet", table))
    rows = _readable(result)
    assert rows.schema == {**dict.fromkeys(table.column_names, pl.Utf8), SOURCE_ROW: pl.Int64}
    assert _columns(rows)["unique_id"] == ["A", "B"]
    assert _columns(rows)["y"] == ["1.5", None]
    assert _columns(rows)["note"] == ["", None]
    assert _columns(rows)[SOURCE_ROW] == [1, 2]
    parsed = pd.to_datetime(rows["ds"].to_pandas(), format="ISO8601")
    assert list(parsed) == [pd.Timestamp("2016-10-30"), pd.Timestamp("2016-10-31 06:30")]
    utc = pd.to_datetime(rows["utc"].to_pandas(), format="ISO8601")
    assert list(utc) == [pd.Timestamp("2016-10-30", tz="UTC")] * 2
    assert (result.file_format, result.encoding, result.delimiter) == ("parquet", None, None)


def test_parquet_with_integer_ids_and_text_timestamps(tmp_path: Path) -> None:
    table = pa.table({"unique_id": [7, 8], "ds": ["2024-01-01", "2024-01-02"], "y": pa.array([1, 2])})
    rows = _readable(read_landed_file(_parquet(tmp_path / "ints.parquet", table)))
    assert _columns(rows) == {
        "unique_id": ["7", "8"],
        "ds": ["2024-01-01", "2024-01-02"],
        "y": ["1", "2"],
        SOURCE_ROW: [1, 2],
    }


# --- ragged lines -------------------------------------------------------------------------------


def test_ragged_lines_are_reported_with_their_row_numbers(tmp_path: Path) -> None:
    content = (
        "unique_id,ds,y\n"
        "A,2024-01-01,1\n"
        "A,2024-01-02,2\n"
        "A,2024-01-03,3,extra,more\n"
        "\n"  # a blank line is no data row and takes no number
        "A,2024-01-04,4\n"
        "A,2024-01-05\n"
        "A,2024-01-06,6\n"
    )
    result = read_landed_file(_write(tmp_path / "ragged.csv", content))
    rows = _readable(result)
    assert _columns(rows)["y"] == ["1", "2", "4", "6"]
    assert _columns(rows)[SOURCE_ROW] == [1, 2, 4, 6]
    assert result.ragged.schema == {SOURCE_ROW: pl.Int64, "raw_line": pl.Utf8, "reason": pl.Utf8}
    assert _columns(result.ragged) == {
        SOURCE_ROW: [3, 5],
        "raw_line": ["A,2024-01-03,3,extra,more", "A,2024-01-05"],
        "reason": ["line has 5 fields, the header has 3", "line has 2 fields, the header has 3"],
    }
    assert result.rows_read == 6


def test_unclosed_quote_is_one_ragged_row(tmp_path: Path) -> None:
    content = 'unique_id,ds,y\nA,2024-01-01,1\n"B,2024-01-02,2\nC,2024-01-03,3\n'
    result = read_landed_file(_write(tmp_path / "quote.csv", content))
    assert _columns(_readable(result))[SOURCE_ROW] == [1]
    assert result.ragged[SOURCE_ROW].to_list() == [2]
    assert "never closed" in result.ragged["reason"][0]


# --- discovery and bookkeeping ------------------------------------------------------------------


def test_file_format_by_suffix() -> None:
    assert [file_format(Path(f"x{suffix.upper()}")) for suffix in SUPPORTED_SUFFIXES] == [
        "csv",
        "csv.gz",
        "parquet",
    ]
    assert file_format(Path("x.txt")) is None and file_format(Path("x.gz")) is None


def test_discover_files_expands_folders_and_reports_the_rest(tmp_path: Path) -> None:
    landing = tmp_path / "landing"
    landing.mkdir()
    for name in ("b.csv", "a.parquet", "notes.txt", ".DS_Store"):
        _write(landing / name, "x\n")
    (landing / "archive").mkdir()
    explicit = _write(tmp_path / "extra.csv.gz", b"")
    found, refused = discover_files([landing, explicit, tmp_path / "gone", landing / "b.csv"])
    assert found == [landing / "a.parquet", landing / "b.csv", explicit]
    assert [(r.path, r.file_format, r.rejected_reason) for r in refused] == [
        (landing / "notes.txt", "unknown", "unknown file type '.txt': land .csv, .csv.gz or .parquet"),
        (tmp_path / "gone", "unknown", f"no such file or folder: {tmp_path / 'gone'}"),
    ]
    assert all(r.rows is None and r.rows_read == 0 for r in refused)


def test_rows_read_counts_good_and_ragged_rows(tmp_path: Path) -> None:
    content = "unique_id,ds,y\nA,2024-01-01,1\nA,2024-01-02\nA,2024-01-03,3\nA\n"
    result = read_landed_file(_write(tmp_path / "mixed.csv", content))
    assert (_readable(result).height, result.ragged.height, result.rows_read) == (2, 2, 4)


def test_reader_never_raises_on_garbage(tmp_path: Path) -> None:
    for i, content in enumerate([b'"', b"\r", b",,,\n,,", b"a,a\n1,2\n", b"a\n" + b'"' * 7, b"\x00"]):
        result = read_landed_file(_write(tmp_path / f"g{i}.csv", content))
        assert isinstance(result, ReadResult)
        assert result.rejected_reason is None or "\n" not in result.rejected_reason
