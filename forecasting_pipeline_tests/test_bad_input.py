"""User story: a team lands every kind of bad file → each gets a clear reason (never a
traceback), nothing is lost (rows read = accepted + quarantined), no bad file blocks the next,
and odd-but-valid files ingest every row."""

from __future__ import annotations

import gzip
from pathlib import Path

import polars as pl
import pytest
from sqlalchemy import text

from forecasting_pipeline import operations
from forecasting_pipeline.datasets import EPF_FR_BE

GOOD_ROWS = 400  # big enough that one bad row stays under the 1% quality threshold


def _good(series: str) -> pl.DataFrame:
    frame = pl.read_csv(EPF_FR_BE.path(), infer_schema=False).select("unique_id", "ds", "y")
    return (
        frame.filter(pl.col("unique_id") == "FR")
        .head(GOOD_ROWS)
        .with_columns(pl.lit(series).alias("unique_id"))
    )


def _csv(frame: pl.DataFrame) -> str:
    return frame.write_csv()


def _with_row(series: str, row: str) -> str:
    return _csv(_good(series)) + row + "\n"


# name -> (file bytes, expected reason: file-level rejection or quarantine reason)
def _corpus() -> dict[str, tuple[bytes, str]]:
    latin1 = ("unique_id,ds,y\n" + "caf\u00e9,2016-01-01,1\n").encode("latin-1")
    broken_parquet = b"PAR1" + b"\x00" * 40 + b"PAR1"
    wrong_types = Path("/nonexistent")  # placeholder replaced below
    del wrong_types
    return {
        "empty.csv": (b"", "empty file"),
        "latin1.csv": (latin1, "not UTF-8"),
        "broken.parquet": (broken_parquet, "not a readable Parquet file"),
        "corrupt.csv.gz": (b"\x1f\x8b\x08\x00garbage", "gzip"),
        "no_target.csv": (_csv(_good("bad-no-target").drop("y")).encode(), "landed data has no 'y' column"),
        "bad_dates.csv": (
            _with_row("bad-dates", "bad-dates,31/12/2016 10:00,5").encode(),
            "unparseable timestamp",
        ),
        "mixed_zones.csv": (
            (
                _csv(_good("bad-zones").with_columns(pl.col("ds") + "Z"))
                + "bad-zones,2016-03-01 00:00:00,1\n"
            ).encode(),
            "timestamp without a time zone",
        ),
        "text_target.csv": (
            _with_row("bad-text", "bad-text,2016-02-01 00:00:00,abc").encode(),
            "non-numeric target",
        ),
        "inf_target.csv": (
            _with_row("bad-inf", "bad-inf,2016-02-01 00:00:00,inf").encode(),
            "non-finite target",
        ),
        "conflicting.csv": (
            _with_row("bad-dup", "bad-dup,2015-01-01 00:00:00,123456").encode(),
            "duplicate timestamp, superseded by a later row",
        ),
        "control_id.csv": (
            _with_row("bad-ctl", '"bad\tid",2016-02-01 00:00:00,1').encode(),
            "control character",
        ),
        "long_id.csv": (
            _with_row("bad-long", f"{'x' * 300},2016-02-01 00:00:00,1").encode(),
            "longer than 200",
        ),
        "future.csv": (_with_row("bad-future", "bad-future,2099-01-01 00:00:00,1").encode(), "in the future"),
        "ragged.csv": (
            _with_row("bad-ragged", "bad-ragged,2016-02-01 00:00:00,1,extra,fields").encode(),
            "fields",
        ),
        "header_only.csv": (b"unique_id,ds,y\n", "staged 0 of 0 rows"),
        "notes.xlsx": (b"PK\x03\x04 not a workbook", "unknown file type"),
    }


def _wrong_types_parquet(folder: Path) -> Path:
    path = folder / "wrong_types.parquet"
    pl.DataFrame({"unique_id": ["bad-types"], "ds": [1477872000], "y": [1.0]}).write_parquet(path)
    return path


def _ingest(deployment, instance) -> tuple[operations.IngestSummary | None, str | None]:
    """Ingest what landed; a run stopped by a failed quality check is a clear error, not a crash."""
    try:
        return operations.ingest(instance, deployment, progress=lambda _: None), None
    except operations.PipelineRunError as exc:
        return None, str(exc)


def _manifest(db_engine) -> dict[str, dict]:
    with db_engine.connect() as conn:
        rows = conn.execute(text("SELECT * FROM forecasting.landed_files")).mappings().all()
    return {row["file_name"]: dict(row) for row in rows}


def test_every_bad_file_gets_its_reason_and_never_blocks_a_good_one(deployment, instance, db_engine):
    landing = deployment.settings.landing_dir
    landing.mkdir(parents=True, exist_ok=True)
    corpus = _corpus()
    errors: dict[str, str | None] = {}
    for name, (content, _) in corpus.items():
        (landing / name).write_bytes(content)
        _, errors[name] = _ingest(deployment, instance)
    _wrong_types_parquet(landing)
    _, errors["wrong_types.parquet"] = _ingest(deployment, instance)
    corpus["wrong_types.parquet"] = (b"", "has type int64")

    manifest = _manifest(db_engine)
    with db_engine.connect() as conn:
        reasons = conn.execute(
            text(
                "SELECT f.file_name, string_agg(DISTINCT q.reason, ' | ') FROM forecasting.quarantine q "
                "JOIN forecasting.landed_files f USING (file_id) GROUP BY f.file_name"
            )
        ).all()
    quarantined = dict(reasons)
    assert len(corpus) >= 15
    for name, (_, expected) in corpus.items():
        entry = manifest[name]
        said = " ".join(filter(None, [entry["reason"], quarantined.get(name), _outcome_message(entry)]))
        assert expected in said, f"{name}: expected {expected!r}, got {said!r}"
        if entry["status"] != "rejected":
            assert entry["rows_read"] == entry["rows_accepted"] + entry["rows_quarantined"], name
        else:
            assert not (landing / name).exists(), f"{name} was not set aside"
            assert (deployment.settings.rejected_dir / name).exists()
    # A batch whose every row is refused is held by its blocking check, which names itself.
    assert manifest["no_target.csv"]["status"] == "held"
    assert "required_columns (100.0% of" in manifest["no_target.csv"]["reason"]
    # One bad row in 401 stays under the 1% threshold: the batch is accepted, the row quarantined.
    assert (manifest["inf_target.csv"]["status"], errors["inf_target.csv"]) == ("ingested", None)

    (landing / "good.csv").write_text(_csv(_good("good-after-bad")))
    summary, error = _ingest(deployment, instance)
    assert error is None and summary is not None
    with db_engine.connect() as conn:
        stored = conn.execute(
            text("SELECT count(*) FROM forecasting.observations WHERE series_id = 'good-after-bad'")
        ).scalar_one()
    assert stored == GOOD_ROWS


def _outcome_message(entry: dict) -> str:
    if entry["status"] == "rejected":
        return ""
    return f"staged {entry['rows_accepted']} of {entry['rows_read']} rows"


ODD_BUT_VALID = {
    "bom_crlf.csv": lambda rows: ("\ufeff" + rows.replace("\n", "\r\n")).encode(),
    "semicolons.csv": lambda rows: rows.replace(",", ";").encode(),
    "utf16.csv": lambda rows: rows.encode("utf-16"),
    "gzipped.csv.gz": lambda rows: gzip.compress(rows.encode()),
}


@pytest.mark.parametrize("name", sorted(ODD_BUT_VALID))
def test_odd_but_valid_files_ingest_every_row(name, deployment, instance, db_engine):
    series = f"odd-{name.split('.')[0]}"
    (deployment.settings.landing_dir / name).write_bytes(ODD_BUT_VALID[name](_csv(_good(series))))
    _, error = _ingest(deployment, instance)
    assert error is None, error
    entry = _manifest(db_engine)[name]
    assert (entry["status"], entry["rows_read"], entry["rows_accepted"]) == ("ingested", GOOD_ROWS, GOOD_ROWS)


def test_quoted_ids_reordered_columns_a_text_column_and_utc_timestamps(deployment, instance, db_engine):
    good = _good("Store, North").with_columns(
        (pl.col("ds").str.replace(" ", "T") + "Z").alias("ds"), pl.lit("checked by Ann").alias("note")
    )
    (deployment.settings.landing_dir / "reordered.csv").write_text(
        _csv(good.select("note", "y", "ds", "unique_id"))
    )
    _, error = _ingest(deployment, instance)
    assert error is None, error
    entry = _manifest(db_engine)["reordered.csv"]
    assert (entry["rows_read"], entry["rows_accepted"]) == (GOOD_ROWS, GOOD_ROWS)
    with db_engine.connect() as conn:
        series = conn.execute(
            text("SELECT partition_key, attributes FROM forecasting.series WHERE series_id = 'Store, North'")
        ).one()
    assert series.partition_key.startswith("Store_North~")
    assert series.attributes == {"note": "checked by Ann"}  # constant text: a series attribute
