"""Shared storage (FP_STORAGE_URI): a step on one host reads what a step on another wrote.

The object store is a real S3-compatible HTTP server (moto's, started in this process) that s3fs
talks to over the network, as it would to S3 or MinIO; the two "hosts" are two Python processes
with different FP_HOMEs that share nothing but the storage URI.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pandas as pd
import polars as pl
import pytest
from dagster import (
    AssetKey,
    PartitionKeyRange,
    StaticPartitionsDefinition,
    asset,
    build_output_context,
    materialize,
)

from forecasting_pipeline.calendar import DateCalendar, load_calendar, save_calendar
from forecasting_pipeline.resources.parquet_io import (
    PartitionedParquetIOManager,
    StorageWriteError,
    storage_root,
)
from forecasting_pipeline.settings import REPO_ROOT, SettingsError, load_settings
from forecasting_pipeline_tests.test_parquet_io import CELLS, RANGE, cells, per_day

# A secret that must never appear in a message, a path or a stored object.
SECRET = "sh4red-st0rage-s3cret"
EXPECTED_FILES = [
    "cells/date=2024-01-01/series=a%20b.parquet",
    "cells/date=2024-01-01/series=c.parquet",
    "cells/date=2024-01-02/series=a%20b.parquet",
    "cells/date=2024-01-02/series=c.parquet",
]
ALL_CELLS = PartitionKeyRange("2024-01-01|a b", "2024-01-02|c")
WINDOWS = {
    "dagster/asset_partition_range_start": "2024-01-01",
    "dagster/asset_partition_range_end": "2024-01-02",
}


def _cells_expected() -> dict[str, list[dict[str, object]]]:
    """What `cells` returns for the whole rectangle, in the order its run numbers the keys."""
    keys = ["2024-01-01|a b", "2024-01-01|c", "2024-01-02|a b", "2024-01-02|c"]
    return {key: [{"key": key, "value": float(i)}] for i, key in enumerate(keys)}


# --- settings --------------------------------------------------------------------------------


def test_unset_the_intermediates_and_the_calendar_stay_in_fp_home(tmp_path: Path):
    settings = load_settings({"FP_HOME": str(tmp_path)})
    assert settings.storage_uri == str(tmp_path / "storage") and settings.storage_is_local
    assert settings.storage_dir == tmp_path / "storage"
    assert settings.calendar_file == tmp_path / "calendar.json"
    assert isinstance(settings.calendar_file, Path)  # local: atomic rename, as before


def test_a_file_uri_is_a_local_folder_and_holds_the_calendar(tmp_path: Path):
    shared = tmp_path / "shared mount"
    settings = load_settings({"FP_HOME": str(tmp_path / "home"), "FP_STORAGE_URI": shared.as_uri() + "/"})
    assert settings.storage_uri == str(shared) and settings.storage_dir == shared
    assert settings.calendar_file == shared / "calendar.json" and isinstance(settings.calendar_file, Path)


def test_an_object_store_uri_is_kept_and_the_calendar_lives_beside_the_intermediates(tmp_path: Path):
    settings = load_settings({"FP_HOME": str(tmp_path), "FP_STORAGE_URI": "s3://bucket/deploy/"})
    assert settings.storage_uri == "s3://bucket/deploy" and not settings.storage_is_local
    assert str(settings.calendar_file) == "s3://bucket/deploy/calendar.json"
    with pytest.raises(SettingsError, match="not a local folder"):
        settings.storage_dir  # noqa: B018 - a Path that is not shared would be a silent bug


@pytest.mark.parametrize(
    ("uri", "words"),
    [
        ("nosuchfs://bucket/x", "knows no filesystem 'nosuchfs'"),
        ("s3://", "names no bucket"),
        ("file://otherhost/x", "names a local path"),
    ],
)
def test_a_malformed_storage_uri_is_refused(tmp_path: Path, uri: str, words: str):
    with pytest.raises(SettingsError, match=words):
        load_settings({"FP_HOME": str(tmp_path), "FP_STORAGE_URI": uri})


@pytest.mark.parametrize("uri", [f"sftp://me:{SECRET}@host/data", f"file://me:{SECRET}@host/data"])
def test_a_storage_uri_with_a_password_is_refused_without_showing_it(tmp_path: Path, uri: str):
    with pytest.raises(SettingsError) as refused:
        load_settings({"FP_HOME": str(tmp_path), "FP_STORAGE_URI": uri})
    assert "holds a password" in str(refused.value) and SECRET not in str(refused.value)


@pytest.mark.parametrize(
    ("tracking", "storage", "expected"),
    [
        (None, None, "{home}/mlartifacts"),  # SQLite in FP_HOME: one host, artifacts beside it
        (None, "s3://b/p", "{home}/mlartifacts"),  # a shared root cannot share a per-host store
        ("http://mlflow:5000", "s3://b/p", None),  # the server decides (--serve-artifacts)
        ("postgresql+psycopg2://u@db/mlflow", "s3://b/p", "s3://b/p/mlartifacts"),
        ("postgresql://u@db/mlflow", None, None),  # MLflow's default, as before
    ],
)
def test_mlflow_artifacts_follow_the_shared_storage_only_for_a_shared_database_store(
    tmp_path: Path, tracking: str | None, storage: str | None, expected: str | None
):
    env = {"FP_HOME": str(tmp_path)}
    env |= {"MLFLOW_TRACKING_URI": tracking} if tracking else {}
    env |= {"FP_STORAGE_URI": storage} if storage else {}
    location = load_settings(env).mlflow_artifact_location
    assert location == (expected.format(home=tmp_path) if expected else None)


def test_the_deployment_wires_the_storage_uri_into_the_io_manager(tmp_path: Path):
    from forecasting_pipeline.definitions import build_resources

    resources = build_resources(load_settings({"FP_HOME": str(tmp_path), "FP_STORAGE_URI": "s3://b/p"}))
    assert resources["parquet_io_manager"].base_dir == "s3://b/p"


# --- file:// ---------------------------------------------------------------------------------


def test_a_file_uri_stores_the_same_layout_as_a_path_with_nothing_staged_left(tmp_path: Path):
    assert isinstance(storage_root(tmp_path.as_uri()), Path)  # fsync + rename, not fsspec
    io_manager = PartitionedParquetIOManager(base_dir=tmp_path.as_uri())
    assert materialize([cells], resources={"io_manager": io_manager}, tags=RANGE).success
    assert materialize(
        [cells.to_source_asset(), per_day], resources={"io_manager": io_manager}, tags=WINDOWS
    ).success

    files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert files == [*EXPECTED_FILES, "per_day/2024-01-01.parquet", "per_day/2024-01-02.parquet"]
    assert sorted(pd.read_parquet(tmp_path / "per_day" / "2024-01-02.parquet")["key"]) == [
        "2024-01-02|a b",
        "2024-01-02|c",
    ]


# --- a non-local fsspec filesystem, in process (no server needed) -----------------------------


@asset(io_manager_key="io_manager")
def whole() -> pl.DataFrame:
    return pl.DataFrame({"series": ["a", "b"], "y": [1.0, 2.0]})


@asset(io_manager_key="io_manager")
def doubled(whole: pl.DataFrame) -> pl.DataFrame:
    return whole.with_columns(pl.col("y") * 2)


def test_an_fsspec_memory_store_holds_partitioned_and_unpartitioned_outputs():
    import fsspec

    root = f"memory://fp-{uuid.uuid4().hex}"
    io_manager = PartitionedParquetIOManager(base_dir=root)
    assert materialize([cells], resources={"io_manager": io_manager}, tags=RANGE).success
    assert materialize([whole, doubled], resources={"io_manager": io_manager}).success

    memory = fsspec.filesystem("memory")
    prefix = memory._strip_protocol(root)
    stored = sorted(path.removeprefix(prefix + "/") for path in memory.find(prefix))
    assert stored == ["cells/" + f for f in (p.removeprefix("cells/") for p in EXPECTED_FILES)] + [
        "doubled/__all__.parquet",
        "whole/__all__.parquet",
    ]
    assert pl.read_parquet(memory.cat_file(f"{prefix}/doubled/__all__.parquet"))["y"].to_list() == [2.0, 4.0]


# --- S3 over HTTP ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """A real S3 API on a free local port; s3fs and botocore find it through AWS_ENDPOINT_URL_S3,
    the standard variable a deployment sets for MinIO or another S3-compatible server."""
    pytest.importorskip("s3fs", reason="the `s3` extra (s3fs) is not installed")
    server_module = pytest.importorskip("moto.server", reason="moto[server] (dev extra) is not installed")
    server = server_module.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    with pytest.MonkeyPatch.context() as env:
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
            env.delenv(name, raising=False)
        env.setenv("AWS_ACCESS_KEY_ID", "fp-test-key")
        env.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
        env.setenv("AWS_DEFAULT_REGION", "us-east-1")
        env.setenv("AWS_ENDPOINT_URL_S3", endpoint)
        try:
            yield endpoint
        finally:
            import s3fs

            s3fs.S3FileSystem.clear_instance_cache()  # no later test may reach a stopped server
            server.stop()


@pytest.fixture
def bucket(s3_endpoint: str) -> str:
    import s3fs

    name = f"fp-{uuid.uuid4().hex[:12]}"
    s3fs.S3FileSystem(skip_instance_cache=True).mkdir(name)
    return name


def _objects(root: str) -> list[str]:
    import s3fs

    fs = s3fs.S3FileSystem(skip_instance_cache=True)  # a fresh listing, as another host sees it
    prefix = root.removeprefix("s3://")
    return sorted(path.removeprefix(prefix + "/") for path in fs.find(prefix))


def test_s3_a_rectangle_is_stored_as_objects_and_a_downstream_window_reads_them(bucket: str):
    root = f"s3://{bucket}/deploy"
    io_manager = PartitionedParquetIOManager(base_dir=root)
    assert materialize([cells], resources={"io_manager": io_manager}, tags=RANGE).success
    assert _objects(root) == EXPECTED_FILES

    result = materialize(
        [cells.to_source_asset(), per_day], resources={"io_manager": io_manager}, tags=WINDOWS
    )
    assert result.success
    day_two = result.output_for_node("per_day")["2024-01-02"]
    assert sorted(day_two["key"]) == ["2024-01-02|a b", "2024-01-02|c"]
    assert "per_day/2024-01-02.parquet" in _objects(root)


def test_s3_a_frame_that_cannot_be_written_stores_nothing_of_the_run(bucket: str):
    root = f"s3://{bucket}/deploy"
    io_manager = PartitionedParquetIOManager(base_dir=root)
    context = build_output_context(
        asset_key=AssetKey("cells"), asset_partitions_def=CELLS, asset_partition_key_range=ALL_CELLS
    )
    frames = {key: pl.DataFrame({"value": [1.0]}) for key in _cells_expected()}
    frames["2024-01-02|c"] = pl.DataFrame({"value": [object()]}, schema={"value": pl.Object})
    with pytest.raises(StorageWriteError, match="did not materialize"):
        io_manager.handle_output(context, frames)
    # Serialized before any PUT: the three good partitions were not stored either.
    assert _objects(root) == []


@asset(partitions_def=StaticPartitionsDefinition(["x"]), io_manager_key="io_manager")
def lost() -> pd.DataFrame:
    return pd.DataFrame({"y": [1.0]})


def test_s3_a_missing_bucket_fails_the_step_clearly_without_credentials(s3_endpoint: str):
    root = f"s3://fp-missing-{uuid.uuid4().hex[:8]}/deploy"
    io_manager = PartitionedParquetIOManager(base_dir=root)
    with pytest.raises(StorageWriteError) as failed:
        materialize([lost], resources={"io_manager": io_manager}, partition_key="x")
    message = str(failed.value)
    assert f"{root}/lost/x.parquet" in message
    assert "bucket does not exist" in message and "did not materialize" in message
    assert SECRET not in message and "fp-test-key" not in message


def test_s3_reading_a_partition_never_stored_names_it(bucket: str):
    io_manager = PartitionedParquetIOManager(base_dir=f"s3://{bucket}/deploy")
    resources = {"io_manager": io_manager}
    assert materialize([cells], resources=resources, partition_key="2024-01-01|a b").success
    with pytest.raises(
        FileNotFoundError, match=r"date=2024-01-01/series=c\.parquet: materialize the upstream"
    ):
        materialize([cells.to_source_asset(), per_day], resources=resources, partition_key="2024-01-01")


# Each "host" is a fresh interpreter with its own FP_HOME; only FP_STORAGE_URI is shared.
_WRITER = """
from datetime import date
from dagster import materialize
from forecasting_pipeline.calendar import DateCalendar, save_calendar
from forecasting_pipeline.resources.parquet_io import PartitionedParquetIOManager
from forecasting_pipeline.settings import load_settings
from forecasting_pipeline_tests.test_parquet_io import RANGE, cells

settings = load_settings()
save_calendar(settings, DateCalendar("weekly", date(2016, 11, 27), date(2017, 1, 1)))
io_manager = PartitionedParquetIOManager(base_dir=settings.storage_uri)
assert materialize([cells], resources={"io_manager": io_manager}, tags=RANGE).success
"""

_READER = """
import json
from dagster import materialize
from forecasting_pipeline.calendar import load_calendar
from forecasting_pipeline.resources.parquet_io import PartitionedParquetIOManager
from forecasting_pipeline.settings import load_settings
from forecasting_pipeline_tests.test_parquet_io import cells, per_day

settings = load_settings()
calendar = load_calendar(settings)
io_manager = PartitionedParquetIOManager(base_dir=settings.storage_uri)
windows = {
    "dagster/asset_partition_range_start": "2024-01-01",
    "dagster/asset_partition_range_end": "2024-01-02",
}
# per_day's step loads the other process's cells through the IO manager, as a worker would.
result = materialize([cells.to_source_asset(), per_day], resources={"io_manager": io_manager}, tags=windows)
assert result.success
print(json.dumps({
    "calendar": {**calendar.as_json(), "persisted": calendar.persisted},
    "per_day": {day: frame.to_dict("records") for day, frame in result.output_for_node("per_day").items()},
}))
"""


def _host(script: str, home: Path, storage_uri: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FP_", "DAGSTER_"))}
    env |= {"FP_HOME": str(home), "FP_STORAGE_URI": storage_uri}  # no FP_PARTITION_START: from data
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_s3_one_process_writes_partitions_and_the_calendar_and_another_reads_them(
    bucket: str, tmp_path: Path
):
    root = f"s3://{bucket}/deploy"
    writer_home, reader_home = tmp_path / "host-a", tmp_path / "host-b"
    _host(_WRITER, writer_home, root)
    seen = json.loads(_host(_READER, reader_home, root).strip().splitlines()[-1])

    expected = _cells_expected()
    assert {day: sorted(rows, key=lambda row: row["key"]) for day, rows in seen["per_day"].items()} == {
        day: [row for key in sorted(expected) if key.startswith(day) for row in expected[key]]
        for day in ("2024-01-01", "2024-01-02")
    }
    assert seen["calendar"] == {
        "cadence": "weekly",
        "start": "2016-11-27",
        "end": "2017-01-01",
        "persisted": True,
    }
    # The calendar is beside the intermediates, in neither host's FP_HOME.
    assert _objects(root) == [
        "calendar.json",
        *EXPECTED_FILES,
        "per_day/2024-01-01.parquet",
        "per_day/2024-01-02.parquet",
    ]
    assert not (writer_home / "calendar.json").exists() and not (reader_home / "calendar.json").exists()


def test_s3_the_calendar_round_trips_in_process_too(bucket: str, tmp_path: Path):
    settings = load_settings({"FP_HOME": str(tmp_path), "FP_STORAGE_URI": f"s3://{bucket}/deploy"})
    assert not load_calendar(settings, today=date(2024, 6, 5)).persisted
    saved = save_calendar(settings, DateCalendar("daily", date(2024, 5, 1), None))
    assert load_calendar(settings) == saved == DateCalendar("daily", date(2024, 5, 1), None, persisted=True)
    assert _objects(f"s3://{bucket}/deploy") == ["calendar.json"]
