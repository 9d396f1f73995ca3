"""Granger screening: it finds a known driver at its true lag, ignores noise, and never raises on bad data.

Synthetic design (`_driven`): x and z are independent white noise, and
    y_t = 0.5·y_{t-1} + 0.8·x_{t-3} + e_t,
so x Granger-causes y at exactly lag 3 and z causes nothing. The integrated variant cumulates all
three (x and z random walks, Δy following the recursion above in Δx), so the pair is only testable
after differencing and the relation reappears at lag 3 in the differences.

Seeds 0-9 are checked one by one at the 1 % level for both x (flagged) and z (not flagged);
`test_operating_characteristics` measures both rates over 40 seeds. Failures there are the
tests' nominal size: z -> y is flagged at about the BH level by construction, and an occasional
needless difference (KPSS overriding ADF) smears the lag-3 impulse into lag 4.
"""

from __future__ import annotations

import warnings
from datetime import datetime, timedelta

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from forecasting_pipeline.modeling.granger import (
    ADJUSTED_P,
    DRIVER_TO_TARGET,
    GRANGER_SCHEMA,
    PASSES,
    TARGET_TO_DRIVER,
    GrangerSettings,
    benjamini_hochberg,
    granger_tests,
    screen,
)

TRUE_LAG = 3
START = datetime(2000, 1, 1)
# Ten consecutive seeds, not a hand-picked few; over seeds 0-39 the strict assertions fail only
# at seed 24 (lag 4 chosen) and 27 (z adjusted p < 0.01), see test_operating_characteristics.
SEEDS = tuple(range(10))
# The reference pair (integrated variant, y cumulated once more) differences y twice, x once.
REFERENCE_SEED = 1


def _driven(seed: int, n: int = 400, *, integrated: bool = False, unique_id: str = "s") -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    burn = 50
    total = n + burn
    x = rng.standard_normal(total)
    z = rng.standard_normal(total)
    e = rng.standard_normal(total)
    y = np.zeros(total)
    for t in range(TRUE_LAG, total):  # the recursion itself; not a loop over frame rows
        y[t] = 0.5 * y[t - 1] + 0.8 * x[t - TRUE_LAG] + e[t]
    if integrated:
        x, y, z = np.cumsum(x), np.cumsum(y), np.cumsum(z)
    return _frame(unique_id, y[burn:], x[burn:], z[burn:])


def _frame(unique_id: str, y: np.ndarray, x: np.ndarray, z: np.ndarray | None = None) -> pl.DataFrame:
    n = len(y)
    ds = pl.datetime_range(START, START + timedelta(days=n - 1), "1d", eager=True)
    columns = {"unique_id": [unique_id] * n, "ds": ds, "y": y, "x": x}
    if z is not None:
        columns["z"] = z
    return pl.DataFrame(columns).with_columns(
        pl.col("unique_id").cast(pl.String), pl.exclude("unique_id", "ds").cast(pl.Float64)
    )


def _adjusted(tests: pl.DataFrame) -> pl.DataFrame:
    return tests.with_columns(pl.Series(ADJUSTED_P, benjamini_hochberg(tests["p_value"].to_numpy())))


def _row(tests: pl.DataFrame, cause: str, direction: str, unique_id: str = "s") -> dict:
    rows = tests.filter(
        (pl.col("unique_id") == unique_id) & (pl.col("cause") == cause) & (pl.col("direction") == direction)
    )
    assert rows.height == 1
    return rows.row(0, named=True)


def _run_strictly(frame: pl.DataFrame, causes: list[str], settings: GrangerSettings) -> pl.DataFrame:
    # Any warning (a FutureWarning from a changed statsmodels default included) fails the test.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return granger_tests(frame, causes, settings)


@pytest.mark.parametrize("integrated", [False, True], ids=["stationary", "integrated"])
@pytest.mark.parametrize("seed", SEEDS)
def test_finds_the_driver_at_its_lag_and_ignores_noise(seed: int, integrated: bool):
    tests = _adjusted(_run_strictly(_driven(seed, integrated=integrated), ["x", "z"], GrangerSettings()))

    assert tests.height == 4  # (x, z) x both directions: the BH family of this run
    assert tests["testable"].all()
    x_to_y = _row(tests, "x", DRIVER_TO_TARGET)
    z_to_y = _row(tests, "z", DRIVER_TO_TARGET)
    assert x_to_y["lag"] == TRUE_LAG
    assert x_to_y["adjusted_p"] < 0.01
    assert z_to_y["adjusted_p"] > 0.01
    assert x_to_y["effect"] == "y"
    assert _row(tests, "x", TARGET_TO_DRIVER)["effect"] == "x"
    if integrated:
        for cause in ("x", "z"):
            row = _row(tests, cause, DRIVER_TO_TARGET)
            assert row["diff_target"] >= 1
            assert row["diff_cause"] >= 1

    screened = screen(tests, alpha=0.01)
    assert screened.filter(PASSES)["cause"].to_list() == ["x"]


def test_operating_characteristics():
    """Over 40 seeds: x is found at lag 3 nearly always, z is flagged at about the nominal rate."""
    found = flagged = 0
    seeds = range(40)
    for seed in seeds:
        tests = _adjusted(granger_tests(_driven(seed), ["x", "z"], GrangerSettings()))
        x_to_y = _row(tests, "x", DRIVER_TO_TARGET)
        found += x_to_y["lag"] == TRUE_LAG and x_to_y["adjusted_p"] < 0.01
        flagged += _row(tests, "z", DRIVER_TO_TARGET)["adjusted_p"] < 0.05
    assert found >= 0.95 * len(seeds)
    assert flagged <= 0.10 * len(seeds)


@pytest.mark.parametrize("ic", ["bic", "aic"])
def test_equals_statsmodels_called_directly(ic: str):
    from statsmodels.stats.multitest import multipletests
    from statsmodels.tools.sm_exceptions import InterpolationWarning
    from statsmodels.tsa.api import VAR
    from statsmodels.tsa.stattools import adfuller, grangercausalitytests, kpss

    settings = GrangerSettings(ic=ic)
    # y integrated twice, x once: the two sides need different differencing and must be aligned.
    frame = _driven(REFERENCE_SEED, integrated=True).with_columns(pl.col("y").cum_sum())
    tests = _adjusted(granger_tests(frame, ["x"], settings))
    first = _row(tests, "x", DRIVER_TO_TARGET)
    assert (first["diff_target"], first["diff_cause"]) == (2, 1)

    def p_values(values: np.ndarray) -> tuple[float, float]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", InterpolationWarning)
            kpss_p = kpss(values, regression="c", nlags="auto", result_object=True).pvalue
        return adfuller(values, autolag="AIC", result_object=True).pvalue, kpss_p

    def stationary(values: np.ndarray) -> bool:
        adf_p, kpss_p = p_values(values)
        return adf_p < settings.significance and kpss_p > settings.significance / 5

    differenced = {}
    for side, column in (("target", "y"), ("cause", "x")):
        raw = frame[column].to_numpy()
        count = first[f"diff_{side}"]
        # The reported count is the first at which ADF rejects a unit root and KPSS does not
        # reject stationarity at the stricter level.
        assert not any(stationary(np.diff(raw, d)) for d in range(count))
        differenced[side] = np.diff(raw, count)
        adf_p, kpss_p = p_values(differenced[side])
        assert first[f"adf_p_{side}"] == pytest.approx(adf_p, abs=1e-6)
        assert first[f"kpss_p_{side}"] == pytest.approx(kpss_p, abs=1e-6)
    assert first["stationary"]

    n = min(len(differenced["target"]), len(differenced["cause"]))
    y, x = differenced["target"][-n:], differenced["cause"][-n:]
    for direction, data in (
        (DRIVER_TO_TARGET, np.column_stack([y, x])),
        (TARGET_TO_DRIVER, np.column_stack([x, y])),
    ):
        row = _row(tests, "x", direction)
        # n is ~397, so neither the VAR's estimability nor min_observations caps max_lag here.
        lag = max(1, VAR(data).select_order(maxlags=settings.max_lag).selected_orders[ic])
        assert row["lag"] == lag
        result = grangercausalitytests(data, maxlag=[lag])[lag]
        statistic, p_value, df_den, df_num = result[0]["ssr_ftest"]
        assert row["statistic"] == pytest.approx(statistic, abs=1e-6)
        assert row["p_value"] == pytest.approx(p_value, abs=1e-6)
        assert row["df_num"] == pytest.approx(df_num, abs=1e-6)
        assert row["df_den"] == pytest.approx(df_den, abs=1e-6)
        assert row["n_obs"] == n - lag == result[1][1].nobs
        assert row["ic"] == ic

    expected = multipletests(tests["p_value"].to_numpy(), method="fdr_bh")[1]
    np.testing.assert_allclose(tests[ADJUSTED_P].to_numpy(), expected, rtol=0, atol=1e-6)


def test_benjamini_hochberg_leaves_nan_out_of_the_family():
    from statsmodels.stats.multitest import multipletests

    p = np.array([0.01, np.nan, 0.04, 0.03, np.nan, 0.5])
    adjusted = benjamini_hochberg(p)
    finite = ~np.isnan(p)
    assert np.isnan(adjusted[~finite]).all()
    np.testing.assert_allclose(adjusted[finite], multipletests(p[finite], method="fdr_bh")[1], atol=1e-12)
    assert benjamini_hochberg(np.array([])).shape == (0,)
    assert np.isnan(benjamini_hochberg(np.array([np.nan, np.nan]))).all()


@pytest.mark.filterwarnings("ignore")  # the duplicated cause makes statsmodels warn before it fails
def test_bad_series_become_reasons_not_exceptions():
    rng = np.random.default_rng(7)
    n = 200
    noise = rng.standard_normal(n)
    frame = pl.concat(
        [
            _driven(0, unique_id="good"),
            _frame("short", rng.standard_normal(10), rng.standard_normal(10)),
            _frame("flat_y", np.full(n, 3.0), rng.standard_normal(n)),
            _frame("flat_cause", rng.standard_normal(n), np.full(n, -1.0)),
            _frame("no_cause", rng.standard_normal(n), np.full(n, np.nan)),
            _frame("trend_y", np.arange(n, dtype=float), rng.standard_normal(n)),
            _frame("duplicate", noise, noise.copy()),
        ],
        how="diagonal",
    ).with_columns(pl.col("x").fill_nan(None))  # nulls, as a left join of drivers leaves them
    tests = granger_tests(frame, ["x"], GrangerSettings())

    assert tests.schema == pl.Schema(GRANGER_SCHEMA)
    assert tests.height == 14
    reasons = {
        uid: set(group["reason"].to_list())
        for (uid,), group in tests.filter(~pl.col("testable")).group_by("unique_id")
    }
    assert reasons.pop("short") == {"too_short: 9 usable observations, need 30"}
    assert reasons.pop("flat_y") == {"constant target"}
    assert reasons.pop("flat_cause") == {"constant cause"}
    assert reasons.pop("no_cause") == {"cause missing"}
    assert reasons.pop("trend_y") == {"constant target"}  # constant once differenced
    (duplicate,) = reasons.pop("duplicate")
    assert duplicate.startswith("test failed: ")
    assert reasons == {}
    good = tests.filter(pl.col("unique_id") == "good")
    assert good["testable"].all()
    assert good["reason"].is_null().all()
    assert tests.filter(~pl.col("testable"))["p_value"].is_null().all()


def test_missing_cause_column_empty_input_and_one_direction():
    frame = _driven(0)
    tests = granger_tests(frame, ["x", "absent"], GrangerSettings(both_directions=False))
    assert tests["direction"].to_list() == [DRIVER_TO_TARGET, DRIVER_TO_TARGET]
    assert tests["cause"].to_list() == ["x", "absent"]
    assert tests["reason"].to_list() == [None, "cause missing"]

    empty = granger_tests(frame.clear(), ["x"], GrangerSettings())
    assert empty.is_empty()
    assert empty.schema == pl.Schema(GRANGER_SCHEMA)
    assert granger_tests(frame, [], GrangerSettings()).schema == pl.Schema(GRANGER_SCHEMA)


def test_series_are_tested_independently():
    short = _driven(11, n=150, unique_id="b").with_columns(
        pl.col("ds").dt.offset_by("37d"),
        # A few gaps in the driver: those rows drop out of this series' pair only.
        pl.when(pl.int_range(pl.len()) % 17 == 5).then(None).otherwise(pl.col("x")).alias("x"),
    )
    parts = [
        _driven(2, unique_id="a"),
        short,
        _driven(3, integrated=True, unique_id="c"),
        _frame("d", np.arange(12, dtype=float) % 5, np.ones(12), np.zeros(12)),
    ]
    settings = GrangerSettings()
    together = granger_tests(
        pl.concat(parts).sample(fraction=1.0, shuffle=True, seed=0), ["x", "z"], settings
    )
    alone = pl.concat([granger_tests(part, ["x", "z"], settings) for part in parts])
    assert_frame_equal(together, alone)
    assert together["unique_id"].unique(maintain_order=True).to_list() == ["a", "b", "c", "d"]


def test_screen_passes_only_testable_driver_to_target_rows_under_alpha():
    tests = pl.DataFrame(
        {
            "cause": ["a", "a", "b", "c", "d", "e", "f"],
            "direction": [
                DRIVER_TO_TARGET,
                TARGET_TO_DRIVER,
                DRIVER_TO_TARGET,
                DRIVER_TO_TARGET,
                DRIVER_TO_TARGET,
                DRIVER_TO_TARGET,
                DRIVER_TO_TARGET,
            ],
            "testable": [True, True, True, False, True, True, True],
            ADJUSTED_P: [0.001, 0.001, 0.2, None, None, float("nan"), 0.05],
        }
    )
    screened = screen(tests, alpha=0.05)
    assert screened[PASSES].dtype == pl.Boolean
    assert screened[PASSES].to_list() == [True, False, False, False, False, False, False]
    assert screened.drop(PASSES).equals(tests)
    with pytest.raises(ValueError, match=ADJUSTED_P):
        screen(tests.drop(ADJUSTED_P), alpha=0.05)


@pytest.mark.parametrize(
    "kwargs",
    [{"ic": "mdl"}, {"max_lag": 0}, {"significance": 1.0}, {"max_differences": -1}, {"min_observations": 0}],
)
def test_settings_are_validated(kwargs: dict):
    with pytest.raises(ValueError):
        GrangerSettings(**kwargs)


def test_worker_processes_give_the_same_rows_as_one_process():
    from forecasting_pipeline.modeling.granger import PARALLEL_MIN_SERIES

    frame = pl.concat(
        [_driven(seed, n=120, unique_id=f"s{seed:03d}") for seed in range(PARALLEL_MIN_SERIES + 2)]
    )
    settings = GrangerSettings(max_lag=4)
    serial = granger_tests(frame, ["x", "z"], settings)
    parallel = granger_tests(frame, ["x", "z"], settings, n_jobs=2)
    assert parallel.sort("unique_id", "cause", "direction").equals(
        serial.sort("unique_id", "cause", "direction")
    )


@pytest.mark.parametrize("ic", ["aic", "bic", "hqic", "fpe"])
def test_lag_search_equals_var_select_order_for_every_criterion(ic: str):
    from statsmodels.tsa.api import VAR

    from forecasting_pipeline.modeling.granger import _var_criteria

    frame = _driven(7, n=300)
    data = np.column_stack([frame["y"].to_numpy(), frame["x"].to_numpy()])
    expected = VAR(data).select_order(maxlags=10).ics[ic]
    np.testing.assert_allclose(_var_criteria(data, 10, ic), expected, rtol=1e-9)
