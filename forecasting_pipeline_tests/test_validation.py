"""Unit tests of `validate_rows`: every landed row ends up valid or quarantined with a reason."""

from __future__ import annotations

from datetime import datetime

import polars as pl
import pytest

from forecasting_pipeline.ingestion.validation import validate_rows

SUPERSEDED = "duplicate timestamp, superseded by a later row"


def _rows(records: list[tuple], drivers: tuple[str, ...] = ()) -> pl.DataFrame:
    """Landed text rows as the landing zone reads them; source_row counts from 1."""
    text_columns = ["unique_id", "ds", "y", *drivers]
    schema = {c: pl.Utf8 for c in text_columns}
    frame = pl.DataFrame([dict(zip(text_columns, r, strict=True)) for r in records], schema=schema)
    return frame.with_columns(
        pl.lit("landed.csv").alias("source"),
        pl.int_range(1, frame.height + 1, dtype=pl.Int64).alias("source_row"),
    )


def _reasons(frame: pl.DataFrame) -> dict[int, str]:
    return dict(zip(frame["source_row"].to_list(), frame["reason"].to_list(), strict=True))


def test_well_formed_rows_are_parsed():
    result = validate_rows(
        _rows(
            [("FR", "2020-01-01 00:00:00", "1.5", "10"), ("FR", "2020-01-01 01:00:00", " 2 ", "")],
            drivers=("temperature",),
        )
    )

    assert result.quarantined.height == 0
    assert result.valid.columns == ["unique_id", "ds", "y", "temperature", "source", "source_row"]
    assert result.valid.schema["ds"] == pl.Datetime("ns")
    assert result.valid.schema["y"] == pl.Float64
    assert result.valid.schema["temperature"] == pl.Float64
    assert result.valid["ds"].to_list() == [datetime(2020, 1, 1, 0), datetime(2020, 1, 1, 1)]
    assert result.valid["y"].to_list() == [1.5, 2.0]
    assert result.driver_columns == ["temperature"]


@pytest.mark.parametrize("series_id", [None, "", "   "])
def test_missing_series_id(series_id: str | None):
    result = validate_rows(_rows([(series_id, "2020-01-01", "1")]))
    assert result.valid.height == 0
    assert result.quarantined["reason"].to_list() == ["missing series id"]


@pytest.mark.parametrize("series_id", ["a|b", "a,b", "a/b", "a[1]", " FR", "x" * 128])
def test_series_id_not_usable_as_partition_key(series_id: str):
    result = validate_rows(_rows([(series_id, "2020-01-01", "1")]))
    assert result.valid.height == 0
    assert result.quarantined["reason"].to_list() == ["series id not usable as a partition key"]


@pytest.mark.parametrize("ds", [None, "", "yesterday", "2020-02-30", "01/02/2020 extra"])
def test_unparseable_timestamp(ds: str | None):
    result = validate_rows(_rows([("FR", ds, "1")]))
    assert result.valid.height == 0
    assert result.quarantined["reason"].to_list() == ["unparseable timestamp"]


@pytest.mark.parametrize("y", [None, "", "  ", "abc", "1,5"])
def test_missing_or_non_numeric_target(y: str | None):
    result = validate_rows(_rows([("FR", "2020-01-01", y)]))
    assert result.valid.height == 0
    assert result.quarantined["reason"].to_list() == ["missing or non-numeric target"]


@pytest.mark.parametrize("y", ["nan", "NaN", "inf", "-inf"])
def test_non_finite_target(y: str):
    result = validate_rows(_rows([("FR", "2020-01-01", y)]))
    assert result.valid.height == 0
    assert result.quarantined["reason"].to_list() == ["non-finite target"]


def test_non_numeric_driver_is_named():
    result = validate_rows(
        _rows([("FR", "2020-01-01", "1", "3.0", "warm")], drivers=("price", "temperature"))
    )
    assert result.valid.height == 0
    assert result.quarantined["reason"].to_list() == ["non-numeric driver temperature"]


def test_empty_driver_cells_are_null_not_quarantined():
    result = validate_rows(
        _rows(
            [
                ("FR", "2020-01-01", "1", ""),
                ("FR", "2020-01-02", "2", None),
                ("FR", "2020-01-03", "3", " 4.5 "),
            ],
            drivers=("temperature",),
        )
    )
    assert result.quarantined.height == 0
    assert result.valid["temperature"].to_list() == [None, None, 4.5]


def test_first_failing_check_gives_the_reason():
    # Missing id, bad timestamp and bad target at once: the series id is reported.
    result = validate_rows(_rows([(None, "never", "abc")]))
    assert result.quarantined["reason"].to_list() == ["missing series id"]


@pytest.mark.parametrize(
    ("ds", "expected"),
    [
        ("2020-01-01T05:00:00Z", datetime(2020, 1, 1, 5)),
        ("2020-01-01T05:00:00+02:00", datetime(2020, 1, 1, 3)),
        ("2020-01-01T05:00:00-05:30", datetime(2020, 1, 1, 10, 30)),
        ("2020-01-01 05:00:00", datetime(2020, 1, 1, 5)),
        ("2020-01-01", datetime(2020, 1, 1)),
    ],
)
def test_timestamps_become_naive_utc(ds: str, expected: datetime):
    result = validate_rows(_rows([("FR", ds, "1")]))
    assert result.valid.schema["ds"] == pl.Datetime("ns")  # no time zone
    assert result.valid["ds"].to_list() == [expected]


def test_offset_and_utc_text_of_one_instant_mix_in_a_column():
    result = validate_rows(
        _rows([("FR", "2020-01-01T00:00:00Z", "1"), ("DE", "2020-01-01T03:00:00+02:00", "2")])
    )
    assert dict(zip(result.valid["unique_id"], result.valid["ds"], strict=True)) == {
        "DE": datetime(2020, 1, 1, 1),
        "FR": datetime(2020, 1, 1, 0),
    }


def test_duplicate_timestamp_keeps_the_last_row():
    result = validate_rows(
        _rows([("FR", "2020-01-01", "1"), ("FR", "2020-01-02", "5"), ("FR", "2020-01-01", "2")])
    )

    assert result.valid.select("ds", "y", "source_row").rows() == [
        (datetime(2020, 1, 1), 2.0, 3),
        (datetime(2020, 1, 2), 5.0, 2),
    ]
    assert _reasons(result.quarantined) == {1: SUPERSEDED}
    # The superseded row keeps its original text.
    assert result.quarantined.row(0, named=True)["y"] == "1"


def test_the_same_instant_written_differently_is_a_duplicate():
    result = validate_rows(
        _rows([("FR", "2020-01-01T05:00:00+02:00", "1"), ("FR", "2020-01-01T03:00:00Z", "2")])
    )
    assert result.valid.select("ds", "y").rows() == [(datetime(2020, 1, 1, 3), 2.0)]
    assert _reasons(result.quarantined) == {1: SUPERSEDED}


def test_one_timestamp_in_two_series_is_not_a_duplicate():
    result = validate_rows(_rows([("FR", "2020-01-01", "1"), ("DE", "2020-01-01", "2")]))
    assert result.quarantined.height == 0
    assert result.valid.select("unique_id", "y").rows() == [("DE", 2.0), ("FR", 1.0)]


def test_a_malformed_later_row_does_not_supersede_a_good_one():
    result = validate_rows(_rows([("FR", "2020-01-01", "1"), ("FR", "2020-01-01", "oops")]))
    assert result.valid.select("y", "source_row").rows() == [(1.0, 1)]
    assert _reasons(result.quarantined) == {2: "missing or non-numeric target"}


def test_every_row_comes_out_exactly_once():
    rows = _rows(
        [
            ("FR", "2020-01-01", "1", "0.5"),  # 1 superseded by 7
            ("FR", "2020-01-02", "2", ""),  # 2 valid
            (None, "2020-01-03", "3", "1"),  # 3 missing series id
            ("a|b", "2020-01-03", "3", "1"),  # 4 bad series id
            ("DE", "soon", "4", "1"),  # 5 bad timestamp
            ("DE", "2020-01-01", "inf", "1"),  # 6 non-finite target
            ("FR", "2020-01-01", "7", "2"),  # 7 valid, supersedes 1
            ("DE", "2020-01-02", "8", "hot"),  # 8 bad driver
            ("DE", "2020-01-03", "9", "3"),  # 9 valid
        ],
        drivers=("temperature",),
    )
    result = validate_rows(rows)

    assert result.valid.height + result.quarantined.height == rows.height
    assert sorted(result.valid["source_row"].to_list()) == [2, 7, 9]
    assert _reasons(result.quarantined) == {
        1: SUPERSEDED,
        3: "missing series id",
        4: "series id not usable as a partition key",
        5: "unparseable timestamp",
        6: "non-finite target",
        8: "non-numeric driver temperature",
    }
    assert result.quarantined.columns == [*rows.columns, "reason"]
    # Valid rows are ordered by series, then time.
    assert result.valid.select("unique_id", "source_row").rows() == [("DE", 9), ("FR", 7), ("FR", 2)]


def test_data_without_a_target_column_is_quarantined_with_that_reason():
    rows = _rows([("FR", "2020-01-01", "1"), ("DE", "2020-01-02", "2")]).drop("y")
    result = validate_rows(rows)
    assert result.valid.height == 0
    assert result.quarantined["reason"].to_list() == ["landed data has no 'y' column"] * 2
    assert result.quarantined.columns == [*rows.columns, "reason"]
