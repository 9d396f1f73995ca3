"""Unit tests of `validate_rows`: every landed row ends up valid or quarantined with a reason."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import polars as pl
import pytest

from forecasting_pipeline.ingestion.validation import ColumnRoles, future_limit, validate_rows

SUPERSEDED = "duplicate timestamp, superseded by a later row"
EXACT_DUPLICATE = "exact duplicate of a later row"
UNPARSEABLE = "unparseable timestamp (expected ISO 8601, e.g. 2024-01-31 or 2024-01-31T13:00:00Z)"
MIXED_ZONES = "timestamp without a time zone in a file whose other timestamps have one"
CONTROL_CHARACTER = (
    "series id contains a control character (NUL, tab, newline, escape) or a bidirectional override"
)


def _rows(records: list[tuple], columns: tuple[str, ...] = ("unique_id", "ds", "y")) -> pl.DataFrame:
    """Landed text rows as the reader hands them over: all Utf8, plus source_row counting from 1."""
    schema = {c: pl.Utf8 for c in columns}
    frame = pl.DataFrame([dict(zip(columns, r, strict=True)) for r in records], schema=schema)
    return frame.with_columns(pl.int_range(1, frame.height + 1, dtype=pl.Int64).alias("source_row"))


def _with(*extra: str) -> tuple[str, ...]:
    return ("unique_id", "ds", "y", *extra)


def _reasons(frame: pl.DataFrame) -> dict[int, str]:
    return dict(zip(frame["source_row"].to_list(), frame["reason"].to_list(), strict=True))


def _refused(records: list[tuple]) -> list[str]:
    result = validate_rows(_rows(records))
    assert result.valid.height == 0
    return result.quarantined["reason"].to_list()


# --- well-formed rows -----------------------------------------------------------------------


def test_well_formed_rows_are_parsed():
    result = validate_rows(
        _rows(
            [("FR", "2020-01-01 00:00:00", "1.5", "10"), ("FR", "2020-01-01 01:00:00", " 2 ", "")],
            columns=_with("temperature"),
        )
    )

    assert result.quarantined.height == 0
    assert result.valid.columns == ["unique_id", "ds", "y", "temperature", "source_row"]
    assert result.valid.schema["ds"] == pl.Datetime("us")  # naive: no time zone
    assert result.valid.schema["y"] == pl.Float64
    assert result.valid.schema["temperature"] == pl.Float64
    assert result.valid["ds"].to_list() == [datetime(2020, 1, 1, 0), datetime(2020, 1, 1, 1)]
    assert result.valid["y"].to_list() == [1.5, 2.0]
    assert result.valid["temperature"].to_list() == [10.0, None]
    assert result.drivers == ["temperature"]
    assert result.warnings == []


@pytest.mark.parametrize(
    "series_id",
    [
        "Store, North",
        "T-shirt S/M",
        "a|b",
        "a\\b",
        "a[1]",
        "Café Zürich",
        "東京",
        "%%%",
        "x" * 200,  # exactly the longest id allowed
    ],
)
def test_ids_with_any_printable_characters_are_valid(series_id: str):
    result = validate_rows(_rows([(series_id, "2020-01-01", "1")]))
    assert result.quarantined.height == 0
    assert result.valid["unique_id"].to_list() == [series_id]


def test_surrounding_whitespace_is_trimmed_from_ids():
    result = validate_rows(_rows([(" FR ", "2020-01-01", "1"), ("FR\n", "2020-01-02", "2")]))
    assert result.quarantined.height == 0
    assert result.valid["unique_id"].to_list() == ["FR", "FR"]


# --- refused rows and their reasons ---------------------------------------------------------


@pytest.mark.parametrize("series_id", [None, "", "   "])
def test_missing_series_id(series_id: str | None):
    assert _refused([(series_id, "2020-01-01", "1")]) == ["missing series id"]


@pytest.mark.parametrize("series_id", ["a\tb", "a\x00b", "line1\nline2", "bell\x07"])
def test_series_id_with_a_control_character(series_id: str):
    assert _refused([(series_id, "2020-01-01", "1")]) == [CONTROL_CHARACTER]


def test_series_id_longer_than_the_limit():
    assert _refused([("x" * 201, "2020-01-01", "1")]) == ["series id longer than 200 characters"]


@pytest.mark.parametrize(
    "ds",
    [
        None,
        "",
        "yesterday",
        "2020-02-30",
        "01/02/2020",
        "2020-01-01 extra",
        "20200101",
        "2020-01-01T05:00:00+02",
    ],
)
def test_unparseable_timestamp(ds: str | None):
    assert _refused([("FR", ds, "1")]) == [UNPARSEABLE]


@pytest.mark.parametrize("y", [None, "", "  ", "abc", "1,5"])
def test_missing_or_non_numeric_target(y: str | None):
    assert _refused([("FR", "2020-01-01", y)]) == ["missing or non-numeric target"]


@pytest.mark.parametrize("y", ["nan", "NaN", "inf", "-inf"])
def test_non_finite_target(y: str):
    assert _refused([("FR", "2020-01-01", y)]) == ["non-finite target"]


def test_non_numeric_driver_is_named():
    result = validate_rows(
        _rows([("FR", "2020-01-01", "1", "3.0", "warm")], columns=_with("price", "temperature")),
        ColumnRoles(drivers=("price", "temperature")),
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
            columns=_with("temperature"),
        )
    )
    assert result.quarantined.height == 0
    assert result.valid["temperature"].to_list() == [None, None, 4.5]


def test_first_failing_check_gives_the_reason():
    # Missing id, bad timestamp and bad target at once: the series id is reported.
    assert _refused([(None, "never", "abc")]) == ["missing series id"]
    # A good id, a bad timestamp and a bad target: the timestamp is reported.
    assert _refused([("FR", "never", "abc")]) == [UNPARSEABLE]


# --- time zones -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ds", "expected"),
    [
        ("2020-01-01T05:00:00Z", datetime(2020, 1, 1, 5)),
        ("2020-01-01T05:00Z", datetime(2020, 1, 1, 5)),
        ("2020-01-01 05:00:00.5Z", datetime(2020, 1, 1, 5, 0, 0, 500000)),
        ("2020-01-01T05:00:00+02:00", datetime(2020, 1, 1, 3)),
        ("2020-01-01T05:00:00+0200", datetime(2020, 1, 1, 3)),
        ("2020-01-01T05:00:00-05:30", datetime(2020, 1, 1, 10, 30)),
        ("2020-01-01T01:00:00+02:00", datetime(2019, 12, 31, 23)),  # across a year end
    ],
)
def test_zoned_timestamps_become_naive_utc(ds: str, expected: datetime):
    result = validate_rows(_rows([("FR", ds, "1")]))
    assert result.valid.schema["ds"] == pl.Datetime("us")
    assert result.valid["ds"].to_list() == [expected]


@pytest.mark.parametrize(
    ("ds", "expected"),
    [
        ("2020-01-01 05:00:00", datetime(2020, 1, 1, 5)),
        ("2020-01-01T05:00:00.25", datetime(2020, 1, 1, 5, 0, 0, 250000)),
        ("2020-01-01 05:00", datetime(2020, 1, 1, 5)),
        (" 2020-01-01T05:00 ", datetime(2020, 1, 1, 5)),
        ("2020-01-01", datetime(2020, 1, 1)),
    ],
)
def test_naive_timestamps_are_taken_as_they_are(ds: str, expected: datetime):
    result = validate_rows(_rows([("FR", ds, "1")]))
    assert result.valid["ds"].to_list() == [expected]


def test_offset_and_utc_text_of_one_instant_mix_in_a_column():
    result = validate_rows(
        _rows([("FR", "2020-01-01T00:00:00Z", "1"), ("DE", "2020-01-01T03:00:00+02:00", "2")])
    )
    assert dict(zip(result.valid["unique_id"], result.valid["ds"], strict=True)) == {
        "DE": datetime(2020, 1, 1, 1),
        "FR": datetime(2020, 1, 1, 0),
    }


def test_naive_timestamps_in_a_zoned_file_are_refused():
    result = validate_rows(
        _rows(
            [
                ("FR", "2020-01-01T00:00:00Z", "1"),
                ("FR", "2020-01-01 01:00:00", "2"),
                ("FR", "2020-01-01T04:00:00+02:00", "3"),
                ("DE", "2020-01-01", "4"),
            ]
        )
    )
    assert result.valid.select("unique_id", "ds", "source_row").rows() == [
        ("FR", datetime(2020, 1, 1, 0), 1),
        ("FR", datetime(2020, 1, 1, 2), 3),
    ]
    assert _reasons(result.quarantined) == {2: MIXED_ZONES, 4: MIXED_ZONES}


def test_an_unparseable_zoned_value_does_not_make_a_naive_file_mixed():
    result = validate_rows(
        _rows(
            [
                ("FR", "2020-01-01 00:00", "1"),
                ("FR", "2020-13-01T00:00:00Z", "2"),  # month 13
                ("FR", "2020-01-01 02:00", "3"),
            ]
        )
    )
    assert _reasons(result.quarantined) == {2: UNPARSEABLE}
    assert result.valid["source_row"].to_list() == [1, 3]


# --- the future and the calendar's end ------------------------------------------------------


def test_timestamps_after_not_after_are_future_timestamps():
    result = validate_rows(
        _rows(
            [
                ("FR", "2020-01-02T00:00:00Z", "1"),  # exactly the limit: accepted
                ("FR", "2020-01-02T00:00:01Z", "2"),
                ("FR", "2020-01-02T01:00:00+02:00", "3"),  # 2020-01-01 23:00 UTC: accepted
                ("FR", "2020-01-01T23:00:00-02:00", "4"),  # 2020-01-02 01:00 UTC: future
                ("FR", "2030-06-01T00:00:00Z", "5"),
            ]
        ),
        not_after=datetime(2020, 1, 2),
    )
    assert result.valid["source_row"].to_list() == [3, 1]
    assert _reasons(result.quarantined) == {
        2: "timestamp in the future",
        4: "timestamp in the future",
        5: "timestamp in the future",
    }


def test_without_not_after_no_timestamp_is_in_the_future():
    result = validate_rows(_rows([("FR", "2999-01-01", "1")]))
    assert result.valid["ds"].to_list() == [datetime(2999, 1, 1)]


def test_future_limit_adds_the_tolerance_to_now():
    assert future_limit(24, now=datetime(2020, 1, 1, 12)) == datetime(2020, 1, 2, 12)
    assert future_limit(0.5, now=datetime(2020, 1, 1, 23, 45)) == datetime(2020, 1, 2, 0, 15)
    assert future_limit(0, now=datetime(2020, 1, 1)) == datetime(2020, 1, 1)


def test_future_limit_defaults_to_the_current_utc_time():
    limit = future_limit(1)
    now = datetime.now(UTC).replace(tzinfo=None)
    assert limit.tzinfo is None
    assert abs((limit - now).total_seconds() - 3600) < 60


def test_timestamps_past_a_pinned_calendar_end_are_refused():
    result = validate_rows(
        _rows([("FR", "2016-10-29 23:59", "1"), ("FR", "2016-10-30 00:00", "2"), ("FR", "2017-01-01", "3")]),
        placeable_until=datetime(2016, 10, 30),
    )
    assert result.valid["source_row"].to_list() == [1]
    assert _reasons(result.quarantined) == {
        2: "timestamp after the last date window",
        3: "timestamp after the last date window",
    }


# --- duplicates -----------------------------------------------------------------------------


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
    superseded = result.quarantined.row(0, named=True)
    assert superseded["raw_ts"] == "2020-01-01"
    assert json.loads(superseded["raw_row"]) == {"unique_id": "FR", "ds": "2020-01-01", "y": "1"}


def test_an_exact_duplicate_is_not_a_conflict():
    result = validate_rows(_rows([("FR", "2020-01-01", "1"), ("FR", "2020-01-01", "1.0")]))
    assert result.valid["source_row"].to_list() == [2]
    assert _reasons(result.quarantined) == {1: EXACT_DUPLICATE}
    assert result.as_landed["conflicting_duplicate"].to_list() == [False, False]


def test_conflicting_duplicates_are_flagged_on_every_row_of_the_timestamp():
    result = validate_rows(
        _rows(
            [
                ("FR", "2020-01-01", "1"),
                ("FR", "2020-01-02", "7"),
                ("FR", "2020-01-01", "2"),
                ("FR", "2020-01-01", "3"),
            ]
        )
    )
    assert result.valid.select("ds", "y").rows() == [(datetime(2020, 1, 1), 3.0), (datetime(2020, 1, 2), 7.0)]
    assert _reasons(result.quarantined) == {1: SUPERSEDED, 3: SUPERSEDED}
    assert result.as_landed.select("source_row", "conflicting_duplicate").rows() == [
        (1, True),
        (2, False),
        (3, True),
        (4, True),
    ]


def test_a_driver_correction_is_not_an_exact_duplicate():
    result = validate_rows(
        _rows([("FR", "2020-01-01", "1", "5"), ("FR", "2020-01-01", "1", "6")], columns=_with("price")),
        ColumnRoles(drivers=("price",)),
    )
    assert result.valid.select("y", "price").rows() == [(1.0, 6.0)]
    assert _reasons(result.quarantined) == {1: SUPERSEDED}


def test_the_same_instant_written_differently_is_a_duplicate():
    result = validate_rows(
        _rows([("FR", "2020-01-01T05:00:00+02:00", "1"), ("FR", "2020-01-01T03:00:00Z", "2")])
    )
    assert result.valid.select("ds", "y").rows() == [(datetime(2020, 1, 1, 3), 2.0)]
    assert _reasons(result.quarantined) == {1: SUPERSEDED}


def test_ids_differing_only_in_surrounding_spaces_are_one_series():
    result = validate_rows(_rows([("FR", "2020-01-01", "1"), (" FR ", "2020-01-01", "2")]))
    assert result.valid.select("unique_id", "y").rows() == [("FR", 2.0)]
    assert _reasons(result.quarantined) == {1: SUPERSEDED}


def test_one_timestamp_in_two_series_is_not_a_duplicate():
    result = validate_rows(_rows([("FR", "2020-01-01", "1"), ("DE", "2020-01-01", "2")]))
    assert result.quarantined.height == 0
    assert result.valid.select("unique_id", "y").rows() == [("DE", 2.0), ("FR", 1.0)]


def test_a_malformed_later_row_does_not_supersede_a_good_one():
    result = validate_rows(_rows([("FR", "2020-01-01", "1"), ("FR", "2020-01-01", "oops")]))
    assert result.valid.select("y", "source_row").rows() == [(1.0, 1)]
    assert _reasons(result.quarantined) == {2: "missing or non-numeric target"}
    assert result.as_landed["conflicting_duplicate"].to_list() == [False, False]


# --- every row accounted for ----------------------------------------------------------------


def test_every_row_comes_out_exactly_once():
    rows = _rows(
        [
            ("FR", "2020-01-01", "1", "0.5"),  # 1 superseded by 7
            ("FR", "2020-01-02", "2", ""),  # 2 valid
            (None, "2020-01-03", "3", "1"),  # 3 missing series id
            ("a|b", "2020-01-03", "3", "1"),  # 4 valid: any printable id is usable
            ("DE", "soon", "4", "1"),  # 5 bad timestamp
            ("DE", "2020-01-01", "inf", "1"),  # 6 non-finite target
            ("FR", "2020-01-01", "7", "2"),  # 7 valid, supersedes 1
            ("DE", "2020-01-02", "8", "hot"),  # 8 bad driver
            ("DE", "2020-01-03", "9", "3"),  # 9 exact duplicate of row 11
            ("DE", "2031-01-01", "9", "3"),  # 10 in the future
            ("DE", "2020-01-03", "9", "3"),  # 11 valid, the later copy of 9
        ],
        columns=_with("temperature"),
    )
    result = validate_rows(rows, ColumnRoles(drivers=("temperature",)), not_after=datetime(2030, 1, 1))

    valid_rows = result.valid["source_row"].to_list()
    refused_rows = result.quarantined["source_row"].to_list()
    assert sorted(valid_rows + refused_rows) == list(range(1, 12))
    assert set(valid_rows).isdisjoint(refused_rows)
    assert sorted(valid_rows) == [2, 4, 7, 11]
    assert _reasons(result.quarantined) == {
        1: SUPERSEDED,
        3: "missing series id",
        5: UNPARSEABLE,
        6: "non-finite target",
        8: "non-numeric driver temperature",
        9: EXACT_DUPLICATE,
        10: "timestamp in the future",
    }
    assert result.quarantined.columns == ["source_row", "unique_id", "raw_ts", "raw_row", "reason"]
    # Valid rows are ordered by series, then time.
    assert result.valid.select("unique_id", "source_row").rows() == [
        ("DE", 11),
        ("FR", 7),
        ("FR", 2),
        ("a|b", 4),
    ]


def test_as_landed_holds_every_row_as_parsed():
    result = validate_rows(
        _rows(
            [
                (" FR ", "2020-01-01T02:00:00+02:00", "1"),
                ("", "2020-01-02T00:00:00Z", "2"),
                ("DE", "2020-01-03T00:00:00Z", "x"),
                ("DE", "later", "4"),
            ]
        )
    )
    landed = result.as_landed
    assert landed.columns == [
        "source_row",
        "series_id",
        "ts",
        "y",
        "missing_column",
        "conflicting_duplicate",
        "reason",
    ]
    assert landed.select("source_row", "series_id", "ts", "y").rows() == [
        (1, "FR", datetime(2020, 1, 1, 0), 1.0),
        (2, None, datetime(2020, 1, 2, 0), 2.0),  # a blank id is no id
        (3, "DE", datetime(2020, 1, 3, 0), None),
        (4, "DE", None, 4.0),
    ]
    assert landed["missing_column"].to_list() == [None] * 4
    assert landed["reason"].to_list() == [
        None,
        "missing series id",
        "missing or non-numeric target",
        UNPARSEABLE,
    ]


def test_quarantine_keeps_the_id_and_the_row_as_landed():
    result = validate_rows(_rows([(" a|b ", "soon", "1")]))
    refused = result.quarantined.row(0, named=True)
    assert refused["unique_id"] == " a|b "
    assert refused["raw_ts"] == "soon"
    assert json.loads(refused["raw_row"]) == {"unique_id": " a|b ", "ds": "soon", "y": "1"}


def test_data_without_a_target_column_is_quarantined_with_that_reason():
    rows = _rows([("FR", "2020-01-01", "1"), ("DE", "2020-01-02", "2")]).drop("y")
    result = validate_rows(rows)
    assert result.valid.height == 0
    assert result.quarantined["reason"].to_list() == ["landed data has no 'y' column"] * 2
    assert json.loads(result.quarantined["raw_row"][0]) == {"unique_id": "FR", "ds": "2020-01-01"}
    assert result.as_landed["missing_column"].to_list() == ["y", "y"]
    assert result.as_landed["series_id"].to_list() == ["FR", "DE"]


# --- column roles ---------------------------------------------------------------------------


def test_configured_column_names_map_to_the_long_format():
    rows = _rows([("Store, North", "2020-01-01", "12")], columns=("store", "date", "sales"))
    result = validate_rows(rows, ColumnRoles(series_id="store", timestamp="date", target="sales"))
    assert result.valid.select("unique_id", "ds", "y").rows() == [
        ("Store, North", datetime(2020, 1, 1), 12.0)
    ]
    assert result.drivers == []


def test_a_missing_configured_column_is_named_as_the_source_calls_it():
    rows = _rows([("FR", "2020-01-01", "12")], columns=("store", "date", "revenue"))
    result = validate_rows(rows, ColumnRoles(series_id="store", timestamp="date", target="sales"))
    assert result.quarantined["reason"].to_list() == ["landed data has no 'sales' column"]
    assert result.as_landed["missing_column"].to_list() == ["y"]


def test_a_column_named_like_an_internal_one_does_not_shadow_the_mapped_target():
    rows = _rows([("FR", "2020-01-01", "12", "99")], columns=("unique_id", "ds", "sales", "y"))
    result = validate_rows(rows, ColumnRoles(target="sales"))
    assert result.valid["y"].to_list() == [12.0]
    assert result.drivers == []


def test_extra_columns_are_drivers_or_series_attributes_by_content():
    rows = _rows(
        [
            ("FR", "2020-01-01", "1", "3.5", "north", "sunny", "1"),
            ("FR", "2020-01-02", "2", "4", "north", "rain", "2"),
            ("DE", "2020-01-01", "3", "", "south", "sunny", "3"),
            ("DE", "2020-01-02", "4", "5e-1", None, "rain", "4"),
        ],
        columns=_with("price", "region", "weather", "row_id"),
    )
    result = validate_rows(rows, ColumnRoles(ignore=("row_id",)))

    assert result.drivers == ["price"]
    assert result.valid.columns == ["unique_id", "ds", "y", "price", "source_row"]
    assert result.valid["price"].to_list() == [None, 0.5, 3.5, 4.0]
    assert result.attributes.sort("unique_id").rows() == [("DE", "south"), ("FR", "north")]
    assert result.attributes.columns == ["unique_id", "region"]
    assert result.warnings == ["column 'weather' is text that varies within a series: ignored"]


def test_a_mostly_numeric_column_is_a_driver_and_its_odd_values_are_refused():
    # 19 of 20 values are numbers (95 %): a driver, and the row with text is refused.
    records = [("FR", f"2020-01-{day:02d}", "1", str(day)) for day in range(1, 21)]
    records[4] = ("FR", "2020-01-05", "1", "n/a")
    result = validate_rows(_rows(records, columns=_with("temperature")))
    assert result.drivers == ["temperature"]
    assert _reasons(result.quarantined) == {5: "non-numeric driver temperature"}
    assert result.valid.height == 19


def test_a_column_with_too_much_text_is_not_a_driver():
    # 18 of 20 values are numbers (90 %): text, and varying within the series, so ignored.
    records = [("FR", f"2020-01-{day:02d}", "1", str(day)) for day in range(1, 21)]
    records[4] = ("FR", "2020-01-05", "1", "n/a")
    records[5] = ("FR", "2020-01-06", "1", "missing")
    result = validate_rows(_rows(records, columns=_with("temperature")))
    assert result.drivers == []
    assert result.quarantined.height == 0
    assert result.valid.columns == ["unique_id", "ds", "y", "source_row"]
    assert result.warnings == ["column 'temperature' is text that varies within a series: ignored"]


def test_explicit_roles_override_inference():
    rows = _rows(
        [("FR", "2020-01-01", "1", "7", "north"), ("FR", "2020-01-02", "2", "7", "north")],
        columns=_with("store_number", "region"),
    )
    result = validate_rows(rows, ColumnRoles(drivers=(), attributes=("store_number",)))
    assert result.drivers == []
    assert result.attributes.rows() == [("FR", "7")]
    assert result.warnings == ["column 'region' has no role: ignored"]


def test_attributes_come_from_accepted_rows_only():
    rows = _rows(
        [("FR", "2020-01-01", "1", "north"), ("FR", "2020-01-02", "bad", "south")],
        columns=_with("region"),
    )
    result = validate_rows(rows)
    assert result.attributes.rows() == [("FR", "north")]
    assert result.warnings == []
