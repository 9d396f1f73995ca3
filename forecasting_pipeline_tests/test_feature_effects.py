"""Permutation importance of feature groups on a champion's backtest error (pure, no database).

The synthetic designs make the right answer known: an error built from one feature must be
attributed to that feature's group, noise must score about zero, and anything the within-series
permutation cannot see (series-level differences) must score zero.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from forecasting_pipeline.modeling.feature_effects import (
    IMPORTANCE_SCHEMA,
    RIDGE_GRID,
    EffectSettings,
    FeatureEffects,
    permutation_effects,
)

GROUPS = {"driver_a": "driver:driver_a", "driver_b": "driver:driver_b", "calendar_hour": "calendar"}


def _design(series: int = 20, cutoffs: int = 4, steps: int = 24, seed: int = 0) -> pl.DataFrame:
    """unique_id, cutoff, ds and three N(0, 1) features; error = 0.8 · driver_a + small noise."""
    rng = np.random.default_rng(seed)
    rows = series * cutoffs * steps
    ids = np.repeat([f"s{number:02d}" for number in range(series)], cutoffs * steps)
    origin = datetime(2024, 1, 1)
    cutoff_of_row = np.tile(np.repeat(np.arange(cutoffs), steps), series)
    step_of_row = np.tile(np.arange(steps), series * cutoffs)
    driver_a = rng.normal(size=rows)
    return pl.DataFrame(
        {
            "unique_id": ids,
            "cutoff": [origin + timedelta(days=int(day)) for day in cutoff_of_row],
            "step": step_of_row,
            "driver_a": driver_a,
            "driver_b": rng.normal(size=rows),
            "calendar_hour": rng.normal(size=rows),
            "error": 0.8 * driver_a + 0.05 * rng.normal(size=rows),
        }
    )


def _importance(effects: FeatureEffects, group: str) -> float:
    return effects.importances.filter(pl.col("feature_group") == group).get_column("importance").item()


def test_driver_of_the_error_ranks_first_and_noise_scores_near_zero() -> None:
    effects = permutation_effects(_design(), GROUPS, EffectSettings())

    assert effects.reason is None
    assert effects.rows == 20 * 4 * 24
    assert effects.cutoffs == 4
    assert effects.importances.schema == pl.Schema(IMPORTANCE_SCHEMA)
    top = effects.importances.row(0, named=True)
    assert top["feature_group"] == "driver:driver_a"
    assert top["features"] == ["driver_a"]
    assert top["rank"] == 1
    driver = _importance(effects, "driver:driver_a")
    # E|0.8 · (a - a')| for independent N(0, 1) draws is 0.8 · √2 · √(2/π) ≈ 0.90.
    assert driver == pytest.approx(0.9, abs=0.1)
    assert top["relative"] == pytest.approx(driver / effects.baseline_error)
    for noise in ("driver:driver_b", "calendar"):
        assert abs(_importance(effects, noise)) < 0.1 * driver
    assert effects.importances.get_column("rank").to_list() == [1, 2, 3]
    assert effects.model_error < 0.2 * effects.baseline_error
    assert effects.baseline_error == pytest.approx(0.8 * np.sqrt(2 / np.pi), rel=0.1)


def test_feature_constant_within_series_scores_zero() -> None:
    """A series-level feature explains each series' mean error, but no within-series permutation moves it."""
    design = _design()
    bias = pl.col("unique_id").str.slice(1).cast(pl.Int64).cast(pl.Float64) / 10.0 - 1.0
    design = design.with_columns(bias.alias("series_level"), (pl.col("error") + bias).alias("error"))
    groups = {**GROUPS, "series_level": "series"}

    effects = permutation_effects(design, groups, EffectSettings())

    assert _importance(effects, "series") == pytest.approx(0.0, abs=1e-12)
    assert effects.importances.row(0, named=True)["feature_group"] == "driver:driver_a"
    # The error model does use it: held-out error stays small although series means differ by up to 1.
    assert effects.model_error < 0.1


def test_group_columns_are_permuted_jointly() -> None:
    rng = np.random.default_rng(5)
    design = _design().drop("error")
    rows = design.height
    u, v = rng.normal(size=rows), rng.normal(size=rows)
    design = design.with_columns(pl.Series("u", u), pl.Series("v", v), pl.Series("error", 0.8 * (u + v)))

    joint = permutation_effects(design, {"u": "pair", "v": "pair", "driver_b": "noise"}, EffectSettings())
    split = permutation_effects(design, {"u": "first", "v": "second", "driver_b": "noise"}, EffectSettings())

    pair = _importance(joint, "pair")
    first, second = _importance(split, "first"), _importance(split, "second")
    assert joint.importances.row(0, named=True)["features"] == ["u", "v"]
    assert first > 0.2 and second > 0.2
    assert first == pytest.approx(second, rel=0.25)
    assert pair > 1.2 * max(first, second)  # ≈ √2 · each for independent halves

    # Both columns carry a large shared level and the error is their difference: one permutation for
    # both keeps the level cancelling (importance ≈ E|0.8 · (d - d')| ≈ 0.9); two separate ones would
    # not (≈ 0.8 · 10 · √2 · √(2/π) ≈ 9).
    level, difference = 10.0 * rng.normal(size=rows), rng.normal(size=rows)
    design = design.with_columns(
        pl.Series("u", level + difference), pl.Series("v", level), pl.Series("error", 0.8 * difference)
    )
    shared = permutation_effects(design, {"u": "pair", "v": "pair"}, EffectSettings(ridge=0.0))
    assert _importance(shared, "pair") == pytest.approx(0.9, abs=0.15)


def test_too_few_rows_gives_an_empty_frame_with_a_reason() -> None:
    design = _design(series=2, cutoffs=2, steps=5)

    effects = permutation_effects(design, GROUPS, EffectSettings(min_rows=30))

    assert effects.reason is not None
    assert effects.rows == 20
    assert effects.importances.is_empty()
    assert effects.importances.schema == pl.Schema(IMPORTANCE_SCHEMA)

    no_groups = permutation_effects(_design(), {}, EffectSettings())
    assert no_groups.reason is not None and no_groups.importances.is_empty()


def test_single_cutoff_uses_series_folds() -> None:
    effects = permutation_effects(_design(cutoffs=1), GROUPS, EffectSettings())

    assert effects.reason is None
    assert effects.cutoffs == 1
    assert effects.importances.row(0, named=True)["feature_group"] == "driver:driver_a"
    assert effects.model_error < 0.2 * effects.baseline_error

    one_series = permutation_effects(_design(series=1, cutoffs=1, steps=48), GROUPS, EffectSettings())
    assert one_series.reason is not None and one_series.importances.is_empty()


def test_null_features_null_errors_and_constant_columns_are_tolerated() -> None:
    design = _design()
    rows = design.height
    holes = np.random.default_rng(3).random(rows) < 0.1
    design = design.with_columns(
        pl.when(pl.Series(holes)).then(None).otherwise(pl.col("driver_a")).alias("driver_a"),
        pl.when(pl.int_range(pl.len()) % 50 == 0).then(None).otherwise(pl.col("error")).alias("error"),
        pl.lit(3.0).alias("constant"),
        pl.lit(None, pl.Float64).alias("empty"),
        pl.when(pl.col("cutoff") == pl.col("cutoff").min()).then(1.0).otherwise(None).alias("one_fold_only"),
    )
    groups = {**GROUPS, "constant": "constant", "empty": "empty", "one_fold_only": "one_fold_only"}

    effects = permutation_effects(design, groups, EffectSettings())

    assert effects.reason is None
    assert effects.rows == rows - len(range(0, rows, 50))
    frame = effects.importances
    assert frame.get_column("importance").is_finite().all()
    assert frame.get_column("importance_std").is_finite().all()
    assert frame.row(0, named=True)["feature_group"] == "driver:driver_a"
    for constant in ("constant", "empty", "one_fold_only"):
        assert _importance(effects, constant) == pytest.approx(0.0, abs=1e-12)
    assert np.isfinite(effects.model_error) and effects.model_error < effects.baseline_error


def test_missing_columns_and_bad_settings_are_rejected() -> None:
    with pytest.raises(ValueError, match="lacks columns"):
        permutation_effects(_design(), {"nope": "nope"}, EffectSettings())
    with pytest.raises(ValueError, match="repeats"):
        EffectSettings(repeats=0)
    with pytest.raises(ValueError, match="ridge"):
        EffectSettings(ridge=-1.0)


def test_same_seed_gives_the_same_frame() -> None:
    design = _design()

    first = permutation_effects(design, GROUPS, EffectSettings(seed=7))
    again = permutation_effects(design, GROUPS, EffectSettings(seed=7))
    other = permutation_effects(design, GROUPS, EffectSettings(seed=8))

    assert_frame_equal(first.importances, again.importances)
    assert (first.baseline_error, first.model_error) == (again.baseline_error, again.model_error)
    assert not other.importances.get_column("importance").equals(first.importances.get_column("importance"))


def test_many_noise_features_on_few_rows_do_not_make_the_error_model_worse_than_none() -> None:
    # Two series, three cutoffs, forty noise features: a fixed small penalty overfits; the
    # penalty chosen on held-out folds keeps the error model near predicting no error.
    rng = np.random.default_rng(3)
    design = _design(series=2, cutoffs=3, steps=24).select("unique_id", "cutoff", "error")
    noise = {f"noise_{i}": rng.normal(size=design.height) for i in range(40)}
    design = design.with_columns(**{name: pl.Series(values) for name, values in noise.items()})
    groups = {name: "noise" for name in noise}
    fixed = permutation_effects(design, groups, EffectSettings(ridge=0.1))
    chosen = permutation_effects(design, groups, EffectSettings())
    assert chosen.model_error <= fixed.model_error
    assert chosen.model_error <= 1.05 * chosen.baseline_error
    assert chosen.ridge in RIDGE_GRID
