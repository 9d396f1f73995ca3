"""The one place that reads the process environment.

Every other module receives configuration from here (or from Dagster resources built from it),
so a deployment is described completely by the variables documented below.

- FP_DATABASE_URL: SQLAlchemy URL of the PostgreSQL database (Dagster storage in schema
  public, domain tables in schema `forecasting`). Unset: an embedded server under FP_HOME.
- FP_HOME: Parquet intermediates, landing folder, embedded database, default MLflow store.
  Default ./.forecasting
- DAGSTER_HOME: folder holding the instance's dagster.yaml. Default FP_HOME/dagster
- FP_DATE_CADENCE: arrival calendar of the `date` partitions: weekly (default), daily, monthly.
- FP_PARTITION_START: pin the first `date` window; older observations belong to it. Default:
  derived from the first data ingested and persisted in FP_HOME/calendar.json.
- FP_PARTITION_END: with FP_PARTITION_START, an optional exclusive end of the `date` windows.
- FP_LANDING_DIR: the folder landed files arrive in. Default FP_HOME/landing
- FP_CALENDAR_HISTORY_WINDOWS: how many windows before the newest data's window a new
  deployment's calendar starts with (everything older is the history slice). Default 4
- FP_FUTURE_TOLERANCE_HOURS: how far past the current time a timestamp may lie before it is
  refused as a future timestamp. Default 24
- FP_DQ_MAX_FAILING_FRACTION: share of a landed batch a blocking data-quality check tolerates
  before it stops the batch. Default 0.01
- FP_TARGET_MIN / FP_TARGET_MAX: optional bounds of plausible target values (a quality check).
- FP_MODEL_CATALOG: YAML file of model families and frequency groups (horizons, minimum
  lengths). Default: the catalog shipped in forecasting_pipeline/modeling/model_catalog.yaml
- FP_FORECAST_HORIZON: when set, every frequency group forecasts this many steps instead of the
  catalog's per-group horizon (tests and quick runs).
- FP_STATSFORECAST_N_JOBS: processes of the one StatsForecast call that fits a window's local
  families. Default 1
- FP_GPU_POOL_LIMIT: when set, the CLI sets the `gpu` pool's limit to it; unset, the limit is
  whatever the instance has (dagster.yaml's default pool limit, or one set in the UI).
- FP_PRECISION: Lightning precision on CUDA. Default 16-mixed (CPU always trains in 32-true)
- MLFLOW_TRACKING_URI: MLflow tracking server or store. Default: sqlite file under FP_HOME.
- FP_AUTOMATION: `on` starts the sensors and the weekly schedule with the daemon; `off`
  (default) leaves them stopped until switched on in the UI.
- FP_SENSOR_MAX_FILES: landed files the new-data sensor stages per tick; the rest wait for the
  next tick. Default 200
- FP_SOURCE_URL / FP_SOURCE_QUERY: a SQL source the new-data sensor snapshots into the landing
  folder each tick (a table name or a query); the URL may hold a password. Default: none
- FP_SCHEDULE_TIMEZONE: IANA time zone of the weekly model update. Default UTC
- FP_SCHEDULE_CRON: when the weekly model update runs. Default `0 3 * * 1` (Monday 03:00)
- FP_DRIFT_THRESHOLD: retrain a series when its rolling scaled error exceeds this multiple of
  its backtest estimate. Default 1.5
- FP_DRIFT_WINDOWS: scored windows in the rolling error. Default 2
- FP_RETRY_BASE_SECONDS: first wait before a step that failed on a transient database or I/O
  error is retried; each retry waits twice as long (3 retries). Default 2
- FP_PRESET: catalog preset (fast, medium, best or one of your catalog's) whose families,
  trials, steps and folds are the defaults of runs the UI, sensors and schedule launch.
  Default: none (the assets' own defaults, equal to `medium`)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import date
from pathlib import Path

DATABASE_URL_VAR = "FP_DATABASE_URL"
HOME_VAR = "FP_HOME"
DAGSTER_HOME_VAR = "DAGSTER_HOME"
MLFLOW_TRACKING_URI_VAR = "MLFLOW_TRACKING_URI"

CADENCES = ("daily", "weekly", "monthly")

# A new deployment's calendar keeps this many operating windows before the newest data's window
# (older data is the history slice), so the demo shows incremental windows at once.
DEFAULT_CALENDAR_HISTORY_WINDOWS = 4

REPO_ROOT = Path(__file__).resolve().parents[1]


class SettingsError(ValueError):
    """A configuration value in the environment is malformed."""


@dataclass(frozen=True)
class Settings:
    """Deployment configuration, resolved once per process."""

    database_url: str | None
    home: Path
    dagster_home: Path
    date_cadence: str
    partition_start: date | None  # None: the calendar comes from the data (persisted)
    partition_end: date | None
    forecast_horizon: int | None  # None: each frequency group's horizon from the catalog
    calendar_history_windows: int = DEFAULT_CALENDAR_HISTORY_WINDOWS
    future_tolerance_hours: float = 24.0
    max_failing_fraction: float = 0.01
    target_min: float | None = None
    target_max: float | None = None
    landing_override: Path | None = None
    date_cadence_explicit: bool = False  # FP_DATE_CADENCE was set (checked against the calendar)
    # Set only when MLFLOW_TRACKING_URI is in the environment (it may carry credentials).
    mlflow_tracking_uri: str | None = None
    model_catalog: Path | None = None  # None: the bundled catalog
    statsforecast_n_jobs: int = 1
    gpu_pool_limit: int | None = None
    cuda_precision: str = "16-mixed"
    automation_on: bool = False
    sensor_max_files: int = 200
    source_url: str | None = None
    source_query: str | None = None
    schedule_timezone: str = "UTC"
    schedule_cron: str = "0 3 * * 1"
    drift_threshold: float = 1.5
    drift_windows: int = 2
    preset: str | None = None
    retry_base_seconds: float = 2.0

    @property
    def default_mlflow_tracking_uri(self) -> str:
        """Tracking and registry store used when MLFLOW_TRACKING_URI is unset: a file under FP_HOME."""
        return f"sqlite:///{self.home / 'mlflow.db'}"

    @property
    def mlflow_artifacts_dir(self) -> Path:
        """Artifact root of the experiment when MLflow runs without a server."""
        return self.home / "mlartifacts"

    @property
    def storage_dir(self) -> Path:
        """Where the partition-aware IO manager writes Parquet files."""
        return self.home / "storage"

    @property
    def landing_dir(self) -> Path:
        """Where new CSV/Parquet files arrive to be ingested (FP_LANDING_DIR, e.g. a shared mount)."""
        return self.landing_override or self.home / "landing"

    @property
    def rejected_dir(self) -> Path:
        """Where landed files that cannot be read are moved, so they never block later ingests."""
        return self.landing_dir / "rejected"

    @property
    def calendar_file(self) -> Path:
        """The deployment's `date` calendar, fixed by its first data and shared by CLI, UI and daemon."""
        return self.home / "calendar.json"

    @property
    def embedded_db_dir(self) -> Path:
        """Data folder of the embedded PostgreSQL server used when no URL is configured."""
        return self.home / "pgdata"

    @property
    def sql_dir(self) -> Path:
        """Ordered DDL migrations for the domain schema."""
        return REPO_ROOT / "sql"


def _parse_date(name: str, raw: str) -> date:
    try:
        return date.fromisoformat(raw)
    except ValueError as exc:
        raise SettingsError(f"{name}={raw!r} is not an ISO date (YYYY-MM-DD)") from exc


def _parse_positive_int(name: str, raw: str) -> int:
    try:
        value = int(raw)
    except ValueError as exc:
        raise SettingsError(f"{name}={raw!r} is not an integer") from exc
    if value <= 0:
        raise SettingsError(f"{name}={raw!r} must be positive")
    return value


def _parse_float(name: str, raw: str | None) -> float | None:
    if raw is None or raw.strip() == "":
        return None
    try:
        return float(raw)
    except ValueError as exc:
        raise SettingsError(f"{name}={raw!r} is not a number") from exc


def _parse_non_negative_float(name: str, raw: str) -> float:
    value = _parse_float(name, raw)
    if value is None or value < 0:
        raise SettingsError(f"{name}={raw!r} must be a non-negative number")
    return value


def _parse_positive_float(name: str, raw: str) -> float:
    value = _parse_float(name, raw)
    if value is None or value <= 0:
        raise SettingsError(f"{name}={raw!r} must be a positive number")
    return value


def _parse_fraction(name: str, raw: str) -> float:
    value = _parse_float(name, raw)
    if value is None or not 0 <= value <= 1:
        raise SettingsError(f"{name}={raw!r} must be a fraction between 0 and 1")
    return value


def _parse_non_negative_int(name: str, raw: str) -> int:
    try:
        value = int(raw)
    except ValueError as exc:
        raise SettingsError(f"{name}={raw!r} is not an integer") from exc
    if value < 0:
        raise SettingsError(f"{name}={raw!r} must not be negative")
    return value


_PRECISIONS = ("16-mixed", "bf16-mixed", "32-true")


def _parse_precision(raw: str) -> str:
    if raw not in _PRECISIONS:
        raise SettingsError(f"FP_PRECISION={raw!r}; expected one of {', '.join(_PRECISIONS)}")
    return raw


def _parse_switch(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value not in ("on", "off", "true", "false", "1", "0", ""):
        raise SettingsError(f"{name}={raw!r}; expected on or off")
    return value in ("on", "true", "1")


def _parse_timezone(raw: str) -> str:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(raw)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise SettingsError(f"FP_SCHEDULE_TIMEZONE={raw!r} is not an IANA time zone") from exc
    return raw


def load_settings(environ: dict[str, str] | None = None) -> Settings:
    """Read settings from `environ` (the process environment by default)."""
    env = os.environ if environ is None else environ
    home = Path(env.get(HOME_VAR) or ".forecasting").expanduser().resolve()
    dagster_home = Path(env.get(DAGSTER_HOME_VAR) or home / "dagster").expanduser().resolve()

    cadence = env.get("FP_DATE_CADENCE", "weekly").strip().lower()
    if cadence not in CADENCES:
        raise SettingsError(f"FP_DATE_CADENCE={cadence!r}; expected one of {', '.join(CADENCES)}")

    raw_start = env.get("FP_PARTITION_START")
    start = _parse_date("FP_PARTITION_START", raw_start) if raw_start else None
    raw_end = env.get("FP_PARTITION_END")
    end = _parse_date("FP_PARTITION_END", raw_end) if raw_end else None
    if end is not None and start is None:
        raise SettingsError("FP_PARTITION_END needs FP_PARTITION_START")
    if end is not None and start is not None and end <= start:
        raise SettingsError("FP_PARTITION_END must be after FP_PARTITION_START")
    target_min = _parse_float("FP_TARGET_MIN", env.get("FP_TARGET_MIN"))
    target_max = _parse_float("FP_TARGET_MAX", env.get("FP_TARGET_MAX"))
    if target_min is not None and target_max is not None and target_max < target_min:
        raise SettingsError("FP_TARGET_MAX must not be below FP_TARGET_MIN")

    return Settings(
        database_url=env.get(DATABASE_URL_VAR) or None,
        home=home,
        dagster_home=dagster_home,
        date_cadence=cadence,
        partition_start=start,
        partition_end=end,
        forecast_horizon=_parse_positive_int("FP_FORECAST_HORIZON", env["FP_FORECAST_HORIZON"])
        if env.get("FP_FORECAST_HORIZON")
        else None,
        model_catalog=Path(env["FP_MODEL_CATALOG"]).expanduser().resolve()
        if env.get("FP_MODEL_CATALOG")
        else None,
        statsforecast_n_jobs=_parse_positive_int(
            "FP_STATSFORECAST_N_JOBS", env.get("FP_STATSFORECAST_N_JOBS") or "1"
        ),
        gpu_pool_limit=_parse_positive_int("FP_GPU_POOL_LIMIT", env["FP_GPU_POOL_LIMIT"])
        if env.get("FP_GPU_POOL_LIMIT")
        else None,
        cuda_precision=_parse_precision(env.get("FP_PRECISION") or "16-mixed"),
        mlflow_tracking_uri=env.get(MLFLOW_TRACKING_URI_VAR) or None,
        calendar_history_windows=_parse_non_negative_int(
            "FP_CALENDAR_HISTORY_WINDOWS",
            env.get("FP_CALENDAR_HISTORY_WINDOWS", str(DEFAULT_CALENDAR_HISTORY_WINDOWS)),
        ),
        future_tolerance_hours=_parse_non_negative_float(
            "FP_FUTURE_TOLERANCE_HOURS", env.get("FP_FUTURE_TOLERANCE_HOURS") or "24"
        ),
        max_failing_fraction=_parse_fraction(
            "FP_DQ_MAX_FAILING_FRACTION", env.get("FP_DQ_MAX_FAILING_FRACTION", "0.01")
        ),
        target_min=target_min,
        target_max=target_max,
        date_cadence_explicit="FP_DATE_CADENCE" in env,
        landing_override=Path(env["FP_LANDING_DIR"]).expanduser().resolve()
        if env.get("FP_LANDING_DIR")
        else None,
        automation_on=_parse_switch("FP_AUTOMATION", env.get("FP_AUTOMATION", "off")),
        sensor_max_files=_parse_positive_int("FP_SENSOR_MAX_FILES", env.get("FP_SENSOR_MAX_FILES") or "200"),
        source_url=env.get("FP_SOURCE_URL") or None,
        source_query=env.get("FP_SOURCE_QUERY") or None,
        schedule_timezone=_parse_timezone(env.get("FP_SCHEDULE_TIMEZONE") or "UTC"),
        schedule_cron=env.get("FP_SCHEDULE_CRON") or "0 3 * * 1",
        drift_threshold=_parse_positive_float("FP_DRIFT_THRESHOLD", env.get("FP_DRIFT_THRESHOLD") or "1.5"),
        drift_windows=_parse_positive_int("FP_DRIFT_WINDOWS", env.get("FP_DRIFT_WINDOWS") or "2"),
        preset=env.get("FP_PRESET") or None,
        retry_base_seconds=_parse_positive_float(
            "FP_RETRY_BASE_SECONDS", env.get("FP_RETRY_BASE_SECONDS") or "2"
        ),
    )
