"""The one place that reads the process environment.

Every other module receives configuration from here (or from Dagster resources built from it),
so a deployment is described completely by its environment variables. `VARIABLES` lists each
variable this module reads, with its default and meaning; `COMPOSE_VARIABLES` those only
docker-compose reads (from `.env`). Both are the source of `docs/configuration.md`, which
`python -m forecasting_pipeline.config_reference > docs/configuration.md` regenerates; a test
keeps the page, this module and `.env.example` in step, so the list cannot drift from the code.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

if TYPE_CHECKING:
    from upath import UPath

DATABASE_URL_VAR = "FP_DATABASE_URL"
HOME_VAR = "FP_HOME"
DAGSTER_HOME_VAR = "DAGSTER_HOME"
MLFLOW_TRACKING_URI_VAR = "MLFLOW_TRACKING_URI"
INGEST_ROOTS_VAR = "FP_INGEST_ROOTS"
EXECUTOR_VAR = "FP_EXECUTOR"
CELERY_BROKER_URL_VAR = "FP_CELERY_BROKER_URL"
CELERY_BACKEND_URL_VAR = "FP_CELERY_BACKEND_URL"
WORKER_LOST_SECONDS_VAR = "FP_WORKER_LOST_SECONDS"
STORAGE_URI_VAR = "FP_STORAGE_URI"
EXECUTORS = ("local", "celery", "k8s")

CADENCES = ("daily", "weekly", "monthly")
# MLflow tracking URIs of a database store (no server); their experiments need an artifact root.
_MLFLOW_DATABASE_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")

# A new deployment's calendar keeps this many operating windows before the newest data's window
# (older data is the history slice), so the demo shows incremental windows at once.
DEFAULT_CALENDAR_HISTORY_WINDOWS = 4

REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Variable:
    """One environment variable of a deployment, as documented in `docs/configuration.md`.

    `default` is the text the variable takes when it is unset: `load_settings` parses exactly this
    value, so the documented default and the real one are the same string. An empty `default`
    means "unset has a meaning of its own", which `unset` states in words (it may also qualify a
    non-empty default, e.g. where a relative path is resolved).
    """

    name: str
    default: str
    description: str
    section: str
    unset: str = ""


# Sections of the configuration reference, in the order the page shows them.
SECTIONS = (
    "database & storage",
    "calendar & partitions",
    "data quality",
    "models & training",
    "automation",
    "MLflow",
    "GPU",
    "scale-out",
    "monitoring",
)
# Variables only docker-compose reads (interpolated into docker-compose.yml from `.env`).
COMPOSE_SECTION = "docker-compose"

# Every variable `load_settings` reads. A test parses this module and fails when a variable is
# read but not listed here, or listed but not read.
VARIABLES: tuple[Variable, ...] = (
    Variable(
        DATABASE_URL_VAR,
        "",
        "SQLAlchemy URL of the PostgreSQL database, with the psycopg2 driver "
        "(`postgresql+psycopg2://user:password@host:5432/db`): Dagster's run, event-log and schedule "
        "storage in schema `public`, the domain tables in schema `forecasting`, Optuna's studies in "
        "schema `optuna`. It may hold a password, so it reaches Dagster resources as an `EnvVar`.",
        "database & storage",
        unset="an embedded PostgreSQL server in `$FP_HOME/pgdata`, started by the CLI, or by "
        "`dagster dev` / `dg dev` through `dagster.yaml`",
    ),
    Variable(
        HOME_VAR,
        ".forecasting",
        "Folder of the deployment's local state: training panels (Parquet, under `storage/`), the "
        "landing folder, the embedded database, the date calendar (`calendar.json`) and the default "
        "MLflow store and artifacts. FP_STORAGE_URI moves the Parquet files and the calendar elsewhere.",
        "database & storage",
        unset="a relative path is taken from the working directory",
    ),
    Variable(
        DAGSTER_HOME_VAR,
        "",
        "Folder of the Dagster instance and its `dagster.yaml`. The CLI writes the repository's "
        "`dagster.yaml` there when the folder has none. A `dagster.yaml` of your own is kept when "
        "DAGSTER_HOME is set; unset, the CLI keeps `$FP_HOME/dagster/dagster.yaml` equal to the "
        "repository's.",
        "database & storage",
        unset="`$FP_HOME/dagster`",
    ),
    Variable(
        "FP_LANDING_DIR",
        "",
        "Folder that landed files (CSV, CSV.GZ, Parquet) arrive in, e.g. a shared mount; files that "
        "cannot be read are moved to its `rejected/` subfolder.",
        "database & storage",
        unset="`$FP_HOME/landing`",
    ),
    Variable(
        INGEST_ROOTS_VAR,
        "",
        "Folders that `ingest` and `forecast --input` may read files from, and that links in the landing "
        "folder may lead into, separated by `:` (`;` on Windows). A path is judged after its links and "
        "`..` are resolved; one outside every root is refused (exit status 4) before anything is landed, "
        "and a link out of the landing folder is rejected unread. The landing folder is always allowed. "
        "The default keeps `ingest sales.csv` or `ingest data/` in your project working, while a path "
        "elsewhere (`/etc`, another user's home, a mounted secret) has to be listed here.",
        "database & storage",
        unset="the working directory of the command, and `$FP_HOME`",
    ),
    Variable(
        "FP_DATE_CADENCE",
        "weekly",
        "Length of the `date` partitions' windows: `weekly`, `daily` or `monthly`. It is the arrival "
        "calendar, not the series' sampling frequency. Fixed once a deployment has a calendar: another "
        "value is refused rather than renaming every partition.",
        "calendar & partitions",
    ),
    Variable(
        "FP_PARTITION_START",
        "",
        "Pins the first `date` window (ISO date, `YYYY-MM-DD`); older observations belong to it (the "
        "history slice).",
        "calendar & partitions",
        unset="the calendar is decided by the first data ingested and persisted in `$FP_HOME/calendar.json` "
        "(`<FP_STORAGE_URI>/calendar.json` when that is set)",
    ),
    Variable(
        "FP_PARTITION_END",
        "",
        "With FP_PARTITION_START, the exclusive end (ISO date) of the `date` windows.",
        "calendar & partitions",
        unset="no end",
    ),
    Variable(
        "FP_CALENDAR_HISTORY_WINDOWS",
        str(DEFAULT_CALENDAR_HISTORY_WINDOWS),
        "Windows a new deployment's calendar keeps before the newest data's window; everything older is "
        "the first window, the history slice.",
        "calendar & partitions",
    ),
    Variable(
        "FP_FUTURE_TOLERANCE_HOURS",
        "24",
        "How far past the current time a timestamp may lie before its row is quarantined as a future "
        "timestamp.",
        "data quality",
    ),
    Variable(
        "FP_DQ_MAX_FAILING_FRACTION",
        "0.01",
        "Share of a landed batch's rows a blocking data-quality check tolerates; above it the batch is "
        "held and the `raw_observations` run of its cells stops at the check.",
        "data quality",
    ),
    Variable(
        "FP_TARGET_MIN",
        "",
        "Lowest plausible target value (the `within_bounds` check).",
        "data quality",
        unset="no lower bound",
    ),
    Variable(
        "FP_TARGET_MAX",
        "",
        "Highest plausible target value (the `within_bounds` check); not below FP_TARGET_MIN.",
        "data quality",
        unset="no upper bound",
    ),
    Variable(
        "FP_MODEL_CATALOG",
        "",
        "YAML file of model families, frequency groups (horizons, minimum lengths) and presets.",
        "models & training",
        unset="the bundled `forecasting_pipeline/modeling/model_catalog.yaml`",
    ),
    Variable(
        "FP_FORECAST_HORIZON",
        "",
        "When set, every frequency group forecasts this many steps (in each series' own frequency) "
        "instead of the catalog's per-group horizon; for tests and quick runs.",
        "models & training",
        unset="the catalog's horizon of each frequency group (hourly 24, monthly 18, …)",
    ),
    Variable(
        "FP_STATSFORECAST_N_JOBS",
        "1",
        "Processes of the one StatsForecast call that fits a window's statistical families.",
        "models & training",
    ),
    Variable(
        "FP_PRESET",
        "",
        "Catalog preset (`fast`, `medium`, `best` or one of your catalog's) whose families, trials, "
        "steps, folds and ensembles size the runs launched without run config: by the sensors, the "
        "schedule and the UI.",
        "models & training",
        unset="the assets' own defaults, equal to `medium`",
    ),
    Variable(
        "FP_AUTOMATION",
        "off",
        "`on` starts the sensors and the weekly schedule with the daemon; `off` leaves them stopped "
        "until they are switched on in the UI. Also accepts true/false and 1/0.",
        "automation",
    ),
    Variable(
        "FP_SENSOR_MAX_FILES",
        "200",
        "Landed files the new-data sensor stages per tick; the rest wait for the next tick.",
        "automation",
    ),
    Variable(
        "FP_SOURCE_URL",
        "",
        "SQLAlchemy URL of a SQL source that the new-data sensor snapshots into the landing folder each "
        "tick, with FP_SOURCE_QUERY. It may hold a password.",
        "automation",
        unset="no SQL source",
    ),
    Variable(
        "FP_SOURCE_QUERY",
        "",
        "The SQL source's table name or query; point it at a recent slice (e.g. the last two weeks), "
        "since unchanged rows cost a read but change nothing.",
        "automation",
        unset="no SQL source",
    ),
    Variable(
        "FP_SCHEDULE_CRON",
        "0 3 * * 1",
        "When the weekly model update runs (a cron expression; the default is Monday 03:00).",
        "automation",
    ),
    Variable(
        "FP_SCHEDULE_TIMEZONE",
        "UTC",
        "IANA time zone of FP_SCHEDULE_CRON.",
        "automation",
    ),
    Variable(
        "FP_DRIFT_THRESHOLD",
        "1.5",
        "The drift sensor retrains a series when its champion's rolling MASE exceeds this multiple of "
        "the backtest estimate of the same forecasts.",
        "automation",
    ),
    Variable(
        "FP_DRIFT_WINDOWS",
        "2",
        "Newest scored windows in the drift sensor's rolling error.",
        "automation",
    ),
    Variable(
        "FP_RETRY_BASE_SECONDS",
        "2",
        "First wait before a step that failed on a transient database or I/O error is retried; each "
        "retry waits twice as long (at most 3 retries).",
        "automation",
    ),
    Variable(
        MLFLOW_TRACKING_URI_VAR,
        "",
        "MLflow tracking server or store, for tracking and the model registry. It may carry credentials, "
        "so it reaches the MLflow resource as an `EnvVar`.",
        "MLflow",
        unset="`sqlite:///$FP_HOME/mlflow.db`, artifacts in `$FP_HOME/mlartifacts`",
    ),
    Variable(
        "FP_GPU_POOL_LIMIT",
        "",
        "When set, the CLI commands that start runs (`demo`, `ingest`, `forecast`, `backfill`, `ui`) "
        "set the limit of the `gpu` concurrency pool (the steps that tune, train and backtest on the "
        "accelerator) to it.",
        "GPU",
        unset="the instance's limit: `dagster.yaml`'s default pool limit (1), or one set in the UI",
    ),
    Variable(
        "FP_PRECISION",
        "16-mixed",
        "Lightning precision when training on CUDA: `16-mixed`, `bf16-mixed` or `32-true`. The CPU always "
        "trains in `32-true`.",
        "GPU",
    ),
    Variable(
        "FP_TRAINING_DEVICES",
        "1",
        "GPUs that one global model's training uses (`global_models`): a count, or `all` for every GPU the "
        "step's process sees. Several GPUs pay for one large model (many series, long input windows); "
        "tuning trials, backtests and predictions stay on one GPU each, and the CPU trains in one process. "
        "A step asking for more GPUs than its node has fails. Give such a step the whole node (a `gpu` "
        "pool limit of 1 per node, or one step per GPU worker).",
        "GPU",
    ),
    Variable(
        "FP_TRAINING_STRATEGY",
        "auto",
        "Lightning strategy of a training on several GPUs: `auto` (= `ddp_spawn`), `ddp_spawn`, or "
        "`ddp_spawn_find_unused_parameters_true` for a family whose layers are not all used every step. "
        "`ddp`, `deepspeed` and `fsdp` are refused: they start each extra process by re-running the command "
        "line, which inside a step or a worker re-runs the step or the worker; so are `ddp_fork` and "
        "`ddp_notebook`, which fork a worker that may hold CUDA or threads.",
        "GPU",
    ),
    Variable(
        EXECUTOR_VAR,
        "local",
        "Where steps execute. `local`: the CLI runs each job in its own process and runs launched by "
        "the daemon or the UI use Dagster's multiprocess executor. `celery`: every step is a Celery task "
        "on RabbitMQ, the steps that tune, train and backtest on queue `gpu` and all others on queue "
        "`cpu`, executed by `forecasting-pipeline worker --queue gpu|cpu` on any host that shares the "
        "database, the storage and the MLflow server. `k8s`: every step is a Kubernetes job "
        "(`dagster-k8s`' `k8s_job_executor`; install the `kubernetes` extra, see `docs/scale-out.md`).",
        "scale-out",
    ),
    Variable(
        CELERY_BROKER_URL_VAR,
        "pyamqp://guest:guest@127.0.0.1:5672//",
        "Celery broker of `FP_EXECUTOR=celery` and of the workers (RabbitMQ). It may hold a password: it "
        "is read from the environment by every process and never stored in a run's configuration.",
        "scale-out",
    ),
    Variable(
        CELERY_BACKEND_URL_VAR,
        "",
        "Celery result backend, e.g. `redis://127.0.0.1:6379/0`; read from the environment like the broker.",
        "scale-out",
        unset="the deployment's PostgreSQL (`db+` and FP_DATABASE_URL), tables in schema `celery`",
    ),
    Variable(
        WORKER_LOST_SECONDS_VAR,
        "60",
        "How long the worker running a step may go without answering before the run fails that step as "
        "lost (the worker was killed, ran out of memory or lost its node). A worker answers while its "
        "step runs, so a long step never counts; re-execute the run from failure once a worker is back.",
        "scale-out",
    ),
    Variable(
        STORAGE_URI_VAR,
        "",
        "Root of the intermediate frames (Parquet) and of the date calendar (`calendar.json` beside "
        "them), so a step on one host reads what a step on another wrote: an object store "
        "(`s3://bucket/prefix`; install the `s3` extra), any fsspec URI, a `file:///` URI or a plain "
        "path (e.g. a shared mount). Credentials come from the object store's own environment "
        "(`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, and `AWS_ENDPOINT_URL_S3` for an S3-compatible "
        "server such as MinIO), never from this URI, which is refused if it holds a password. With a "
        "database MLFLOW_TRACKING_URI (no server), new experiments keep their artifacts in "
        "`<FP_STORAGE_URI>/mlartifacts`.",
        "scale-out",
        unset="`$FP_HOME/storage`, the calendar in `$FP_HOME/calendar.json` (one host)",
    ),
    Variable(
        "FP_STALE_DATA_AFTER_HOURS",
        "192",
        "A dataset with no new data for longer than this is stale: `forecasting-pipeline metrics` "
        "serves it as `fp_dataset_stale_after_seconds` and the `DatasetStale` alert fires. The default "
        "is the weekly cadence plus a day.",
        "monitoring",
    ),
    Variable(
        "FP_METRICS_LOOKBACK_HOURS",
        "168",
        "Runs that ended within this many hours make the exporter's run and step duration quantiles.",
        "monitoring",
    ),
)

# Variables docker-compose.yml interpolates from the environment or `.env`; the Python code never
# reads them. Listed so `.env.example` and the compose files are documented from one place.
COMPOSE_VARIABLES: tuple[Variable, ...] = (
    Variable(
        "POSTGRES_PASSWORD",
        "",
        "Password of the `forecasting` PostgreSQL role. docker-compose places it verbatim in the database "
        "URLs, so use only letters, digits, `-`, `_`, `.` and `~`.",
        COMPOSE_SECTION,
        unset="required: docker-compose refuses to start without it",
    ),
    Variable(
        "RABBITMQ_PASSWORD",
        "",
        "Password of the `forecasting` RabbitMQ user: the Celery broker of the `worker-cpu` and "
        "`worker-gpu` services, and the login of RabbitMQ's management UI. docker-compose places it "
        "verbatim in FP_CELERY_BROKER_URL: the same characters as POSTGRES_PASSWORD.",
        COMPOSE_SECTION,
        unset="required: docker-compose refuses to start without it",
    ),
    Variable(
        "GRAFANA_ADMIN_PASSWORD",
        "",
        "Password of Grafana's `admin` user (http://127.0.0.1:3001, the monitoring dashboard). Grafana "
        "reads it when it first creates its database (volume `grafana-data`); change it later with "
        "`docker-compose exec grafana grafana cli admin reset-admin-password NEW`.",
        COMPOSE_SECTION,
        unset="required: docker-compose refuses to start without it",
    ),
    Variable(
        "FP_BIND_ADDRESS",
        "127.0.0.1",
        "Host address the Dagster UI, the MLflow UI and RabbitMQ's management UI are published on; "
        "`0.0.0.0` exposes them to the network (the first two unauthenticated).",
        COMPOSE_SECTION,
    ),
    Variable("DAGSTER_WEBSERVER_PORT", "3000", "Host port of the Dagster UI.", COMPOSE_SECTION),
    Variable(
        "RABBITMQ_MANAGEMENT_PORT",
        "15672",
        "Host port of RabbitMQ's management UI (queues, consumers, waiting steps).",
        COMPOSE_SECTION,
    ),
    Variable("MLFLOW_PORT", "5000", "Host port of the MLflow UI and API.", COMPOSE_SECTION),
    Variable(
        "MLFLOW_ALLOWED_HOSTS",
        "mlflow,mlflow:*,localhost,localhost:*,127.0.0.1,127.0.0.1:*",
        "Host headers the MLflow server accepts (its DNS-rebinding protection); add the name you browse "
        "to it by.",
        COMPOSE_SECTION,
    ),
    Variable(
        "FP_IMAGE_TAG",
        "latest",
        "Tag of the locally built images `forecasting-pipeline` and `forecasting-mlflow`.",
        COMPOSE_SECTION,
    ),
    Variable(
        "TORCH_INDEX_URL",
        "",
        "Build argument of the app image: a package index to install torch from before the project, "
        "e.g. PyTorch's CPU wheel index for a much smaller CPU-only image.",
        COMPOSE_SECTION,
        unset="PyPI's Linux wheel, the CUDA build a GPU host wants",
    ),
)

_DEFAULTS = {variable.name: variable.default for variable in VARIABLES}


def _value(env: Mapping[str, str], name: str) -> str:
    """The variable's value, or its registry default when absent (an empty value stays empty)."""
    return env.get(name, _DEFAULTS[name])


def _value_or_default(env: Mapping[str, str], name: str) -> str:
    """The variable's value, or its registry default when absent or empty."""
    return env.get(name) or _DEFAULTS[name]


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
    training_devices: int = 1  # GPUs of one global model's training; -1: every GPU torch sees
    training_strategy: str = "auto"
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
    # Resolved folders ingestion may read besides the landing folder (FP_INGEST_ROOTS).
    ingest_roots: tuple[Path, ...] = ()
    executor: str = "local"
    celery_broker_url: str = "pyamqp://guest:guest@127.0.0.1:5672//"
    # None: the deployment's database (see `celery_result_backend`).
    celery_backend_url: str | None = None
    worker_lost_seconds: float = 60.0
    # FP_STORAGE_URI: an absolute local path or a URI without a trailing slash; None: FP_HOME.
    storage_location: str | None = None
    stale_data_after_hours: float = 192.0
    metrics_lookback_hours: float = 168.0

    @property
    def celery_result_backend(self) -> str | None:
        """FP_CELERY_BACKEND_URL, else the deployment's database through Celery's SQLAlchemy backend;
        None for the embedded database, whose URL only the process that starts it knows."""
        if self.celery_backend_url:
            return self.celery_backend_url
        return f"db+{self.database_url}" if self.database_url else None

    @property
    def default_mlflow_tracking_uri(self) -> str:
        """Tracking and registry store used when MLFLOW_TRACKING_URI is unset: a file under FP_HOME."""
        return f"sqlite:///{self.home / 'mlflow.db'}"

    @property
    def mlflow_artifacts_dir(self) -> Path:
        """Artifact root of the experiment when MLflow runs without a server."""
        return self.home / "mlartifacts"

    @property
    def storage_uri(self) -> str:
        """Root of the intermediates, a local path or a URI (FP_STORAGE_URI, else FP_HOME/storage)."""
        return self.storage_location or str(self.home / "storage")

    @property
    def storage_is_local(self) -> bool:
        """Whether the intermediates are on a filesystem of this host (maybe a shared mount)."""
        return "://" not in self.storage_uri  # `file://` URIs were made plain paths when parsed

    @property
    def storage_dir(self) -> Path:
        """The intermediates' local folder, for callers that need a `Path`; an object store has
        none, so asking is a configuration error rather than a path that silently is not shared."""
        if not self.storage_is_local:
            raise SettingsError(f"{STORAGE_URI_VAR} is an object store, not a local folder: use storage_uri")
        return Path(self.storage_uri)

    @property
    def landing_dir(self) -> Path:
        """Where new CSV/Parquet files arrive to be ingested (FP_LANDING_DIR, e.g. a shared mount)."""
        return self.landing_override or self.home / "landing"

    @property
    def allowed_ingest_roots(self) -> tuple[Path, ...]:
        """Folders ingestion may read from, links resolved: FP_INGEST_ROOTS and the landing folder."""
        return (*self.ingest_roots, self.landing_dir.resolve())

    @property
    def rejected_dir(self) -> Path:
        """Where landed files that cannot be read are moved, so they never block later ingests."""
        return self.landing_dir / "rejected"

    @property
    def calendar_file(self) -> UPath:
        """The deployment's `date` calendar, fixed by its first data and shared by CLI, UI, daemon and
        workers: beside the intermediates when FP_STORAGE_URI is set, so workers on other hosts build
        the same partitions. Local, it is a `pathlib.Path` (upath's `PosixUPath`)."""
        from upath import UPath  # light; fsspec and any object-store client load on first access

        if self.storage_location is None:
            return UPath(self.home / "calendar.json")
        return UPath(self.storage_location) / "calendar.json"

    @property
    def mlflow_artifact_location(self) -> str | None:
        """Artifact root of a new MLflow experiment; None lets the tracking server decide.

        No MLFLOW_TRACKING_URI: the SQLite store is this host's alone, so its artifacts stay beside it
        in FP_HOME (a shared root would not make its runs visible elsewhere). A server: its own
        `--serve-artifacts` / `--default-artifact-root`. A database store without a server
        (`postgresql://…`) with FP_STORAGE_URI: `<FP_STORAGE_URI>/mlartifacts`, which every host reads
        (MLflow's default there is `./mlruns` in each process's working directory).
        """
        if self.mlflow_tracking_uri is None:
            return str(self.mlflow_artifacts_dir)
        scheme = self.mlflow_tracking_uri.partition(":")[0].partition("+")[0].lower()
        if scheme in _MLFLOW_DATABASE_SCHEMES and self.storage_location is not None:
            return f"{self.storage_location}/mlartifacts"
        return None

    @property
    def embedded_db_dir(self) -> Path:
        """Data folder of the embedded PostgreSQL server used when no URL is configured."""
        return self.home / "pgdata"

    @property
    def sql_dir(self) -> Path:
        """Ordered DDL migrations for the domain schema."""
        return REPO_ROOT / "sql"


def _parse_storage_uri(raw: str) -> str | None:
    """FP_STORAGE_URI as an absolute local path (a plain path or a `file://` URI) or a URI of a
    filesystem fsspec knows, without a trailing slash; None when unset or empty."""
    value = raw.strip()
    if not value:
        return None
    scheme, separator, rest = value.partition("://")
    if not separator:
        return str(Path(value).expanduser().resolve())
    if ":" in rest.partition("/")[0].rpartition("@")[0]:
        # Resource configuration is shown in the UI and stored with every run: no secrets in it
        # (nor in this message).
        raise SettingsError(
            f"{STORAGE_URI_VAR} holds a password; give the object store's credentials in its own "
            "environment variables (e.g. AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) instead"
        )
    scheme = scheme.lower()
    if scheme in ("file", "local"):
        parts = urlsplit(value)
        if parts.netloc not in ("", "localhost"):
            raise SettingsError(f"{STORAGE_URI_VAR}={raw!r}: a file URI names a local path (file:///path)")
        return str(Path(unquote(parts.path)).resolve())
    if not rest.strip("/"):
        raise SettingsError(f"{STORAGE_URI_VAR}={raw!r} names no bucket or folder")
    from fsspec.registry import known_implementations  # only when a URI is configured

    if scheme not in known_implementations:
        raise SettingsError(f"{STORAGE_URI_VAR}={raw!r}: fsspec knows no filesystem {scheme!r}")
    return f"{scheme}://{rest.rstrip('/')}"


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


# Lightning strategies a training on several GPUs may use: those that start their processes with
# multiprocessing's `spawn`, which works inside a step process, a long-lived worker or a thread.
TRAINING_STRATEGIES = ("auto", "ddp_spawn", "ddp_spawn_find_unused_parameters_true")
# Why the other Lightning strategies are refused (by name prefix).
_FORKS = (
    "it forks the worker process, which Lightning refuses once CUDA is initialised there "
    "(any earlier GPU fit of a long-lived worker) and which is unsafe in a process with threads"
)
_RERUNS_COMMAND = (
    "it starts each extra process by re-running this process's command line, which inside a "
    "Dagster step or a worker re-runs the step or the worker"
)
_REFUSED_STRATEGIES = {
    "ddp_fork": _FORKS,
    "ddp_notebook": _FORKS,
    "ddp_spawn": "the only spawn variants offered are ddp_spawn and ddp_spawn_find_unused_parameters_true",
    "ddp": _RERUNS_COMMAND,
    "deepspeed": _RERUNS_COMMAND,
    "fsdp": _RERUNS_COMMAND,
}


def _parse_training_devices(raw: str) -> int:
    """A count of GPUs, or -1 for `all`."""
    if raw.strip().lower() == "all":
        return -1
    try:
        return _parse_positive_int("FP_TRAINING_DEVICES", raw.strip())
    except SettingsError:
        raise SettingsError(f"FP_TRAINING_DEVICES={raw!r}; expected a positive count or all") from None


def _parse_training_strategy(raw: str) -> str:
    value = raw.strip().lower()
    if value in TRAINING_STRATEGIES:
        return value
    expected = f"expected one of {', '.join(TRAINING_STRATEGIES)}"
    for prefix, reason in _REFUSED_STRATEGIES.items():
        if value.startswith(prefix):
            raise SettingsError(f"FP_TRAINING_STRATEGY={raw!r} is refused: {reason}; {expected}")
    raise SettingsError(f"FP_TRAINING_STRATEGY={raw!r}; {expected}")


def _parse_choice(name: str, raw: str, choices: tuple[str, ...]) -> str:
    value = raw.strip().lower()
    if value not in choices:
        raise SettingsError(f"{name}={raw!r}; expected one of {', '.join(choices)}")
    return value


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


def _parse_ingest_roots(raw: str, home: Path) -> tuple[Path, ...]:
    """FP_INGEST_ROOTS as resolved folders; unset or empty: the working directory and FP_HOME."""
    if raw.strip():
        return tuple(Path(part).expanduser().resolve() for part in raw.split(os.pathsep) if part.strip())
    try:
        working = Path.cwd().resolve()
    except OSError:  # the working directory was deleted: only FP_HOME remains a sensible default
        return (home,)
    return (working, home)


def load_settings(environ: dict[str, str] | None = None) -> Settings:
    """Read settings from `environ` (the process environment by default)."""
    env = os.environ if environ is None else environ
    home = Path(_value_or_default(env, HOME_VAR)).expanduser().resolve()
    dagster_home = Path(env.get(DAGSTER_HOME_VAR) or home / "dagster").expanduser().resolve()

    cadence = _value(env, "FP_DATE_CADENCE").strip().lower()
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
            "FP_STATSFORECAST_N_JOBS", _value_or_default(env, "FP_STATSFORECAST_N_JOBS")
        ),
        gpu_pool_limit=_parse_positive_int("FP_GPU_POOL_LIMIT", env["FP_GPU_POOL_LIMIT"])
        if env.get("FP_GPU_POOL_LIMIT")
        else None,
        cuda_precision=_parse_precision(_value_or_default(env, "FP_PRECISION")),
        training_devices=_parse_training_devices(_value_or_default(env, "FP_TRAINING_DEVICES")),
        training_strategy=_parse_training_strategy(_value_or_default(env, "FP_TRAINING_STRATEGY")),
        mlflow_tracking_uri=env.get(MLFLOW_TRACKING_URI_VAR) or None,
        calendar_history_windows=_parse_non_negative_int(
            "FP_CALENDAR_HISTORY_WINDOWS",
            _value(env, "FP_CALENDAR_HISTORY_WINDOWS"),
        ),
        future_tolerance_hours=_parse_non_negative_float(
            "FP_FUTURE_TOLERANCE_HOURS", _value_or_default(env, "FP_FUTURE_TOLERANCE_HOURS")
        ),
        max_failing_fraction=_parse_fraction(
            "FP_DQ_MAX_FAILING_FRACTION", _value(env, "FP_DQ_MAX_FAILING_FRACTION")
        ),
        target_min=target_min,
        target_max=target_max,
        date_cadence_explicit="FP_DATE_CADENCE" in env,
        landing_override=Path(env["FP_LANDING_DIR"]).expanduser().resolve()
        if env.get("FP_LANDING_DIR")
        else None,
        automation_on=_parse_switch("FP_AUTOMATION", _value(env, "FP_AUTOMATION")),
        sensor_max_files=_parse_positive_int(
            "FP_SENSOR_MAX_FILES", _value_or_default(env, "FP_SENSOR_MAX_FILES")
        ),
        source_url=env.get("FP_SOURCE_URL") or None,
        source_query=env.get("FP_SOURCE_QUERY") or None,
        schedule_timezone=_parse_timezone(_value_or_default(env, "FP_SCHEDULE_TIMEZONE")),
        schedule_cron=_value_or_default(env, "FP_SCHEDULE_CRON"),
        drift_threshold=_parse_positive_float(
            "FP_DRIFT_THRESHOLD", _value_or_default(env, "FP_DRIFT_THRESHOLD")
        ),
        drift_windows=_parse_positive_int("FP_DRIFT_WINDOWS", _value_or_default(env, "FP_DRIFT_WINDOWS")),
        preset=env.get("FP_PRESET") or None,
        retry_base_seconds=_parse_positive_float(
            "FP_RETRY_BASE_SECONDS", _value_or_default(env, "FP_RETRY_BASE_SECONDS")
        ),
        ingest_roots=_parse_ingest_roots(_value(env, INGEST_ROOTS_VAR), home),
        executor=_parse_choice(EXECUTOR_VAR, _value_or_default(env, EXECUTOR_VAR), EXECUTORS),
        celery_broker_url=_value_or_default(env, CELERY_BROKER_URL_VAR),
        celery_backend_url=env.get(CELERY_BACKEND_URL_VAR) or None,
        worker_lost_seconds=_parse_positive_float(
            WORKER_LOST_SECONDS_VAR, _value_or_default(env, WORKER_LOST_SECONDS_VAR)
        ),
        storage_location=_parse_storage_uri(_value(env, STORAGE_URI_VAR)),
        stale_data_after_hours=_parse_positive_float(
            "FP_STALE_DATA_AFTER_HOURS", _value_or_default(env, "FP_STALE_DATA_AFTER_HOURS")
        ),
        metrics_lookback_hours=_parse_positive_float(
            "FP_METRICS_LOOKBACK_HOURS", _value_or_default(env, "FP_METRICS_LOOKBACK_HOURS")
        ),
    )
