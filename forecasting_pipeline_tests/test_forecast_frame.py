"""Unit tests of `to_forecast_frame`: each library's wide output becomes the one long frame."""

from __future__ import annotations

import pandas as pd
import pytest

from forecasting_pipeline.modeling.forecast_frame import last_timestamps, to_forecast_frame
from forecasting_pipeline.schemas import FORECAST_COLUMNS, SchemaError

T = pd.Timestamp


@pytest.fixture
def panel() -> pd.DataFrame:
    """A ragged hourly panel: FR ends at 02:00, DE at 05:00."""
    return pd.DataFrame(
        {
            "unique_id": ["FR", "FR", "FR", "DE", "DE"],
            "ds": [
                T("2020-01-01 00:00"),
                T("2020-01-01 01:00"),
                T("2020-01-01 02:00"),
                T("2020-01-01 05:00"),
                T("2020-01-01 04:00"),
            ],
            "y": [1.0, 2.0, 3.0, 4.0, 5.0],
        }
    )


def _wide(prefix: str, point: str, rows: list[tuple[str, str, float]]) -> pd.DataFrame:
    """Wide output with nested intervals: median m, 80% = m -/+ 1, 95% = m -/+ 3."""
    return pd.DataFrame(
        {
            "unique_id": [r[0] for r in rows],
            "ds": [T(r[1]) for r in rows],
            point: [r[2] for r in rows],
            f"{prefix}-lo-80": [r[2] - 1 for r in rows],
            f"{prefix}-hi-80": [r[2] + 1 for r in rows],
            f"{prefix}-lo-95": [r[2] - 3 for r in rows],
            f"{prefix}-hi-95": [r[2] + 3 for r in rows],
        }
    )


# neuralforecast-style output, deliberately shuffled.
NHITS_ROWS = [
    ("FR", "2020-01-01 04:00", 12.0),
    ("DE", "2020-01-01 06:00", 20.0),
    ("FR", "2020-01-01 03:00", 11.0),
    ("DE", "2020-01-01 07:00", 21.0),
]


def _nhits(rows: list[tuple[str, str, float]] = NHITS_ROWS) -> pd.DataFrame:
    return _wide("NHITS", "NHITS-median", rows)


def _normalize_nhits(raw: pd.DataFrame, panel: pd.DataFrame) -> pd.DataFrame:
    return to_forecast_frame(
        raw,
        point_column="NHITS-median",
        interval_prefix="NHITS",
        model_name="NHITS",
        model_version="nhits-2020-01-01",
        cutoffs=last_timestamps(panel),
    )


def test_last_timestamps_are_per_series(panel: pd.DataFrame):
    cutoffs = last_timestamps(panel)
    assert cutoffs.to_dict() == {"DE": T("2020-01-01 05:00"), "FR": T("2020-01-01 02:00")}


def test_columns_are_the_forecast_schema(panel: pd.DataFrame):
    assert list(_normalize_nhits(_nhits(), panel).columns) == list(FORECAST_COLUMNS)


def test_rows_are_ordered_by_series_then_time_with_steps(panel: pd.DataFrame):
    out = _normalize_nhits(_nhits(), panel)

    assert out[["unique_id", "ds", "step"]].values.tolist() == [
        ["DE", T("2020-01-01 06:00"), 1],
        ["DE", T("2020-01-01 07:00"), 2],
        ["FR", T("2020-01-01 03:00"), 1],
        ["FR", T("2020-01-01 04:00"), 2],
    ]
    assert out["step"].dtype == "int64"
    assert out.index.tolist() == [0, 1, 2, 3]


def test_cutoff_is_each_series_last_observation(panel: pd.DataFrame):
    out = _normalize_nhits(_nhits(), panel)
    assert out["cutoff"].tolist() == [
        T("2020-01-01 05:00"),
        T("2020-01-01 05:00"),
        T("2020-01-01 02:00"),
        T("2020-01-01 02:00"),
    ]
    assert out["cutoff"].dtype == "datetime64[ns]"


def test_model_name_and_version_are_set(panel: pd.DataFrame):
    out = _normalize_nhits(_nhits(), panel)
    assert set(out["model_name"]) == {"NHITS"}
    assert set(out["model_version"]) == {"nhits-2020-01-01"}


def test_point_and_intervals_are_renamed_with_their_values(panel: pd.DataFrame):
    out = _normalize_nhits(_nhits(), panel)
    # Rows in output order: DE 06:00 (20), DE 07:00 (21), FR 03:00 (11), FR 04:00 (12).
    assert out["yhat"].tolist() == [20.0, 21.0, 11.0, 12.0]
    assert out["lo_80"].tolist() == [19.0, 20.0, 10.0, 11.0]
    assert out["hi_80"].tolist() == [21.0, 22.0, 12.0, 13.0]
    assert out["lo_95"].tolist() == [17.0, 18.0, 8.0, 9.0]
    assert out["hi_95"].tolist() == [23.0, 24.0, 14.0, 15.0]


def test_crossing_quantiles_are_rearranged_to_nest(panel: pd.DataFrame):
    raw = _nhits([("FR", "2020-01-01 03:00", 10.0)])
    raw.loc[0, ["NHITS-lo-95", "NHITS-lo-80", "NHITS-hi-80", "NHITS-hi-95"]] = [5.0, 12.0, 11.0, 20.0]

    row = _normalize_nhits(raw, panel).iloc[0]

    # The same five values, sorted: 5 <= 10 <= 11 <= 12 <= 20.
    assert [row["lo_95"], row["lo_80"], row["yhat"], row["hi_80"], row["hi_95"]] == [
        5.0,
        10.0,
        11.0,
        12.0,
        20.0,
    ]


@pytest.mark.parametrize("missing", ["NHITS-lo-80", "NHITS-hi-95", "NHITS-median", "ds"])
def test_a_missing_column_is_a_schema_error(panel: pd.DataFrame, missing: str):
    with pytest.raises(SchemaError, match=missing):
        _normalize_nhits(_nhits().drop(columns=[missing]), panel)


def test_statsforecast_output_with_unique_id_as_index(panel: pd.DataFrame):
    raw = _wide(
        "SeasonalNaive",
        "SeasonalNaive",
        [("FR", "2020-01-01 03:00", 3.0), ("FR", "2020-01-01 04:00", 2.0), ("DE", "2020-01-01 06:00", 4.0)],
    ).set_index("unique_id")
    assert "unique_id" not in raw.columns

    out = to_forecast_frame(
        raw,
        point_column="SeasonalNaive",
        interval_prefix="SeasonalNaive",
        model_name="SeasonalNaive",
        model_version="sn-1",
        cutoffs=last_timestamps(panel),
    )

    assert list(out.columns) == list(FORECAST_COLUMNS)
    assert out[["unique_id", "step", "cutoff", "yhat", "lo_80", "hi_95"]].values.tolist() == [
        ["DE", 1, T("2020-01-01 05:00"), 4.0, 3.0, 7.0],
        ["FR", 1, T("2020-01-01 02:00"), 3.0, 2.0, 6.0],
        ["FR", 2, T("2020-01-01 02:00"), 2.0, 1.0, 5.0],
    ]
    assert set(out["model_name"]) == {"SeasonalNaive"}
    assert set(out["model_version"]) == {"sn-1"}


def test_input_frame_is_not_modified(panel: pd.DataFrame):
    raw = _nhits()
    before = raw.copy()
    _normalize_nhits(raw, panel)
    pd.testing.assert_frame_equal(raw, before)
