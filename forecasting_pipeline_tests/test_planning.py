"""Unit tests of `plan_rectangles`: changed series × window cells become few partition-range runs."""

from __future__ import annotations

import random

import polars as pl

from forecasting_pipeline.automation.planning import DEFAULT_MAX_GAP, Rectangle, plan_rectangles

# Series keys in the order Dagster added them, and the calendar's windows.
SERIES = [f"s{i:02d}" for i in range(40)]
WINDOWS = ["2016-10-02", "2016-10-09", "2016-10-16", "2016-10-23", "2016-10-30"]


def _cells(*pairs: tuple[str, str]) -> pl.DataFrame:
    return pl.DataFrame(
        {"partition_key": [p[0] for p in pairs], "window_key": [p[1] for p in pairs]},
        schema={"partition_key": pl.Utf8, "window_key": pl.Utf8},
    )


def _series(first: int, last: int) -> list[str]:
    return SERIES[first : last + 1]


def test_no_cells_no_runs():
    assert plan_rectangles(_cells(), SERIES, WINDOWS) == []


def test_one_new_week_for_neighbouring_series_is_one_run():
    cells = _cells(("s00", "2016-10-30"), ("s01", "2016-10-30"), ("s02", "2016-10-30"))
    assert plan_rectangles(cells, SERIES, WINDOWS) == [Rectangle("2016-10-30", "2016-10-30", _series(0, 2))]


def test_one_new_week_for_scattered_series_fills_small_gaps_and_splits_at_large_ones():
    # s00 → s03 leaves 2 series out (≤ max_gap): filled; s03 → s30 leaves 26 out: a new run.
    cells = _cells(("s00", "2016-10-30"), ("s03", "2016-10-30"), ("s30", "2016-10-30"))
    assert plan_rectangles(cells, SERIES, WINDOWS, max_gap=2) == [
        Rectangle("2016-10-30", "2016-10-30", ["s00", "s01", "s02", "s03"]),
        Rectangle("2016-10-30", "2016-10-30", ["s30"]),
    ]


def test_a_gap_one_wider_than_max_gap_splits():
    # s00 → s04 leaves 3 series out, one more than max_gap.
    cells = _cells(("s00", "2016-10-30"), ("s04", "2016-10-30"))
    assert plan_rectangles(cells, SERIES, WINDOWS, max_gap=2) == [
        Rectangle("2016-10-30", "2016-10-30", ["s00"]),
        Rectangle("2016-10-30", "2016-10-30", ["s04"]),
    ]


def test_the_default_gap_is_sixteen_series():
    assert DEFAULT_MAX_GAP == 16
    filled = plan_rectangles(_cells(("s00", "2016-10-30"), ("s17", "2016-10-30")), SERIES, WINDOWS)
    assert filled == [Rectangle("2016-10-30", "2016-10-30", _series(0, 17))]
    split = plan_rectangles(_cells(("s00", "2016-10-30"), ("s18", "2016-10-30")), SERIES, WINDOWS)
    assert split == [
        Rectangle("2016-10-30", "2016-10-30", ["s00"]),
        Rectangle("2016-10-30", "2016-10-30", ["s18"]),
    ]


def test_max_gap_zero_runs_only_adjacent_series_together():
    cells = _cells(*[(s, "2016-10-30") for s in ["s05", "s06", "s08"]])
    assert plan_rectangles(cells, SERIES, WINDOWS, max_gap=0) == [
        Rectangle("2016-10-30", "2016-10-30", ["s05", "s06"]),
        Rectangle("2016-10-30", "2016-10-30", ["s08"]),
    ]


def test_a_series_needing_consecutive_windows_is_one_run_over_them():
    cells = _cells(("s05", "2016-10-16"), ("s05", "2016-10-23"), ("s05", "2016-10-30"))
    assert plan_rectangles(cells, SERIES, WINDOWS) == [Rectangle("2016-10-16", "2016-10-30", ["s05"])]


def test_windows_without_changes_between_changed_ones_are_not_run():
    # A correction of older data plus this week's data (or a monthly series in weekly windows):
    # the unchanged week between is left out.
    cells = _cells(("s05", "2016-10-09"), ("s05", "2016-10-23"), ("s05", "2016-10-30"))
    assert plan_rectangles(cells, SERIES, WINDOWS) == [
        Rectangle("2016-10-09", "2016-10-09", ["s05"]),
        Rectangle("2016-10-23", "2016-10-30", ["s05"]),
    ]


def test_a_rectangle_inside_a_larger_one_is_not_run_again():
    cells = _cells(
        *[(s, w) for s in ("s00", "s01", "s02", "s03") for w in ("2016-10-23", "2016-10-30")],
        ("s04", "2016-10-30"),
    )
    # s01 … s03 need 2016-10-23 … 2016-10-30 like s00; s04 only the last week, inside nothing
    # larger: two runs, not three.
    assert plan_rectangles(cells, SERIES, WINDOWS) == [
        Rectangle("2016-10-23", "2016-10-30", ["s00", "s01", "s02", "s03"]),
        Rectangle("2016-10-30", "2016-10-30", ["s04"]),
    ]


def test_series_with_different_window_ranges_run_separately():
    cells = _cells(
        ("s00", "2016-10-09"),
        ("s00", "2016-10-16"),
        ("s02", "2016-10-09"),
        ("s02", "2016-10-16"),
        ("s01", "2016-10-30"),
        ("s03", "2016-10-30"),
        ("s04", "2016-10-02"),
    )
    assert plan_rectangles(cells, SERIES, WINDOWS) == [
        Rectangle("2016-10-02", "2016-10-02", ["s04"]),
        Rectangle("2016-10-09", "2016-10-16", ["s00", "s01", "s02"]),
        Rectangle("2016-10-30", "2016-10-30", ["s01", "s02", "s03"]),
    ]


def test_series_ranges_follow_partition_order_not_key_order():
    # Dagster ranges over dynamic partitions in the order keys were added.
    order = ["zeta", "alpha", "mid", "beta"]
    cells = _cells(("zeta", "2016-10-30"), ("mid", "2016-10-30"))
    assert plan_rectangles(cells, order, WINDOWS) == [
        Rectangle("2016-10-30", "2016-10-30", ["zeta", "alpha", "mid"])
    ]


def test_duplicate_cells_change_nothing():
    cells = _cells(("s01", "2016-10-30"), ("s01", "2016-10-30"), ("s02", "2016-10-30"))
    assert plan_rectangles(cells, SERIES, WINDOWS) == [Rectangle("2016-10-30", "2016-10-30", ["s01", "s02"])]


def test_every_cell_is_covered_and_no_run_spans_windows_its_group_does_not_need():
    rng = random.Random(7)
    pairs = {(rng.choice(SERIES), rng.choice(WINDOWS)) for _ in range(60)}
    cells = _cells(*sorted(pairs))
    rectangles = plan_rectangles(cells, SERIES, WINDOWS, max_gap=3)

    position = {w: i for i, w in enumerate(WINDOWS)}
    for series, window in pairs:
        assert any(
            series in r.series_keys
            and position[r.first_window] <= position[window] <= position[r.last_window]
            for r in rectangles
        ), (series, window)

    changed = {(series, position[window]) for series, window in pairs}
    for r in rectangles:
        # A rectangle only spans windows its end series changed in (no empty weeks between),
        # and its series are contiguous in partition order.
        for end in (r.series_keys[0], r.series_keys[-1]):
            for window in range(position[r.first_window], position[r.last_window] + 1):
                assert (end, window) in changed, (r, end, window)
        first = SERIES.index(r.series_keys[0])
        assert r.series_keys == SERIES[first : first + len(r.series_keys)]
