"""`forecasting-pipeline forecast --input FILE --output OUT.csv` as a new user runs it: any
frequency, ragged ends, one row per series and step from each series' own last timestamp, and a
clear message (exit status 1) for malformed input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from forecasting_pipeline_tests.cli_runs import run_cli as _cli
from forecasting_pipeline_tests.cli_runs import user_env as _user_env
from forecasting_pipeline_tests.conftest import _scratch_dir

# (alias, points, horizon of its frequency group in the catalog)
FREQUENCIES = {
    "hourly": ("h", 24 * 12, 24),
    "daily": ("D", 200, 14),
    "weekly": ("W-SUN", 170, 8),
    "monthly": ("MS", 96, 18),
    "quarterly": ("QS-JAN", 48, 8),
    "yearly": ("YS-JAN", 40, 6),
}
OUTPUT_COLUMNS = ["unique_id", "ds", "yhat", "yhat_lo_80", "yhat_hi_80", "yhat_lo_95", "yhat_hi_95", "model"]


def _series(name: str, alias: str, points: int, end: pd.Timestamp, seed: int) -> pd.DataFrame:
    """A seasonal series with trend and noise ending at `end` (ends differ per series: ragged)."""
    rng = np.random.default_rng(seed)
    ds = pd.date_range(end=end, periods=points, freq=alias)
    season = {"h": 24, "D": 7, "W-SUN": 52, "MS": 12, "QS-JAN": 4}.get(alias, 1)
    t = np.arange(points)
    y = 100 + 0.3 * t + 10 * np.sin(2 * np.pi * t / season) + rng.normal(0, 2, points)
    return pd.DataFrame({"unique_id": name, "ds": ds, "y": y.round(3)})


@pytest.fixture(scope="module")
def mixed_input() -> pd.DataFrame:
    ends = {
        "h": [pd.Timestamp("2024-03-10 23:00"), pd.Timestamp("2024-03-09 17:00")],
        "D": [pd.Timestamp("2024-03-10"), pd.Timestamp("2024-03-02")],
        "W-SUN": [pd.Timestamp("2024-03-10"), pd.Timestamp("2024-02-18")],
        "MS": [pd.Timestamp("2024-03-01"), pd.Timestamp("2023-11-01")],
        "QS-JAN": [pd.Timestamp("2024-01-01"), pd.Timestamp("2023-07-01")],
        "YS-JAN": [pd.Timestamp("2024-01-01"), pd.Timestamp("2022-01-01")],
    }
    frames = [
        _series(f"{group}-{i}", alias, points, end, seed=10 * n + i)
        for n, (group, (alias, points, _)) in enumerate(FREQUENCIES.items())
        for i, end in enumerate(ends[alias])
    ]
    return pd.concat(frames, ignore_index=True)


def test_every_frequency_is_forecast_from_each_series_own_end(mixed_input, fresh_database):
    home = _scratch_dir("fp-forecast-cli-")
    source = home / "mixed.csv"
    mixed_input.to_csv(source, index=False)
    output = home / "out.csv"
    env = _user_env(home, fresh_database())
    result = _cli(
        env,
        "forecast",
        "--input",
        str(source),
        "--output",
        str(output),
        "--preset",
        "fast",
        "--max-steps",
        "5",
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    forecasts = pd.read_csv(output, parse_dates=["ds"])
    assert list(forecasts.columns) == OUTPUT_COLUMNS
    last = mixed_input.groupby("unique_id")["ds"].max()
    for group, (alias, _, horizon) in FREQUENCIES.items():
        for i in range(2):
            series = f"{group}-{i}"
            rows = forecasts[forecasts["unique_id"] == series].sort_values("ds")
            expected = pd.date_range(start=last[series], periods=horizon + 1, freq=alias)[1:]
            assert list(rows["ds"]) == list(expected), series
            assert rows["model"].nunique() == 1
            bounds = rows[["yhat_lo_95", "yhat_lo_80", "yhat", "yhat_hi_80", "yhat_hi_95"]].to_numpy()
            assert (np.diff(bounds, axis=1) >= -1e-9).all(), series
    assert "Champion forecasts of window" in result.stdout

    board = _cli(env, "leaderboard")
    assert board.returncode == 0, board.stderr[-2000:]
    for group in FREQUENCIES:
        assert f"\n{group} (" in board.stdout
    assert "SeasonalNaive" in board.stdout and "MeanTop3" in board.stdout


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("unique_id,ds\na,2024-01-01\n", "no column 'y' (--target-column)"),
        ("series,when,value\na,2024-01-01,1\n", "no column 'unique_id' (--id-column), 'ds' (--time-column)"),
        (
            "unique_id,ds,y\na,not a date,1\na,2024-01-02,x\n",
            "held by failed quality checks: timestamps_parse",
        ),
        ("\x00\x01binary", "not a readable CSV or Parquet file"),
    ],
)
def test_malformed_input_fails_with_a_message_that_says_what_to_do(content, message, fresh_database):
    home = _scratch_dir("fp-forecast-bad-")
    source = home / "bad.csv"
    source.write_text(content)
    result = _cli(_user_env(home, fresh_database()), "forecast", "--input", str(source), "--preset", "fast")
    assert result.returncode == 4, result.stdout[-2000:]  # input data rejected
    assert "error:" in result.stderr and message in result.stderr, result.stderr[-2000:]
    assert "hint:" in result.stderr
    assert "Traceback" not in result.stderr
