"""Champion selection records: proposals, their confirmation, champion events and publication.

Every statement works on a whole set of series at once (arrays bound as parameters), so a
window of 10,000 series costs a handful of statements, never one per series.
"""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl
from sqlalchemy import Connection, text

from forecasting_pipeline.storage.bulk import copy_frame, copy_query
from forecasting_pipeline.storage.tables import (
    BACKTEST_FOLDS,
    CHAMPION_EVENTS,
    INTERVAL_CALIBRATION,
    MODELS,
    PREDICTIONS,
    PUBLISHED_FORECASTS,
    SCHEMA,
    SELECTION_DECISIONS,
    SERIES_SCALES,
)

# Metrics a champion can be chosen by: each is recomputed from the fold rows by the blocking check.
SELECTION_METRICS: dict[str, str] = {
    "mase": "avg(abs(f.y - f.yhat)) / min(s.scale)",
    "mae": "avg(abs(f.y - f.yhat))",
    "rmse": "sqrt(avg((f.y - f.yhat) ^ 2))",
    "smape": "200 * avg(abs(f.y - f.yhat) / nullif(abs(f.y) + abs(f.yhat), 0))",
    "mape": "100 * avg(abs(f.y - f.yhat) / nullif(abs(f.y), 0))",
}
DECISION_COLUMNS = (
    "series_id",
    "window_key",
    "freq_group",
    "metric",
    "margin",
    "champion",
    "challenger",
    "champion_score",
    "challenger_score",
    "candidates",
    "decision",
    "reason",
    "dagster_run_id",
)


def current_champions(conn: Connection, series_ids: Sequence[str]) -> pl.DataFrame:
    """`series_id, champion` for series that have one."""
    frame = copy_query(
        conn,
        f"SELECT series_id, model_name AS champion FROM {SCHEMA}.current_champions WHERE series_id = ANY(%s)",
        (list(series_ids),),
    )
    return frame if frame.width else pl.DataFrame(schema={"series_id": pl.String, "champion": pl.String})


def replace_decisions(conn: Connection, window: str, decisions: pl.DataFrame, run_id: str) -> int:
    """The window's proposals for these series, replacing earlier proposals of the same cells."""
    conn.execute(
        text(
            f"DELETE FROM {SCHEMA}.{SELECTION_DECISIONS} WHERE window_key = :window AND series_id = ANY(:ids)"
        ),
        {"window": window, "ids": decisions["series_id"].to_list()},
    )
    frame = decisions.with_columns(pl.lit(window).alias("window_key"), pl.lit(run_id).alias("dagster_run_id"))
    return copy_frame(conn, f"{SCHEMA}.{SELECTION_DECISIONS}", frame, DECISION_COLUMNS)


def unconfirmed_promotions(conn: Connection, windows: Sequence[str], series_ids: Sequence[str]) -> list[dict]:
    """Promotions the fold rows do not back: `series_id, window_key, champion, challenger, why`.

    For each proposed promotion the decision's metric is recomputed from `backtest_folds` on the
    folds both models share; a promotion stands only if both were scored on exactly the same
    folds and the challenger beats the champion by the recorded margin.
    """
    cases = " ".join(f"WHEN '{name}' THEN {sql}" for name, sql in SELECTION_METRICS.items())
    rows = conn.execute(
        text(
            f"""
            WITH promoted AS (
                SELECT * FROM {SCHEMA}.{SELECTION_DECISIONS}
                WHERE decision = 'promote' AND window_key = ANY(:windows) AND series_id = ANY(:ids)
            ),
            folds AS (
                SELECT d.series_id, d.window_key, d.metric, d.margin, d.champion, d.challenger,
                       f.model_name, f.cutoff, f.step, f.y, f.yhat
                FROM promoted d
                JOIN {SCHEMA}.{BACKTEST_FOLDS} f
                  ON f.series_id = d.series_id AND f.window_key = d.window_key
                 AND f.model_name IN (d.champion, d.challenger)
            ),
            shared AS (
                SELECT * FROM (
                    SELECT f.*,
                           count(*) OVER (PARTITION BY f.series_id, f.window_key, f.cutoff, f.step) AS models
                    FROM folds f
                ) both_models
                WHERE models = 2
            ),
            scored AS (
                SELECT f.series_id, f.window_key, f.model_name, count(*) AS n,
                       CASE min(f.metric) {cases} END AS value
                FROM shared f
                JOIN {SCHEMA}.{SERIES_SCALES} s ON s.series_id = f.series_id AND s.window_key = f.window_key
                GROUP BY f.series_id, f.window_key, f.model_name
            ),
            counted AS (
                SELECT series_id, window_key, model_name, count(*) AS n FROM folds
                GROUP BY series_id, window_key, model_name
            )
            SELECT d.series_id, d.window_key, d.champion, d.challenger,
                   CASE
                     WHEN cc.n IS NULL OR ch.n IS NULL THEN 'a model has no fold rows'
                     WHEN cc.n <> ch.n OR cc.n <> coalesce(sc.n, 0) THEN 'not scored on the same folds'
                     WHEN sc.value > sh.value * (1 - d.margin) + 1e-12 THEN
                       format('challenger %s = %s does not beat champion %s = %s by %s',
                              d.metric, round(sc.value::numeric, 6), d.metric,
                              round(sh.value::numeric, 6), d.margin)
                   END AS why
            FROM promoted d
            LEFT JOIN counted cc ON cc.series_id = d.series_id AND cc.window_key = d.window_key
                                 AND cc.model_name = d.challenger
            LEFT JOIN counted ch ON ch.series_id = d.series_id AND ch.window_key = d.window_key
                                 AND ch.model_name = d.champion
            LEFT JOIN scored sc ON sc.series_id = d.series_id AND sc.window_key = d.window_key
                                AND sc.model_name = d.challenger
            LEFT JOIN scored sh ON sh.series_id = d.series_id AND sh.window_key = d.window_key
                                AND sh.model_name = d.champion
            """
        ),
        {"windows": list(windows), "ids": list(series_ids)},
    )
    return [dict(row._mapping) for row in rows if row.why is not None]


def apply_decisions(conn: Connection, windows: Sequence[str], series_ids: Sequence[str], run_id: str) -> int:
    """Record a champion event for every decision that changes a series' champion.

    Idempotent: a series whose current champion already is the decided model gets no event, so
    re-running publication records nothing twice.
    """
    result = conn.execute(
        text(
            f"""
            INSERT INTO {SCHEMA}.{CHAMPION_EVENTS}
                (series_id, model_name, previous_model, window_key, event, metric, score,
                 previous_score, reason, dagster_run_id)
            SELECT d.series_id, d.challenger, c.model_name, d.window_key,
                   CASE WHEN c.model_name IS NULL THEN 'first' ELSE 'promote' END,
                   d.metric, d.challenger_score, d.champion_score, d.reason, :run_id
            FROM (
                SELECT DISTINCT ON (series_id) * FROM {SCHEMA}.{SELECTION_DECISIONS}
                WHERE window_key = ANY(:windows) AND series_id = ANY(:ids)
                ORDER BY series_id, window_key DESC
            ) d
            LEFT JOIN {SCHEMA}.current_champions c ON c.series_id = d.series_id
            WHERE d.decision IN ('first', 'promote', 'replace')
              AND c.model_name IS DISTINCT FROM d.challenger
            """
        ),
        {"windows": list(windows), "ids": list(series_ids), "run_id": run_id},
    )
    return result.rowcount


def restore_previous(
    conn: Connection, series_ids: Sequence[str] | None, reason: str, to_model: str | None = None
) -> list[dict]:
    """Make each series' previous champion (or `to_model`) its champion again; returns the events.

    Series whose current champion has no predecessor (and no `to_model`) are left unchanged.
    """
    scope = "" if series_ids is None else "AND c.series_id = ANY(:ids)"
    rows = conn.execute(
        text(
            f"""
            INSERT INTO {SCHEMA}.{CHAMPION_EVENTS}
                (series_id, model_name, previous_model, window_key, event, reason)
            SELECT c.series_id, coalesce(:to_model, e.previous_model), c.model_name, c.window_key,
                   'restore', :reason
            FROM {SCHEMA}.current_champions c
            JOIN LATERAL (
                SELECT previous_model FROM {SCHEMA}.{CHAMPION_EVENTS} x
                WHERE x.series_id = c.series_id ORDER BY x.event_id DESC LIMIT 1
            ) e ON true
            WHERE coalesce(:to_model, e.previous_model) IS NOT NULL
              AND coalesce(:to_model, e.previous_model) <> c.model_name {scope}
            RETURNING series_id, previous_model AS replaced, model_name AS restored, window_key
            """
        ),
        {"ids": list(series_ids or []), "reason": reason, "to_model": to_model},
    )
    return [dict(row._mapping) for row in rows]


# Calibration rows with the conformal quantile only where that is the chosen method.
_CALIBRATED = (
    f"(SELECT *, CASE WHEN method = 'conformal' THEN quantile END AS conformal "
    f"FROM {SCHEMA}.{INTERVAL_CALIBRATION})"
)


def publish_champions(
    conn: Connection, windows: Sequence[str], series_ids: Sequence[str], run_id: str
) -> int:
    """Write each series' champion forecast of the windows with calibrated intervals.

    The champion's newest-origin forecast of the window comes from the forecast history;
    intervals are yhat ± conformal quantile × the series' scale, unless the model's own proved
    calibrated on the held-out fold (`native`) or the group has no calibration for the model
    (`uncalibrated`: the model's own bounds, said so in `interval_method`).
    """
    params = {"windows": list(windows), "ids": list(series_ids), "run_id": run_id}
    conn.execute(
        text(
            f"DELETE FROM {SCHEMA}.{PUBLISHED_FORECASTS} "
            "WHERE window_key = ANY(:windows) AND series_id = ANY(:ids)"
        ),
        params,
    )
    result = conn.execute(
        text(
            f"""
            INSERT INTO {SCHEMA}.{PUBLISHED_FORECASTS}
                (series_id, window_key, partition_key, model_name, model_version, model_id, freq_group,
                 cutoff, step, ds, yhat, lo_80, hi_80, lo_95, hi_95, interval_method, dagster_run_id)
            SELECT p.series_id, p.window_key, p.partition_key, p.model_name, p.model_version, p.model_id,
                   p.freq_group, p.cutoff, p.step, p.ds, p.yhat,
                   coalesce(p.yhat - k80.conformal * s.scale, p.lo_80),
                   coalesce(p.yhat + k80.conformal * s.scale, p.hi_80),
                   coalesce(p.yhat - k95.conformal * s.scale, p.lo_95),
                   coalesce(p.yhat + k95.conformal * s.scale, p.hi_95),
                   CASE WHEN k80.conformal * s.scale IS NOT NULL THEN 'conformal'
                        WHEN k80.method = 'native' THEN 'native' ELSE 'uncalibrated' END,
                   :run_id
            FROM (
                SELECT q.*, max(q.cutoff) OVER (PARTITION BY q.series_id, q.window_key) AS newest
                FROM {SCHEMA}.{PREDICTIONS} q
                JOIN {SCHEMA}.current_champions c
                  ON c.series_id = q.series_id AND c.model_name = q.model_name
                WHERE q.window_key = ANY(:windows) AND q.series_id = ANY(:ids)
            ) p
            LEFT JOIN {SCHEMA}.{SERIES_SCALES} s ON s.series_id = p.series_id AND s.window_key = p.window_key
            LEFT JOIN {_CALIBRATED} k80
              ON k80.window_key = p.window_key AND k80.freq_group = p.freq_group
             AND k80.model_name = p.model_name AND k80.step = p.step AND k80.level = 80
            LEFT JOIN {_CALIBRATED} k95
              ON k95.window_key = p.window_key AND k95.freq_group = p.freq_group
             AND k95.model_name = p.model_name AND k95.step = p.step AND k95.level = 95
            WHERE p.cutoff = p.newest
            """
        ),
        params,
    )
    return result.rowcount


def champion_registry_versions(
    conn: Connection, windows: Sequence[str], series_ids: Sequence[str]
) -> list[dict]:
    """Registered MLflow versions of the models now champion for these series in the windows."""
    rows = conn.execute(
        text(
            f"""
            SELECT m.model_name, m.freq_group, m.registry_version, count(DISTINCT p.series_id) AS series
            FROM {SCHEMA}.{PUBLISHED_FORECASTS} p
            JOIN {SCHEMA}.{MODELS} m ON m.model_id = p.model_id
            WHERE p.window_key = ANY(:windows) AND p.series_id = ANY(:ids) AND m.registry_version IS NOT NULL
            GROUP BY m.model_name, m.freq_group, m.registry_version
            """
        ),
        {"windows": list(windows), "ids": list(series_ids)},
    )
    return [dict(row._mapping) for row in rows]


def published_summary(conn: Connection, windows: Sequence[str], series_ids: Sequence[str]) -> pl.DataFrame:
    """`window_key, series_id, model_name, interval_method` of what the windows published for these series."""
    frame = copy_query(
        conn,
        "SELECT DISTINCT window_key, series_id, model_name, interval_method "
        f"FROM {SCHEMA}.{PUBLISHED_FORECASTS} "
        "WHERE window_key = ANY(%s) AND series_id = ANY(%s)",
        (list(windows), list(series_ids)),
    )
    return (
        frame
        if frame.width
        else pl.DataFrame(
            schema={
                "window_key": pl.String,
                "series_id": pl.String,
                "model_name": pl.String,
                "interval_method": pl.String,
            }
        )
    )


def newest_published(conn: Connection, series_ids: Sequence[str] | None = None) -> pl.DataFrame:
    """Each series' newest published champion forecast: the table a consumer downloads."""
    scope = "" if series_ids is None else "WHERE series_id = ANY(%s)"
    frame = copy_query(
        conn,
        f"""
        SELECT series_id AS unique_id, ds, yhat, lo_80 AS yhat_lo_80, hi_80 AS yhat_hi_80,
               lo_95 AS yhat_lo_95, hi_95 AS yhat_hi_95, model_name AS model, model_version,
               cutoff, window_key, interval_method
        FROM (
            SELECT p.*, max(window_key) OVER (PARTITION BY series_id) AS newest
            FROM {SCHEMA}.{PUBLISHED_FORECASTS} p {scope}
        ) w
        WHERE window_key = newest ORDER BY series_id, step
        """,
        () if series_ids is None else (list(series_ids),),
    )
    if frame.height == 0:
        return frame
    return frame.with_columns(
        pl.col("ds", "cutoff").str.to_datetime(time_unit="us"),
        pl.col("yhat", "yhat_lo_80", "yhat_hi_80", "yhat_lo_95", "yhat_hi_95").cast(pl.Float64),
    )


def newest_published_windows(conn: Connection, series_ids: Sequence[str] | None) -> list[str]:
    """Windows holding the newest publication of these series (all series when None)."""
    scope = "" if series_ids is None else "WHERE series_id = ANY(:ids)"
    rows = conn.execute(
        text(
            "SELECT DISTINCT newest FROM (SELECT max(window_key) AS newest "
            f"FROM {SCHEMA}.{PUBLISHED_FORECASTS} {scope} GROUP BY series_id) w"
        ),
        {"ids": list(series_ids or [])},
    )
    return [row.newest for row in rows]


def champion_history(conn: Connection, series_id: str) -> list[dict]:
    """Every champion event of a series, newest first."""
    rows = conn.execute(
        text(
            f"SELECT event, model_name, previous_model, window_key, reason, recorded_at "
            f"FROM {SCHEMA}.{CHAMPION_EVENTS} WHERE series_id = :series ORDER BY event_id DESC"
        ),
        {"series": series_id},
    )
    return [dict(row._mapping) for row in rows]
