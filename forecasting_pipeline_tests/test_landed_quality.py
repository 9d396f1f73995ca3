"""The landed-batch data-quality suite: GX decides each check, against the configured thresholds."""

from __future__ import annotations

import json
import math
import socket
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import polars as pl
import pytest

from forecasting_pipeline.checks import landed_quality
from forecasting_pipeline.checks.landed_quality import (
    CHECK_NAMES,
    ExpectationOutcome,
    QualityThresholds,
    validate_landed_batch,
)

ROWS = 1000
BOUNDS = QualityThresholds(lower_bound=0.0, upper_bound=10_000.0)
EXPECTATIONS = {
    "required_columns": ("ExpectColumnValuesToBeNull", True),
    "series_ids_present": ("ExpectColumnValuesToNotBeNull", True),
    "timestamps_parse": ("ExpectColumnValuesToNotBeNull", True),
    "finite_targets": ("ExpectColumnValuesToBeNull", True),
    "no_conflicting_duplicates": ("ExpectColumnValuesToBeInSet", True),
    "on_series_grid": ("ExpectColumnValuesToBeInSet", True),
    "no_gaps": ("ExpectColumnValuesToBeBetween", False),
    "within_bounds": ("ExpectColumnValuesToBeBetween", True),
}


@pytest.fixture(scope="module", autouse=True)
def _no_network() -> Iterator[None]:
    """The suite must never phone home: any TCP/UDP connection or DNS lookup fails the test."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError(f"network access attempted: {args!r}")

    real_connect = socket.socket.connect

    def connect(self: socket.socket, address: Any) -> None:
        if self.family in (socket.AF_INET, socket.AF_INET6):
            refuse(address)
        real_connect(self, address)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket.socket, "connect", connect)
        patch.setattr(socket, "getaddrinfo", refuse)
        yield


def test_network_guard_is_active() -> None:
    with pytest.raises(AssertionError, match="network access attempted"):
        socket.create_connection(("127.0.0.1", 9))


def landed(rows: int = ROWS) -> pl.DataFrame:
    """A clean batch as landed: four hourly series in two files, nothing wrong with any row."""
    start = datetime(2024, 1, 1)
    return pl.DataFrame(
        {
            "file": [f"part_{i % 2}.csv" for i in range(rows)],
            "line": [i // 2 + 2 for i in range(rows)],
            "series_id": [f"s{i % 4}" for i in range(rows)],
            "ts": [start + timedelta(hours=i // 4) for i in range(rows)],
            "y": [float(i) for i in range(rows)],
            "missing_column": [None] * rows,
            "conflicting_duplicate": [False] * rows,
            "on_grid": [True] * rows,
            "steps_missing_before": [0] * rows,
            "reason": [None] * rows,
        },
        schema={
            "file": pl.Utf8,
            "line": pl.Int64,
            "series_id": pl.Utf8,
            "ts": pl.Datetime("us"),
            "y": pl.Float64,
            "missing_column": pl.Utf8,
            "conflicting_duplicate": pl.Boolean,
            "on_grid": pl.Boolean,
            "steps_missing_before": pl.Int64,
            "reason": pl.Utf8,
        },
    )


def with_values(batch: pl.DataFrame, column: str, values: list[Any]) -> pl.DataFrame:
    """The batch with the first rows of `column` replaced by `values`."""
    replaced = batch[column].to_list()
    replaced[: len(values)] = values
    return batch.with_columns(pl.Series(column, replaced, dtype=batch.schema[column]))


def by_name(outcomes: list[ExpectationOutcome]) -> dict[str, ExpectationOutcome]:
    return {o.check_name: o for o in outcomes}


def test_clean_batch_passes_every_check() -> None:
    outcomes = validate_landed_batch(landed(), BOUNDS)

    assert [o.check_name for o in outcomes] == list(CHECK_NAMES)
    for outcome in outcomes:
        assert (outcome.expectation, outcome.blocking) == EXPECTATIONS[outcome.check_name]
        assert outcome.success, outcome
        assert (outcome.evaluated, outcome.unexpected, outcome.unexpected_fraction) == (ROWS, 0, 0.0)
        assert outcome.details["sample"] == [] and outcome.details["rows"] == []
        assert outcome.description.endswith(".")


def test_within_bounds_only_when_a_bound_is_configured() -> None:
    names = [o.check_name for o in validate_landed_batch(landed(100))]
    assert names == list(CHECK_NAMES[:-1])
    assert "within_bounds" not in names


FINITE_PROBLEMS = [None, math.nan, math.inf, -math.inf]

# check name, column, the bad value(s) written into the first rows, thresholds
BLOCKING_CASES = [
    ("required_columns", "missing_column", ["y"], QualityThresholds()),
    ("series_ids_present", "series_id", [None], QualityThresholds()),
    ("timestamps_parse", "ts", [None], QualityThresholds()),
    ("finite_targets", "y", FINITE_PROBLEMS, QualityThresholds()),
    ("no_conflicting_duplicates", "conflicting_duplicate", [True], QualityThresholds()),
    ("on_series_grid", "on_grid", [False], QualityThresholds()),
    ("within_bounds", "y", [-5.0, 20_000.0], BOUNDS),
]


@pytest.mark.parametrize(("check_name", "column", "bad", "thresholds"), BLOCKING_CASES)
@pytest.mark.parametrize(
    ("bad_rows", "passes"),
    [(1, True), (10, True), (20, False)],  # 1% of 1,000 is still within a 0.01 threshold
)
def test_blocking_check_fails_only_above_the_threshold(
    check_name: str,
    column: str,
    bad: list[Any],
    thresholds: QualityThresholds,
    bad_rows: int,
    passes: bool,
) -> None:
    values = [bad[i % len(bad)] for i in range(bad_rows)]
    outcomes = by_name(validate_landed_batch(with_values(landed(), column, values), thresholds))

    outcome = outcomes[check_name]
    assert outcome.blocking
    assert outcome.success is passes
    assert (outcome.evaluated, outcome.unexpected) == (ROWS, bad_rows)
    assert outcome.unexpected_fraction == pytest.approx(bad_rows / ROWS)
    assert outcome.details["threshold"] == 0.01
    assert outcome.details["rows"][0] == {"file": "part_0.csv", "line": 2}
    assert len(outcome.details["sample"]) == min(bad_rows, landed_quality.SAMPLE_SIZE)
    # Problems are independent: no other check notices this one.
    assert all(o.success for name, o in outcomes.items() if name != check_name)


def test_samples_say_what_was_wrong() -> None:
    batch = with_values(landed(), "y", FINITE_PROBLEMS)
    batch = with_values(batch, "missing_column", ["y", "ds"])
    batch = with_values(batch, "ts", [None])
    batch = with_values(batch, "on_grid", [False])
    outcomes = by_name(validate_landed_batch(batch, QualityThresholds(lower_bound=0.0, upper_bound=2.0)))

    assert outcomes["finite_targets"].details["sample"] == ["missing", "NaN", "inf", "-inf"]
    assert outcomes["required_columns"].details["sample"] == ["y", "ds"]
    assert outcomes["timestamps_parse"].details["sample"] == [None]
    assert outcomes["on_series_grid"].details["sample"] == [False]
    # NaN and missing targets are finite_targets' business; bounds judge the numbers, inf included.
    bounds = outcomes["within_bounds"]
    assert bounds.evaluated == ROWS - 2
    assert bounds.details["sample"][:2] == ["inf", "-inf"]
    assert bounds.details["min_value"] == 0.0 and bounds.details["max_value"] == 2.0
    assert "between 0 and 2" in bounds.description


def test_details_are_strict_json() -> None:
    batch = with_values(landed(), "y", FINITE_PROBLEMS * 10)
    batch = with_values(batch, "ts", [None] * 30)
    batch = with_values(batch, "series_id", [None] * 30)
    batch = with_values(batch, "steps_missing_before", [3] * 100)
    outcomes = validate_landed_batch(batch, QualityThresholds(lower_bound=0.0, upper_bound=5.0))

    assert not all(o.success for o in outcomes)
    for outcome in outcomes:
        # allow_nan=False: NaN and inf are not JSON; they must have become strings.
        json.dumps(outcome.details, allow_nan=False)
        json.dumps([outcome.unexpected_fraction, outcome.evaluated, outcome.unexpected], allow_nan=False)


def test_gaps_only_warn() -> None:
    steps = [2] * 100 + [None] * 100  # 10% of rows follow a gap; unknown grids are ignored
    outcomes = by_name(validate_landed_batch(with_values(landed(), "steps_missing_before", steps)))

    gaps = outcomes["no_gaps"]
    assert not gaps.blocking
    assert not gaps.success
    assert (gaps.evaluated, gaps.unexpected) == (ROWS - 100, 100)
    assert gaps.details["threshold"] == 0.05
    assert gaps.details["sample"] == [2] * landed_quality.SAMPLE_SIZE
    assert all(o.success for o in outcomes.values() if o.blocking)


def test_few_gaps_pass_the_warning() -> None:
    outcomes = by_name(validate_landed_batch(with_values(landed(), "steps_missing_before", [1] * 40)))
    assert outcomes["no_gaps"].success
    assert outcomes["no_gaps"].unexpected == 40


def test_gap_threshold_is_configurable() -> None:
    batch = with_values(landed(), "steps_missing_before", [1] * 40)
    outcomes = by_name(validate_landed_batch(batch, QualityThresholds(max_gap_fraction=0.01)))
    assert not outcomes["no_gaps"].success


def test_unknown_grid_positions_count_neither_way() -> None:
    # Half the rows belong to series of unknown frequency; 10 off-grid rows are 2% of the rest.
    batch = with_values(landed(), "on_grid", [None] * 500 + [False] * 10)
    grid = by_name(validate_landed_batch(batch))["on_series_grid"]
    assert (grid.evaluated, grid.unexpected) == (500, 10)
    assert grid.unexpected_fraction == pytest.approx(0.02)
    assert not grid.success


def test_failing_fraction_is_configurable() -> None:
    batch = with_values(landed(), "series_id", [None] * 20)
    assert by_name(validate_landed_batch(batch, QualityThresholds(max_failing_fraction=0.05)))[
        "series_ids_present"
    ].success
    assert not by_name(validate_landed_batch(batch, QualityThresholds(max_failing_fraction=0.0)))[
        "series_ids_present"
    ].success


@pytest.mark.parametrize(
    ("thresholds", "phrase"),
    [
        (QualityThresholds(lower_bound=0.0), "at least 0"),
        (QualityThresholds(upper_bound=100.0), "at most 100"),
    ],
)
def test_one_sided_bounds(thresholds: QualityThresholds, phrase: str) -> None:
    bounds = by_name(validate_landed_batch(landed(), thresholds))["within_bounds"]
    assert phrase in bounds.description
    if thresholds.upper_bound is None:
        assert bounds.success and bounds.unexpected == 0
    else:
        assert not bounds.success and bounds.unexpected == ROWS - 101  # y runs 0..999


def test_empty_batch_passes_vacuously() -> None:
    for outcome in validate_landed_batch(landed(0), BOUNDS):
        assert outcome.success, outcome
        assert (outcome.evaluated, outcome.unexpected, outcome.unexpected_fraction) == (0, 0, 0.0)
        assert "error" not in outcome.details
        json.dumps(outcome.details, allow_nan=False)


def test_untyped_empty_batch_is_accepted() -> None:
    # A batch built from no rows at all can carry `Null` dtypes; it is still just empty.
    untyped = pl.DataFrame({name: [] for name in landed().columns})
    outcomes = validate_landed_batch(untyped)
    assert all(o.success and o.evaluated == 0 for o in outcomes)


def test_missing_input_column_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="on_grid"):
        validate_landed_batch(landed(10).drop("on_grid"))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_failing_fraction": 1.5},
        {"max_gap_fraction": -0.1},
        {"lower_bound": 5.0, "upper_bound": 1.0},
        {"upper_bound": math.nan},
    ],
)
def test_nonsense_thresholds_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        QualityThresholds(**kwargs)


def test_a_check_gx_cannot_evaluate_fails_with_the_error(monkeypatch: pytest.MonkeyPatch) -> None:
    real_frame = landed_quality._gx_frame

    def text_targets(batch: pl.DataFrame, with_y: bool) -> Any:
        frame = real_frame(batch, with_y)
        frame["y"] = frame["y"].astype(str)  # numbers compared with text: GX raises TypeError
        return frame

    monkeypatch.setattr(landed_quality, "_gx_frame", text_targets)
    outcomes = by_name(validate_landed_batch(landed(50), BOUNDS))

    bounds = outcomes["within_bounds"]
    assert not bounds.success
    assert "must either be None or of the same type" in bounds.details["error"]
    assert (bounds.evaluated, bounds.unexpected) == (0, 0)
    json.dumps(bounds.details, allow_nan=False)
    assert all(o.success for name, o in outcomes.items() if name != "within_bounds")
