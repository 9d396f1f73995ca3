"""No backtest fold ever sees data after its cutoff, for statistical and neural families alike.

The proof is by perturbation on real prices: everything after a fold's cutoff is replaced by
wild values, and that fold's forecasts (and every earlier fold's) must not move. A family that
leaked later data into a fold — through refitting on the full series, a scaler fitted on all
points, or a misplaced window — would change.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import polars as pl
import pytest

from forecasting_pipeline.datasets import EPF_FR_BE
from forecasting_pipeline.modeling.backtest import (
    FoldPlan,
    affordable_folds,
    cross_validate_local,
    cross_validate_neural,
)
from forecasting_pipeline.modeling.catalog import NeuralShape, load_catalog, neural_params

HORIZON = 24
PLAN = FoldPlan(horizon=HORIZON, n_windows=3, step_size=HORIZON, refit=True)


@pytest.fixture(scope="module")
def prices() -> pd.DataFrame:
    """The last 20 days of both bundled price series, and a third ending a day earlier (ragged)."""
    frame = EPF_FR_BE.load()[["unique_id", "ds", "y"]]
    recent = frame.groupby("unique_id").tail(480)
    ragged = recent[recent["unique_id"] == "FR"].iloc[:-24].assign(unique_id="FR-early")
    return pd.concat([recent, ragged], ignore_index=True)


def _perturbed_after(frame: pd.DataFrame, cutoffs: pd.DataFrame) -> pd.DataFrame:
    """Every value after each series' cutoff replaced by something no model could predict."""
    joined = frame.merge(cutoffs, on="unique_id")
    later = joined["ds"] > joined["cutoff"]
    out = frame.copy()
    out.loc[later.to_numpy(), "y"] = out.loc[later.to_numpy(), "y"] * 10 + 5_000
    return out


def _fold_cutoffs(folds: pl.DataFrame, fold: int) -> pd.DataFrame:
    """Each series' cutoff of its `fold`-th fold (0 = earliest)."""
    ranked = folds.select("unique_id", "cutoff").unique().sort("unique_id", "cutoff")
    chosen = ranked.group_by("unique_id", maintain_order=True).agg(pl.col("cutoff").get(fold))
    return chosen.to_pandas()


def _folds_up_to(folds: pl.DataFrame, cutoffs: pd.DataFrame) -> pl.DataFrame:
    limits = (
        pl.from_pandas(cutoffs)
        .rename({"cutoff": "limit"})
        .with_columns(pl.col("limit").cast(pl.Datetime("us")))
    )
    return (
        folds.with_columns(pl.col("cutoff").cast(pl.Datetime("us")))
        .join(limits, on="unique_id")
        .filter(pl.col("cutoff") <= pl.col("limit"))
        .drop("limit", "y")
        .sort("model_name", "unique_id", "cutoff", "step")
    )


def _assert_same_forecasts(before: pl.DataFrame, after: pl.DataFrame) -> None:
    assert before.height == after.height > 0
    for column in ("yhat", "lo_80", "hi_80", "lo_95", "hi_95"):
        np.testing.assert_allclose(after[column].to_numpy(), before[column].to_numpy(), rtol=1e-6, atol=1e-6)


def test_local_families_never_see_data_after_a_fold_cutoff(prices):
    catalog = load_catalog()
    families = [(spec, spec.defaults) for spec in catalog.local()]

    def run(frame: pd.DataFrame) -> pl.DataFrame:
        folds, failed = cross_validate_local(frame, families, freq="h", season=24, plan=PLAN, n_jobs=1)
        assert failed == {}
        return folds

    folds = run(prices)
    assert sorted(folds["model_name"].unique()) == sorted(spec.name for spec, _ in families)
    # Three origins per series, counted from each series' own end (the ragged one included).
    assert folds.group_by("unique_id").agg(pl.col("cutoff").n_unique())["cutoff"].to_list() == [3, 3, 3]
    assert (folds["ds"] > folds["cutoff"]).all()
    for fold in range(PLAN.n_windows):
        cutoffs = _fold_cutoffs(folds, fold)
        again = run(_perturbed_after(prices, cutoffs))
        _assert_same_forecasts(_folds_up_to(folds, cutoffs), _folds_up_to(again, cutoffs))
    # The perturbation is visible where it should be: the last fold's actuals changed.
    assert not np.allclose(again["y"].to_numpy(), folds["y"].to_numpy())


def test_a_neural_family_trained_once_never_sees_data_after_any_fold_cutoff(prices):
    spec = load_catalog().family("NHITS")
    shape = NeuralShape(
        horizon=HORIZON,
        input_size=48,
        max_steps=5,
        seed=1,
        trainer_kwargs={"accelerator": "cpu", "devices": 1},
    )
    plan = FoldPlan(HORIZON, 3, HORIZON, refit=False)

    def run(frame: pd.DataFrame) -> pl.DataFrame:
        return cross_validate_neural(
            frame, spec, neural_params(spec, {"batch_size": 8}), shape, freq="h", plan=plan
        )

    folds = run(prices)
    assert (folds["ds"] > folds["cutoff"]).all()
    for fold in (0, 2):
        cutoffs = _fold_cutoffs(folds, fold)
        _assert_same_forecasts(
            _folds_up_to(folds, cutoffs), _folds_up_to(run(_perturbed_after(prices, cutoffs)), cutoffs)
        )


def test_a_series_too_short_for_the_whole_plan_is_backtested_on_the_folds_it_affords(prices):
    lengths = {"tiny": 50, "two-folds": 48 + 2 * HORIZON, "one-fold": 48 + HORIZON + 5}
    short = pd.concat(
        pd.DataFrame({"unique_id": name, "ds": pd.date_range("2016-01-01", periods=n, freq="h"), "y": 1.0})
        for name, n in lengths.items()
    )
    afforded = affordable_folds(pl.from_pandas(pd.concat([prices, short])), PLAN, min_train=48)
    assert dict(afforded.select("unique_id", "folds").iter_rows()) == {
        "BE": 3,
        "FR": 3,
        "FR-early": 3,
        "one-fold": 1,
        "tiny": 0,
        "two-folds": 2,
    }
