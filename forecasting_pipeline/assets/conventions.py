"""What every pipeline asset shares: batched backfills, code versions, run lineage, GPU routing."""

from __future__ import annotations

import hashlib
import inspect
import sys
from collections.abc import Callable, Iterator
from types import CodeType, ModuleType
from typing import Any

from dagster import AssetExecutionContext, BackfillPolicy, asset
from sqlalchemy import Connection

from forecasting_pipeline.storage.lineage import record_run

PACKAGE = "forecasting_pipeline"
PARQUET_IO_MANAGER = "parquet_io_manager"
# Concurrency pool of steps that hold the accelerator; its limit is configuration (dagster.yaml's
# default pool limit, or FP_GPU_POOL_LIMIT applied by the CLI), never reset by code.
GPU_POOL = "gpu"
# Op tags that route a training step to GPU capacity on a distributed executor: dagster-k8s
# reads the container limits, a Celery executor the queue.
GPU_OP_TAGS: dict[str, Any] = {
    "dagster-k8s/config": {"container_config": {"resources": {"limits": {"nvidia.com/gpu": "1"}}}},
    "dagster-celery/queue": "gpu",
    "forecasting-pipeline/device": "gpu",
}


def _referenced_names(code: CodeType) -> Iterator[str]:
    yield from code.co_names
    for constant in code.co_consts:
        if isinstance(constant, CodeType):
            yield from _referenced_names(constant)


def _helper_modules(fn: Callable[..., Any]) -> list[ModuleType]:
    """Package modules whose functions or classes the asset body uses directly."""
    own = sys.modules.get(fn.__module__)
    modules: dict[str, ModuleType] = {}
    for name in _referenced_names(fn.__code__):
        value = fn.__globals__.get(name)
        module = value if isinstance(value, ModuleType) else inspect.getmodule(value) if value else None
        if module is not None and module is not own and module.__name__.startswith(PACKAGE):
            modules[module.__name__] = module
    return [modules[name] for name in sorted(modules)]


def derive_code_version(fn: Callable[..., Any], *extra: str) -> str:
    """A digest of the asset's own source and of the package modules it calls directly.

    Editing the function, or a helper module it uses (fitting, storage, catalog builders),
    changes the version, so Dagster marks the asset's materializations stale in the UI.
    Modules reached only through other modules are not followed: a deliberate bound, so a
    change to a shared utility does not mark every asset stale. `extra` adds anything else
    that should move the version with it.
    """
    digest = hashlib.sha256(inspect.getsource(fn).encode())
    for module in _helper_modules(fn):
        digest.update(module.__name__.encode())
        digest.update(inspect.getsource(module).encode())
    for item in extra:
        digest.update(item.encode())
    return digest.hexdigest()[:12]


def pipeline_asset(**asset_kwargs: Any) -> Callable[..., Any]:
    """`@asset` with the platform's defaults.

    A backfill over many partitions is one run that computes them all, vectorized
    (`context.partition_keys`), never a run per key; frames go through the partition-aware
    Parquet IO manager; the code version is derived from the code that computes the asset.
    """

    def decorate(fn: Callable[..., Any]) -> Any:
        defaults = {
            "backfill_policy": BackfillPolicy.single_run(),
            "io_manager_key": PARQUET_IO_MANAGER,
            "code_version": derive_code_version(fn),
        }
        return asset(**{**defaults, **asset_kwargs})(fn)

    return decorate


def code_version(context: AssetExecutionContext) -> str:
    """The code version of the asset this step materializes (recorded with its domain rows)."""
    return context.assets_def.code_versions_by_key.get(context.asset_key) or "unknown"


def note_run(context: AssetExecutionContext, conn: Connection) -> None:
    """Register the Dagster run in the domain schema, so domain rows join to their code version."""
    record_run(conn, context.run_id, context.job_name or "materialize", code_version(context))
