"""Split-conformal prediction intervals, pooled across series, and an honest check of them.

Many models' native intervals are mis-calibrated (too narrow after tuning, or not produced at all).
Backtest residuals tell how wide an interval must be to cover a given share of outcomes. A single
series has too few residuals per step for that, so residuals are divided by each series' scale
(`evaluation.series_scales`) and pooled over series: one quantile per (model, step, level), then
multiplied back by each series' scale. This assumes scaled errors are exchangeable across series,
which is what the scale is for.
"""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

from forecasting_pipeline.modeling.evaluation import CUTOFF, MODEL_NAME, SCALE, STEP, YHAT, attach_scales
from forecasting_pipeline.schemas import INTERVAL_LEVELS, UNIQUE_ID, Y, lower_column, upper_column

# Fewer residuals than this at a (model, step) make its quantile mostly noise (and at n < 1/(1 -
# level) just the maximum), so such a model's steps are pooled.
MIN_STEP_SAMPLES = 10
CONFORMAL = "conformal"
NATIVE = "native"

_RESIDUAL = "__residual"
_QUANTILE_SCHEMA = {
    MODEL_NAME: pl.String,
    STEP: pl.Int64,
    "level": pl.Int64,
    "quantile": pl.Float64,
    "samples": pl.Int64,
}
_COVERAGE_SCHEMA = {
    MODEL_NAME: pl.String,
    "method": pl.String,
    "level": pl.Int64,
    "coverage": pl.Float64,
    "samples": pl.Int64,
}


def _check_levels(levels: Sequence[int]) -> list[int]:
    checked = [int(level) for level in levels]
    if any(not 0 < level < 100 for level in checked):
        raise ValueError(f"levels must be in (0, 100), got {list(levels)}")
    return checked


def _conformal_quantile(level: int) -> pl.Expr:
    """The ceil((n + 1) · level / 100)-th smallest residual of the group, capped at the largest.

    The (n + 1) is the finite-sample correction that makes coverage >= level for exchangeable
    data; integer arithmetic keeps e.g. (9 + 1) · 80 / 100 exactly 8.
    """
    n = pl.len()
    rank = ((n + 1) * level + 99) // 100
    return pl.col(_RESIDUAL).sort().get(pl.min_horizontal(rank, n) - 1)


def conformal_quantiles(
    folds: pl.DataFrame, scales: pl.DataFrame, levels: Sequence[int] = INTERVAL_LEVELS
) -> pl.DataFrame:
    """Conformal quantile of |y - yhat| / scale per model, horizon step and level.

    Returns `model_name, step, level, quantile, samples` (quantile in units of the series' scale).
    A model with fewer than `MIN_STEP_SAMPLES` residuals at any step is pooled over all its steps:
    every step then gets the same quantile and `samples` counts the pooled residuals.
    """
    levels = _check_levels(levels)
    residuals = (
        attach_scales(folds.select(UNIQUE_ID, MODEL_NAME, STEP, Y, YHAT), scales)
        .select(
            MODEL_NAME,
            pl.col(STEP).cast(pl.Int64),
            ((pl.col(Y) - pl.col(YHAT)).abs() / pl.col(SCALE)).alias(_RESIDUAL),
        )
        .filter(pl.col(_RESIDUAL).is_finite())
    )
    if residuals.height == 0 or not levels:
        return pl.DataFrame(schema=_QUANTILE_SCHEMA)
    residuals = residuals.with_columns(pl.len().over(MODEL_NAME, STEP).alias("__n")).with_columns(
        (pl.col("__n").min().over(MODEL_NAME) < MIN_STEP_SAMPLES).alias("__pooled")
    )
    quantiles = [_conformal_quantile(level).alias(str(level)) for level in levels]
    per_step = (
        residuals.filter(~pl.col("__pooled"))
        .group_by(MODEL_NAME, STEP)
        .agg(*quantiles, pl.len().alias("samples"))
    )
    pooled_steps = residuals.filter(pl.col("__pooled")).select(MODEL_NAME, STEP).unique()
    pooled = pooled_steps.join(
        residuals.filter(pl.col("__pooled")).group_by(MODEL_NAME).agg(*quantiles, pl.len().alias("samples")),
        on=MODEL_NAME,
    )
    return (
        pl.concat([per_step, pooled.select(per_step.columns)])
        .unpivot(index=[MODEL_NAME, STEP, "samples"], variable_name="level", value_name="quantile")
        .select(
            MODEL_NAME,
            STEP,
            pl.col("level").cast(pl.Int64),
            pl.col("quantile").cast(pl.Float64),
            pl.col("samples").cast(pl.Int64),
        )
        .sort(MODEL_NAME, STEP, "level")
    )


def apply_conformal(forecasts: pl.DataFrame, quantiles: pl.DataFrame, scales: pl.DataFrame) -> pl.DataFrame:
    """Replace interval bounds with yhat ± quantile · scale where a quantile exists.

    `forecasts` needs `unique_id, model_name, step, yhat`; other columns are kept. For each level
    in `quantiles`, `lo_L`/`hi_L` are set; a row whose model/step has no quantile, or whose series
    has no scale, keeps its bounds (null when it had none), so a partial calibration never erases
    intervals.
    """
    levels = sorted(quantiles.get_column("level").unique().to_list())
    scaled = forecasts.join(
        scales.select(UNIQUE_ID, pl.col(SCALE).alias("__scale")), on=UNIQUE_ID, how="left"
    ).with_columns(pl.col(STEP).cast(pl.Int64).alias("__step"))
    columns = list(forecasts.columns)
    for level in levels:
        q = f"__q{level}"
        by_step = quantiles.filter(pl.col("level") == level).select(
            MODEL_NAME, pl.col(STEP).alias("__step"), pl.col("quantile").alias(q)
        )
        scaled = scaled.join(by_step, on=[MODEL_NAME, "__step"], how="left")
        known = pl.col(q).is_not_null() & pl.col("__scale").is_not_null()
        half_width = pl.col(q) * pl.col("__scale")
        for column, bound in (
            (lower_column(level), pl.col(YHAT) - half_width),
            (upper_column(level), pl.col(YHAT) + half_width),
        ):
            previous = pl.col(column) if column in scaled.columns else pl.lit(None, dtype=pl.Float64)
            scaled = scaled.with_columns(pl.when(known).then(bound).otherwise(previous).alias(column))
            if column not in columns:
                columns.append(column)
    return scaled.select(columns)


def _coverage(rows: pl.DataFrame, levels: list[int], method: str) -> pl.DataFrame:
    """Percent of actuals inside [lo, hi] per model and level, over rows that have both bounds."""
    parts = []
    for level in levels:
        if lower_column(level) not in rows.columns or upper_column(level) not in rows.columns:
            continue
        lo, hi = pl.col(lower_column(level)), pl.col(upper_column(level))
        scored = rows.filter(pl.col(Y).is_not_null() & lo.is_not_null() & hi.is_not_null())
        parts.append(
            scored.group_by(MODEL_NAME).agg(
                pl.lit(method).alias("method"),
                pl.lit(level, dtype=pl.Int64).alias("level"),
                (pl.col(Y).is_between(lo, hi).mean() * 100).cast(pl.Float64).alias("coverage"),
                pl.len().cast(pl.Int64).alias("samples"),
            )
        )
    if not parts:
        return pl.DataFrame(schema=_COVERAGE_SCHEMA)
    return pl.concat(parts).select(list(_COVERAGE_SCHEMA))


def heldout_coverage(
    folds: pl.DataFrame, scales: pl.DataFrame, levels: Sequence[int] = INTERVAL_LEVELS
) -> pl.DataFrame:
    """Coverage (percent) on the latest fold, of conformal intervals calibrated on the earlier folds
    and of the models' native intervals.

    Calibrating and measuring on the same residuals would report the nominal level by
    construction; holding out the latest cutoff (over the whole frame) mimics how the intervals
    are used: calibrated on the past, judged on what comes next. Needs >= 2 distinct cutoffs;
    otherwise returns an empty frame. Returns `model_name, method, level, coverage, samples`.
    """
    levels = _check_levels(levels)
    if folds.height == 0 or folds.get_column(CUTOFF).n_unique() < 2:
        return pl.DataFrame(schema=_COVERAGE_SCHEMA)
    latest = pl.col(CUTOFF) == pl.col(CUTOFF).max()
    calibration, test = folds.filter(~latest), folds.filter(latest)
    quantiles = conformal_quantiles(calibration, scales, levels)
    points = test.select(UNIQUE_ID, MODEL_NAME, STEP, Y, YHAT)
    conformal = apply_conformal(points, quantiles, scales)
    return pl.concat([_coverage(conformal, levels, CONFORMAL), _coverage(test, levels, NATIVE)]).sort(
        MODEL_NAME, "method", "level"
    )


def choose_interval_method(coverage: pl.DataFrame, tolerance: float = 5.0) -> pl.DataFrame:
    """Per model, `native` if its own intervals held out within `tolerance` points of nominal at
    every level in `coverage`, else `conformal`.

    Too wide counts as miscalibrated as much as too narrow: both mislead whoever plans with the
    interval. A model with no native rows (no intervals of its own) gets `conformal`.
    Returns `model_name, method`.
    """
    if coverage.height == 0:
        return pl.DataFrame(schema={MODEL_NAME: pl.String, "method": pl.String})
    needed = coverage.select(MODEL_NAME, "level").unique()
    native = coverage.filter(pl.col("method") == NATIVE).select(MODEL_NAME, "level", "coverage")
    ok = (pl.col("coverage") - pl.col("level")).abs() <= tolerance
    return (
        needed.join(native, on=[MODEL_NAME, "level"], how="left")
        .group_by(MODEL_NAME)
        .agg((pl.col("coverage").is_not_null() & ok.fill_null(False)).all().alias("__native"))
        .select(
            MODEL_NAME,
            pl.when(pl.col("__native")).then(pl.lit(NATIVE)).otherwise(pl.lit(CONFORMAL)).alias("method"),
        )
        .sort(MODEL_NAME)
    )
