"""What the sensors remember in PostgreSQL: looked-at paths, queued cells, requests, failures.

Sensors keep their state here, beside the data it describes, so a restarted daemon (or a second
one) sees exactly what the last tick committed. Every statement is set-based: a tick over ten
thousand paths or cells is a handful of statements, never one per path or cell.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import polars as pl
from sqlalchemy import Connection, text

from forecasting_pipeline.storage.tables import (
    AUTOMATION_REQUESTS,
    CASCADE_QUEUE,
    LANDED_PATHS,
    RUN_FAILURES,
    SCHEMA,
    SERIES,
)


def unseen_paths(conn: Connection, listing: pl.DataFrame) -> pl.DataFrame:
    """Rows of `listing` (path, size_bytes, modified_ns) whose path is new or whose size or
    modification time moved since a tick last looked at it."""
    if listing.height == 0:
        return listing
    rows = conn.execute(
        text(
            f"""
            SELECT l.path
            FROM unnest(CAST(:paths AS text[]), CAST(:sizes AS bigint[]), CAST(:times AS bigint[]))
                 AS l(path, size_bytes, modified_ns)
            LEFT JOIN {SCHEMA}.{LANDED_PATHS} p
              ON p.path = l.path AND p.size_bytes = l.size_bytes AND p.modified_ns = l.modified_ns
            WHERE p.path IS NULL
            """
        ),
        {
            "paths": listing["path"].to_list(),
            "sizes": listing["size_bytes"].to_list(),
            "times": listing["modified_ns"].to_list(),
        },
    ).all()
    changed = pl.DataFrame({"path": [r.path for r in rows]}, schema={"path": pl.Utf8})
    return listing.join(changed, on="path", how="semi")


def remember_paths(conn: Connection, seen: pl.DataFrame) -> None:
    """Record what each looked-at path was (path, size_bytes, modified_ns, content_hash, file_id)."""
    if seen.height == 0:
        return
    conn.execute(
        text(
            f"""
            INSERT INTO {SCHEMA}.{LANDED_PATHS} (path, size_bytes, modified_ns, content_hash, file_id)
            SELECT * FROM unnest(CAST(:paths AS text[]), CAST(:sizes AS bigint[]),
                                 CAST(:times AS bigint[]), CAST(:hashes AS text[]), CAST(:ids AS bigint[]))
            ON CONFLICT (path) DO UPDATE SET size_bytes = EXCLUDED.size_bytes,
                modified_ns = EXCLUDED.modified_ns, content_hash = EXCLUDED.content_hash,
                file_id = EXCLUDED.file_id, seen_at = now()
            """
        ),
        {
            "paths": seen["path"].to_list(),
            "sizes": seen["size_bytes"].to_list(),
            "times": seen["modified_ns"].to_list(),
            "hashes": seen["content_hash"].to_list(),
            "ids": seen["file_id"].to_list(),
        },
    )


def forget_path(conn: Connection, path: str) -> None:
    """A path moved away (a rejected file set aside): a new file under the name is looked at."""
    conn.execute(text(f"DELETE FROM {SCHEMA}.{LANDED_PATHS} WHERE path = :path"), {"path": path})


@dataclass(frozen=True)
class AutomationRequest:
    """One asset backfill a sensor decided on; its backfill id is the request id."""

    request_id: str
    kind: str
    reason: str
    windows: list[str]
    series_ids: list[str]


def add_request(
    conn: Connection,
    request_id: str,
    kind: str,
    reason: str,
    windows: Sequence[str],
    series_ids: Sequence[str] = (),
) -> None:
    conn.execute(
        text(
            f"""
            INSERT INTO {SCHEMA}.{AUTOMATION_REQUESTS} (request_id, kind, reason, windows, series_ids)
            VALUES (:request_id, :kind, :reason, :windows, :series_ids)
            """
        ),
        {
            "request_id": request_id,
            "kind": kind,
            "reason": reason,
            "windows": list(windows),
            "series_ids": list(series_ids),
        },
    )


def open_requests(conn: Connection, kind: str) -> list[AutomationRequest]:
    """Requests of `kind` whose backfill may not have been submitted yet (oldest first)."""
    rows = conn.execute(
        text(
            f"""
            SELECT request_id, kind, reason, windows, series_ids
            FROM {SCHEMA}.{AUTOMATION_REQUESTS}
            WHERE kind = :kind AND submitted_at IS NULL ORDER BY created_at, request_id
            """
        ),
        {"kind": kind},
    ).all()
    return [
        AutomationRequest(r.request_id, r.kind, r.reason, list(r.windows), list(r.series_ids)) for r in rows
    ]


def mark_submitted(conn: Connection, request_id: str) -> None:
    """The request's backfill exists: its queued cells are handed over."""
    conn.execute(
        text(
            f"UPDATE {SCHEMA}.{AUTOMATION_REQUESTS} SET submitted_at = now(), backfill_id = :id "
            "WHERE request_id = :id"
        ),
        {"id": request_id},
    )
    conn.execute(text(f"DELETE FROM {SCHEMA}.{CASCADE_QUEUE} WHERE request_id = :id"), {"id": request_id})


def claim_queued_cells(conn: Connection, request_id: str) -> pl.DataFrame:
    """Claim every unclaimed queued cell for `request_id`; series_id, partition_key, window_key."""
    rows = conn.execute(
        text(
            f"""
            WITH claimed AS (
                UPDATE {SCHEMA}.{CASCADE_QUEUE} SET request_id = :id
                WHERE request_id IS NULL RETURNING series_id, window_key
            )
            SELECT c.series_id, s.partition_key, c.window_key
            FROM claimed c JOIN {SCHEMA}.{SERIES} s ON s.series_id = c.series_id
            """
        ),
        {"id": request_id},
    ).all()
    return _cells(rows)


def claimed_cells(conn: Connection, request_id: str) -> pl.DataFrame:
    rows = conn.execute(
        text(
            f"""
            SELECT c.series_id, s.partition_key, c.window_key
            FROM {SCHEMA}.{CASCADE_QUEUE} c JOIN {SCHEMA}.{SERIES} s ON s.series_id = c.series_id
            WHERE c.request_id = :id
            """
        ),
        {"id": request_id},
    ).all()
    return _cells(rows)


def _cells(rows: Sequence[Any]) -> pl.DataFrame:
    return pl.DataFrame(
        [tuple(r) for r in rows],
        schema={"series_id": pl.Utf8, "partition_key": pl.Utf8, "window_key": pl.Utf8},
        orient="row",
    )


def series_partition_keys(conn: Connection, series_ids: Sequence[str]) -> list[str]:
    rows = conn.execute(
        text(f"SELECT partition_key FROM {SCHEMA}.{SERIES} WHERE series_id = ANY(:ids)"),
        {"ids": list(series_ids)},
    ).all()
    return [r.partition_key for r in rows]


def record_run_failure(
    conn: Connection,
    run_id: str,
    job_name: str,
    partition_range: str | None,
    failed_steps: Sequence[str],
    message: str,
    tags: Mapping[str, str],
) -> None:
    """Idempotent: the failure sensor may see a run again after a restart."""
    conn.execute(
        text(
            f"""
            INSERT INTO {SCHEMA}.{RUN_FAILURES}
                (dagster_run_id, job_name, partition_range, failed_steps, message, tags)
            VALUES (:run_id, :job_name, :partition_range, :failed_steps, :message, CAST(:tags AS jsonb))
            ON CONFLICT (dagster_run_id) DO NOTHING
            """
        ),
        {
            "run_id": run_id,
            "job_name": job_name,
            "partition_range": partition_range,
            "failed_steps": list(failed_steps),
            "message": message,
            "tags": json.dumps(dict(tags)),
        },
    )
