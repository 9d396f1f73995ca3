"""Out-of-sample accuracy of the published champions on the bundled electricity prices.

Replays operation week by week: the pipeline trains, backtests, selects and publishes for each
of the windows 2016-10-09, 10-16 and 10-23 in turn (champions carry over between windows, as in
production), and each published forecast is then scored against the actual prices of the day
after its cutoff — data no step of that window saw. Reported per window and overall: the
champion's MASE and sMAPE beside seasonal naive's and Theta's forecasts from the same runs, and
the coverage of the published 80% and 95% intervals.

    python benchmarks/bundled_accuracy.py [--max-steps 300] [--trials 4] [--driver-rule screened]

Results: benchmarks/results/bundled_accuracy.json (or --result-name). `driver_value.py` runs it
once per driver rule to tell whether the drivers the studies choose improve the champions.
"""

from __future__ import annotations

import argparse
import time

import polars as pl
from _common import configure, fresh_database, write_result

WINDOWS = ["2016-10-09", "2016-10-16", "2016-10-23"]
COLUMNS = "series_id, window_key, cutoff, ds, yhat, lo_80, hi_80, lo_95, hi_95"


def _scores(forecasts: pl.DataFrame, actuals: pl.DataFrame, scales: pl.DataFrame) -> pl.DataFrame:
    """Per model: MASE and sMAPE (means over series and origins), interval coverage in percent."""
    joined = forecasts.join(actuals, on=["series_id", "ds"]).join(scales, on=["series_id", "cutoff"])
    per_origin = joined.group_by("model", "series_id", "cutoff").agg(
        ((pl.col("y") - pl.col("yhat")).abs().mean() / pl.col("scale").first()).alias("mase"),
        (
            200 * ((pl.col("y") - pl.col("yhat")).abs() / (pl.col("y").abs() + pl.col("yhat").abs())).mean()
        ).alias("smape"),
        ((pl.col("y") >= pl.col("lo_80")) & (pl.col("y") <= pl.col("hi_80"))).mean().alias("coverage_80"),
        ((pl.col("y") >= pl.col("lo_95")) & (pl.col("y") <= pl.col("hi_95"))).mean().alias("coverage_95"),
        pl.len().alias("points"),
    )
    return (
        per_origin.group_by("model")
        .agg(
            pl.col("mase").mean(),
            pl.col("smape").mean(),
            (100 * (pl.col("coverage_80") * pl.col("points")).sum() / pl.col("points").sum()).alias(
                "coverage_80"
            ),
            (100 * (pl.col("coverage_95") * pl.col("points")).sum() / pl.col("points").sum()).alias(
                "coverage_95"
            ),
            pl.col("points").sum(),
        )
        .sort("mase")
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-steps", type=int, default=300)
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--driver-rule", default="screened", help="screened, all or none.")
    parser.add_argument("--windows", nargs="+", default=WINDOWS)
    parser.add_argument("--result-name", default="bundled_accuracy")
    args = parser.parse_args()
    windows = args.windows
    with fresh_database() as url:
        configure(url, FP_PARTITION_START="2016-10-02")
        from dagster import DagsterInstance
        from sqlalchemy import text

        from forecasting_pipeline import operations
        from forecasting_pipeline.bootstrap import prepare_deployment
        from forecasting_pipeline.datasets import EPF_FR_BE, land_bundled_dataset
        from forecasting_pipeline.resources.database import engine_for
        from forecasting_pipeline.storage.bulk import copy_query

        deployment = prepare_deployment()
        instance = DagsterInstance.get()
        land_bundled_dataset(EPF_FR_BE.name, deployment.settings.landing_dir)
        operations.ingest(instance, deployment, progress=lambda _: None)
        keys = list(instance.get_dynamic_partitions("series"))
        seconds = {}
        for window in windows:
            started = time.perf_counter()
            operations.forecast(
                instance,
                window,
                keys,
                global_model_config={"max_steps": args.max_steps},
                search_config={"trials": args.trials},
                backtest_config={"max_steps": args.max_steps},
                study_configs={"training_panel": {"rule": args.driver_rule}},
            )
            seconds[window] = round(time.perf_counter() - started, 1)
            print(f"window {window}: {seconds[window]} s", flush=True)
        engine = engine_for(deployment.database_url)
        with engine.connect() as conn:
            published = copy_query(
                conn,
                f"SELECT {COLUMNS}, 'champion' AS model, "
                "model_name AS champion FROM forecasting.published_forecasts WHERE window_key = ANY(%s)",
                (windows,),
            )
            baselines = copy_query(
                conn,
                f"SELECT {COLUMNS}, model_name AS model "
                "FROM forecasting.predictions WHERE window_key = ANY(%s) "
                "AND model_name IN ('SeasonalNaive', 'AutoTheta', 'AutoETS', 'NHITS')",
                (windows,),
            )
            actuals = copy_query(conn, "SELECT series_id, ts AS ds, y FROM forecasting.observations")
            # MASE scale per origin: in-sample seasonal-naive MAE of the history up to the cutoff.
            scales = copy_query(
                conn,
                """SELECT c.series_id, c.cutoff, avg(abs(o.y - l.y)) AS scale
                   FROM (SELECT DISTINCT series_id, cutoff FROM forecasting.published_forecasts
                         WHERE window_key = ANY(%s)) c
                   JOIN forecasting.observations o ON o.series_id = c.series_id AND o.ts <= c.cutoff
                   JOIN forecasting.observations l ON l.series_id = o.series_id
                        AND l.ts = o.ts - interval '24 hours'
                   GROUP BY c.series_id, c.cutoff""",
                (windows,),
            )
            champions = conn.execute(
                text(
                    "SELECT window_key, series_id, model_name, interval_method "
                    "FROM forecasting.published_forecasts WHERE window_key = ANY(:w) "
                    "GROUP BY 1, 2, 3, 4 ORDER BY 1, 2"
                ),
                {"w": windows},
            ).all()
            backtest = copy_query(
                conn,
                "SELECT window_key, freq_group, model_name, value AS mase FROM forecasting.backtest_metrics "
                "WHERE window_key = ANY(%s) AND series_id IS NULL AND step IS NULL AND metric = 'mase' "
                "ORDER BY 1, 4",
                (windows,),
            )
            drivers = copy_query(
                conn,
                "SELECT window_key, driver, selected, reason FROM forecasting.driver_selection "
                "WHERE window_key = ANY(%s) ORDER BY 1, 2",
                (windows,),
            )
    floats = ["yhat", "lo_80", "hi_80", "lo_95", "hi_95"]
    typed = [
        frame.with_columns(
            pl.col("cutoff", "ds").str.to_datetime(time_unit="us"), pl.col(floats).cast(pl.Float64)
        ).select("series_id", "window_key", "cutoff", "ds", "model", *floats)
        for frame in (published, baselines)
    ]
    forecasts = pl.concat(typed)
    actuals = actuals.with_columns(pl.col("ds").str.to_datetime(time_unit="us"), pl.col("y").cast(pl.Float64))
    scales = scales.with_columns(
        pl.col("cutoff").str.to_datetime(time_unit="us"), pl.col("scale").cast(pl.Float64)
    )
    overall = _scores(forecasts, actuals, scales)
    by_window = {
        window: _scores(forecasts.filter(pl.col("window_key") == window), actuals, scales).to_dicts()
        for window in windows
    }
    result = {
        "dataset": "epf_fr_be (bundled): hourly day-ahead prices of France and Belgium",
        "windows": windows,
        "driver_rule": args.driver_rule,
        "drivers": drivers.to_dicts(),
        "backtest_mase_by_candidate": backtest.with_columns(
            pl.col("mase").cast(pl.Float64).round(4)
        ).to_dicts(),
        "horizon": 24,
        "max_steps": args.max_steps,
        "trials": args.trials,
        "seconds_per_window": seconds,
        "champions": [
            dict(zip(("window", "series", "champion", "intervals"), row, strict=True)) for row in champions
        ],
        "overall": overall.to_dicts(),
        "by_window": by_window,
    }
    write_result(args.result_name, result)
    print(overall)


if __name__ == "__main__":
    main()
