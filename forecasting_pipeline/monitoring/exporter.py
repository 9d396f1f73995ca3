"""`forecasting-pipeline metrics`: the collector on an HTTP endpoint for Prometheus.

The asset graph is read once (which assets, how each is partitioned, which checks block), but
the date dimension is rebuilt from the deployment's calendar whenever the calendar moves: the
partition counts come from Dagster's status cache, which is keyed by the partitions definition,
and an exporter holding an outdated one would rebuild that cache from scratch on every scrape
and fight the UI over it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

from dagster import (
    AssetKey,
    DagsterInstance,
    MultiPartitionsDefinition,
    PartitionsDefinition,
    TimeWindowPartitionsDefinition,
)
from prometheus_client import CollectorRegistry, start_http_server

from forecasting_pipeline.calendar import load_calendar
from forecasting_pipeline.dagster_services import UI_STATEMENT_TIMEOUT_MS
from forecasting_pipeline.monitoring.collector import PipelineCollector
from forecasting_pipeline.resources.database import engine_for
from forecasting_pipeline.settings import Settings

log = logging.getLogger(__name__)

# The webserver's, as `forecasting-pipeline ui` starts it: a first status-cache build over a
# year of partitions takes tens of seconds; a query stuck longer behind a lock fails its section.
STATEMENT_TIMEOUT_MS = UI_STATEMENT_TIMEOUT_MS
POOL_RECYCLE_SECONDS = 3600


@dataclass(frozen=True)
class AssetGraphShape:
    """What the exporter needs of the definitions: each asset's partitioning and blocking checks."""

    partitions: Mapping[AssetKey, PartitionsDefinition | None]
    blocking_checks: Mapping[tuple[str, str], bool]


def asset_graph_shape() -> AssetGraphShape:
    from forecasting_pipeline.definitions import defs  # loads the code location: seconds, once

    graph = defs.resolve_asset_graph()
    return AssetGraphShape(
        partitions={node.key: node.partitions_def for node in graph.asset_nodes},
        blocking_checks={
            (key.asset_key.to_user_string(), key.name): graph.get_check_spec(key).blocking
            for key in graph.asset_check_keys
        },
    )


class CurrentPartitions:
    """Each asset's partitions definition with the date dimension of the calendar in force."""

    def __init__(self, settings: Settings, shape: AssetGraphShape) -> None:
        self._settings = settings
        self._shape = shape
        self._calendar_json: dict | None = None
        self._current: Mapping[AssetKey, PartitionsDefinition | None] = {}

    def __call__(self) -> Mapping[AssetKey, PartitionsDefinition | None]:
        from forecasting_pipeline.partitions import DATE_DIMENSION, build_date_partitions

        calendar = load_calendar(self._settings)
        if calendar.as_json() != self._calendar_json:
            dates = build_date_partitions(calendar)
            self._current = {
                key: _with_dates(partitions, dates, DATE_DIMENSION)
                for key, partitions in self._shape.partitions.items()
            }
            self._calendar_json = calendar.as_json()
        return self._current


def _with_dates(
    partitions: PartitionsDefinition | None, dates: TimeWindowPartitionsDefinition, date_dimension: str
) -> PartitionsDefinition | None:
    if isinstance(partitions, TimeWindowPartitionsDefinition):
        return dates
    if isinstance(partitions, MultiPartitionsDefinition):
        return MultiPartitionsDefinition(
            {
                d.name: dates if d.name == date_dimension else d.partitions_def
                for d in partitions.partitions_defs
            }
        )
    return partitions


def build_registry(settings: Settings, database_url: str, instance: DagsterInstance) -> CollectorRegistry:
    # Pooled connections for Dagster's storage, as the webserver uses (a scrape otherwise opens
    # a connection per statement: about a second at 10,000 series), and its statement timeout.
    instance.optimize_for_webserver(
        statement_timeout=STATEMENT_TIMEOUT_MS, pool_recycle=POOL_RECYCLE_SECONDS, max_overflow=4
    )
    shape = asset_graph_shape()
    collector = PipelineCollector(
        settings,
        engine_for(database_url),
        instance,
        CurrentPartitions(settings, shape),
        shape.blocking_checks,
    )
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry


def _collect_once(registry: CollectorRegistry) -> None:
    try:
        list(registry.collect())  # a scrape meanwhile waits for it (one collection at a time)
    except Exception:  # the sections log their own errors; a warm-up failure is not fatal
        log.exception("first collection failed")


@contextmanager
def serving(registry: CollectorRegistry, host: str, port: int) -> Iterator[int]:
    """Serve `/metrics` until the block ends; yields the port (a free one when `port` is 0).

    A first collection starts at once in the background: it brings Dagster's asset status
    caches up to date (half a minute at 10,000 series after a restart), so Prometheus' first
    scrape waits for it instead of timing out on it.
    """
    server, thread = start_http_server(port, addr=host, registry=registry)
    threading.Thread(target=_collect_once, args=(registry,), name="metrics-warm-up", daemon=True).start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
