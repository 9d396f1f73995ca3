"""Driver studies in PostgreSQL: correlations, Granger tests, driver selection, feature effects.

Each writer replaces the slice its run owns (a window's groups, or a window's series) in one
transaction: delete, then COPY. Re-runs never duplicate rows; a killed run leaves the old slice.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl
from sqlalchemy import Connection, text

from forecasting_pipeline.storage.bulk import copy_frame, copy_query
from forecasting_pipeline.storage.tables import (
    CORRELATIONS,
    DRIVER_SELECTION,
    FEATURE_IMPORTANCES,
    GRANGER_TESTS,
    SCHEMA,
)

CORRELATION_COLUMNS = (
    "window_key",
    "freq_group",
    "kind",
    "series_id",
    "other",
    "lag",
    "pearson",
    "spearman",
    "n",
    "best_lag",
    "best_lag_pearson",
    "rank",
    "dagster_run_id",
)
GRANGER_COLUMNS = (
    "window_key",
    "series_id",
    "partition_key",
    "freq_group",
    "cause",
    "cause_kind",
    "direction",
    "testable",
    "reason",
    "lag",
    "ic",
    "statistic",
    "p_value",
    "df_num",
    "df_den",
    "n_obs",
    "diff_target",
    "diff_cause",
    "stationary",
    "adf_p_target",
    "kpss_p_target",
    "adf_p_cause",
    "kpss_p_cause",
    "dagster_run_id",
)
SELECTION_COLUMNS = (
    "window_key",
    "freq_group",
    "driver",
    "selected",
    "rule",
    "series_tested",
    "series_passing",
    "median_lag",
    "reason",
    "dagster_run_id",
)
IMPORTANCE_COLUMNS = (
    "window_key",
    "freq_group",
    "feature_group",
    "features",
    "importance",
    "importance_std",
    "relative",
    "rank",
    "baseline_error",
    "model_error",
    "rows",
    "cutoffs",
    "dagster_run_id",
)


def _with_run(frame: pl.DataFrame, window: str, run_id: str) -> pl.DataFrame:
    return frame.with_columns(pl.lit(window).alias("window_key"), pl.lit(run_id).alias("dagster_run_id"))


def replace_correlations(
    conn: Connection, window: str, groups: Sequence[str], rows: pl.DataFrame, run_id: str
) -> int:
    """Replace the window's correlation rows of `groups` (rows carry CORRELATION_COLUMNS but the
    window and run id)."""
    conn.execute(
        text(f"DELETE FROM {SCHEMA}.{CORRELATIONS} WHERE window_key = :window AND freq_group = ANY(:groups)"),
        {"window": window, "groups": list(groups)},
    )
    return copy_frame(conn, f"{SCHEMA}.{CORRELATIONS}", _with_run(rows, window, run_id), CORRELATION_COLUMNS)


def strongest_peers(conn: Connection, window: str, series_ids: Sequence[str], top: int) -> pl.DataFrame:
    """series_id, peer_id of each series' `top` most correlated peers in the window's study."""
    frame = copy_query(
        conn,
        f"SELECT series_id, other AS peer_id FROM {SCHEMA}.{CORRELATIONS} "
        "WHERE window_key = %s AND kind = 'cross_series' AND series_id = ANY(%s) AND rank <= %s "
        "ORDER BY series_id, rank",
        (window, list(series_ids), top),
    )
    if frame.width == 0:
        return pl.DataFrame(schema={"series_id": pl.Utf8, "peer_id": pl.Utf8})
    return frame


def replace_granger_tests(
    conn: Connection, window: str, series_ids: Sequence[str], tests: pl.DataFrame, run_id: str
) -> int:
    """Replace the window's Granger rows of `series_ids`, then re-adjust the whole window."""
    conn.execute(
        text(f"DELETE FROM {SCHEMA}.{GRANGER_TESTS} WHERE window_key = :window AND series_id = ANY(:ids)"),
        {"window": window, "ids": list(series_ids)},
    )
    written = copy_frame(conn, f"{SCHEMA}.{GRANGER_TESTS}", _with_run(tests, window, run_id), GRANGER_COLUMNS)
    adjust_window(conn, window)
    return written


def adjust_window(conn: Connection, window: str) -> int:
    """Benjamini–Hochberg across every testable row of the window, written back in one UPDATE.

    The family of tests is the window's, not the run's: a run over some series changes the
    adjusted p-values of the others, so all of them are recomputed together.
    """
    from forecasting_pipeline.modeling.granger import benjamini_hochberg

    rows = conn.execute(
        text(
            f"SELECT series_id, cause, direction, p_value FROM {SCHEMA}.{GRANGER_TESTS} "
            "WHERE window_key = :window AND testable AND p_value IS NOT NULL"
        ),
        {"window": window},
    ).all()
    if not rows:
        return 0
    series, causes, directions, p_values = (list(column) for column in zip(*rows, strict=True))
    adjusted = benjamini_hochberg(np.asarray(p_values, dtype=float))
    conn.execute(
        text(
            f"""
            UPDATE {SCHEMA}.{GRANGER_TESTS} g SET adjusted_p = a.adjusted_p
            FROM unnest(CAST(:series AS text[]), CAST(:causes AS text[]), CAST(:directions AS text[]),
                        CAST(:adjusted AS double precision[])) AS a(series_id, cause, direction, adjusted_p)
            WHERE g.window_key = :window AND g.series_id = a.series_id AND g.cause = a.cause
              AND g.direction = a.direction
            """
        ),
        {
            "window": window,
            "series": series,
            "causes": causes,
            "directions": directions,
            "adjusted": [float(a) for a in adjusted],
        },
    )
    return len(rows)


def granger_report(conn: Connection, window: str, series_ids: Sequence[str]) -> pl.DataFrame:
    """Per (group, cause kind, cause, direction) of these series' tests: how many were tested,
    how many pass at adjusted p < 0.05 and < 0.01, the median lag, and why the rest could not be."""
    frame = copy_query(
        conn,
        f"""
        SELECT window_key AS window, freq_group AS group, cause_kind, cause, direction,
               count(*) AS tests,
               count(*) FILTER (WHERE testable) AS testable,
               count(*) FILTER (WHERE adjusted_p < 0.05) AS "adj p<0.05",
               count(*) FILTER (WHERE adjusted_p < 0.01) AS "adj p<0.01",
               percentile_cont(0.5) WITHIN GROUP (ORDER BY lag) AS "median lag",
               string_agg(DISTINCT split_part(reason, ':', 1), '; ') AS "not testable"
        FROM {SCHEMA}.{GRANGER_TESTS} WHERE window_key = %s AND series_id = ANY(%s)
        GROUP BY 1, 2, 3, 4, 5 ORDER BY 2, 3, 4, 5
        """,
        (window, list(series_ids)),
    )
    if frame.width == 0:
        return frame
    return frame.with_columns(pl.col("tests").cast(pl.Int64))


def driver_evidence(conn: Connection, window: str, alpha: float) -> pl.DataFrame:
    """Per (frequency group, driver): series tested, series where the driver Granger-causes the
    target at adjusted p < alpha, and the median chosen lag among those."""
    frame = copy_query(
        conn,
        f"""
        SELECT freq_group, cause AS driver,
               count(*) FILTER (WHERE testable) AS series_tested,
               count(*) FILTER (WHERE testable AND adjusted_p < %s) AS series_passing,
               percentile_cont(0.5) WITHIN GROUP (ORDER BY lag) FILTER (WHERE testable AND adjusted_p < %s)
                   AS median_lag
        FROM {SCHEMA}.{GRANGER_TESTS}
        WHERE window_key = %s AND cause_kind = 'driver' AND direction = 'driver_to_target'
        GROUP BY freq_group, cause ORDER BY freq_group, cause
        """,
        (alpha, alpha, window),
    )
    schema = {
        "freq_group": pl.Utf8,
        "driver": pl.Utf8,
        "series_tested": pl.Int64,
        "series_passing": pl.Int64,
        "median_lag": pl.Float64,
    }
    if frame.width == 0:
        return pl.DataFrame(schema=schema)
    return frame.cast(schema)  # type: ignore[arg-type]


def replace_driver_selection(conn: Connection, window: str, decisions: pl.DataFrame, run_id: str) -> int:
    """The window's driver decisions (SELECTION_COLUMNS but window and run id), replacing earlier ones."""
    conn.execute(
        text(f"DELETE FROM {SCHEMA}.{DRIVER_SELECTION} WHERE window_key = :window"), {"window": window}
    )
    return copy_frame(
        conn, f"{SCHEMA}.{DRIVER_SELECTION}", _with_run(decisions, window, run_id), SELECTION_COLUMNS
    )


def selected_drivers(conn: Connection, window: str) -> dict[str, list[str]] | None:
    """freq_group -> drivers its models take in the window; None when no decision is stored."""
    rows = conn.execute(
        text(
            "SELECT freq_group, coalesce(array_agg(driver ORDER BY driver) FILTER (WHERE selected), '{}') "
            f"FROM {SCHEMA}.{DRIVER_SELECTION} WHERE window_key = :window GROUP BY freq_group"
        ),
        {"window": window},
    ).all()
    return {group: list(drivers) for group, drivers in rows} if rows else None


def driver_selection_rows(conn: Connection, window: str | None = None) -> pl.DataFrame:
    """The stored driver decisions of a window (default: the newest), for reports."""
    frame = copy_query(
        conn,
        f"""
        SELECT window_key, freq_group, driver, selected, rule, series_tested, series_passing, median_lag,
               reason
        FROM {SCHEMA}.{DRIVER_SELECTION}
        WHERE window_key = coalesce(%s, (SELECT max(window_key) FROM {SCHEMA}.{DRIVER_SELECTION}))
        ORDER BY freq_group, driver
        """,
        (window,),
    )
    return frame


def replace_feature_importances(
    conn: Connection, window: str, group: str, rows: pl.DataFrame, run_id: str
) -> int:
    """The (window, group)'s feature effects, replacing earlier ones."""
    conn.execute(
        text(
            f"DELETE FROM {SCHEMA}.{FEATURE_IMPORTANCES} WHERE window_key = :window AND freq_group = :group"
        ),
        {"window": window, "group": group},
    )
    frame = _with_run(rows.with_columns(pl.lit(group).alias("freq_group")), window, run_id).with_columns(
        _array_literal(pl.col("features")).alias("features")
    )
    return copy_frame(conn, f"{SCHEMA}.{FEATURE_IMPORTANCES}", frame, IMPORTANCE_COLUMNS)


def _array_literal(names: pl.Expr) -> pl.Expr:
    """A PostgreSQL text[] literal of a list column; each element quoted, so any name survives COPY."""
    quoted = names.list.eval(pl.lit('"') + pl.element().str.replace_all(r'([\\"])', r"\$1") + pl.lit('"'))
    return pl.lit("{") + quoted.list.join(",") + pl.lit("}")


def feature_importance_rows(conn: Connection, window: str | None = None) -> pl.DataFrame:
    """The stored feature effects of a window (default: the newest), ranked within each group."""
    return copy_query(
        conn,
        f"""
        SELECT window_key, freq_group, feature_group, importance, relative, rank, baseline_error, model_error
        FROM {SCHEMA}.{FEATURE_IMPORTANCES}
        WHERE window_key = coalesce(%s, (SELECT max(window_key) FROM {SCHEMA}.{FEATURE_IMPORTANCES}))
        ORDER BY freq_group, rank
        """,
        (window,),
    )
