"""Which feature groups explain a champion's backtest error: permutation importance of an error model.

A champion's backtest error e = (actual - forecast) / series_scale should be noise. Any feature that
predicts e is signal the champion leaves unused, so a small "error model" (ridge regression of e on
the features) is fitted and each feature group's permutation importance on it is measured:

* held out honestly: leave-one-cutoff-out (fit on the other fold cutoffs, predict the held-out
  cutoff's rows), so the error model is judged the way the champion was, on origins it never saw.
  With a single cutoff there is nothing to leave out, so series are split into two folds instead
  (by hashing `unique_id`, so neither fold is one end of the alphabet);
* baseline error = mean |e| (the champion's own scaled MAE) and model error = mean |e - ê| held out,
  so `model_error < baseline_error` says the features explain some of the champion's error at all;
* importance of a group = mean over repeats of (mean |e - ê_perm| - model error), where the group's
  columns are permuted jointly (one permutation for all of them, so a group is judged as a unit and
  correlated columns inside it cannot stand in for each other) and *within each series*: shuffling
  only among a series' own rows keeps series-level differences (what a per-series scale or bias
  already captures) out of the measurement. A feature constant within each series scores exactly 0.

Everything is set-based: numpy over the design matrix, loops only over folds, repeats and groups.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import polars as pl

from forecasting_pipeline.modeling.evaluation import CUTOFF
from forecasting_pipeline.schemas import UNIQUE_ID

ERROR = "error"
FEATURE_GROUP = "feature_group"
FEATURES = "features"
IMPORTANCE = "importance"
IMPORTANCE_STD = "importance_std"
RELATIVE = "relative"
RANK = "rank"

IMPORTANCE_SCHEMA: dict[str, pl.DataType] = {
    FEATURE_GROUP: pl.String(),
    FEATURES: pl.List(pl.String()),
    IMPORTANCE: pl.Float64(),
    IMPORTANCE_STD: pl.Float64(),
    RELATIVE: pl.Float64(),
    RANK: pl.Int32(),
}

_FOLD = "__fold"
_SERIES = "__series"
# A training column whose spread is below this share of its magnitude is constant up to rounding
# (e.g. the mean of identical decimals); standardizing it would amplify rounding noise into signal.
_CONSTANT_TOLERANCE = 1e-12


RIDGE_GRID: tuple[float, ...] = (0.1, 1.0, 10.0, 100.0, 1_000.0, 10_000.0)


@dataclass(frozen=True)
class EffectSettings:
    """How the error model is fitted and how often each group is permuted."""

    repeats: int = 5
    # L2 penalty on standardized features (intercept unpenalized); None: the one of RIDGE_GRID
    # with the lowest held-out error. A few hundred fold rows against dozens of features overfit
    # at a fixed small penalty, and an error model worse than predicting no error explains nothing.
    ridge: float | None = None
    seed: int = 1
    min_rows: int = 30  # fewer design rows -> empty result with a reason

    def __post_init__(self) -> None:
        if self.repeats < 1:
            raise ValueError(f"repeats must be >= 1, got {self.repeats}")
        if self.ridge is not None and not self.ridge >= 0:
            raise ValueError(f"ridge must be >= 0, got {self.ridge}")
        if self.min_rows < 0:
            raise ValueError(f"min_rows must be >= 0, got {self.min_rows}")


@dataclass(frozen=True)
class FeatureEffects:
    """Permutation importance per feature group, with the errors it is measured against."""

    importances: pl.DataFrame  # IMPORTANCE_SCHEMA, sorted by rank (1 = largest importance)
    baseline_error: float  # mean |e|: the champion's own scaled MAE
    model_error: float  # mean |e - ê| on held-out rows
    rows: int
    cutoffs: int
    reason: str | None  # why nothing was computed, else None
    ridge: float | None = None  # the penalty the error model used


@dataclass(frozen=True)
class _FoldModel:
    """A ridge fitted on one training fold, with the imputation and scaling learned there.

    Keeping the fold's own means and spreads (rather than the whole design's) is what keeps the
    held-out rows out of the fit: they are imputed and scaled with numbers they did not shape.
    """

    mean: np.ndarray  # per column; imputes nulls and centers
    scale: np.ndarray  # per column; 1 where the column is inactive
    active: np.ndarray  # bool per column; False for constant or all-null training columns
    intercept: float
    coef: np.ndarray  # per column on the standardized scale; 0 where inactive

    def standardize(self, x: np.ndarray, columns: np.ndarray | slice = slice(None)) -> np.ndarray:
        """Impute nulls with the training mean, then center and scale (inactive columns become 0)."""
        mean, scale, active = self.mean[columns], self.scale[columns], self.active[columns]
        filled = np.where(np.isnan(x), mean, x)
        return np.where(active, (filled - mean) / scale, 0.0)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.intercept + self.standardize(x) @ self.coef


def _fit_ridge(x: np.ndarray, y: np.ndarray, penalty: float) -> _FoldModel:
    """Closed-form ridge on standardized, centered training data; the intercept is the mean of y.

    Constant (or entirely null) training columns are left out of the solve and get weight 0, so
    neither a zero spread nor a singular Gram matrix (possible with penalty 0) breaks the fit;
    `lstsq` returns the minimum-norm solution if the active columns are still collinear.
    """
    present = ~np.isnan(x)
    counts = present.sum(axis=0)
    sums = np.where(present, x, 0.0).sum(axis=0)
    mean = np.divide(sums, counts, out=np.zeros(x.shape[1]), where=counts > 0)
    filled = np.where(present, x, mean)
    spread = filled.std(axis=0)
    magnitude = np.abs(filled).max(axis=0, initial=0.0)
    active = (counts > 0) & (spread > _CONSTANT_TOLERANCE * magnitude) & (spread > 0)
    scale = np.where(active, spread, 1.0)
    intercept = float(y.mean())
    coef = np.zeros(x.shape[1])
    if active.any():
        z = (filled[:, active] - mean[active]) / scale[active]
        gram = z.T @ z + penalty * np.eye(z.shape[1])
        coef[active] = np.linalg.lstsq(gram, z.T @ (y - intercept), rcond=None)[0]
    return _FoldModel(mean=mean, scale=scale, active=active, intercept=intercept, coef=coef)


def _within_series_source(series: np.ndarray, by_series: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """For each row, the row whose values it takes: a random permutation inside each series.

    Sorting by (series, random key) and by series alone gives the same blocks of series codes in
    the same positions, so pairing the two orders maps every row to a random row of its own series.
    """
    shuffled = np.lexsort((rng.random(series.size), series))
    source = np.empty_like(by_series)
    source[by_series] = shuffled
    return source


def _empty(reason: str, rows: int, cutoffs: int, baseline_error: float) -> FeatureEffects:
    return FeatureEffects(
        importances=pl.DataFrame(schema=IMPORTANCE_SCHEMA),
        baseline_error=baseline_error,
        model_error=float("nan"),
        rows=rows,
        cutoffs=cutoffs,
        reason=reason,
    )


def _assign_folds(frame: pl.DataFrame, cutoffs: int, seed: int) -> pl.DataFrame:
    """Leave-one-cutoff-out folds, or with one cutoff two folds of whole series.

    Series are ordered by the hash of their id and dealt alternately, so both folds get half the
    series whatever the hash values are (a plain `hash % 2` can leave a fold empty with few series).
    Polars' hash is stable for a given polars version and seed, which is what determinism needs here.
    """
    if cutoffs >= 2:
        fold = pl.col(CUTOFF).rank("dense") - 1
    else:
        fold = (pl.col(UNIQUE_ID).hash(seed).rank("dense") - 1) % 2
    return frame.with_columns(
        fold.cast(pl.Int64).alias(_FOLD),
        (pl.col(UNIQUE_ID).rank("dense") - 1).cast(pl.Int64).alias(_SERIES),
    )


def permutation_effects(
    design: pl.DataFrame, groups: Mapping[str, str], settings: EffectSettings
) -> FeatureEffects:
    """Permutation importance of each feature group on the champion's held-out backtest error.

    design: unique_id, cutoff, error (Float64) and the feature columns named in `groups` (feature
    column -> group name). Rows with a null (or non-finite) error, unique_id or cutoff are dropped;
    null (or non-finite) features are imputed with the training fold's column mean (and a column
    constant in the training fold gets weight 0, never a division by zero).

    Permutations are drawn over each series' rows across all cutoffs, not only its held-out rows:
    a held-out fold holds one cutoff per series, and shuffling inside it alone would leave anything
    constant per (series, cutoff) untouched. Only feature values cross folds, never errors.
    `importance_std` is the sample standard deviation over repeats (0 with one repeat);
    `relative` is importance / baseline_error (null when the baseline is 0). The result is
    deterministic for a given design (rows in the same order) and seed.
    """
    features = list(groups)
    missing = [name for name in (UNIQUE_ID, CUTOFF, ERROR, *features) if name not in design.columns]
    if missing:
        raise ValueError(f"design lacks columns {missing}")
    reserved = sorted({UNIQUE_ID, CUTOFF, ERROR, _FOLD, _SERIES} & set(features))
    if reserved:
        raise ValueError(f"columns {reserved} cannot be features")

    frame = (
        design.select(
            UNIQUE_ID,
            CUTOFF,
            pl.col(ERROR).cast(pl.Float64),
            *(pl.col(name).cast(pl.Float64) for name in features),
        )
        .filter(pl.col(ERROR).is_finite(), pl.col(UNIQUE_ID).is_not_null(), pl.col(CUTOFF).is_not_null())
        .with_columns(
            pl.when(pl.col(name).is_finite()).then(pl.col(name)).otherwise(None).alias(name)
            for name in features
        )
    )
    rows = frame.height
    cutoffs = frame.get_column(CUTOFF).n_unique()
    errors = frame.get_column(ERROR).to_numpy()
    baseline_error = float(np.abs(errors).mean()) if rows else float("nan")
    if not features:
        return _empty("no feature columns in groups", rows, cutoffs, baseline_error)
    if rows < settings.min_rows:
        return _empty(
            f"{rows} rows with an error, fewer than {settings.min_rows}", rows, cutoffs, baseline_error
        )
    if cutoffs < 2 and frame.get_column(UNIQUE_ID).n_unique() < 2:
        return _empty("one cutoff and one series: nothing to hold out", rows, cutoffs, baseline_error)

    frame = _assign_folds(frame, cutoffs, settings.seed)
    x = frame.select(features).to_numpy().astype(np.float64)  # nulls -> NaN
    folds = frame.get_column(_FOLD).to_numpy()
    series = frame.get_column(_SERIES).to_numpy()
    held_out = [np.flatnonzero(folds == fold) for fold in np.unique(folds)]
    training = [folds != folds[test[0]] for test in held_out]
    fitted: list[tuple[float, float, list[_FoldModel], np.ndarray]] = []
    for penalty in RIDGE_GRID if settings.ridge is None else (settings.ridge,):
        models = [_fit_ridge(x[train], errors[train], penalty) for train in training]
        predicted = np.empty(rows)
        for test, model in zip(held_out, models, strict=True):
            predicted[test] = model.predict(x[test])
        fitted.append((float(np.abs(errors - predicted).mean()), penalty, models, predicted))
    model_error, ridge, models, predicted = min(fitted, key=lambda candidate: candidate[0])
    residual = errors - predicted

    names = sorted(set(groups.values()))
    members = {name: [column for column in features if groups[column] == name] for name in names}
    position_of = {column: position for position, column in enumerate(features)}
    indices = {name: np.array([position_of[column] for column in members[name]]) for name in names}
    rng = np.random.default_rng(settings.seed)
    by_series = np.argsort(series, kind="stable")
    excess = np.empty((settings.repeats, len(names)))
    for repeat in range(settings.repeats):
        # One shuffle per repeat serves every group: each group is still permuted independently of
        # the error, and the sort (the costly part) is done `repeats` times rather than per group.
        source = _within_series_source(series, by_series, rng)
        for position, name in enumerate(names):
            columns = indices[name]
            permuted_residual = np.empty(rows)
            for test, model in zip(held_out, models, strict=True):
                # Only the group's contribution to ê changes, so only its columns are re-scored.
                coef = model.coef[columns]
                original = model.standardize(x[np.ix_(test, columns)], columns) @ coef
                shuffled = model.standardize(x[np.ix_(source[test], columns)], columns) @ coef
                permuted_residual[test] = residual[test] + original - shuffled
            excess[repeat, position] = np.abs(permuted_residual).mean() - model_error

    importance = excess.mean(axis=0)
    spread = excess.std(axis=0, ddof=1) if settings.repeats > 1 else np.zeros(len(names))
    importances = (
        pl.DataFrame(
            {
                FEATURE_GROUP: names,
                FEATURES: [members[name] for name in names],
                IMPORTANCE: importance,
                IMPORTANCE_STD: spread,
            },
            schema={
                name: IMPORTANCE_SCHEMA[name]
                for name in (FEATURE_GROUP, FEATURES, IMPORTANCE, IMPORTANCE_STD)
            },
        )
        .with_columns(
            (pl.col(IMPORTANCE) / baseline_error if baseline_error > 0 else pl.lit(None, pl.Float64)).alias(
                RELATIVE
            ),
            # Ordinal ranks over name-sorted rows: ties are broken by group name, never by chance.
            pl.col(IMPORTANCE).rank("ordinal", descending=True).cast(pl.Int32).alias(RANK),
        )
        .sort(RANK)
    )
    return FeatureEffects(
        importances=importances,
        baseline_error=baseline_error,
        model_error=model_error,
        rows=rows,
        cutoffs=cutoffs,
        reason=None,
        ridge=ridge,
    )
