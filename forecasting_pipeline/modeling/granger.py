"""Granger-causality screening of candidate drivers (exogenous columns or peer series) per series.

A driver is worth feeding to a model only if its past says something about the target beyond what
the target's own past says; that is what a Granger test measures. The test is only valid on
stationary series (regressions of one random walk on another "find" causality by chance), so each
side is first differenced until ADF rejects a unit root *and* KPSS does not reject stationarity:
the two tests have opposite nulls, and demanding both guards against either's low power.

The lag order is chosen once per pair by an information criterion on the bivariate VAR rather than
by scanning every lag's p-value, which would be a multiple-testing problem of its own. Screening
many (series, driver) pairs is then controlled with Benjamini-Hochberg across all tests of a run:
`granger_tests` returns raw p-values, the caller decides which tests form the family.

statsmodels is imported inside functions: it is slow to import and only this step needs it.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from forecasting_pipeline.schemas import DS, UNIQUE_ID, Y

DRIVER_TO_TARGET = "driver_to_target"
TARGET_TO_DRIVER = "target_to_driver"
INFORMATION_CRITERIA = ("aic", "bic", "hqic", "fpe")

ADJUSTED_P = "adjusted_p"
PASSES = "passes"

GRANGER_SCHEMA: dict[str, pl.DataType] = {
    UNIQUE_ID: pl.String(),
    "cause": pl.String(),
    "effect": pl.String(),
    "direction": pl.String(),
    "testable": pl.Boolean(),
    "reason": pl.String(),
    "lag": pl.Int32(),
    "ic": pl.String(),
    "statistic": pl.Float64(),
    "p_value": pl.Float64(),
    "df_num": pl.Float64(),
    "df_den": pl.Float64(),
    "n_obs": pl.Int64(),
    "diff_target": pl.Int32(),
    "diff_cause": pl.Int32(),
    "stationary": pl.Boolean(),
    "adf_p_target": pl.Float64(),
    "kpss_p_target": pl.Float64(),
    "adf_p_cause": pl.Float64(),
    "kpss_p_cause": pl.Float64(),
}


@dataclass(frozen=True)
class GrangerSettings:
    """How each (series, driver) pair is made stationary, how its lag is chosen, and when it is testable."""

    max_lag: int = 12
    """Largest lag order considered; also capped by what the pair's length can estimate."""
    ic: str = "bic"
    """Criterion of `VAR.select_order`: BIC by default, because AIC's tendency to overfit the lag
    order spends degrees of freedom and dilutes the F test's power over the one lag that matters."""
    significance: float = 0.05
    """Level of the ADF and KPSS decisions (not of the Granger screen, which is BH-adjusted)."""
    max_differences: int = 2
    min_observations: int = 30
    """Fewest rows the test regression may use; the lag search is capped so this always holds."""
    both_directions: bool = True
    """Also test target -> driver: feedback suggests a common cause rather than a leading driver."""

    def __post_init__(self) -> None:
        if self.ic not in INFORMATION_CRITERIA:
            raise ValueError(f"ic must be one of {INFORMATION_CRITERIA}, got {self.ic!r}")
        if self.max_lag < 1:
            raise ValueError(f"max_lag must be >= 1, got {self.max_lag}")
        if not 0.0 < self.significance < 1.0:
            raise ValueError(f"significance must be in (0, 1), got {self.significance}")
        if self.max_differences < 0:
            raise ValueError(f"max_differences must be >= 0, got {self.max_differences}")
        if self.min_observations < 1:
            raise ValueError(f"min_observations must be >= 1, got {self.min_observations}")


class _NotTestableError(Exception):
    """A pair that cannot be tested; its message is the row's `reason`."""


@dataclass(frozen=True)
class _Stationarity:
    values: np.ndarray
    differences: int
    stationary: bool
    adf_p: float
    kpss_p: float


def _statsmodels_errors() -> tuple[type[BaseException], ...]:
    """What statsmodels raises on degenerate data (singular designs, too few rows, perfect fits).

    ArithmeticError covers numpy/scipy floating-point failures; InfeasibleTestError is a
    RuntimeError, so catching it by name keeps genuine programming errors loud.
    """
    from statsmodels.tools.sm_exceptions import InfeasibleTestError

    return (np.linalg.LinAlgError, ValueError, ArithmeticError, InfeasibleTestError)


def _too_short(usable: int, settings: GrangerSettings) -> str:
    return f"too_short: {usable} usable observations, need {settings.min_observations}"


def _is_constant(values: np.ndarray) -> bool:
    # An exact comparison: ADF itself refuses only exactly constant input, and near-constant
    # series are legitimate (if weak) data.
    return values.size == 0 or bool(values.max() == values.min())


def _stationarity_p_values(values: np.ndarray) -> tuple[float, float]:
    """ADF and KPSS p-values of one series, with statsmodels' own defaults for the lag choices.

    KPSS p-values are interpolated from a table and clipped to [0.01, 0.1]; the clipping warning
    says only that the true value lies beyond the bound, which does not change the decision.
    """
    from statsmodels.tools.sm_exceptions import InterpolationWarning
    from statsmodels.tsa.stattools import adfuller, kpss

    adf_p = float(adfuller(values, autolag="AIC", result_object=True).pvalue)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InterpolationWarning)
        kpss_p = float(kpss(values, regression="c", nlags="auto", result_object=True).pvalue)
    return adf_p, kpss_p


def _make_stationary(values: np.ndarray, settings: GrangerSettings, side: str) -> _Stationarity:
    """Difference until ADF rejects a unit root and KPSS does not reject stationarity at a
    stricter level (`significance / 5`), or `max_differences` is reached.

    KPSS at the same 5 % level would difference one stationary series in twenty, and a needless
    difference smears a lag-k effect over lags k and k+1 (and invents feedback); it therefore
    only overrides ADF on strong evidence. A series still non-stationary at the limit is kept at
    the limit and flagged: differencing further would inject a unit root into the moving-average
    part instead.
    """
    adf_p = kpss_p = float("nan")
    for differences in range(settings.max_differences + 1):
        if differences:
            values = np.diff(values)
        if _is_constant(values):
            raise _NotTestableError(f"constant {side}")
        adf_p, kpss_p = _stationarity_p_values(values)
        if adf_p < settings.significance and kpss_p > settings.significance / 5:
            return _Stationarity(values, differences, True, adf_p, kpss_p)
    return _Stationarity(values, settings.max_differences, False, adf_p, kpss_p)


def _lag_order(target: np.ndarray, driver: np.ndarray, settings: GrangerSettings) -> int:
    """Lag by information criterion on the bivariate VAR, shared by both directions.

    The criteria depend on the VAR's residual covariance determinant and parameter count, which
    do not change when the two columns swap, so one search serves both tests. The search is
    capped by what the VAR can estimate ((n - 3) // 3 for two equations with a constant, which
    also satisfies grangercausalitytests' n > 3·lag + 1) and by `min_observations` rows left for
    the regression, so a short pair gets a shorter lag rather than no test.
    """
    n = target.size
    feasible = min(settings.max_lag, (n - 3) // 3, n - settings.min_observations)
    if feasible < 1:
        raise _NotTestableError(_too_short(n - 1, settings))
    criteria = _var_criteria(np.column_stack([target, driver]), feasible, settings.ic)
    if criteria is None:  # a rank-deficient design: let statsmodels' least squares decide
        from statsmodels.tsa.api import VAR

        order = VAR(np.column_stack([target, driver])).select_order(maxlags=feasible)
        chosen = int(order.selected_orders[settings.ic])
    else:
        chosen = int(np.argmin(criteria))
    # The search may pick 0 lags (constant only); Granger causality needs at least one.
    return max(1, chosen)


def _var_criteria(data: np.ndarray, max_lag: int, ic: str) -> np.ndarray | None:
    """The information criterion of VAR(p), p = 0…max_lag, as `VAR.select_order` defines it.

    Same sample for every p (the last n - max_lag rows), constant term, MLE residual covariance;
    aic/bic/hqic/fpe per Lütkepohl as statsmodels computes them. The nested designs share one QR
    factorization: VAR(p)'s residuals are the projection off the first 1 + 2p columns, so the
    whole search costs one decomposition instead of max_lag + 1 least-squares fits (it was most
    of a study's time). None when the design is rank-deficient.
    """
    n, equations = data.shape
    rows = n - max_lag
    response = data[max_lag:]
    lagged = [data[max_lag - k : n - k] for k in range(1, max_lag + 1)]
    design = np.column_stack([np.ones(rows), *lagged])
    basis, triangle = np.linalg.qr(design)
    diagonal = np.abs(np.diag(triangle))
    if diagonal.min() <= 1e-10 * diagonal.max():
        return None
    coefficients = basis.T @ response
    values = np.empty(max_lag + 1)
    for lags in range(max_lag + 1):
        columns = 1 + equations * lags
        residuals = response - basis[:, :columns] @ coefficients[:columns]
        sign, log_det = np.linalg.slogdet(residuals.T @ residuals / rows)
        log_det = log_det if sign > 0 else -np.inf
        free = lags * equations**2 + equations
        if ic == "aic":
            values[lags] = log_det + 2.0 / rows * free
        elif ic == "bic":
            values[lags] = log_det + np.log(rows) / rows * free
        elif ic == "hqic":
            values[lags] = log_det + 2.0 * np.log(np.log(rows)) / rows * free
        else:  # fpe
            df_model = equations * lags + 1
            values[lags] = ((rows + df_model) / (rows - df_model)) ** equations * np.exp(log_det)
    return values


def _granger(effect: np.ndarray, cause: np.ndarray, lag: int) -> dict[str, Any]:
    """The SSR F test of `cause`'s lags in the regression of `effect`, at the chosen lag."""
    from statsmodels.tsa.stattools import grangercausalitytests

    data = np.column_stack([effect, cause])
    result = grangercausalitytests(data, maxlag=[lag])[lag]
    statistic, p_value, df_den, df_num = result[0]["ssr_ftest"]
    unrestricted = result[1][1]
    return {
        "lag": lag,
        "statistic": float(statistic),
        "p_value": float(p_value),
        "df_num": float(df_num),
        "df_den": float(df_den),
        "n_obs": int(unrestricted.nobs),
    }


def _pair_rows(
    unique_id: str,
    cause: str,
    target: np.ndarray,
    driver: np.ndarray,
    settings: GrangerSettings,
    target_memo: dict[bytes, _Stationarity] | None = None,
) -> list[dict[str, Any]]:
    """All directions' rows of one (series, driver) pair; every failure becomes a reason, not a raise."""
    directions = (DRIVER_TO_TARGET, TARGET_TO_DRIVER) if settings.both_directions else (DRIVER_TO_TARGET,)
    effects = {DRIVER_TO_TARGET: Y, TARGET_TO_DRIVER: cause}
    known: dict[str, Any] = {UNIQUE_ID: unique_id, "cause": cause, "ic": settings.ic}

    def not_testable(reason: str, direction_list: Sequence[str] = directions) -> list[dict[str, Any]]:
        return [
            {**known, "effect": effects[d], "direction": d, "testable": False, "reason": reason}
            for d in direction_list
        ]

    errors = _statsmodels_errors()
    if not np.isfinite(driver).any():
        return not_testable("cause missing")
    # Only rows where both sides are observed: a gap is bridged rather than imputed, which at
    # worst blurs a lag by the gap's length; imputing would invent the very dependence under test.
    both = np.isfinite(target) & np.isfinite(driver)
    target, driver = target[both], driver[both]
    memo = {} if target_memo is None else target_memo
    if target.size - 1 < settings.min_observations:
        return not_testable(_too_short(max(target.size - 1, 0), settings))
    if _is_constant(target):
        return not_testable("constant target")
    if _is_constant(driver):
        return not_testable("constant cause")
    try:
        # The target's rows are the same for every driver observed where it is: judged once.
        key = np.packbits(both).tobytes()
        if key not in memo:
            memo[key] = _make_stationary(target, settings, "target")
        target_side = memo[key]
        driver_side = _make_stationary(driver, settings, "cause")
    except _NotTestableError as exc:
        return not_testable(str(exc))
    except errors as exc:
        return not_testable(f"test failed: {exc}")
    known |= {
        "diff_target": target_side.differences,
        "diff_cause": driver_side.differences,
        "stationary": target_side.stationary and driver_side.stationary,
        "adf_p_target": target_side.adf_p,
        "kpss_p_target": target_side.kpss_p,
        "adf_p_cause": driver_side.adf_p,
        "kpss_p_cause": driver_side.kpss_p,
    }
    # Differencing d times drops d leading rows; both sides come from the same ds rows, so keeping
    # the common tail keeps them aligned in time.
    n = min(target_side.values.size, driver_side.values.size)
    y_values, x_values = target_side.values[-n:], driver_side.values[-n:]
    if n - 1 < settings.min_observations:
        return not_testable(_too_short(n - 1, settings))

    try:
        lag = _lag_order(y_values, x_values, settings)
    except _NotTestableError as exc:
        return not_testable(str(exc))
    except errors as exc:
        return not_testable(f"test failed: {exc}")
    rows: list[dict[str, Any]] = []
    for direction in directions:
        effect, causing = (y_values, x_values) if direction == DRIVER_TO_TARGET else (x_values, y_values)
        try:
            tested = _granger(effect, causing, lag)
        except errors as exc:
            rows += not_testable(f"test failed: {exc}", [direction])
        else:
            rows.append(
                {**known, **tested, "effect": effects[direction], "direction": direction, "testable": True}
            )
    return rows


# Below this many series, starting worker processes costs more than it saves.
PARALLEL_MIN_SERIES = 64


def granger_tests(
    history: pl.DataFrame, causes: Sequence[str], settings: GrangerSettings, n_jobs: int = 1
) -> pl.DataFrame:
    """One row per (series, cause, direction), with raw p-values; see `GRANGER_SCHEMA`.

    history: unique_id (Utf8), ds (Datetime), y (Float64), and one Float64 column per cause (drivers
    or peer series aligned on ds; may contain nulls). `cause` is always the driver's name; `effect`
    is the explained variable ('y' for driver_to_target, the driver for target_to_driver). The
    `*_target`/`*_cause` columns always describe y and the driver, whatever the direction.

    Bad data never raises: too short, constant, missing or numerically degenerate pairs give rows
    with testable=False and a reason, so one odd series cannot sink a whole partition's screen.
    A cause column absent from `history` counts as missing. Each pair is a separate statsmodels
    call, hence the Python loop over (series, cause); no loop runs over rows. With `n_jobs` > 1
    and at least PARALLEL_MIN_SERIES series, the series are split over that many worker
    processes (spawned, not forked: the caller may hold torch's thread pools, which do not
    survive a fork); results do not depend on the split.
    """
    reserved = {UNIQUE_ID, DS, Y}
    clashing = [cause for cause in causes if cause in reserved]
    if clashing:
        raise ValueError(f"cause columns may not be named {sorted(reserved)}, got {clashing}")
    if history.is_empty() or not causes:
        return pl.DataFrame(schema=GRANGER_SCHEMA)

    causes = list(dict.fromkeys(causes))  # a repeated cause would only repeat its rows
    present = [cause for cause in causes if cause in history.columns]
    frame = history.select(
        pl.col(UNIQUE_ID).cast(pl.String),
        pl.col(DS),
        pl.col(Y).cast(pl.Float64),
        *(pl.col(cause).cast(pl.Float64) for cause in present),
    ).sort(UNIQUE_ID, DS)
    series_ids = frame[UNIQUE_ID].unique(maintain_order=True).to_list()
    if n_jobs > 1 and len(series_ids) >= PARALLEL_MIN_SERIES:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor
        from concurrent.futures.process import BrokenProcessPool

        chunks = [
            frame.filter(pl.col(UNIQUE_ID).is_in(list(part)))
            for part in np.array_split(np.asarray(series_ids, dtype=object), n_jobs)
        ]
        context = multiprocessing.get_context("spawn")
        try:
            with ProcessPoolExecutor(max_workers=n_jobs, mp_context=context) as pool:
                parts = list(pool.map(_series_tests, chunks, [causes] * n_jobs, [settings] * n_jobs))
            return pl.concat(parts, how="vertical")
        except BrokenProcessPool:
            # A spawned worker could not start (e.g. the caller's script re-runs itself on import
            # without a `__main__` guard): the same tests, in this process.
            pass
    return _series_tests(frame, causes, settings)


def _series_tests(frame: pl.DataFrame, causes: Sequence[str], settings: GrangerSettings) -> pl.DataFrame:
    """The tests of every series in `frame` (sorted, typed, with every cause column present or not).

    BLAS runs single-threaded here: the regressions are a few hundred rows by a few dozen
    columns, where a thread pool's start-up costs more than it saves, and worker processes
    each holding one per core oversubscribe the machine many times over.
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        return _tests_by_series(frame, causes, settings)


def _tests_by_series(frame: pl.DataFrame, causes: Sequence[str], settings: GrangerSettings) -> pl.DataFrame:
    present = [cause for cause in causes if cause in frame.columns]
    rows: list[dict[str, Any]] = []
    for series in frame.partition_by(UNIQUE_ID, maintain_order=True):
        unique_id = series[UNIQUE_ID][0]
        # Nulls become NaN so a single isfinite mask handles nulls, NaN and infinities alike.
        target = series[Y].fill_null(float("nan")).to_numpy()
        target_memo: dict[bytes, _Stationarity] = {}
        for cause in causes:
            if cause in present:
                driver = series[cause].fill_null(float("nan")).to_numpy()
            else:
                driver = np.full(series.height, np.nan)
            rows += _pair_rows(unique_id, cause, target, driver, settings, target_memo)
    return pl.DataFrame(rows, schema=GRANGER_SCHEMA)


def benjamini_hochberg(p_values: np.ndarray) -> np.ndarray:
    """Adjusted p-values via statsmodels.stats.multitest.multipletests(method="fdr_bh").

    NaN inputs (untestable pairs) stay NaN and don't count in m: counting them would make every
    screen more conservative the more series happen to be too short.
    """
    from statsmodels.stats.multitest import multipletests

    p = np.asarray(p_values, dtype=float)
    if p.ndim != 1:
        raise ValueError(f"p_values must be one-dimensional, got shape {p.shape}")
    adjusted = np.full(p.shape, np.nan)
    finite = np.isfinite(p)
    if finite.any():
        adjusted[finite] = multipletests(p[finite], method="fdr_bh")[1]
    return adjusted


def screen(tests: pl.DataFrame, alpha: float) -> pl.DataFrame:
    """tests with an `adjusted_p` column -> adds `passes` (Boolean).

    A driver passes when its test is testable, runs driver -> target, and its BH-adjusted p-value
    is under alpha. Feedback rows (target -> driver) are kept in the family for the adjustment but
    never pass: they inform, they do not select. Null or NaN adjusted p-values never pass.
    """
    if ADJUSTED_P not in tests.columns:
        raise ValueError(f"screen needs an {ADJUSTED_P!r} column; compute it with benjamini_hochberg")
    passes = (
        pl.col("testable")
        & (pl.col("direction") == DRIVER_TO_TARGET)
        & pl.col(ADJUSTED_P).is_not_nan()
        & (pl.col(ADJUSTED_P) < alpha)
    ).fill_null(False)
    return tests.with_columns(passes.alias(PASSES))
