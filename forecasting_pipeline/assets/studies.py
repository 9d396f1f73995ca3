"""Driver studies: which drivers move with each target, which lead it, and which Granger-cause it.

`correlation_study` (per window) measures Pearson/Spearman correlation of every target with its
drivers, the lagged cross-correlation up to `max_lag` and each series' strongest peers in its
frequency group, with a heatmap on the materialization. `granger_study` (per series × window)
tests each driver, and optionally the strongest peers, for Granger causality after making both
sides stationary, with the lag order chosen by an information criterion; p-values are
Benjamini–Hochberg adjusted across every test of the window. `training_panel` turns the
verdicts into the drivers each frequency group's models take.
"""

import base64
import os
from typing import Any

import polars as pl
from dagster import AssetDep, AssetExecutionContext, Config, MaterializeResult, MetadataValue
from pydantic import Field, field_validator

from forecasting_pipeline.assets.cell_metadata import add_cell_rows
from forecasting_pipeline.assets.conventions import markdown_table, note_run, pipeline_asset
from forecasting_pipeline.assets.history_slices import HistorySlice, history_slices
from forecasting_pipeline.assets.ingest import observation_history, raw_observations
from forecasting_pipeline.assets.training import cell_columns
from forecasting_pipeline.modeling.correlation import (
    correlation_heatmap,
    cross_series_correlations,
    driver_correlations,
    lagged_correlations,
)
from forecasting_pipeline.modeling.granger import GrangerSettings, granger_tests
from forecasting_pipeline.partitions import SAME_WINDOW, date_partitions, series_date_partitions
from forecasting_pipeline.resources.database import DatabaseResource
from forecasting_pipeline.schemas import DS, UNIQUE_ID, Y, driver_columns
from forecasting_pipeline.storage.catalog import known_series, series_by_window
from forecasting_pipeline.storage.studies import (
    granger_report,
    replace_correlations,
    replace_granger_tests,
    strongest_peers,
)
from forecasting_pipeline.storage.tables import GRANGER_TESTS

PEER_PREFIX = "peer:"


class CorrelationConfig(Config):
    max_lag: int = Field(
        default=24, ge=0, description="Largest driver lead (in steps) of the cross-correlation."
    )
    lookback_points: int = Field(default=512, gt=2, description="Points per series before the window's end.")
    top_peers: int = Field(default=5, ge=0, description="Strongest peers kept per series (cross-series).")
    min_overlap: int = Field(default=10, gt=2, description="Shared timestamps a peer pair needs.")


def _drivers_of(history: pl.DataFrame) -> list[str]:
    return driver_columns(history.columns)


# Columns of a `forecasting.correlations` row (besides window, group and run); each kind of
# study fills some of them.
_CORRELATION_SCHEMA = {
    "kind": pl.Utf8,
    "series_id": pl.Utf8,
    "other": pl.Utf8,
    "lag": pl.Int32,
    "pearson": pl.Float64,
    "spearman": pl.Float64,
    "n": pl.Int64,
    "best_lag": pl.Int32,
    "best_lag_pearson": pl.Float64,
    "rank": pl.Int32,
}


def _as_correlation_rows(frame: pl.DataFrame, kind: str, other: str) -> pl.DataFrame:
    """One study's output as correlation rows: `other` names the driver or peer column; the
    columns this kind of study does not have are null, and lag is 0 where it has none."""
    named = frame.rename({UNIQUE_ID: "series_id", other: "other"}).with_columns(pl.lit(kind).alias("kind"))
    if "lag" not in named.columns:
        named = named.with_columns(pl.lit(0).alias("lag"))
    return named.select(
        pl.col(c).cast(t) if c in named.columns else pl.lit(None, t).alias(c)
        for c, t in _CORRELATION_SCHEMA.items()
    )


def _correlation_rows(part: HistorySlice, history: pl.DataFrame, config: CorrelationConfig) -> pl.DataFrame:
    """The slice's rows of `forecasting.correlations`: per driver, per lag and per peer."""
    drivers = _drivers_of(history)
    frames = []
    if drivers:
        by_driver = driver_correlations(history, drivers, config.max_lag)
        frames.append(_as_correlation_rows(by_driver, "driver", "driver"))
        lagged = lagged_correlations(history, drivers, config.max_lag)
        frames.append(_as_correlation_rows(lagged, "lagged", "driver"))
    if config.top_peers:
        peers = cross_series_correlations(
            history.select(UNIQUE_ID, DS, Y), config.top_peers, config.min_overlap
        )
        frames.append(_as_correlation_rows(peers, "cross_series", "peer_id"))
    rows = pl.concat(frames, how="vertical") if frames else pl.DataFrame()
    return rows.with_columns(pl.lit(part.group).alias("freq_group")) if rows.height else rows


@pipeline_asset(
    partitions_def=date_partitions,
    deps=[AssetDep(observation_history)],
    group_name="studies",
    kinds={"polars", "postgres"},
)
def correlation_study(
    context: AssetExecutionContext, config: CorrelationConfig, database: DatabaseResource
) -> MaterializeResult:
    """Correlations of the window in `forecasting.correlations`, and a heatmap of them.

    Each series contributes its last `lookback_points` points before the window's end, read in
    one bulk query per sampling frequency; cross-series correlations stay within a frequency
    group (hourly and monthly series share no timestamps worth comparing).
    """
    summary: list[dict[str, Any]] = []
    metadata: dict[str, Any] = {}
    with database.transaction() as conn:
        note_run(context, conn)
    for window in context.partition_keys:
        with database.transaction() as conn:
            sliced = history_slices(
                conn, window, known_series(conn), lambda _: config.lookback_points, from_window_start=False
            )
            window_rows = []
            for part in sliced.slices:
                history = part.read(conn)
                rows = _correlation_rows(part, history, config)
                if rows.height:
                    window_rows.append(rows)
                summary.append(
                    {
                        "window": window,
                        "group": part.group,
                        "series": len(part.series_ids),
                        "rows": rows.height,
                    }
                )
            rows = pl.concat(window_rows, how="diagonal_relaxed") if window_rows else pl.DataFrame()
            # A group whose series no longer give any correlation loses its old rows too.
            groups = sorted({part.group for part in sliced.slices})
            replace_correlations(conn, window, groups, rows, context.run_id)
        metadata = _correlation_metadata(window, rows)
    return MaterializeResult(
        metadata={
            "groups": MetadataValue.md(markdown_table(pl.DataFrame(summary))) if summary else "no series",
            **metadata,
        }
    )


def _correlation_metadata(window: str, rows: pl.DataFrame) -> dict[str, Any]:
    """The newest window's heatmap (inline PNG) and its driver correlations, for the UI."""
    if rows.height == 0:
        return {"heatmap": "no correlations to show"}
    lagged = rows.filter(pl.col("kind") == "lagged").select(
        pl.col("series_id").alias(UNIQUE_ID), pl.col("other").alias("driver"), "lag", "pearson", "n"
    )
    cross = rows.filter(pl.col("kind") == "cross_series").select(
        pl.col("series_id").alias(UNIQUE_ID), pl.col("other").alias("peer_id"), "pearson", "n", "rank"
    )
    image = correlation_heatmap(lagged, cross if cross.height else None, f"Correlations, window {window}")
    encoded = base64.b64encode(image).decode()
    by_driver = (
        rows.filter(pl.col("kind") == "driver")
        .group_by("freq_group", pl.col("other").alias("driver"))
        .agg(
            pl.len().alias("series"),
            pl.col("pearson").median().round(3).alias("median pearson"),
            pl.col("spearman").median().round(3).alias("median spearman"),
            pl.col("best_lag").median().alias("median best lag"),
        )
        .sort("freq_group", "driver")
    )
    return {
        "heatmap": MetadataValue.md(f"![correlation heatmap](data:image/png;base64,{encoded})"),
        "drivers": MetadataValue.md(markdown_table(by_driver)) if by_driver.height else "no drivers",
    }


class GrangerConfig(Config):
    max_lag: int = Field(
        default=24, gt=0, description="Largest lag order the information criterion considers."
    )
    ic: str = Field(default="bic", description="Lag order criterion: aic, bic, hqic or fpe.")
    lookback_points: int = Field(default=720, gt=10, description="Points per series before the window's end.")
    peers: int = Field(
        default=0, ge=0, description="Also test this many strongest peers (correlation_study)."
    )
    both_directions: bool = Field(default=True, description="Also test target -> driver (feedback).")
    n_jobs: int = Field(default=0, ge=0, description="Worker processes for the tests; 0: one per CPU core.")

    @field_validator("ic")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in ("aic", "bic", "hqic", "fpe"):
            raise ValueError(f"ic must be aic, bic, hqic or fpe, not {value!r}")
        return value

    def settings(self) -> GrangerSettings:
        return GrangerSettings(max_lag=self.max_lag, ic=self.ic, both_directions=self.both_directions)


def _with_peers(
    conn: Any, window: str, history: pl.DataFrame, top: int
) -> tuple[pl.DataFrame, pl.DataFrame | None]:
    """History with columns `peer:1`…`peer:top` (the rank-r peer's target on the same timestamps),
    and which peer each rank is.

    Peers come from the window's correlation study; a peer's values are read in the same bulk
    read as the series' own (it is in the same frequency group and window).
    """
    peers = strongest_peers(conn, window, history[UNIQUE_ID].unique().to_list(), top)
    if peers.height == 0:
        return history, None
    ranked = peers.with_columns(pl.int_range(1, pl.len() + 1).over("series_id").alias("rank"))
    targets = history.select(pl.col(UNIQUE_ID).alias("peer_id"), DS, pl.col(Y).alias("peer_y"))
    aligned = (
        history.select(UNIQUE_ID, DS)
        .join(ranked, left_on=UNIQUE_ID, right_on="series_id")
        .join(targets, on=["peer_id", DS], how="left")
        .with_columns(pl.format(PEER_PREFIX + "{}", "rank").alias("cause"))
        .pivot(on="cause", index=[UNIQUE_ID, DS], values="peer_y")
    )
    return history.join(aligned, on=[UNIQUE_ID, DS], how="left"), ranked


@pipeline_asset(
    partitions_def=series_date_partitions,
    deps=[AssetDep(raw_observations), AssetDep(correlation_study, partition_mapping=SAME_WINDOW)],
    group_name="studies",
    kinds={"statsmodels", "postgres"},
)
def granger_study(
    context: AssetExecutionContext, config: GrangerConfig, database: DatabaseResource
) -> MaterializeResult:
    """Granger tests of each series' drivers (and peers) in `forecasting.granger_tests`.

    Per (series, cause): ADF and KPSS decide how often each side is differenced, the lag order
    comes from `ic`, and the F test of the lagged cause is stored with its statistic, p-value,
    lag, sample size and differencing. A series too short or constant gets a "not testable" row
    with its reason. After the run's rows are written, every test of the window is adjusted
    together (Benjamini–Hochberg), since the window is the family of tests a screen draws from.
    """
    settings = config.settings()
    with database.transaction() as conn:
        note_run(context, conn)
        by_window = series_by_window(conn, context.partition_keys)
    reports: list[pl.DataFrame] = []
    for window, series_ids in by_window.items():
        with database.transaction() as conn:
            sliced = history_slices(
                conn, window, series_ids, lambda _: config.lookback_points, from_window_start=False
            )
        # No transaction stays open while the tests run (minutes at thousands of series).
        tests = [_test_slice(database, part, config, settings) for part in sliced.slices]
        nonempty = [t for t in tests if t.height]
        frame = pl.concat(nonempty, how="diagonal_relaxed") if nonempty else pl.DataFrame()
        with database.transaction() as conn:
            replace_granger_tests(conn, window, series_ids, frame, context.run_id)
            reports.append(granger_report(conn, window, series_ids))
        if sliced.unplaced:
            context.log.warning(f"window {window}: no known frequency for {sliced.unplaced[:5]}; not tested")
    with database.transaction() as conn:
        add_cell_rows(context, conn, GRANGER_TESTS, by_window, "tests")
    report = pl.concat(reports, how="vertical") if reports else pl.DataFrame()
    return MaterializeResult(
        metadata={
            "tests": int(report["tests"].sum()) if report.height else 0,
            "summary": MetadataValue.md(markdown_table(report)) if report.height else "no series tested",
        }
    )


def _test_slice(
    database: DatabaseResource, part: HistorySlice, config: GrangerConfig, settings: GrangerSettings
) -> pl.DataFrame:
    with database.transaction() as conn:
        history = part.read(conn)
        if history.height == 0:
            return pl.DataFrame()
        drivers = _drivers_of(history)
        peers = None
        if config.peers:
            history, peers = _with_peers(conn, part.window, history, config.peers)
    causes = driver_columns(history.columns)  # the drivers, and the peers' columns
    tests = granger_tests(history, causes, settings, n_jobs=config.n_jobs or os.cpu_count() or 1)
    if tests.height == 0:
        return tests
    tests = tests.with_columns(
        pl.when(pl.col("cause").is_in(drivers))
        .then(pl.lit("driver"))
        .otherwise(pl.lit("peer"))
        .alias("cause_kind")
    )
    if peers is not None:
        names = peers.select(
            pl.format(PEER_PREFIX + "{}", "rank").alias("cause"),
            pl.col("series_id").alias(UNIQUE_ID),
            "peer_id",
        )
        tests = (
            tests.join(names, on=[UNIQUE_ID, "cause"], how="left")
            .with_columns(pl.coalesce(pl.format(PEER_PREFIX + "{}", "peer_id"), "cause").alias("cause"))
            .drop("peer_id")
        )
    return tests.with_columns(pl.col(UNIQUE_ID).alias("series_id"), *cell_columns(tests, part))
