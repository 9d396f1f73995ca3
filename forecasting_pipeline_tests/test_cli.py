"""The README's main command, as a user runs it: `forecasting-pipeline demo`, twice."""

from __future__ import annotations

import shutil
import subprocess

from sqlalchemy import create_engine, text

from forecasting_pipeline.modeling.catalog import load_catalog
from forecasting_pipeline_tests.cli_runs import run_cli as _cli
from forecasting_pipeline_tests.cli_runs import user_env as _user_env
from forecasting_pipeline_tests.conftest import _scratch_dir

FAMILIES = sorted(f.name for f in (*load_catalog().neural(), *load_catalog().local()))


def _demo(env: dict[str, str]) -> subprocess.CompletedProcess:
    return _cli(env, "demo", "--max-steps", "5", "--trials", "1")


def test_demo_forecasts_every_series_and_a_second_run_adds_no_rows(fresh_database):
    home = _scratch_dir("fp-cli-")
    url = fresh_database()
    env = _user_env(home, url)

    first = _demo(env)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-3000:]
    for expected in (
        "[1/5] database",
        # The calendar comes from the data: four weekly windows after the history slice, closed
        # after the data's last window (not ten years of empty weeks up to today).
        "date calendar: weekly windows from 2016-10-02 to 2016-11-06",
        "ingested 10 changed series × window cells in 6 runs",
        "Leaderboard of window 2016-10-30",
        "Champion forecasts of window 2016-10-30",
        "forecasting-pipeline ui",
    ):
        assert expected in first.stdout
    # The leaderboard ranks every family and ensemble; each series' champion is one of them.
    ranked = [line.split()[1] for line in first.stdout.splitlines() if line[:4].strip().isdigit()]
    assert set(FAMILIES) <= set(ranked) and len(ranked) == len(set(ranked))
    table = [line.split() for line in first.stdout.splitlines() if line.startswith(("BE ", "FR "))]
    assert sorted(row[0] for row in table) == ["BE", "FR"] and {row[1] for row in table} <= set(ranked)

    engine = create_engine(url)
    counts = (
        "SELECT (SELECT count(*) FROM forecasting.predictions"
        "        WHERE model_id IN (SELECT model_id FROM forecasting.models WHERE scope <> 'ensemble')),"
        " (SELECT count(*) FROM forecasting.observations),"
        " (SELECT count(DISTINCT partition) FROM event_logs"
        "  WHERE dagster_event_type = 'ASSET_MATERIALIZATION' "
        " AND asset_key = '[\"raw_observations\"]'),"
        " (SELECT count(*) FROM forecasting.published_forecasts)"
    )
    with engine.connect() as conn:
        after_first = conn.execute(text(counts)).one()
    # Every enabled family forecasts 24 hours for both series; 5 windows × 2 series ingested;
    # one champion forecast of 24 hours per series published.
    assert after_first == (2 * len(FAMILIES) * 24, 32_160, 5 * 2, 2 * 24)

    second = _demo(env)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "epf_fr_be.csv: unchanged" in second.stdout and "nothing new to ingest" in second.stdout
    with engine.connect() as conn:
        assert conn.execute(text(counts)).one() == after_first
    engine.dispose()
    shutil.rmtree(home, ignore_errors=True)


def test_ingest_takes_folders_and_a_sql_source_and_sets_bad_files_aside(fresh_database, tmp_path):
    home = _scratch_dir("fp-cli-")
    url = fresh_database()
    env = _user_env(home, url)
    folder = tmp_path / "drop"
    folder.mkdir()
    (folder / "notes.xlsx").write_bytes(b"PK not a workbook")
    (folder / "store.csv").write_text(
        "store,day,sales,region\n"
        + "".join(f'"Store, North",2024-03-{d:02d},{10 + d},north\n' for d in range(1, 29))
    )
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE public.shop_sales (store text, day date, sales double precision)"))
        conn.execute(
            text(
                "INSERT INTO public.shop_sales SELECT 'Depot 7', d::date, 5 FROM generate_series("
                "'2024-03-01'::date, '2024-03-28'::date, interval '1 day') AS d"
            )
        )

    columns = ("--id-column", "store", "--time-column", "day", "--target-column", "sales")
    from_files = _cli(env, "ingest", str(folder), *columns)
    assert from_files.returncode == 0, from_files.stdout[-2000:] + from_files.stderr[-2000:]
    assert "notes.xlsx: not landed: unknown file type" in from_files.stdout
    assert "store.csv: staged: staged 28 of 28 rows (0 quarantined)" in from_files.stdout

    env["SHOP_DB"] = url
    from_sql = _cli(env, "ingest", "--sql", "env:SHOP_DB", "--query", "public.shop_sales", *columns)
    assert from_sql.returncode == 0, from_sql.stdout[-2000:] + from_sql.stderr[-2000:]
    again = _cli(env, "ingest", "--sql", "env:SHOP_DB", "--query", "public.shop_sales", *columns)
    assert "unchanged" in again.stdout and "nothing new to ingest" in again.stdout

    with engine.connect() as conn:
        stored = dict(
            conn.execute(
                text("SELECT series_id, count(*) FROM forecasting.observations GROUP BY series_id")
            ).all()
        )
        attributes = conn.execute(
            text("SELECT attributes FROM forecasting.series WHERE series_id = 'Store, North'")
        ).scalar_one()
    engine.dispose()
    assert stored == {"Store, North": 28, "Depot 7": 28}
    assert attributes == {"region": "north"}
    shutil.rmtree(home, ignore_errors=True)
