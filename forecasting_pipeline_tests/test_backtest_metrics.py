"""Backtest metrics, ensembles and conformal intervals on small generated fold frames (no database)."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import polars as pl
import pytest

from forecasting_pipeline.modeling.calibration import (
    apply_conformal,
    choose_interval_method,
    conformal_quantiles,
    heldout_coverage,
)
from forecasting_pipeline.modeling.ensembles import (
    RANKED_IN_SAMPLE,
    combine_forecasts,
    ensemble_folds,
    ensemble_members,
    ensemble_names,
)
from forecasting_pipeline.modeling.evaluation import evaluate_backtest, fold_scores, series_scales

START = datetime(2024, 1, 1)
BOUNDS = ("lo_80", "hi_80", "lo_95", "hi_95")


def _day(n: int) -> datetime:
    return START + timedelta(days=n)


def _fold_frame(rows: list[dict]) -> pl.DataFrame:
    """Rows with unique_id, model_name, fold (0-based), step, y, yhat and optional bounds."""
    frame = pl.DataFrame(rows, infer_schema_length=None)
    for column in BOUNDS:
        if column not in frame.columns:
            frame = frame.with_columns(pl.lit(None, dtype=pl.Float64).alias(column))
    cutoff = pl.lit(START) + pl.duration(days=100 + 10 * pl.col("fold"))
    return frame.select(
        "unique_id",
        "model_name",
        cutoff.alias("cutoff"),
        (cutoff + pl.duration(days=pl.col("step"))).alias("ds"),
        pl.col("step").cast(pl.Int64),
        pl.col("y").cast(pl.Float64),
        pl.col("yhat").cast(pl.Float64),
        *(pl.col(c).cast(pl.Float64) for c in BOUNDS),
    )


def _history(values: dict[str, list[float]]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "unique_id": [uid for uid, ys in values.items() for _ in ys],
            "ds": [_day(i) for ys in values.values() for i in range(len(ys))],
            "y": [float(y) for ys in values.values() for y in ys],
        }
    )


def _value(frame: pl.DataFrame, metric: str, **keys: object) -> float:
    selected = frame.filter(pl.col("metric") == metric, *(pl.col(k) == v for k, v in keys.items()))
    assert selected.height == 1, (metric, keys, selected)
    return selected.item(0, "value")


# --- evaluation -------------------------------------------------------------------------------------


def test_series_scales_seasonal_naive_and_fallbacks():
    history = _history(
        {
            "seasonal": [0, 0, 2, 2, 4, 4],  # lag-2 differences are all 2
            "short": [1, 4],  # <= season points: lag 1 -> 3
            "constant": [5, 5, 5, 5, 5],  # naive error 0 -> mean |y| = 5
            "negative": [-3, -3, -3],  # mean |y|, not mean y
            "zeros": [0, 0, 0, 0],  # everything 0 -> 1.0
            "single": [7],  # no difference at all -> |y|
        }
    )
    scales = dict(series_scales(history, season=2).iter_rows())
    assert scales == pytest.approx(
        {"seasonal": 2.0, "short": 3.0, "constant": 5.0, "negative": 3.0, "zeros": 1.0, "single": 7.0}
    )


def _tiny_backtest() -> tuple[pl.DataFrame, pl.DataFrame]:
    rows = []
    # Series a: 2 folds x 2 steps; errors y - yhat = -2, 2, 0, -4.
    for fold, step, y, yhat, lo80, hi80 in [
        (0, 1, 10.0, 12.0, 11.0, 13.0),  # 80% misses (y below)
        (0, 2, 20.0, 18.0, 15.0, 21.0),
        (1, 1, 30.0, 30.0, 29.0, 31.0),
        (1, 2, 40.0, 44.0, 39.0, 49.0),
    ]:
        rows.append(
            {
                "unique_id": "a",
                "model_name": "A",
                "fold": fold,
                "step": step,
                "y": y,
                "yhat": yhat,
                "lo_80": lo80,
                "hi_80": hi80,
                "lo_95": yhat - 10,
                "hi_95": yhat + 10,
            }
        )
        rows.append({"unique_id": "a", "model_name": "N", "fold": fold, "step": step, "y": y, "yhat": y + 1})
    # Series b: one fold, error 6 at both steps (scale 3).
    for step in (1, 2):
        for model in ("A", "N"):
            rows.append(
                {"unique_id": "b", "model_name": model, "fold": 1, "step": step, "y": 100.0, "yhat": 94.0}
            )
    history = _history({"a": [0, 0, 2, 2, 4, 4], "b": [0, 0, 3, 3]})
    return _fold_frame(rows), history


def test_metrics_match_hand_computation():
    folds, history = _tiny_backtest()
    result = evaluate_backtest(folds, history, season=2)
    series = result.series
    y = np.array([10.0, 20.0, 30.0, 40.0])
    yhat = np.array([12.0, 18.0, 30.0, 44.0])
    e = np.abs(y - yhat)

    assert _value(series, "mae", unique_id="a", model_name="A") == pytest.approx(2.0)
    assert _value(series, "rmse", unique_id="a", model_name="A") == pytest.approx(np.sqrt(6.0))
    assert _value(series, "mape", unique_id="a", model_name="A") == pytest.approx(100 * np.mean(e / y))
    smape = 200 * np.mean(e / (np.abs(y) + np.abs(yhat)))
    assert _value(series, "smape", unique_id="a", model_name="A") == pytest.approx(smape)
    assert _value(series, "mase", unique_id="a", model_name="A") == pytest.approx(2.0 / 2.0)
    assert _value(series, "coverage_80", unique_id="a", model_name="A") == pytest.approx(75.0)
    assert _value(series, "coverage_95", unique_id="a", model_name="A") == pytest.approx(100.0)
    assert _value(series, "width_80", unique_id="a", model_name="A") == pytest.approx(np.mean([2, 6, 2, 10]))
    assert _value(series, "width_95", unique_id="a", model_name="A") == pytest.approx(20.0)

    quantiles = {0.025: yhat - 10, 0.1: np.array([11.0, 15, 29, 39]), 0.5: yhat}
    quantiles |= {0.9: np.array([13.0, 21, 31, 49]), 0.975: yhat + 10}
    pinball = [np.mean(np.maximum(q * (y - p), (q - 1) * (y - p))) for q, p in quantiles.items()]
    assert _value(series, "scaled_mql", unique_id="a", model_name="A") == pytest.approx(
        np.mean(pinball) / 2.0
    )

    # b: MASE 6 / 3; the overall value is the mean over series, not over pooled rows.
    assert _value(series, "mase", unique_id="b", model_name="A") == pytest.approx(2.0)
    assert _value(result.overall, "mase", model_name="A") == pytest.approx((1.0 + 2.0) / 2)
    assert _value(result.overall, "mae", model_name="A") == pytest.approx((2.0 + 6.0) / 2)
    assert _value(result.overall, "series", model_name="A") == 2.0

    # Step 1 of A pools series and folds: |e| = 2, 0 (a, scale 2) and 6 (b, scale 3).
    steps = result.steps
    assert _value(steps, "mae", model_name="A", step=1) == pytest.approx((2 + 0 + 6) / 3)
    assert _value(steps, "mase", model_name="A", step=1) == pytest.approx((1.0 + 0.0 + 2.0) / 3)
    # b has no bounds for A, so step-1 coverage is over a's two rows only: one of them inside.
    assert _value(steps, "coverage_80", model_name="A", step=1) == pytest.approx(50.0)


def test_model_without_intervals_gets_point_metrics_only():
    folds, history = _tiny_backtest()
    result = evaluate_backtest(folds, history, season=2)
    metrics = set(result.series.filter(model_name="N").get_column("metric"))
    assert metrics == {"mae", "rmse", "mape", "smape", "mase"}
    assert set(result.steps.filter(model_name="N").get_column("metric")) == metrics
    assert set(result.overall.filter(model_name="N").get_column("metric")) == {*metrics, "series"}
    assert result.series.get_column("value").is_finite().all()


def test_fold_scores_are_scaled_per_fold():
    folds, history = _tiny_backtest()
    scores = fold_scores(folds, series_scales(history, season=2)).filter(model_name="A")
    assert scores.filter(unique_id="a").sort("cutoff").get_column("score").to_list() == pytest.approx(
        [1.0, 1.0]
    )
    assert scores.filter(unique_id="b").get_column("score").to_list() == pytest.approx([2.0])


def test_missing_scale_is_an_error():
    folds, history = _tiny_backtest()
    with pytest.raises(ValueError, match="no scale"):
        fold_scores(folds, series_scales(history.filter(unique_id="a"), season=2))


# --- ensembles --------------------------------------------------------------------------------------

# Absolute error of each model per fold (y = 100, scale 1). On s1, A wins folds 0-1 and B fold 2;
# on s2, C wins everywhere. D is perfect but misses fold 2 of s1, so it may never be a member there.
ERRORS = {
    "s1": {"A": [1, 1, 10], "B": [5, 5, 0], "C": [20, 20, 20], "D": [0, 0, None]},
    "s2": {"A": [3, 3, 3], "B": [6, 6, 6], "C": [0.5, 0.5, 0.5]},
}


def _ensemble_backtest() -> tuple[pl.DataFrame, pl.DataFrame]:
    rows = [
        {"unique_id": uid, "model_name": model, "fold": fold, "step": step, "y": 100.0, "yhat": 100.0 + err}
        for uid, models in ERRORS.items()
        for model, errors in models.items()
        for fold, err in enumerate(errors)
        if err is not None
        for step in (1, 2)
    ]
    folds = _fold_frame(rows).with_columns(
        (pl.col("yhat") - 1).alias("lo_80"), (pl.col("yhat") + 1).alias("hi_80")
    )
    scales = pl.DataFrame({"unique_id": ["s1", "s2"], "scale": [1.0, 1.0]})
    return folds, fold_scores(folds, scales)


def _forecast_of(frame: pl.DataFrame, uid: str, model: str, fold: int) -> float:
    cutoff = START + timedelta(days=100 + 10 * fold)
    rows = frame.filter(unique_id=uid, model_name=model, cutoff=cutoff)
    assert rows.height == 2
    return rows.get_column("yhat").unique().item()


def test_members_are_ranked_on_the_other_folds():
    folds, scores = _ensemble_backtest()
    ensembles = ensemble_folds(folds, scores, top_k=2)
    assert set(ensembles.get_column("model_name")) == set(ensemble_names(2))
    # Fold 2 is forecast by members ranked on folds 0-1, where A (error 1) beats B (5): no peeking at
    # B's perfect fold 2. Fold 0 is ranked on folds 1-2: B (2.5) beats A (5.5).
    assert _forecast_of(ensembles, "s1", "BestPerSeries", 2) == 110.0
    assert _forecast_of(ensembles, "s1", "BestPerSeries", 0) == 105.0
    # MeanTop2 is the mean of the two best (A, B; never D, which lacks fold 2, nor C).
    assert _forecast_of(ensembles, "s1", "MeanTop2", 2) == pytest.approx((110 + 100) / 2)
    assert _forecast_of(ensembles, "s1", "MeanTop2", 0) == pytest.approx((101 + 105) / 2)
    # Bounds are combined the same way.
    fold2 = ensembles.filter(unique_id="s1", model_name="MeanTop2", cutoff=START + timedelta(days=120))
    assert fold2.get_column("lo_80").to_list() == pytest.approx([104.0, 104.0])
    assert fold2.get_column("lo_95").null_count() == 2
    # Per-series selection: C on s2.
    assert _forecast_of(ensembles, "s2", "BestPerSeries", 1) == 100.5
    assert _forecast_of(ensembles, "s2", "MeanTop2", 1) == pytest.approx((100.5 + 103) / 2)
    # Group ranking over both series on folds 0-1: A (2), B (5.5), C (10.25); s2 then uses A and B.
    assert _forecast_of(ensembles, "s2", "GroupMeanTop2", 2) == pytest.approx((103 + 106) / 2)
    assert not ensembles.get_column(RANKED_IN_SAMPLE).any()
    assert ensembles.select(folds.columns).schema == folds.schema


def test_single_fold_ranks_in_sample_and_says_so():
    folds, scores = _ensemble_backtest()
    last = pl.col("cutoff") == pl.col("cutoff").max()
    ensembles = ensemble_folds(folds.filter(last), scores.filter(last), top_k=2, group_rank=False)
    assert ensembles.get_column(RANKED_IN_SAMPLE).all()
    assert _forecast_of(ensembles, "s1", "BestPerSeries", 2) == 100.0
    assert not ensembles.get_column("model_name").str.starts_with("Group").any()


def test_members_over_all_folds_and_combined_future_forecasts():
    _, scores = _ensemble_backtest()
    members = ensemble_members(scores, top_k=3)
    best = members.filter(ensemble_name="BestPerSeries")
    assert dict(best.select("unique_id", "model_name").iter_rows()) == {"s1": "B", "s2": "C"}
    assert set(members.filter(unique_id="s1", ensemble_name="MeanTop3").get_column("model_name")) == {
        "A",
        "B",
        "C",
    }

    future = pl.DataFrame(
        {
            "unique_id": ["s1"] * 4,
            "model_name": ["A", "B", "C", "D"],
            "ds": [_day(200)] * 4,
            "step": [1] * 4,
            "yhat": [10.0, 20.0, 60.0, 0.0],
            "lo_80": [9.0, 19.0, None, 0.0],
            "hi_80": [11.0, 21.0, None, 0.0],
            "lo_95": [None] * 4,
            "hi_95": [None] * 4,
        },
        schema_overrides={"lo_95": pl.Float64, "hi_95": pl.Float64},
    )
    combined = combine_forecasts(future, members)
    assert combined.columns == future.columns
    by_name = {row["model_name"]: row for row in combined.iter_rows(named=True)}
    assert by_name["MeanTop3"]["yhat"] == pytest.approx(30.0)
    assert by_name["MedianTop3"]["yhat"] == pytest.approx(20.0)
    assert by_name["BestPerSeries"]["yhat"] == 20.0
    assert by_name["MeanTop3"]["lo_80"] == pytest.approx(14.0)  # C's null bound is ignored
    assert by_name["MeanTop3"]["lo_95"] is None


# --- calibration ------------------------------------------------------------------------------------


def test_conformal_quantile_is_the_finite_sample_rank():
    rows = [
        {"unique_id": f"s{i}", "model_name": "M", "fold": 0, "step": 1, "y": float(i), "yhat": 0.0}
        for i in range(1, 11)
    ]
    # Model P has 5 residuals per step: its two steps are pooled into one quantile of 10.
    rows += [
        {"unique_id": f"s{i}", "model_name": "P", "fold": 0, "step": 1 + i % 2, "y": float(i), "yhat": 0.0}
        for i in range(1, 11)
    ]
    scales = pl.DataFrame({"unique_id": [f"s{i}" for i in range(1, 11)], "scale": [1.0] * 10})
    quantiles = conformal_quantiles(_fold_frame(rows), scales, levels=(80, 95))
    m = quantiles.filter(model_name="M")
    # ceil(11 * 0.8) = 9th smallest; ceil(11 * 0.95) = 11 > 10, capped at the largest.
    assert dict(m.select("level", "quantile").iter_rows()) == {80: 9.0, 95: 10.0}
    pooled = quantiles.filter(model_name="P", level=80)
    assert pooled.get_column("step").to_list() == [1, 2]
    assert pooled.get_column("quantile").to_list() == [9.0, 9.0]
    assert pooled.get_column("samples").to_list() == [10, 10]


def _noisy_backtest(seed: int = 7) -> tuple[pl.DataFrame, pl.DataFrame]:
    """300 series of Gaussian noise around a known level, at very different magnitudes."""
    rng = np.random.default_rng(seed)
    n_series, n_folds, horizon, n_history = 300, 4, 6, 60
    ids = [f"s{i:03d}" for i in range(n_series)]
    level = rng.uniform(10, 10_000, n_series)
    sigma = level * rng.uniform(0.02, 0.3, n_series)
    history = pl.DataFrame(
        {
            "unique_id": np.repeat(ids, n_history),
            "ds": [_day(i) for _ in ids for i in range(n_history)],
            "y": np.repeat(level, n_history)
            + rng.normal(size=n_series * n_history) * np.repeat(sigma, n_history),
        }
    )
    per_series = n_folds * horizon
    base = pl.DataFrame(
        {
            "unique_id": np.repeat(ids, per_series),
            "fold": np.tile(np.repeat(np.arange(n_folds), horizon), n_series),
            "step": np.tile(np.arange(1, horizon + 1), n_series * n_folds),
            "y": np.repeat(level, per_series)
            + rng.normal(size=n_series * per_series) * np.repeat(sigma, per_series),
            "yhat": np.repeat(level, per_series),
            "sigma": np.repeat(sigma, per_series),
        }
    )
    models = [
        base.with_columns(pl.lit("NoIntervals").alias("model_name")),
        base.with_columns(
            pl.lit("Narrow").alias("model_name"),
            *(
                (pl.col("yhat") + sign * 0.5 * pl.col("sigma")).alias(f"{side}_{lv}")
                for lv in (80, 95)
                for side, sign in (("lo", -1), ("hi", 1))
            ),
        ),
        base.with_columns(
            pl.lit("Exact").alias("model_name"),
            *(
                (pl.col("yhat") + sign * z * pl.col("sigma")).alias(f"{side}_{lv}")
                for lv, z in ((80, 1.2816), (95, 1.96))
                for side, sign in (("lo", -1), ("hi", 1))
            ),
        ),
    ]
    folds = _fold_frame([row for frame in models for row in frame.drop("sigma").to_dicts()])
    return folds, history


def test_conformal_intervals_hold_nominal_coverage_out_of_sample():
    folds, history = _noisy_backtest()
    scales = series_scales(history, season=1)
    coverage = heldout_coverage(folds, scales)
    conformal = coverage.filter(method="conformal")
    assert set(conformal.get_column("model_name")) == {"NoIntervals", "Narrow", "Exact"}
    for row in conformal.iter_rows(named=True):
        assert abs(row["coverage"] - row["level"]) <= 5.0, row
        assert row["samples"] == 300 * 6
    native = coverage.filter(method="native")
    assert set(native.get_column("model_name")) == {"Narrow", "Exact"}

    choice = dict(choose_interval_method(coverage).iter_rows())
    assert choice == {"Exact": "native", "Narrow": "conformal", "NoIntervals": "conformal"}


def test_heldout_coverage_needs_two_cutoffs():
    folds, history = _noisy_backtest()
    one = heldout_coverage(
        folds.filter(pl.col("cutoff") == pl.col("cutoff").min()), series_scales(history, 1)
    )
    assert one.height == 0
    assert one.columns == ["model_name", "method", "level", "coverage", "samples"]


def test_apply_conformal_keeps_bounds_without_quantiles():
    forecasts = pl.DataFrame(
        {
            "unique_id": ["a", "a", "b"],
            "model_name": ["M", "Other", "M"],
            "step": [1, 1, 2],
            "yhat": [10.0, 10.0, 50.0],
            "lo_80": [9.0, 8.0, None],
            "hi_80": [11.0, 12.0, None],
            "extra": ["x", "y", "z"],
        }
    )
    quantiles = pl.DataFrame(
        {
            "model_name": ["M", "M"],
            "step": [1, 2],
            "level": [80, 80],
            "quantile": [0.5, 2.0],
            "samples": [20, 20],
        }
    )
    scales = pl.DataFrame({"unique_id": ["a", "b"], "scale": [4.0, 10.0]})
    out = apply_conformal(forecasts, quantiles, scales)
    assert out.columns == forecasts.columns
    assert out.select("lo_80", "hi_80").rows() == [(8.0, 12.0), (8.0, 12.0), (30.0, 70.0)]
    assert out.get_column("extra").to_list() == ["x", "y", "z"]
