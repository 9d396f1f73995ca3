"""Throughput and peak memory of ingesting 5,000,000 rows (1,000 hourly series) end to end.

End to end: CSV files in the landing folder → read, validate, COPY into staging, quality checks
(Great Expectations) → Dagster run accepting every cell into `forecasting.observations` → the
history version. The backlog is one window per series (FP_CALENDAR_HISTORY_WINDOWS=0), as a
first ingest of history is. Writes benchmarks/results/ingest_throughput.json.
"""

from __future__ import annotations

import os
import time
from datetime import datetime

from _common import configure, fresh_database, hourly_series, peak_rss_mb, write_result

SERIES = 1_000
HOURS = 5_000
FILES = 10  # 100 series per file: memory is bounded by one file, not by the batch


def main() -> None:
    with fresh_database() as url:
        home = configure(url, FP_CALENDAR_HISTORY_WINDOWS="0")
        from dagster import DagsterInstance

        from forecasting_pipeline import operations
        from forecasting_pipeline.bootstrap import prepare_deployment

        deployment = prepare_deployment()
        landing = deployment.settings.landing_dir
        landing.mkdir(parents=True, exist_ok=True)
        frame = hourly_series(SERIES, HOURS, datetime(2024, 6, 2))
        per_file = SERIES // FILES * HOURS
        for i in range(FILES):
            frame.slice(i * per_file, per_file).write_csv(landing / f"stores_{i:02d}.csv")
        size_mb = sum(p.stat().st_size for p in landing.iterdir()) / 1e6
        del frame
        rss_before = peak_rss_mb()
        instance = DagsterInstance.get()
        lines: list[tuple[float, str]] = []
        started = time.perf_counter()
        summary = operations.ingest(
            instance, deployment, progress=lambda m: lines.append((time.perf_counter(), m))
        )
        total = time.perf_counter() - started
        staged_at = next(t for t, m in lines if "changed series" in m) - started
        rows = sum(f.rows_accepted for f in summary.files)
        instance.dispose()
        write_result(
            "ingest_throughput",
            {
                "what": f"ingest {rows:,} rows: {SERIES} hourly series × {HOURS} hours, {FILES} CSV files "
                f"({size_mb:.0f} MB), fresh PostgreSQL database",
                "rows": rows,
                "wall_s": round(total, 1),
                "rows_per_s": round(rows / total),
                "staging_s (read, validate, COPY, GX checks, plan)": round(staged_at, 1),
                "dagster_runs_s (accept cells, history version)": round(total - staged_at, 1),
                "cells": summary.cells,
                "runs": len(summary.run_ids),
                "peak_rss_mb": round(peak_rss_mb()),
                "peak_rss_before_ingest_mb": round(rss_before),
                "cpus": os.cpu_count(),
                "home": str(home),
            },
        )


if __name__ == "__main__":
    main()
