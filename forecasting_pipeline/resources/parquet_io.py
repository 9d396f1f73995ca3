"""Partition-aware Parquet IO manager.

Dagster's filesystem IO manager refuses an output that spans several partitions. Here a
partitioned asset returns `{partition_key: frame}` for all keys of its run, one file is written
per key, and a partitioned input loads as `{partition_key: frame}` over the upstream keys the
partition mapping selected. So one run can compute a whole range of partitions, vectorized.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import get_args
from urllib.parse import quote

import pandas as pd
import polars as pl
from dagster import ConfigurableIOManager, InputContext, MultiPartitionKey, OutputContext

Frame = pd.DataFrame | pl.DataFrame

_UNPARTITIONED = "__all__.parquet"


def partition_relative_path(partition_key: str) -> Path:
    """`date=2016-10-30/series=FR.parquet` for a multi key, `2016-10-30.parquet` otherwise."""
    if isinstance(partition_key, MultiPartitionKey):
        parts = [
            f"{dimension}={quote(value, safe='')}"
            for dimension, value in sorted(partition_key.keys_by_dimension.items())
        ]
        return Path(*parts[:-1], parts[-1] + ".parquet")
    return Path(quote(partition_key, safe="") + ".parquet")


class PartitionedParquetIOManager(ConfigurableIOManager):
    """Stores pandas/polars frames as Parquet under `base_dir/<asset key>/<partition>`."""

    base_dir: str

    def _asset_dir(self, context: InputContext | OutputContext) -> Path:
        return Path(self.base_dir).joinpath(*context.asset_key.path)

    def _path(self, context: InputContext | OutputContext, partition_key: str | None) -> Path:
        if partition_key is None:
            return self._asset_dir(context) / _UNPARTITIONED
        return self._asset_dir(context) / partition_relative_path(partition_key)

    def handle_output(self, context: OutputContext, obj: Frame | Mapping[str, Frame]) -> None:
        if not context.has_asset_partitions:
            if isinstance(obj, Mapping):
                raise TypeError(f"{context.asset_key.to_user_string()} is not partitioned: return one frame")
            rows = _write_all(context.asset_key.to_user_string(), {self._path(context, None): obj})
            context.add_output_metadata({"rows": rows})
            return

        expected = set(context.asset_partition_keys)
        if not isinstance(obj, Mapping):
            if len(expected) != 1:
                raise TypeError(
                    f"{context.asset_key.to_user_string()} ran for {len(expected)} partitions: "
                    "return {partition_key: frame}"
                )
            obj = {next(iter(expected)): obj}
        produced = {str(key) for key in obj}
        if produced != {str(key) for key in expected}:
            missing = sorted({str(k) for k in expected} - produced)[:5]
            extra = sorted(produced - {str(k) for k in expected})[:5]
            raise ValueError(
                f"{context.asset_key.to_user_string()} must return exactly its run's partitions; "
                f"missing {missing}, unexpected {extra}"
            )
        by_name = {str(key): key for key in expected}
        targets = {self._path(context, by_name[str(name)]): frame for name, frame in obj.items()}
        total = _write_all(context.asset_key.to_user_string(), targets)
        context.add_output_metadata({"rows": total, "partitions_written": len(obj)})

    def load_input(self, context: InputContext) -> Frame | dict[str, Frame]:
        want_polars = _wants_polars(context.dagster_type.typing_type)
        if not context.has_asset_partitions:
            return _read(self._path(context, None), want_polars)
        return {
            str(key): _read(self._path(context, key), want_polars) for key in context.asset_partition_keys
        }


def _wants_polars(annotation: object) -> bool:
    """`pl.DataFrame` or `dict[str, pl.DataFrame]` on the input asks for polars; else pandas."""
    return annotation is pl.DataFrame or (get_args(annotation) or (None,))[-1] is pl.DataFrame


class StorageWriteError(OSError):
    """A step's output could not be stored (full disk, a folder that is a file, no permission),
    and none of it was: the step fails and its partitions are not materialized."""

    def __str__(self) -> str:
        return self.strerror or super().__str__()


def _write_all(asset: str, targets: Mapping[Path, Frame]) -> int:
    """Write every partition's file, all or none: each goes to a temporary file beside its
    target first, and only when all are complete are they renamed into place (each rename is
    atomic). So a full disk or a killed run never leaves a half-written file, nor a run's
    output half old and half new."""
    staged: list[tuple[str, Path]] = []
    total = 0
    try:
        for path, frame in targets.items():
            tmp_name, rows = _stage(asset, path, frame)
            staged.append((tmp_name, path))
            total += rows
        for tmp_name, path in staged:
            os.replace(tmp_name, path)
    finally:
        for tmp_name, _ in staged:
            if os.path.exists(tmp_name):
                os.unlink(tmp_name)
    return total


def _stage(asset: str, path: Path, frame: Frame) -> tuple[str, int]:
    """`frame` as Parquet in a synced temporary file in `path`'s folder; (its name, its rows)."""
    table = frame if isinstance(frame, pl.DataFrame) else pl.from_pandas(frame)
    tmp_name: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        os.close(fd)
        table.write_parquet(tmp_name)
        fd = os.open(tmp_name, os.O_RDONLY)
        try:
            os.fsync(fd)  # the bytes reach the disk before the rename makes them the output
        finally:
            os.close(fd)
    except (OSError, pl.exceptions.PolarsError) as exc:
        if tmp_name is not None and os.path.exists(tmp_name):
            os.unlink(tmp_name)
        code, reason = _failure_reason(exc, path)
        raise StorageWriteError(
            code,
            f"{asset}: could not store {path.name} in {path.parent}: {reason}. Nothing of this "
            "output was stored and the step did not materialize; free space on that volume or make "
            "the folder writable (it is under FP_HOME/storage), then run the step again",
        ) from None  # the reason is in the message; a cause would be reported instead of it
    return tmp_name, table.height


def _failure_reason(exc: BaseException, path: Path) -> tuple[int | None, str]:
    """The errno and the words of a failed write; polars reports the OS error inside its text."""
    if isinstance(exc, FileExistsError | NotADirectoryError):
        folders = (path.parent, *path.parent.parents)
        blocking = next((p for p in folders if p.exists() and not p.is_dir()), None)
        if blocking is not None:
            return exc.errno, f"{blocking} is a file, not a folder"
    if isinstance(exc, OSError):
        return exc.errno, exc.strerror or str(exc)
    found = re.search(r"os error (\d+)", str(exc))
    if found:
        code = int(found.group(1))
        return code, os.strerror(code)
    return None, str(exc)


def _read(path: Path, want_polars: bool) -> Frame:
    if not path.exists():
        raise FileNotFoundError(f"no stored output at {path}: materialize the upstream partition first")
    table = pl.read_parquet(path)
    return table if want_polars else table.to_pandas()
