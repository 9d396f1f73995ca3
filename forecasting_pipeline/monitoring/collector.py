"""The Prometheus collector: every scrape reads the instance and the domain tables afresh.

Computed at scrape time rather than pushed by the pipeline, so the numbers are the tables'
numbers (a restarted exporter loses nothing) and no step pays for monitoring. Each section
runs in its own connection and fails alone: a broken query leaves its metrics out of that
scrape and counts in `fp_exporter_section_errors_total`, while the rest are still served.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime

from dagster import (
    AssetKey,
    DagsterInstance,
    DynamicPartitionsDefinition,
    MultiPartitionsDefinition,
    PartitionsDefinition,
    TimeWindowPartitionsDefinition,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import Connection, Engine

from forecasting_pipeline.calendar import DATE_KEY_FORMAT
from forecasting_pipeline.modeling.frequency_groups import frequency_group
from forecasting_pipeline.monitoring import catalogue, dagster_state
from forecasting_pipeline.monitoring.catalogue import METRICS
from forecasting_pipeline.settings import Settings
from forecasting_pipeline.storage import monitoring as domain

log = logging.getLogger(__name__)

ENDED = {status.value for status in dagster_state.ENDED_STATUSES}
NOMINAL_COVERAGE = {"80": 0.80, "95": 0.95}
UNKNOWN_GROUP = "unknown"  # series whose frequency could not be inferred


@dataclass(frozen=True)
class Sample:
    metric: str
    labels: Mapping[str, str]
    value: float


def _quantile_samples(metric: str, label: str, quantiles: Mapping[str, tuple[float, ...]]) -> list[Sample]:
    return [
        Sample(metric, {label: key, "quantile": f"{q:g}"}, value)
        for key, values in quantiles.items()
        for q, value in zip(dagster_state.QUANTILES, values, strict=True)
    ]


class PipelineCollector(Collector):
    """Builds every metric of `catalogue.METRICS` from one pass over the sections."""

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        instance: DagsterInstance,
        partitions_by_asset: Callable[[], Mapping[AssetKey, PartitionsDefinition | None]],
        blocking_checks: Mapping[tuple[str, str], bool],
    ) -> None:
        self._settings = settings
        self._engine = engine
        self._instance = instance
        self._partitions_by_asset = partitions_by_asset
        self._blocking_checks = blocking_checks
        self._asset_states = dagster_state.AssetStateReader()
        self._lock = threading.Lock()
        self._section_errors: dict[str, int] = dict.fromkeys(catalogue.SECTIONS, 0)
        self._sections: dict[str, Callable[[Connection, float], list[Sample]]] = {
            catalogue.RUNS: self._runs,
            catalogue.ASSETS: self._assets,
            catalogue.CHECKS: self._checks,
            catalogue.INGESTION: self._ingestion,
            catalogue.DATASETS: self._datasets,
            catalogue.MODELS: self._models,
            catalogue.ACCURACY: self._accuracy,
            catalogue.DRIFT: self._drift,
        }

    def describe(self) -> list[Metric]:
        """The families without computing them, so registering the collector reads nothing."""
        return [_family(spec) for spec in METRICS]

    def collect(self) -> Iterator[Metric]:
        # One scrape at a time: two at once would double the database work, and the section
        # error counts are updated in place. The families are built before the first is yielded.
        with self._lock:
            families = self._families()
        yield from families

    def _families(self) -> list[Metric]:
        now = time.time()
        samples: list[Sample] = []
        for section, compute in self._sections.items():
            started = time.perf_counter()
            try:
                with self._engine.connect() as conn:
                    samples.extend(compute(conn, now))
            except Exception:
                self._section_errors[section] += 1
                log.exception("metrics section %s failed; its metrics are left out of this scrape", section)
            samples.append(
                Sample("fp_exporter_section_seconds", {"section": section}, time.perf_counter() - started)
            )
        samples.extend(
            Sample("fp_exporter_section_errors_total", {"section": s}, n)
            for s, n in self._section_errors.items()
        )
        by_metric: dict[str, list[Sample]] = defaultdict(list)
        for sample in samples:
            by_metric[sample.metric].append(sample)
        families = []
        for spec in METRICS:
            family = _family(spec)
            for sample in by_metric.pop(spec.name, []):
                family.add_metric([sample.labels[label] for label in spec.labels], sample.value)
            families.append(family)
        if by_metric:  # a section produced a metric the catalogue does not declare
            raise RuntimeError(f"undeclared metrics: {sorted(by_metric)}")
        return families

    # Sections: each returns its samples, computed from one connection.

    def _runs(self, conn: Connection, now: float) -> list[Sample]:
        since = now - self._settings.metrics_lookback_hours * 3600
        counts = dagster_state.run_counts(conn)
        # Every job that ran shows 0 failures until its first: `increase()` then sees that one too.
        ended = {(job, status): 0 for job in {c.job for c in counts} for status in sorted(ENDED)}
        ended.update({(c.job, c.status): c.runs for c in counts if c.status in ENDED})
        samples = [
            Sample("fp_dagster_runs_total", {"job": job, "status": status}, runs)
            for (job, status), runs in sorted(ended.items())
        ]
        samples += [
            Sample("fp_dagster_runs_active", {"job": c.job, "status": c.status}, c.runs)
            for c in counts
            if c.status not in ENDED
        ]
        for last in dagster_state.last_ended_runs(conn):
            samples.append(
                Sample("fp_dagster_job_last_run_failed", {"job": last.job}, last.status == "FAILURE")
            )
            samples.append(
                Sample("fp_dagster_job_last_run_end_timestamp_seconds", {"job": last.job}, last.end_time)
            )
        samples += _quantile_samples(
            "fp_dagster_run_duration_seconds", "job", dagster_state.run_duration_quantiles(conn, since)
        )
        samples += _quantile_samples(
            "fp_dagster_step_duration_seconds", "step", dagster_state.step_duration_quantiles(conn, since)
        )
        for beat in dagster_state.daemon_heartbeats(self._instance):
            labels = {"daemon": beat.daemon}
            samples.append(Sample("fp_dagster_daemon_heartbeat_age_seconds", labels, now - beat.timestamp))
            samples.append(Sample("fp_dagster_daemon_errors", labels, beat.errors))
        for pool in dagster_state.pool_use(self._instance):
            labels = {"pool": pool.pool}
            samples += [
                Sample("fp_dagster_pool_slots", labels, pool.slots),
                Sample("fp_dagster_pool_slots_in_use", labels, pool.in_use),
                Sample("fp_dagster_pool_pending_steps", labels, pool.pending_steps),
            ]
        return samples

    def _assets(self, conn: Connection, now: float) -> list[Sample]:
        partitions = self._partitions_by_asset()
        samples = []
        for state in self._asset_states.read(self._instance, partitions):
            labels = {"asset": state.asset}
            if state.last_materialization is not None:
                samples.append(
                    Sample(
                        "fp_asset_last_materialization_timestamp_seconds", labels, state.last_materialization
                    )
                )
                samples.append(
                    Sample("fp_asset_materialization_age_seconds", labels, now - state.last_materialization)
                )
            samples += [
                Sample("fp_asset_partitions", {**labels, "state": name}, count)
                for name, count in state.partitions.items()
            ]
        kinds = {key: kind for key, kind in map(_partitioning, partitions.items()) if kind}
        stale = domain.stale_partition_counts(conn, {key.to_string(): kind for key, kind in kinds.items()})
        samples += [
            Sample("fp_asset_stale_partitions", {"asset": key.to_user_string()}, stale[key.to_string()])
            for key in kinds
        ]
        return samples

    def _checks(self, conn: Connection, now: float) -> list[Sample]:
        samples = []
        for outcome in dagster_state.latest_check_outcomes(conn):
            blocking = self._blocking_checks.get((outcome.asset, outcome.check), False)
            labels = {"asset": outcome.asset, "check": outcome.check, "blocking": str(blocking).lower()}
            samples.append(Sample("fp_asset_check_passed", labels, outcome.passed))
            if outcome.evaluated_at is not None:
                samples.append(
                    Sample("fp_asset_check_last_evaluation_timestamp_seconds", labels, outcome.evaluated_at)
                )
        return samples

    def _ingestion(self, conn: Connection, now: float) -> list[Sample]:
        files = domain.landed_file_counts(conn)
        samples = [Sample("fp_landed_files", {"status": f.status}, f.files) for f in files]
        samples.append(
            Sample(
                "fp_rows_ingested_total", {}, sum(f.rows_accepted for f in files if f.status == "ingested")
            )
        )
        samples += [
            Sample("fp_rows_pending", {"status": f.status}, f.rows_accepted)
            for f in files
            if f.status in ("staged", "held")
        ]
        samples += [
            Sample("fp_rows_quarantined_total", {"reason": reason}, count)
            for reason, count in domain.quarantine_counts(conn).items()
        ]
        return samples

    def _datasets(self, conn: Connection, now: float) -> list[Sample]:
        samples = [Sample("fp_dataset_stale_after_seconds", {}, self._settings.stale_data_after_hours * 3600)]
        for dataset in domain.dataset_freshness(conn):
            labels = {"dataset": dataset.dataset_id}
            samples.append(Sample("fp_dataset_series", labels, dataset.series))
            updated, newest = dagster_state.utc_timestamp([dataset.last_update, dataset.newest_observation])
            if updated is not None:
                samples.append(Sample("fp_dataset_last_update_timestamp_seconds", labels, updated))
            if newest is not None:
                samples.append(Sample("fp_dataset_newest_observation_timestamp_seconds", labels, newest))
        return samples

    def _models(self, conn: Connection, now: float) -> list[Sample]:
        samples = []
        for cost in domain.newest_fit_costs(conn):
            labels = {
                "stage": cost.stage,
                "model": cost.model_name,
                "freq_group": cost.freq_group,
                "device": cost.device,
            }
            samples += [
                Sample("fp_model_fit_seconds", labels, cost.wall_seconds),
                Sample("fp_model_fit_peak_rss_bytes", labels, cost.peak_rss_mb * 2**20),
                Sample("fp_model_fit_series", labels, cost.series_count),
            ]
            if cost.gpu_peak_mb is not None:
                samples.append(Sample("fp_model_fit_gpu_peak_bytes", labels, cost.gpu_peak_mb * 2**20))
        return samples

    def _accuracy(self, conn: Connection, now: float) -> list[Sample]:
        samples = [
            Sample("fp_forecast_interval_nominal_coverage", {"level": level}, nominal)
            for level, nominal in NOMINAL_COVERAGE.items()
        ]
        windows = domain.newest_scored_windows(conn, self._settings.drift_windows)
        if not windows:
            return samples
        window_start = dagster_state.utc_timestamp([_window_start(windows[0])])[0]
        samples.append(Sample("fp_forecast_newest_scored_window_timestamp_seconds", {}, window_start or 0.0))
        for group, row in _by_frequency_group(domain.champion_accuracy(conn, windows)).items():
            labels = {"freq_group": group}
            samples.append(Sample("fp_forecast_scored_series", labels, row.series))
            for metric, value in (
                ("fp_forecast_mase", row.mase),
                ("fp_forecast_backtest_mase", row.backtest_mase),
                ("fp_forecast_smape", row.smape),
            ):
                if value is not None:
                    samples.append(Sample(metric, labels, value))
            for level, value in (("80", row.coverage_80), ("95", row.coverage_95)):
                if value is not None:
                    samples.append(Sample("fp_forecast_interval_coverage", {**labels, "level": level}, value))
        return samples

    def _drift(self, conn: Connection, now: float) -> list[Sample]:
        state = domain.drift_state(conn)
        return [
            Sample("fp_drift_threshold_ratio", {}, self._settings.drift_threshold),
            Sample("fp_drift_flagged_series", {}, state.flagged_series),
            Sample("fp_drift_events_total", {}, state.events),
            Sample("fp_drift_retrains_pending", {}, state.pending_requests),
        ]


def _partitioning(item: tuple[AssetKey, PartitionsDefinition | None]) -> tuple[AssetKey, str | None]:
    """How a change to one series × window cell reaches the asset's partitions."""
    key, partitions = item
    if isinstance(partitions, MultiPartitionsDefinition):
        return key, "cell"
    if isinstance(partitions, TimeWindowPartitionsDefinition):
        return key, "window"
    if isinstance(partitions, DynamicPartitionsDefinition):
        return key, "series"
    return key, None


def _family(spec: catalogue.MetricSpec) -> Metric:
    if spec.kind == "counter":
        return CounterMetricFamily(spec.name.removesuffix("_total"), spec.help, labels=spec.labels)
    return GaugeMetricFamily(spec.name, spec.help, labels=spec.labels)


def _window_start(window_key: str) -> datetime:
    return datetime.strptime(window_key, DATE_KEY_FORMAT)


def _by_frequency_group(rows: list[domain.AccuracyByFrequency]) -> dict[str, domain.AccuracyByFrequency]:
    """Rows per frequency alias merged into their frequency group, weighted by points.

    SQL groups by the alias (a handful of values); the alias-to-group rule lives in Python
    (`frequency_group`), so it is applied here to those few rows rather than restated in SQL.
    """
    merged: dict[str, list[domain.AccuracyByFrequency]] = defaultdict(list)
    for row in rows:
        merged[frequency_group(row.freq) or UNKNOWN_GROUP].append(row)
    return {group: _weighted(parts) for group, parts in sorted(merged.items())}


def _weighted(parts: list[domain.AccuracyByFrequency]) -> domain.AccuracyByFrequency:
    points = sum(p.points for p in parts)

    def mean(attr: str) -> float | None:
        valued = [(getattr(p, attr), p.points) for p in parts if getattr(p, attr) is not None]
        weight = sum(w for _, w in valued)
        return sum(v * w for v, w in valued) / weight if weight else None

    return domain.AccuracyByFrequency(
        freq=None,
        series=sum(p.series for p in parts),
        points=points,
        mase=mean("mase"),
        backtest_mase=mean("backtest_mase"),
        smape=mean("smape"),
        coverage_80=mean("coverage_80"),
        coverage_95=mean("coverage_95"),
    )
