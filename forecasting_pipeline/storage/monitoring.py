"""Aggregates of the domain tables behind the Prometheus exporter.

Scraped every minute on deployments of 10,000 series, so each query returns a handful of rows
computed in SQL and touches only small tables, indexed ranges or the newest windows: landed
files (one row per file), the series dimension, the quarantine totals per reason (kept by the
statement that quarantines), the newest resource records, and the champions' scores of the
newest scored windows (found by walking the window index, not by scanning the table). Nothing
here reads observations, predictions or backtest folds.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, text

from forecasting_pipeline.storage.tables import (
    AUTOMATION_REQUESTS,
    CASCADE_QUEUE,
    DRIFT_EVENTS,
    FORECAST_ACCURACY,
    LANDED_FILES,
    QUARANTINE_COUNTS,
    RESOURCE_STATS,
    SCHEMA,
    SERIES,
)


@dataclass(frozen=True)
class LandedFileCounts:
    status: str
    files: int
    rows_accepted: int


def landed_file_counts(conn: Connection) -> list[LandedFileCounts]:
    rows = conn.execute(
        text(
            f"""
            SELECT status, count(*), coalesce(sum(rows_accepted), 0)
            FROM {SCHEMA}.{LANDED_FILES} GROUP BY status ORDER BY status
            """
        )
    ).all()
    return [LandedFileCounts(status, int(files), int(accepted)) for status, files, accepted in rows]


def quarantine_counts(conn: Connection) -> dict[str, int]:
    """Quarantined rows by reason, as kept beside the quarantine by the rows' own statement."""
    rows = conn.execute(text(f"SELECT reason, rows FROM {SCHEMA}.{QUARANTINE_COUNTS} ORDER BY reason")).all()
    return {reason: int(count) for reason, count in rows}


@dataclass(frozen=True)
class DatasetFreshness:
    dataset_id: str
    series: int
    last_update: datetime | None  # when data for it last landed (series registered or extended)
    newest_observation: datetime | None


def dataset_freshness(conn: Connection) -> list[DatasetFreshness]:
    rows = conn.execute(
        text(
            f"""
            SELECT coalesce(dataset_id, ''), count(*), max(updated_at), max(last_ts)
            FROM {SCHEMA}.{SERIES} GROUP BY 1 ORDER BY 1
            """
        )
    ).all()
    return [DatasetFreshness(d, int(n), updated, newest) for d, n, updated, newest in rows]


def stale_partition_counts(conn: Connection, assets: dict[str, str]) -> dict[str, int]:
    """Per asset, its materialized partitions whose data changed after they were materialized.

    A changed cell whose partition was never materialized is missing rather than stale (the
    history windows nobody trained on), and is not counted.

    `assets` maps an asset key (as the event log stores it) to how it is partitioned: `cell`
    (series × window, keys `<window>|<series>`), `window` or `series`. Only the cells in the
    cascade queue are candidates (every other cell is unchanged since its downstream was
    requested); each candidate partition costs one probe of the event log's index on
    (asset, event type, partition), so the cost follows the changed cells, not the history.
    """
    if not assets:
        return {}
    # The planner's estimate (a probe per changed cell and asset) passes every JIT threshold at
    # 10,000 series; compiling the plan cost half a second a scrape for nothing.
    conn.execute(text("SET LOCAL jit = off"))
    rows = conn.execute(
        text(
            f"""
            WITH changed AS (
                SELECT c.window_key, s.partition_key AS series_key, c.queued_at
                FROM {SCHEMA}.{CASCADE_QUEUE} c JOIN {SCHEMA}.{SERIES} s ON s.series_id = c.series_id
            ), assets AS (
                SELECT * FROM unnest(CAST(:assets AS text[]), CAST(:kinds AS text[])) AS a(asset_key, kind)
            ), candidates AS (
                -- a cell is its own partition (the queue holds each once): no grouping to spill
                SELECT a.asset_key, changed.window_key || '|' || changed.series_key AS partition,
                       changed.queued_at AS changed_at
                FROM changed CROSS JOIN assets a WHERE a.kind = 'cell'
                UNION ALL
                SELECT a.asset_key,
                       CASE a.kind WHEN 'window' THEN changed.window_key ELSE changed.series_key END,
                       max(changed.queued_at)
                FROM changed CROSS JOIN assets a WHERE a.kind <> 'cell'
                GROUP BY 1, 2
            )
            SELECT c.asset_key, count(*) FILTER (WHERE m.ts < c.changed_at)
            FROM candidates c
            LEFT JOIN LATERAL (
                SELECT e.timestamp AT TIME ZONE 'UTC' AS ts FROM event_logs e
                WHERE e.asset_key = c.asset_key AND e.dagster_event_type = 'ASSET_MATERIALIZATION'
                  AND e.partition = c.partition
                ORDER BY e.id DESC LIMIT 1
            ) m ON true
            GROUP BY c.asset_key
            """
        ),
        {"assets": list(assets), "kinds": list(assets.values())},
    ).all()
    counts = dict.fromkeys(assets, 0)
    counts.update({asset_key: int(n) for asset_key, n in rows})
    return counts


@dataclass(frozen=True)
class FitCost:
    stage: str
    model_name: str
    freq_group: str
    device: str
    series_count: int
    wall_seconds: float
    peak_rss_mb: float
    gpu_peak_mb: float | None


def newest_fit_costs(conn: Connection) -> list[FitCost]:
    """The newest tuning and training record of each model family and frequency group."""
    rows = conn.execute(
        text(
            f"""
            SELECT DISTINCT ON (stage, model_name, freq_group)
                   stage, model_name, freq_group, device, series_count, wall_seconds, peak_rss_mb,
                   gpu_peak_mb
            FROM {SCHEMA}.{RESOURCE_STATS}
            ORDER BY stage, model_name, freq_group, recorded_at DESC, stat_id DESC
            """
        )
    ).all()
    return [FitCost(*row) for row in rows]


@dataclass(frozen=True)
class AccuracyByFrequency:
    freq: str | None
    series: int
    points: int
    mase: float | None
    backtest_mase: float | None
    smape: float | None
    coverage_80: float | None
    coverage_95: float | None


def newest_scored_windows(conn: Connection, windows: int) -> list[str]:
    """The newest `windows` windows with scored forecasts, newest first.

    A loose index scan: one probe of `forecast_accuracy_window_idx` per window, however many
    rows each window holds.
    """
    rows = conn.execute(
        text(
            f"""
            WITH RECURSIVE newest(window_key, depth) AS (
                SELECT max(window_key), 1 FROM {SCHEMA}.{FORECAST_ACCURACY}
                UNION ALL
                SELECT (SELECT max(a.window_key) FROM {SCHEMA}.{FORECAST_ACCURACY} a
                        WHERE a.window_key < n.window_key), n.depth + 1
                FROM newest n WHERE n.window_key IS NOT NULL AND n.depth < :windows
            )
            SELECT window_key FROM newest WHERE window_key IS NOT NULL ORDER BY window_key DESC
            """
        ),
        {"windows": windows},
    ).all()
    return [row[0] for row in rows]


def champion_accuracy(conn: Connection, window_keys: list[str]) -> list[AccuracyByFrequency]:
    """Points-weighted errors and coverage of the champions' forecasts scored in `window_keys`,
    per series frequency: the same weighting as the drift sensor's rolling MASE."""
    rows = conn.execute(
        text(
            f"""
            SELECT s.freq, count(DISTINCT a.series_id), sum(a.points),
                   sum(a.mase * a.points) FILTER (WHERE a.mase IS NOT NULL)
                       / nullif(sum(a.points) FILTER (WHERE a.mase IS NOT NULL), 0),
                   sum(a.backtest_mase * a.points) FILTER (WHERE a.backtest_mase IS NOT NULL)
                       / nullif(sum(a.points) FILTER (WHERE a.backtest_mase IS NOT NULL), 0),
                   sum(a.smape * a.points) FILTER (WHERE a.smape IS NOT NULL)
                       / nullif(sum(a.points) FILTER (WHERE a.smape IS NOT NULL), 0),
                   sum(a.coverage_80 * a.points) FILTER (WHERE a.coverage_80 IS NOT NULL)
                       / nullif(sum(a.points) FILTER (WHERE a.coverage_80 IS NOT NULL), 0),
                   sum(a.coverage_95 * a.points) FILTER (WHERE a.coverage_95 IS NOT NULL)
                       / nullif(sum(a.points) FILTER (WHERE a.coverage_95 IS NOT NULL), 0)
            FROM {SCHEMA}.{FORECAST_ACCURACY} a
            JOIN {SCHEMA}.{SERIES} s ON s.series_id = a.series_id
            WHERE a.window_key = ANY(CAST(:windows AS text[])) AND a.champion
            GROUP BY s.freq ORDER BY s.freq
            """
        ),
        {"windows": window_keys},
    ).all()
    return [
        AccuracyByFrequency(freq, int(series), int(points), *values) for freq, series, points, *values in rows
    ]


@dataclass(frozen=True)
class DriftState:
    flagged_series: int  # in the newest window the drift sensor flagged any
    events: int
    pending_requests: int


def drift_state(conn: Connection) -> DriftState:
    row = conn.execute(
        text(
            f"""
            SELECT (SELECT count(*) FROM {SCHEMA}.{DRIFT_EVENTS}
                    WHERE window_key = (SELECT max(window_key) FROM {SCHEMA}.{DRIFT_EVENTS})),
                   (SELECT count(*) FROM {SCHEMA}.{DRIFT_EVENTS}),
                   (SELECT count(*) FROM {SCHEMA}.{AUTOMATION_REQUESTS}
                    WHERE kind = 'drift' AND submitted_at IS NULL)
            """
        )
    ).one()
    return DriftState(int(row[0]), int(row[1]), int(row[2]))
