"""Partition-aware Parquet IO manager, on a local folder or an object store.

Dagster's filesystem IO manager refuses an output that spans several partitions. Here a
partitioned asset returns `{partition_key: frame}` for all keys of its run, one file is written
per key, and a partitioned input loads as `{partition_key: frame}` over the upstream keys the
partition mapping selected. So one run can compute a whole range of partitions, vectorized.

The root is a path or a URI (FP_STORAGE_URI: `s3://bucket/prefix`, `file:///…`, any fsspec
filesystem), addressed through universal-pathlib, so a step on one worker host reads what a step
on another wrote. The layout is the same on every filesystem.
"""

from __future__ import annotations

import io
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import get_args
from urllib.parse import quote

import pandas as pd
import polars as pl
from dagster import ConfigurableIOManager, InputContext, MultiPartitionKey, OutputContext
from upath import UPath

Frame = pd.DataFrame | pl.DataFrame

_UNPARTITIONED = "__all__.parquet"
_LOCAL_PROTOCOLS = ("", "file", "local")


def partition_relative_path(partition_key: str) -> PurePosixPath:
    """`date=2016-10-30/series=FR.parquet` for a multi key, `2016-10-30.parquet` otherwise.

    Every part is percent-encoded, so a key never holds `/` nor a glob character of fsspec."""
    if isinstance(partition_key, MultiPartitionKey):
        parts = [
            f"{dimension}={quote(value, safe='')}"
            for dimension, value in sorted(partition_key.keys_by_dimension.items())
        ]
        return PurePosixPath(*parts[:-1], parts[-1] + ".parquet")
    return PurePosixPath(quote(partition_key, safe="") + ".parquet")


def storage_root(base: str) -> UPath:
    """`base` as a path object: a `pathlib.Path` (upath's `PosixUPath`) for a local path or a
    `file://` URI, so local storage keeps fsync and atomic renames; an fsspec path otherwise."""
    root = UPath(base)
    if root.protocol in _LOCAL_PROTOCOLS and not isinstance(root, Path):
        root = UPath(root.path)
    return root


def is_local(path: UPath) -> bool:
    return isinstance(path, Path)


def redact(location: object) -> str:
    """`location` for a message: a password in a URI (`//user:secret@host`) is never shown."""
    return re.sub(r"//[^/@\s]*:[^/@\s]*@", "//***@", str(location))


class PartitionedParquetIOManager(ConfigurableIOManager):
    """Stores pandas/polars frames as Parquet under `base_dir/<asset key>/<partition>`; `base_dir`
    is a local folder or a URI (an object store shared by worker hosts)."""

    base_dir: str

    def _asset_dir(self, context: InputContext | OutputContext) -> UPath:
        return storage_root(self.base_dir).joinpath(*context.asset_key.path)

    def _path(self, context: InputContext | OutputContext, partition_key: str | None) -> UPath:
        if partition_key is None:
            return self._asset_dir(context) / _UNPARTITIONED
        return self._asset_dir(context).joinpath(*partition_relative_path(partition_key).parts)

    def handle_output(self, context: OutputContext, obj: Frame | Mapping[str, Frame]) -> None:
        asset = context.asset_key.to_user_string()
        if not context.has_asset_partitions:
            if isinstance(obj, Mapping):
                raise TypeError(f"{asset} is not partitioned: return one frame")
            rows = _write_all(asset, {self._path(context, None): obj})
            context.add_output_metadata({"rows": rows})
            return

        expected = set(context.asset_partition_keys)
        if not isinstance(obj, Mapping):
            if len(expected) != 1:
                raise TypeError(
                    f"{asset} ran for {len(expected)} partitions: return {{partition_key: frame}}"
                )
            obj = {next(iter(expected)): obj}
        produced = {str(key) for key in obj}
        if produced != {str(key) for key in expected}:
            missing = sorted({str(k) for k in expected} - produced)[:5]
            extra = sorted(produced - {str(k) for k in expected})[:5]
            raise ValueError(
                f"{asset} must return exactly its run's partitions; missing {missing}, unexpected {extra}"
            )
        by_name = {str(key): key for key in expected}
        targets = {self._path(context, by_name[str(name)]): frame for name, frame in obj.items()}
        total = _write_all(asset, targets)
        context.add_output_metadata({"rows": total, "partitions_written": len(obj)})

    def load_input(self, context: InputContext) -> Frame | dict[str, Frame]:
        want_polars = _wants_polars(context.dagster_type.typing_type)
        if not context.has_asset_partitions:
            (frame,) = _read_all([self._path(context, None)], want_polars)
            return frame
        keys = list(context.asset_partition_keys)
        frames = _read_all([self._path(context, key) for key in keys], want_polars)
        return {str(key): frame for key, frame in zip(keys, frames, strict=True)}


def _wants_polars(annotation: object) -> bool:
    """`pl.DataFrame` or `dict[str, pl.DataFrame]` on the input asks for polars; else pandas."""
    return annotation is pl.DataFrame or (get_args(annotation) or (None,))[-1] is pl.DataFrame


class StorageWriteError(OSError):
    """A step's output could not be stored (full disk, a folder that is a file, no permission, a
    missing bucket, an unreachable object store): the step fails and its partitions are not
    materialized."""

    def __str__(self) -> str:
        return self.strerror or super().__str__()


def _as_polars(frame: Frame) -> pl.DataFrame:
    return frame if isinstance(frame, pl.DataFrame) else pl.from_pandas(frame)


def _write_all(asset: str, targets: Mapping[UPath, Frame]) -> int:
    """Write every partition's file; the rows written."""
    if all(is_local(path) for path in targets):
        return _write_local(asset, {Path(path): frame for path, frame in targets.items()})
    return _put_objects(asset, targets)


def _write_local(asset: str, targets: Mapping[Path, Frame]) -> int:
    """All or none: each file goes to a temporary file beside its target first, and only when
    all are complete are they renamed into place (each rename is atomic). So a full disk or a
    killed run never leaves a half-written file, nor a run's output half old and half new."""
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
    table = _as_polars(frame)
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
            "the folder writable (FP_STORAGE_URI, by default FP_HOME/storage), then run the step again",
        ) from None  # the reason is in the message; a cause would be reported instead of it
    return tmp_name, table.height


def _put_objects(asset: str, targets: Mapping[UPath, Frame]) -> int:
    """Write each partition's object with one PUT, after every frame has been serialized.

    An object store has no rename: a "move" is a copy and a delete, object by object. Staging
    under temporary keys would double the bytes written and leave stray keys behind a killed
    run, yet still not make several objects change at once. What staging protects against, a
    reader seeing half an object, a PUT already gives: an object is replaced whole or not at all.
    So the frames are all serialized first (a frame that cannot be written fails the step before
    anything is stored), then PUT concurrently. If the store fails midway, some of the run's
    partitions may already hold their new objects, each whole; the step does not materialize,
    and running it again rewrites them all.
    """
    payloads: dict[str, bytes] = {}
    total = 0
    first = next(iter(targets))
    for path, frame in targets.items():
        table = _as_polars(frame)
        buffer = io.BytesIO()
        try:
            table.write_parquet(buffer)
        except pl.exceptions.PolarsError as exc:
            raise StorageWriteError(
                None,
                f"{asset}: could not write {path.name} as Parquet: {exc}. Nothing of this output was "
                "stored and the step did not materialize",
            ) from None
        payloads[path.path] = buffer.getvalue()
        total += table.height
    try:
        first.fs.pipe(payloads)
    except Exception as exc:  # s3fs raises OSError subclasses, botocore its own (connection errors)
        others = f" and {len(payloads) - 1} other object(s)" if len(payloads) > 1 else ""
        raise StorageWriteError(
            getattr(exc, "errno", None),
            f"{asset}: could not store {redact(first)}{others}: "
            f"{type(exc).__name__}: {redact(exc)}. The step did not materialize (every object is whole, "
            "but some of this run's partitions may already hold their new one); check that the bucket "
            "exists, that this host's credentials may write to it and that the endpoint is reachable, "
            "then run the step again",
        ) from None
    return total


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


def _missing(path: UPath) -> FileNotFoundError:
    return FileNotFoundError(f"no stored output at {redact(path)}: materialize the upstream partition first")


def _read_all(paths: Sequence[UPath], want_polars: bool) -> list[Frame]:
    """The frames stored at `paths`, in order. From an object store they are fetched in one
    concurrent batch (`fs.cat`), not one round trip after another; S3 and GCS are read-after-write
    consistent, so a step that starts after its upstream step stored its objects sees them all."""
    if not paths:
        return []
    if all(is_local(path) for path in paths):
        blobs: list[Path | bytes] = []
        for path in paths:
            if not path.exists():
                raise _missing(path)
            blobs.append(Path(path))
    else:
        fs = paths[0].fs
        fetched = fs.cat([path.path for path in paths], on_error="return")
        blobs = []
        for path in paths:
            found = fetched.get(path.path, fetched.get(fs._strip_protocol(path.path)))
            if found is None or isinstance(found, FileNotFoundError):
                raise _missing(path)
            if isinstance(found, BaseException):
                raise OSError(
                    f"could not read {redact(path)}: {type(found).__name__}: {redact(found)}"
                ) from None
            blobs.append(found)
    frames = [pl.read_parquet(blob if isinstance(blob, Path) else io.BytesIO(blob)) for blob in blobs]
    return frames if want_polars else [frame.to_pandas() for frame in frames]
