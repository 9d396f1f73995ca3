"""What every pipeline asset shares: batched backfills, code versions, run lineage, GPU routing."""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.util
import inspect
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import polars as pl
from dagster import AssetExecutionContext, BackfillPolicy, RetryRequested, asset
from sqlalchemy import Connection, text

from forecasting_pipeline.execution.queues import GPU_QUEUE
from forecasting_pipeline.resources.transient_errors import MAX_RETRIES, backoff_seconds, is_transient
from forecasting_pipeline.storage.lineage import record_run

PACKAGE = "forecasting_pipeline"
# Who answers for the assets in the UI's catalog (a Dagster team owner; override per asset).
ASSET_OWNER = "team:forecasting"
PARQUET_IO_MANAGER = "parquet_io_manager"
# Concurrency pool of steps that hold the accelerator; its limit is configuration (dagster.yaml's
# default pool limit, or FP_GPU_POOL_LIMIT applied by the CLI), never reset by code.
GPU_POOL = "gpu"
# Op tags that route a training step to GPU capacity on a distributed executor: dagster-k8s
# reads the container limits, a Celery executor the queue. The toleration lets the step's pod onto
# GPU nodes tainted `nvidia.com/gpu`, a taint that keeps every other pod off them (docs/scale-out.md);
# where no such taint exists it changes nothing.
GPU_OP_TAGS: dict[str, Any] = {
    "dagster-k8s/config": {
        "container_config": {"resources": {"limits": {"nvidia.com/gpu": "1"}}},
        "pod_spec_config": {
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
        },
    },
    "dagster-celery/queue": GPU_QUEUE,
    "forecasting-pipeline/device": "gpu",
}


def _code_parts(fn: Callable[..., Any]) -> tuple[list[str], list[ModuleType]]:
    """Sources of the asset body and of the same-module helpers it reaches, and the other
    package modules any of them uses directly.

    Read from the module's syntax tree, not its namespace: the asset is decorated before the
    helpers defined below it exist as objects.
    """
    own = sys.modules[fn.__module__]
    text = inspect.getsource(own)
    tree = ast.parse(text)
    definitions = {
        node.name: node
        for node in tree.body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
    }
    sources: dict[str, str] = {}
    referenced: set[str] = set()
    pending = [fn.__name__]
    while pending:
        name = pending.pop()
        if name in sources or name not in definitions:
            continue
        sources[name] = ast.get_source_segment(text, definitions[name]) or ""
        names = {node.id for node in ast.walk(definitions[name]) if isinstance(node, ast.Name)}
        referenced |= names
        pending.extend(names)
    modules: dict[str, ModuleType] = {}
    for name in referenced - set(definitions):
        value = vars(own).get(name)
        module = value if isinstance(value, ModuleType) else inspect.getmodule(value) if value else None
        if module is not None and module is not own and module.__name__.startswith(PACKAGE):
            modules[module.__name__] = module
    return [sources[name] for name in sorted(sources)], [modules[name] for name in sorted(modules)]


def derive_code_version(fn: Callable[..., Any], *extra: str) -> str:
    """A digest of the asset's source, the helpers of its module it uses, and the package
    modules they call directly.

    Editing the function, a helper it calls, or a module it uses (fitting, storage, catalog
    builders) changes the version, so Dagster marks the asset's materializations stale in the
    UI. Modules reached only through other modules are not followed: a deliberate bound, so a
    change to a shared utility does not mark every asset stale. `extra` adds anything else
    that should move the version with it.
    """
    sources, modules = _code_parts(fn)
    digest = hashlib.sha256()
    for source in sources:
        digest.update(source.encode())
    for module in modules:
        digest.update(module.__name__.encode())
        digest.update(inspect.getsource(module).encode())
    for item in extra:
        digest.update(item.encode())
    return digest.hexdigest()[:12]


def _module_source(name: str) -> str:
    """A module's source read from its file, without importing it (it may be heavy)."""
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise ValueError(f"no source for module {name}")
    return Path(spec.origin).read_text(encoding="utf-8")


def _step_context(args: tuple, kwargs: dict) -> AssetExecutionContext | None:
    for value in (*args, *kwargs.values()):
        if isinstance(value, AssetExecutionContext):
            return value
    return None


def _windows(context: AssetExecutionContext) -> list[str]:
    """The `date` windows a step writes (the part of each key before `|`)."""
    if not context.has_partition_key and not context.has_partition_key_range:
        return []
    return sorted({str(key).split("|", 1)[0] for key in context.partition_keys})


@contextmanager
def advisory_locks(database: Any, asset_name: str, windows: list[str]) -> Iterator[None]:
    """Hold PostgreSQL advisory locks on (asset, window) for the block, on a connection of its own.

    Taken in sorted order, so two holders of overlapping sets cannot deadlock; released at the
    end, or by the server when a killed process's session goes.
    """
    conn = database.engine.connect()
    try:
        for window in sorted(windows):
            conn.execute(
                text("SELECT pg_advisory_lock(hashtext('forecasting-pipeline'), hashtext(:key))"),
                {"key": f"{asset_name}:{window}"},
            )
        conn.commit()
        yield
    finally:
        try:
            conn.execute(text("SELECT pg_advisory_unlock_all()"))
            conn.commit()
        except Exception:  # a lost connection took its locks with it
            conn.invalidate()
        conn.close()


@contextmanager
def step_guard(context: AssetExecutionContext | None, database: Any) -> Iterator[None]:
    """Serialize steps that write the same asset and window, and retry transient failures.

    Two overlapping runs of one asset and window (a sensor's and a person's, say) take turns
    through advisory locks held for the step, so neither sees nor leaves a mix of the other's
    rows. A dropped connection, a deadlock or a busy file system asks Dagster to retry the step
    with exponential backoff; any other error fails it.
    """
    windows = _windows(context) if context is not None and hasattr(database, "engine") else []
    try:
        if windows:
            with advisory_locks(database, context.asset_key.to_user_string(), windows):
                yield
        else:
            yield
    except Exception as exc:
        if context is not None and is_transient(exc) and context.retry_number < MAX_RETRIES:
            wait = backoff_seconds(context.retry_number)
            context.log.warning(f"transient failure, retrying in {wait:.0f}s: {exc}")
            raise RetryRequested(max_retries=MAX_RETRIES, seconds_to_wait=wait) from exc
        raise


def _guarded(fn: Callable[..., Any]) -> Callable[..., Any]:
    """`fn` run inside `step_guard` (generator assets stay generators)."""
    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def guarded_generator(*args: Any, **kwargs: Any) -> Any:
            with step_guard(_step_context(args, kwargs), kwargs.get("database")):
                yield from fn(*args, **kwargs)

        return guarded_generator

    @functools.wraps(fn)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        with step_guard(_step_context(args, kwargs), kwargs.get("database")):
            return fn(*args, **kwargs)

    return guarded


def pipeline_asset(*, lazy_modules: tuple[str, ...] = (), **asset_kwargs: Any) -> Callable[..., Any]:
    """`@asset` with the platform's defaults.

    A backfill over many partitions is one run that computes them all, vectorized
    (`context.partition_keys`), never a run per key; frames go through the partition-aware
    Parquet IO manager; the code version is derived from the code that computes the asset,
    including `lazy_modules`: package modules the asset imports inside its body (to keep heavy
    libraries out of definitions loading), whose source is read without importing them.
    """

    def decorate(fn: Callable[..., Any]) -> Any:
        defaults = {
            "backfill_policy": BackfillPolicy.single_run(),
            "io_manager_key": PARQUET_IO_MANAGER,
            "code_version": derive_code_version(fn, *map(_module_source, lazy_modules)),
            "owners": [ASSET_OWNER],
        }
        return asset(**{**defaults, **asset_kwargs})(_guarded(fn))

    return decorate


def code_version(context: AssetExecutionContext) -> str:
    """The code version of the asset this step materializes (recorded with its domain rows)."""
    return context.assets_def.code_versions_by_key.get(context.asset_key) or "unknown"


def note_run(context: AssetExecutionContext, conn: Connection) -> None:
    """Register the Dagster run in the domain schema, so domain rows join to their code version."""
    record_run(conn, context.run_id, context.job_name or "materialize", code_version(context))


# Markdown punctuation a value (a series id, a driver's column name) could use to format, link,
# inject HTML or end a table cell; each is backslash-escaped, which CommonMark renders as the
# character itself, so the UI shows exactly what is stored.
_MARKDOWN_SPECIAL = r"([\\`*_\[\]<>|~&!#$])"


def _escape_markdown(value: str) -> str:
    return re.sub(_MARKDOWN_SPECIAL, r"\\\1", value)


def markdown_table(frame: pl.DataFrame) -> str:
    """A frame as a Markdown table for materialization metadata, formatted column-wise by polars;
    text is escaped, numbers are shown as they are."""
    cells = [
        pl.col(c).cast(pl.String).fill_null("")
        if dtype.is_numeric()
        else pl.col(c).cast(pl.String).str.replace_all(_MARKDOWN_SPECIAL, r"\${1}").fill_null("")
        for c, dtype in frame.schema.items()
    ]
    rows = frame.select(pl.concat_str([pl.lit("| "), pl.concat_str(cells, separator=" | "), pl.lit(" |")]))
    header = ["| " + " | ".join(map(_escape_markdown, frame.columns)) + " |", "|" + "---|" * frame.width]
    return "\n".join(header + rows.to_series().to_list())
