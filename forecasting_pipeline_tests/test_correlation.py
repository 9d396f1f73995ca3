"""Driver and cross-series correlations agree with scipy on the same rows; degenerate cases are null."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import polars as pl
import pytest
from scipy import stats

from forecasting_pipeline.modeling.correlation import (
    correlation_heatmap,
    cross_series_correlations,
    driver_correlations,
    lagged_correlations,
)

TOLERANCE = 1e-6
START = datetime(2021, 1, 4)
MAX_LAG = 4
LEAD = 2


def _frame(columns: dict[str, object]) -> pl.DataFrame:
    return pl.DataFrame(columns).with_columns(pl.col("ds").cast(pl.Datetime("ns")))


def _grid(points: int, offset: int = 0) -> list[datetime]:
    return [START + timedelta(days=offset + i) for i in range(points)]


@pytest.fixture(scope="module")
def history() -> pl.DataFrame:
    """4 series × 300 days: `noise` has nulls and a weak lag-0 link; `lead` drives y 2 steps ahead."""
    rng = np.random.default_rng(20240605)
    frames = []
    for s in range(4):
        points = 300
        lead = rng.normal(size=points)
        noise = rng.normal(size=points)
        y = np.full(points, np.nan)
        y[LEAD:] = 1.5 * lead[:-LEAD]
        y = y + 0.3 * noise + rng.normal(scale=0.5, size=points) + 100.0 * (s + 1)
        y[:LEAD] = rng.normal(size=LEAD)
        noise_col = [None if rng.random() < 0.1 else float(v) for v in noise]
        frames.append(
            _frame(
                {
                    "unique_id": [f"series-{s}"] * points,
                    "ds": _grid(points),
                    "y": y,
                    "noise": noise_col,
                    "lead": lead,
                }
            )
        )
    # Shuffled on purpose: lags must follow time order, not row order.
    return pl.concat(frames).sample(fraction=1.0, shuffle=True, seed=7)


def _pairs(series: pl.DataFrame, driver: str, lag: int) -> tuple[np.ndarray, np.ndarray]:
    """Reference pairs (y_t, driver_{t-lag}) with either side missing dropped, built independently."""
    series = series.sort("ds")
    y = series["y"].to_numpy().astype(float)
    x = series[driver].cast(pl.Float64).to_numpy()
    if lag:
        y, x = y[lag:], x[:-lag]
    keep = ~np.isnan(x) & ~np.isnan(y)
    return y[keep], x[keep]


def test_driver_pearson_and_spearman_match_scipy(history: pl.DataFrame) -> None:
    result = driver_correlations(history, ["noise", "lead"], MAX_LAG)
    assert result.height == 8
    assert result.schema["best_lag"] == pl.Int32
    for row in result.iter_rows(named=True):
        series = history.filter(pl.col("unique_id") == row["unique_id"])
        y, x = _pairs(series, row["driver"], 0)
        assert row["n"] == len(y)
        assert row["pearson"] == pytest.approx(stats.pearsonr(y, x).statistic, abs=TOLERANCE)
        assert row["spearman"] == pytest.approx(stats.spearmanr(y, x).statistic, abs=TOLERANCE)
    assert result.filter(pl.col("driver") == "noise")["n"].max() < 300  # nulls were dropped pairwise


def test_spearman_ranks_ties_and_only_the_complete_pairs() -> None:
    # Heavy ties on both sides, and nulls that would shift the ranks if ranked before dropping.
    rng = np.random.default_rng(5)
    points = 120
    y = rng.integers(0, 6, size=points).astype(float)
    x = (y + rng.integers(-2, 3, size=points)).astype(float)
    x_col = [None if i % 7 == 0 else float(v) for i, v in enumerate(x)]
    y_col = [None if i % 11 == 0 else float(v) for i, v in enumerate(y)]
    history = _frame({"unique_id": ["t"] * points, "ds": _grid(points), "y": y_col, "x": x_col})
    row = driver_correlations(history, ["x"], 0).row(0, named=True)
    keep = np.array([a is not None and b is not None for a, b in zip(x_col, y_col, strict=True)])
    assert row["n"] == keep.sum()
    expected = stats.spearmanr(y[keep], x[keep]).statistic
    assert row["spearman"] == pytest.approx(expected, abs=TOLERANCE)


def test_lagged_pearson_matches_scipy_for_every_lag(history: pl.DataFrame) -> None:
    lagged = lagged_correlations(history, ["noise", "lead"], MAX_LAG)
    assert lagged.height == 4 * 2 * (MAX_LAG + 1)
    assert lagged.schema == {
        "unique_id": pl.String,
        "driver": pl.String,
        "lag": pl.Int32,
        "pearson": pl.Float64,
        "n": pl.Int64,
    }
    for row in lagged.iter_rows(named=True):
        series = history.filter(pl.col("unique_id") == row["unique_id"])
        y, x = _pairs(series, row["driver"], row["lag"])
        assert row["n"] == len(y)
        assert row["pearson"] == pytest.approx(stats.pearsonr(y, x).statistic, abs=TOLERANCE)


def test_best_lag_finds_the_leading_driver(history: pl.DataFrame) -> None:
    result = driver_correlations(history, ["noise", "lead"], MAX_LAG)
    lead = result.filter(pl.col("driver") == "lead")
    assert lead["best_lag"].to_list() == [LEAD] * 4
    lagged = lagged_correlations(history, ["lead"], MAX_LAG).filter(pl.col("lag") == LEAD)
    joined = lead.join(lagged, on=["unique_id", "driver"])
    np.testing.assert_allclose(joined["best_lag_pearson"], joined["pearson_right"])
    assert (lead["best_lag_pearson"] > 0.8).all()


def test_ties_in_best_lag_go_to_the_smallest_lag() -> None:
    # y alternates, so the driver at lag 0 and lag 2 are the same sequence: |pearson| ties exactly.
    points = 40
    y = np.tile([0.0, 1.0], points // 2)
    history = _frame({"unique_id": ["a"] * points, "ds": _grid(points), "y": y, "x": y.copy()})
    row = driver_correlations(history, ["x"], 3).row(0, named=True)
    assert row["best_lag"] == 0
    assert row["best_lag_pearson"] == pytest.approx(1.0)


def test_constant_driver_and_too_few_pairs_give_null() -> None:
    points = 20
    history = pl.concat(
        [
            _frame(
                {
                    "unique_id": ["flat"] * points,
                    "ds": _grid(points),
                    "y": np.arange(points, dtype=float),
                    "x": [0.1] * points,
                }
            ),
            # Only two rows where both sides are present.
            _frame(
                {
                    "unique_id": ["sparse"] * points,
                    "ds": _grid(points),
                    "y": np.arange(points, dtype=float) ** 2,
                    "x": [1.0, 3.0] + [None] * (points - 2),
                }
            ),
        ]
    )
    lagged = lagged_correlations(history, ["x"], 2)
    assert lagged["pearson"].null_count() == lagged.height
    result = driver_correlations(history, ["x"], 2).sort("unique_id")
    assert result["unique_id"].to_list() == ["flat", "sparse"]
    assert result["pearson"].null_count() == 2
    assert result["spearman"].null_count() == 2
    assert result["best_lag"].null_count() == 2
    assert result["n"].to_list() == [points, 2]


def test_no_drivers_gives_empty_frames_with_the_schema(history: pl.DataFrame) -> None:
    assert lagged_correlations(history, [], 3).is_empty()
    empty = driver_correlations(history, [], 3)
    assert empty.is_empty()
    assert empty.columns == [
        "unique_id",
        "driver",
        "pearson",
        "spearman",
        "n",
        "best_lag",
        "best_lag_pearson",
    ]


@pytest.fixture(scope="module")
def ragged_panel() -> pl.DataFrame:
    """7 series over different spans, a shared factor so peers differ in strength, some gaps."""
    rng = np.random.default_rng(11)
    factor = rng.normal(size=200).cumsum()
    spans = [(0, 200), (10, 150), (40, 200), (0, 60), (55, 120), (100, 200), (0, 200)]
    frames = []
    for s, (first, last) in enumerate(spans):
        loading = rng.uniform(-1.0, 1.0)
        y = 1_000.0 * s + loading * factor[first:last] + rng.normal(size=last - first)
        if s == 2:
            y[rng.random(size=y.size) < 0.2] = np.nan
        frames.append(
            _frame({"unique_id": [f"id{s}"] * (last - first), "ds": _grid(last - first, first), "y": y})
        )
    # A series with no timestamp in common with id3 (rows 0..59): that pair must be skipped.
    frames.append(_frame({"unique_id": ["late"] * 30, "ds": _grid(30, 170), "y": rng.normal(size=30)}))
    return pl.concat(frames).with_columns(pl.col("y").fill_nan(None))


@pytest.mark.parametrize("block_size", [3, 512])
def test_cross_series_matches_scipy_on_overlaps(ragged_panel: pl.DataFrame, block_size: int) -> None:
    top_k = 3
    result = cross_series_correlations(ragged_panel, top_k=top_k, min_overlap=10, block_size=block_size)
    wide = ragged_panel.drop_nulls("y").pivot(on="unique_id", index="ds", values="y")
    assert result.schema["rank"] == pl.Int32
    assert (result["unique_id"] != result["peer_id"]).all()
    per_series = result.group_by("unique_id").agg(pl.len().alias("peers"), pl.col("rank").max())
    assert (per_series["peers"] <= top_k).all()
    assert per_series["peers"].to_list() == per_series["rank"].to_list()
    assert per_series.height == ragged_panel["unique_id"].n_unique()
    for row in result.iter_rows(named=True):
        overlap = wide.select(row["unique_id"], row["peer_id"]).drop_nulls()
        assert row["n"] == overlap.height >= 10
        expected = stats.pearsonr(overlap[:, 0].to_numpy(), overlap[:, 1].to_numpy()).statistic
        assert row["pearson"] == pytest.approx(expected, abs=TOLERANCE)
    # Ranks follow |pearson| within each series.
    ordered = result.sort("unique_id", "rank").with_columns(pl.col("pearson").abs().alias("strength"))
    assert (
        ordered.group_by("unique_id")
        .agg((pl.col("strength").diff().drop_nulls() <= 0).all().alias("descending"))["descending"]
        .all()
    )
    # id3 and late never overlap.
    assert result.filter(
        ((pl.col("unique_id") == "id3") & (pl.col("peer_id") == "late"))
        | ((pl.col("unique_id") == "late") & (pl.col("peer_id") == "id3"))
    ).is_empty()


def test_cross_series_block_size_does_not_change_the_answer(ragged_panel: pl.DataFrame) -> None:
    small = cross_series_correlations(ragged_panel, top_k=4, block_size=2)
    large = cross_series_correlations(ragged_panel, top_k=4)
    # BLAS sums blocks of other shapes in another order: equal up to rounding, not bit for bit.
    assert small.drop("pearson").equals(large.drop("pearson"))
    np.testing.assert_allclose(small["pearson"].to_numpy(), large["pearson"].to_numpy(), rtol=0, atol=1e-12)


def test_cross_series_min_overlap_and_constant_overlap_are_skipped() -> None:
    points = 30
    panel = pl.concat(
        [
            _frame({"unique_id": ["a"] * points, "ds": _grid(points), "y": np.sin(np.arange(points))}),
            _frame({"unique_id": ["b"] * points, "ds": _grid(points), "y": np.cos(np.arange(points))}),
            _frame({"unique_id": ["flat"] * points, "ds": _grid(points), "y": [2.7] * points}),
            _frame({"unique_id": ["short"] * 5, "ds": _grid(5), "y": np.arange(5.0)}),
        ]
    )
    result = cross_series_correlations(panel, top_k=5, min_overlap=10)
    ids = set(result["unique_id"].to_list()) | set(result["peer_id"].to_list())
    assert ids == {"a", "b"}
    assert result["pearson"].null_count() == 0


def test_heatmap_is_png_for_every_combination(history: pl.DataFrame, ragged_panel: pl.DataFrame) -> None:
    lagged = lagged_correlations(history, ["noise", "lead"], MAX_LAG)
    cross = cross_series_correlations(ragged_panel, top_k=3)
    no_drivers = lagged_correlations(history, [], MAX_LAG)
    for image in (
        correlation_heatmap(lagged, cross, "drivers and peers"),
        correlation_heatmap(lagged, None, "drivers only"),
        correlation_heatmap(no_drivers, cross, "peers only"),
        correlation_heatmap(no_drivers, cross.clear(), "nothing"),
        correlation_heatmap(no_drivers, None, "nothing"),
    ):
        assert image.startswith(b"\x89PNG")
        assert len(image) < 200_000
