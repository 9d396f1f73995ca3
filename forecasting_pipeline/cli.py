"""`forecasting-pipeline` command line: demo, ingest, forecast, db, ui."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import click

from forecasting_pipeline.settings import REPO_ROOT, SettingsError, load_settings


def _echo_step(step: int, total: int, message: str) -> None:
    click.echo(f"[{step}/{total}] {message}")


def _deployment():
    from forecasting_pipeline.bootstrap import prepare_deployment

    try:
        return prepare_deployment()
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from exc


def _instance():
    from dagster import DagsterInstance

    from forecasting_pipeline.automation.recovery import fail_orphaned_runs
    from forecasting_pipeline.bootstrap import apply_pool_limits

    instance = DagsterInstance.get()
    apply_pool_limits(instance, load_settings())
    for run_id in fail_orphaned_runs(instance):
        click.echo(f"run {run_id} was killed before it finished: marked failed, its partitions can re-run")
    return instance


def _describe_database(deployment) -> str:
    if deployment.embedded:
        where = f"embedded PostgreSQL in {deployment.settings.embedded_db_dir}"
    else:
        from sqlalchemy.engine import make_url

        where = f"PostgreSQL {make_url(deployment.database_url).render_as_string(hide_password=True)}"
    migrations = ", ".join(deployment.migrations_applied) or "schema up to date"
    return f"{where} ({migrations})"


def _quiet_libraries() -> None:
    """Keep the terminal for our progress lines; the runs' own logs stay in the Dagster UI."""
    import warnings

    # MLflow reads its log level when first imported (inside a training step).
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")

    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message=r".*(LeafSpec|val_check_steps|XDG_RUNTIME_DIR).*")


def _quiet_training_logs() -> None:
    """Lightning and Optuna set their loggers to INFO on import, so lower them after importing."""
    import logging

    import pytorch_lightning  # noqa: F401 - imported for its logger side effect

    for name in ("pytorch_lightning", "lightning_fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    import optuna  # its trial lines would interleave with ours; studies are summarized per step

    optuna.logging.set_verbosity(optuna.logging.WARNING)


@click.group()
def main() -> None:
    """Forecast many time series as a partitioned Dagster asset graph."""
    _quiet_libraries()


@main.command()
@click.option("--dataset", default=None, help="Bundled dataset to use (default: epf_fr_be).")
@click.option("--max-steps", default=300, show_default=True, help="Training steps of each neural family.")
@click.option(
    "--trials", default=4, show_default=True, help="Hyper-parameter trials per family and frequency group."
)
def demo(dataset: str | None, max_steps: int, trials: int) -> None:
    """Run the whole pipeline on a bundled real dataset and print the forecasts."""
    from forecasting_pipeline import operations
    from forecasting_pipeline.datasets import DEFAULT_DATASET, bundled_dataset, land_bundled_dataset

    started = time.perf_counter()
    total = 5
    deployment = _deployment()
    _echo_step(1, total, f"database: {_describe_database(deployment)}")
    chosen = bundled_dataset(dataset or DEFAULT_DATASET)
    landed = land_bundled_dataset(chosen.name, deployment.settings.landing_dir)
    _echo_step(2, total, f"landed bundled dataset {chosen.name} -> {landed}")
    instance = _instance()
    try:
        ingested = operations.ingest(
            instance, deployment, progress=lambda m: _echo_step(3, total, m), show_steps=True
        )
        if ingested.latest_window is None:
            raise operations.PipelineRunError("no usable observations were ingested")
        _echo_step(
            3,
            total,
            f"ingested {ingested.cells} changed series × window cells in {len(ingested.run_ids)} runs "
            f"({ingested.seconds:.1f}s); latest window {ingested.latest_window}",
        )
        _quiet_training_logs()
        _echo_step(
            4,
            total,
            f"tuning ({trials} trials per family) and training the catalog's families for window "
            f"{ingested.latest_window} (max_steps={max_steps}) …",
        )
        result = operations.forecast(
            instance,
            ingested.latest_window,
            _series_keys(instance),
            global_model_config={"max_steps": max_steps},
            search_config={"trials": trials, "trial_max_steps": min(50, max_steps)},
            show_steps=True,
        )
        _echo_step(
            5,
            total,
            f"trained in {result.train_seconds:.1f}s, forecast and stored in {result.forecast_seconds:.1f}s",
        )
    except operations.PipelineRunError as exc:
        raise click.ClickException(str(exc)) from exc
    _print_forecasts(deployment, result.window)
    click.echo(f"\nDemo finished in {time.perf_counter() - started:.0f}s.")
    click.echo("Next: `forecasting-pipeline ui` opens the Dagster UI on this same instance")
    click.echo("      (assets, partitions, runs and lineage) at http://127.0.0.1:3000")
    if deployment.settings.mlflow_tracking_uri is None:
        click.echo(
            "      MLflow runs and registered models: "
            f"mlflow ui --backend-store-uri {deployment.settings.default_mlflow_tracking_uri}"
        )


def _series_keys(instance) -> list[str]:
    from forecasting_pipeline.schemas import SERIES_DIMENSION

    return list(instance.get_dynamic_partitions(SERIES_DIMENSION))


def _print_forecasts(deployment, window: str) -> None:
    from forecasting_pipeline.resources.database import engine_for
    from forecasting_pipeline.storage.predictions import forecast_summary

    with engine_for(deployment.database_url).connect() as conn:
        rows = forecast_summary(conn, window)
    click.echo(f"\nForecasts of window {window} (table forecasting.predictions):")
    width = max([len("series"), *(len(row["series_id"]) for row in rows)])
    model_width = max([len("model"), *(len(row["model_name"]) for row in rows)])
    version_width = max([len("version"), *(len(row["model_version"]) for row in rows)])
    header = (
        f"{'series':<{width}} {'model':<{model_width}} {'version':<{version_width}} {'from':<17} "
        f"{'steps':>5} {'step 1':>8} {'95% interval, step 1':>22} {'mean':>8} {'80% width':>10} "
        f"{'95% width':>10}"
    )
    click.echo(header)
    click.echo("-" * len(header))
    for row in rows:
        interval = f"[{row['first_lo_95']:.2f}, {row['first_hi_95']:.2f}]"
        click.echo(
            f"{row['series_id']:<{width}} {row['model_name']:<{model_width}} "
            f"{row['model_version']:<{version_width}} "
            f"{row['first_ds']:%Y-%m-%d %H:%M} {row['steps']:>5} {row['first_yhat']:>8.2f} "
            f"{interval:>22} {row['mean_yhat']:>8.2f} "
            f"{row['mean_width_80']:>10.2f} {row['mean_width_95']:>10.2f}"
        )


def _names(value: str | None) -> tuple[str, ...] | None:
    return tuple(n.strip() for n in value.split(",") if n.strip()) if value is not None else None


@main.command()
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option(
    "--sql", "sql_url", default=None, help="SQLAlchemy URL of a SQL source (or env:VAR to read it)."
)
@click.option("--query", default=None, help="With --sql: a query, or a table name.")
@click.option("--id-column", default="unique_id", show_default=True, help="Column holding the series id.")
@click.option("--time-column", default="ds", show_default=True, help="Column holding the timestamp.")
@click.option("--target-column", default="y", show_default=True, help="Column holding the value to forecast.")
@click.option("--drivers", default=None, help="Comma-separated driver columns (default: the numeric ones).")
@click.option("--attributes", default=None, help="Comma-separated series attributes (default: text columns).")
@click.option("--ignore", default="", help="Comma-separated columns to leave out.")
@click.option(
    "--future-drivers",
    default="",
    help="Comma-separated drivers known ahead of time (published forecasts, calendars); "
    "models that take future inputs use them over the horizon.",
)
@click.option("--release-held", is_flag=True, help="Accept batches held by a failed quality check.")
def ingest(
    paths: tuple[Path, ...],
    sql_url: str | None,
    query: str | None,
    id_column: str,
    time_column: str,
    target_column: str,
    drivers: str | None,
    attributes: str | None,
    ignore: str,
    future_drivers: str,
    release_held: bool,
) -> None:
    """Land PATHS (CSV, CSV.GZ or Parquet files or folders, long format) or a SQL source, and
    ingest only the series × windows whose data is new or changed."""
    from forecasting_pipeline import operations
    from forecasting_pipeline.ingestion.validation import ColumnRoles

    if (sql_url is None) != (query is None):
        raise click.ClickException("--sql and --query go together")
    deployment = _deployment()
    landing = deployment.settings.landing_dir
    for outcome in operations.land_paths(paths, landing):
        click.echo(f"{outcome.path}: not landed: {outcome.message}")
    if sql_url is not None:
        url = os.environ.get(sql_url[4:], "") if sql_url.startswith("env:") else sql_url
        if not url:
            raise click.ClickException(f"{sql_url}: the environment variable is not set")
        try:
            landed = operations.land_sql(url, query, landing)
        except Exception as exc:  # a driver's error is the user's answer, as one line
            raise click.ClickException(f"SQL source failed: {str(exc).splitlines()[0]}") from exc
        click.echo(f"landed the SQL source as {landed.name}")
    roles = ColumnRoles(
        series_id=id_column,
        timestamp=time_column,
        target=target_column,
        drivers=_names(drivers),
        attributes=_names(attributes),
        ignore=_names(ignore) or (),
        future_drivers=_names(future_drivers) or (),
    )
    try:
        summary = operations.ingest(
            _instance(),
            deployment,
            roles=roles,
            release_held=release_held,
            progress=click.echo,
            show_steps=True,
        )
    except operations.PipelineRunError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(
        f"ingested {summary.cells} changed series × window cells in {len(summary.run_ids)} runs "
        f"({summary.seconds:.1f}s); {len(summary.new_series)} new series; "
        f"latest window {summary.latest_window}"
    )


@main.command()
@click.option("--window", default=None, help="Date window to train and forecast (default: latest with data).")
@click.option("--max-steps", default=None, type=int, help="Training steps of each neural family.")
@click.option("--trials", default=None, type=int, help="Hyper-parameter trials per family and group.")
def forecast(window: str | None, max_steps: int | None, trials: int | None) -> None:
    """Tune and train the catalog's families for a window and store every series' forecasts."""
    from forecasting_pipeline import operations
    from forecasting_pipeline.resources.database import DatabaseResource

    deployment = _deployment()
    instance = _instance()
    _quiet_training_logs()
    try:
        window = window or operations.latest_window(DatabaseResource(url=deployment.database_url))
        result = operations.forecast(
            instance,
            window,
            _series_keys(instance),
            global_model_config={"max_steps": max_steps} if max_steps else None,
            search_config={"trials": trials} if trials is not None else None,
            show_steps=True,
        )
    except operations.PipelineRunError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"trained in {result.train_seconds:.1f}s, forecast in {result.forecast_seconds:.1f}s")
    _print_forecasts(deployment, window)


@main.group()
def db() -> None:
    """The PostgreSQL database: schema migrations and the embedded server."""


@db.command()
def upgrade() -> None:
    """Apply pending migrations in sql/ to the `forecasting` schema (idempotent)."""
    deployment = _deployment()
    click.echo(f"database: {_describe_database(deployment)}")


@db.command()
def stop() -> None:
    """Stop the embedded PostgreSQL server, if one runs under FP_HOME."""
    from forecasting_pipeline.storage.embedded import stop_embedded_server

    folder = load_settings().embedded_db_dir
    stopped = stop_embedded_server(folder)
    click.echo(f"stopped the embedded server in {folder}" if stopped else "no embedded server was running")


@main.command(context_settings={"ignore_unknown_options": True})
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=3000, show_default=True)
@click.argument("dagster_args", nargs=-1, type=click.UNPROCESSED)
def ui(host: str, port: int, dagster_args: tuple[str, ...]) -> None:
    """Start `dagster dev` (UI + daemon) on the same PostgreSQL-backed instance as the CLI."""
    deployment = _deployment()
    _instance()  # creates Dagster's tables (and a configured gpu pool limit) before the UI starts
    click.echo(f"database: {_describe_database(deployment)}; DAGSTER_HOME={deployment.dagster_home}")
    workspace = REPO_ROOT / "workspace.yaml"
    target = ["-w", str(workspace)] if workspace.exists() else ["-m", "forecasting_pipeline.definitions"]
    command = [
        sys.executable,
        "-m",
        "dagster",
        "dev",
        *target,
        "-h",
        host,
        "-p",
        str(port),
        *dagster_args,
    ]
    os.execv(sys.executable, command)  # noqa: S606 - replaces this process with `dagster dev`


if __name__ == "__main__":
    main()
