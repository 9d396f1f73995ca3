"""`forecasting-pipeline` command line: demo, ingest, forecast, db, ui."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import click

from forecasting_pipeline.console import (
    CliError,
    ConfigurationError,
    InputRejectedError,
    PipelineGroup,
    Progress,
    echo_lines,
    examples,
    exit_codes_help,
    fixed,
    heading,
    pipeline_failure,
    style_expr,
)
from forecasting_pipeline.execution.queues import QUEUES
from forecasting_pipeline.settings import INGEST_ROOTS_VAR, Settings, SettingsError, load_settings


def _echo_step(step: int, total: int, message: str) -> None:
    click.echo(f"[{step}/{total}] {message}")


def _deployment():
    from forecasting_pipeline.bootstrap import prepare_deployment

    try:
        return prepare_deployment()
    except SettingsError as exc:
        raise ConfigurationError(str(exc)) from exc


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


@click.group(
    cls=PipelineGroup,
    epilog=exit_codes_help(),
    context_settings={"show_default": True, "help_option_names": ["-h", "--help"], "max_content_width": 110},
)
def main() -> None:
    """Forecast many time series as a partitioned Dagster asset graph.

    Observations, models and forecasts live in PostgreSQL: the server FP_DATABASE_URL names,
    or, when it is unset, an embedded server under FP_HOME (default ./.forecasting). Every
    command takes --help. Progress shows as a bar on a terminal and as plain lines in a pipe or
    a log; colours are off there too, and wherever NO_COLOR is set.

    \b
    Start here:
      forecasting-pipeline demo                  # the whole pipeline on a bundled dataset
      forecasting-pipeline forecast --input sales.csv --output forecasts.csv
      forecasting-pipeline leaderboard           # every candidate ranked on the backtests
      forecasting-pipeline ui                    # the Dagster UI on the same instance
      forecasting-pipeline report --output report.html   # everything in one HTML file
    """
    _quiet_libraries()


@main.command(
    epilog=examples(
        "forecasting-pipeline demo",
        "forecasting-pipeline demo --max-steps 50 --trials 1      # a quicker, rougher run",
        "forecasting-pipeline demo --replay --weeks 2             # watch the automation in the UI",
    )
)
@click.option(
    "--dataset", default=None, help="Bundled dataset to use [default: epf_fr_be, the only one bundled]."
)
@click.option("--max-steps", default=300, show_default=True, help="Training steps of each neural family.")
@click.option(
    "--trials", default=4, show_default=True, help="Hyper-parameter trials per family and frequency group."
)
@click.option(
    "--replay",
    is_flag=True,
    help="Start the UI and daemon, then land the data week by week: watch the sensors, the cascade "
    "and the accuracy scoring work (its own FP_HOME, .forecasting-replay, unless FP_HOME is set).",
)
@click.option(
    "--weeks", default=4, show_default=True, help="With --replay: weeks to replay after the backlog."
)
@click.option("--port", default=3000, show_default=True, help="With --replay: port of the Dagster UI.")
def demo(dataset: str | None, max_steps: int, trials: int, replay: bool, weeks: int, port: int) -> None:
    """Run the whole pipeline on a bundled real dataset and print the forecasts.

    Five steps: database, landing, ingestion, training (driver studies, tuning, neural and
    statistical families), then backtests, champions and publication. Running it again
    ingests nothing new and re-runs the same forecast origin.
    """
    chosen = _bundled(dataset)
    if replay:
        _replay(chosen.name, weeks, port)
        return
    from forecasting_pipeline import operations
    from forecasting_pipeline.datasets import land_bundled_dataset

    started = time.perf_counter()
    total = 5
    deployment = _deployment()
    _echo_step(1, total, f"database: {_describe_database(deployment)}")
    landed = land_bundled_dataset(chosen.name, deployment.settings.landing_dir)
    _echo_step(2, total, f"landed bundled dataset {chosen.name} -> {landed}")
    instance = _instance()
    try:
        ingested = operations.ingest(
            instance, deployment, progress=Progress(f"[3/{total}] "), show_steps=True
        )
        _echo_step(3, total, _ingest_counts(ingested))
        if ingested.latest_window is None:
            raise InputRejectedError(f"{landed.name}: no usable observations were ingested")
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
            f"studying drivers, tuning ({trials} trials per family), training, backtesting and choosing "
            f"each series' champion for window {ingested.latest_window} (max_steps={max_steps}) …",
        )
        result = operations.forecast(
            instance,
            ingested.latest_window,
            _series_keys(instance),
            global_model_config={"max_steps": max_steps},
            search_config={"trials": trials, "trial_max_steps": min(50, max_steps)},
            backtest_config={"max_steps": max_steps},
            show_steps=True,
            progress=Progress(f"[4/{total}] "),
        )
        _echo_step(
            5,
            total,
            f"trained in {result.train_seconds:.1f}s; backtested, selected champions and published in "
            f"{result.forecast_seconds:.1f}s",
        )
    except operations.PipelineRunError as exc:
        raise pipeline_failure(exc) from exc
    _print_leaderboard(deployment, result.window)
    _print_drivers(deployment, result.window)
    _print_forecasts(deployment, result.window)
    click.secho(f"\nDemo finished in {time.perf_counter() - started:.0f}s.", fg="green", bold=True)
    click.echo("Next: `forecasting-pipeline ui` opens the Dagster UI on this same instance")
    click.echo("      (assets, partitions, runs and lineage) at http://127.0.0.1:3000")
    if deployment.settings.mlflow_tracking_uri is None:
        click.echo(
            "      MLflow runs and registered models: "
            f"mlflow ui --backend-store-uri {deployment.settings.default_mlflow_tracking_uri}"
        )


def _bundled(name: str | None):
    """The bundled dataset called `name` (default: the demo's), or a usage error naming the others."""
    from forecasting_pipeline.datasets import DEFAULT_DATASET, bundled_dataset

    try:
        return bundled_dataset(name or DEFAULT_DATASET)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--dataset") from exc


def _series_keys(instance) -> list[str]:
    from forecasting_pipeline.schemas import SERIES_DIMENSION

    return list(instance.get_dynamic_partitions(SERIES_DIMENSION))


def _print_forecasts(deployment, window: str, limit: int = 20) -> None:
    import polars as pl

    from forecasting_pipeline.resources.database import engine_for
    from forecasting_pipeline.storage.predictions import forecast_summary

    with engine_for(deployment.database_url).connect() as conn:
        rows = forecast_summary(conn, window)
    heading(
        f"\nChampion forecasts of window {window} (forecasting.published_forecasts; every candidate's "
        "forecasts are in forecasting.predictions, the ranking in `forecasting-pipeline leaderboard`):"
    )
    if not rows:
        click.secho("none published", fg="yellow")
        return
    shown = pl.DataFrame(rows[:limit], infer_schema_length=None)
    width = max(len("series"), shown["series_id"].str.len_chars().max())
    model_width = max(len("champion"), shown["model_name"].str.len_chars().max())
    header = (
        f"{'series':<{width}} {'champion':<{model_width}} {'from':<17} {'steps':>5} {'step 1':>10} "
        f"{'95% interval, step 1':>24} {'mean':>10} {'80% width':>10} {'95% width':>10} {'intervals':>10}"
    )
    click.secho(header, bold=True)
    click.echo("-" * len(header))
    interval = pl.concat_str(
        [pl.lit("["), fixed(pl.col("first_lo_95")), pl.lit(", "), fixed(pl.col("first_hi_95")), pl.lit("]")]
    )
    lines = shown.select(
        pl.concat_str(
            [
                pl.col("series_id").str.pad_end(width),
                pl.lit(" "),
                style_expr(pl.col("model_name").str.pad_end(model_width), fg="cyan", bold=True),
                pl.lit(" "),
                pl.col("first_ds").dt.strftime("%Y-%m-%d %H:%M"),
                pl.col("steps").cast(pl.String).str.pad_start(6),
                fixed(pl.col("first_yhat")).str.pad_start(11),
                interval.str.pad_start(25),
                *(
                    fixed(pl.col(c)).str.pad_start(11)
                    for c in ("mean_yhat", "mean_width_80", "mean_width_95")
                ),
                pl.col("interval_method").fill_null("-").str.pad_start(11),
            ]
        )
    )
    echo_lines(lines)
    if len(rows) > limit:
        click.echo(f"… and {len(rows) - limit} more series (--output FILE.csv writes them all)")


def _names(value: str | None) -> tuple[str, ...] | None:
    return tuple(n.strip() for n in value.split(",") if n.strip()) if value is not None else None


def _automation_idle(instance, engine, file_name: str) -> bool:
    """`file_name` is in the manifest and done, no run waits or runs, no backfill is unfinished,
    nothing is queued for the cascade."""
    from dagster import DagsterRunStatus, RunsFilter
    from dagster._core.execution.backfill import BulkActionStatus
    from sqlalchemy import text

    with engine.connect() as conn:
        settled = conn.execute(
            text(
                "SELECT count(*) FROM forecasting.landed_files WHERE file_name = :name "
                "AND status IN ('ingested', 'held', 'rejected')"
            ),
            {"name": file_name},
        ).scalar_one()
    if not settled:
        return False

    busy = instance.get_runs_count(
        RunsFilter(
            statuses=[
                DagsterRunStatus.QUEUED,
                DagsterRunStatus.NOT_STARTED,
                DagsterRunStatus.STARTING,
                DagsterRunStatus.STARTED,
            ]
        )
    )
    if busy or instance.get_backfills(status=BulkActionStatus.REQUESTED):
        return False
    with engine.connect() as conn:
        waiting = conn.execute(
            text(
                "SELECT (SELECT count(*) FROM forecasting.cascade_queue) + (SELECT count(*) FROM "
                "forecasting.landed_files WHERE status = 'staged')"
            )
        ).scalar_one()
    return waiting == 0


def _replay_week_summary(engine, window: str) -> str:
    from sqlalchemy import text

    with engine.connect() as conn:
        row = conn.execute(
            text(
                "SELECT count(DISTINCT series_id) AS series, avg(mase) AS mase, "
                "avg(backtest_mase) AS backtest FROM forecasting.forecast_accuracy "
                "WHERE window_key = :w AND champion"
            ),
            {"w": window},
        ).one()
        published = conn.execute(
            text("SELECT max(window_key) FROM forecasting.published_forecasts")
        ).scalar_one()
    scored = (
        f"champion MASE {row.mase:.3f} on its actuals (backtest promised {row.backtest:.3f})"
        if row.series and row.mase is not None and row.backtest is not None
        else "no earlier forecast reached these actuals"
    )
    return f"forecasts published through window {published}; {scored}"


def _replay(dataset: str | None, weeks: int, port: int) -> None:
    """`demo --replay`: dagster dev in the background, the data landing one week at a time."""
    import polars as pl

    from forecasting_pipeline.datasets import DEFAULT_DATASET, bundled_dataset

    os.environ.setdefault("FP_HOME", str(Path(".forecasting-replay").resolve()))
    os.environ["FP_AUTOMATION"] = "on"
    os.environ.setdefault("FP_PRESET", "fast")
    from forecasting_pipeline.calendar import load_calendar, save_calendar
    from forecasting_pipeline.dagster_services import running_dagster_dev
    from forecasting_pipeline.replay import land_frame, plan_replay, wait_until
    from forecasting_pipeline.resources.database import engine_for

    chosen = bundled_dataset(dataset or DEFAULT_DATASET)
    settings = load_settings()
    plan = plan_replay(
        pl.read_csv(chosen.path(), try_parse_dates=True), weeks, settings.calendar_history_windows
    )
    existing = load_calendar(settings)
    if existing.persisted and not existing.same_windows(plan.calendar):
        raise ConfigurationError(
            f"{settings.calendar_file} holds another calendar",
            "replay into a fresh FP_HOME (e.g. FP_HOME=.forecasting-replay-2)",
        )
    save_calendar(settings, plan.calendar)
    deployment = _deployment()
    instance = _instance()
    engine = engine_for(deployment.database_url)
    click.echo(f"database: {_describe_database(deployment)}; automation on, preset {os.environ['FP_PRESET']}")
    with running_dagster_dev("127.0.0.1", port) as server:
        click.echo(f"Dagster UI: http://127.0.0.1:{port} (Automation: sensors and schedule; Runs; Backfills)")
        try:
            landing = deployment.settings.landing_dir
            steps = [("backlog", plan.backlog)] + [(start.isoformat(), rows) for start, rows in plan.weeks]
            for index, (label, rows) in enumerate(steps):
                name = f"{chosen.name}-{'backlog' if index == 0 else 'week-' + label}.csv"
                land_frame(rows, landing, name)
                click.echo(
                    f"[{index + 1}/{len(steps)}] landed {name}: {rows.height} rows; "
                    "the sensors take it from here"
                )
                wait_until(lambda name=name: _automation_idle(instance, engine, name), timeout=3600)
                if index:
                    click.echo(f"    week {label}: {_replay_week_summary(engine, label)}")
            click.echo("Replay finished; the UI keeps running (Ctrl-C to stop).")
            server.wait()
        except KeyboardInterrupt:
            pass


@main.command(
    epilog=examples(
        "forecasting-pipeline ingest sales.csv",
        "forecasting-pipeline ingest drop/ --id-column store --time-column day --target-column sales",
        "forecasting-pipeline ingest --sql env:SHOP_DB --query public.shop_sales --id-column store",
        "forecasting-pipeline ingest --release-held        # accept batches a quality check held",
    )
)
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option(
    "--sql", "sql_url", default=None, help="SQLAlchemy URL of a SQL source (or env:VAR to read it)."
)
@click.option("--query", default=None, help="With --sql: a query, or a table name.")
@click.option("--id-column", default="unique_id", show_default=True, help="Column holding the series id.")
@click.option("--time-column", default="ds", show_default=True, help="Column holding the timestamp.")
@click.option("--target-column", default="y", show_default=True, help="Column holding the value to forecast.")
@click.option("--drivers", default=None, help="Comma-separated driver columns [default: the numeric ones].")
@click.option("--attributes", default=None, help="Comma-separated series attributes [default: text columns].")
@click.option("--ignore", default="", show_default=False, help="Comma-separated columns to leave out.")
@click.option(
    "--future-drivers",
    default="",
    show_default=False,
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
    ingest only the series × windows whose data is new or changed.

    Files already in the landing folder (FP_LANDING_DIR) are staged too; an unchanged file does
    nothing. Bad rows are quarantined (forecasting.quarantine), unreadable files set aside.
    PATHS must lie in FP_INGEST_ROOTS (default: the working directory and FP_HOME) once links
    are resolved; otherwise nothing is landed. Exit status 4 when files were refused, rejected
    or held and nothing was accepted.
    """
    from forecasting_pipeline import operations
    from forecasting_pipeline.ingestion.validation import ColumnRoles

    if (sql_url is None) != (query is None):
        raise click.UsageError("--sql and --query go together")
    deployment = _deployment()
    landing = deployment.settings.landing_dir
    refused = _land(paths, deployment.settings)
    for outcome in refused:
        click.secho(f"{outcome.path}: not landed: {outcome.message}", fg="red")
    if sql_url is not None:
        url = os.environ.get(sql_url[4:], "") if sql_url.startswith("env:") else sql_url
        if not url:
            raise ConfigurationError(
                f"{sql_url}: the environment variable is not set",
                f"export {sql_url[4:]}=<SQLAlchemy URL of the source> and run again",
            )
        try:
            landed = operations.land_sql(url, query, landing)
        except Exception as exc:  # a driver's error is the user's answer, as one line
            raise InputRejectedError(
                f"SQL source failed: {str(exc).splitlines()[0]}",
                "check the --sql URL (reachable, credentials) and that --query names a table or is a "
                "query it can run",
            ) from exc
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
            progress=Progress(),
            show_steps=True,
        )
    except operations.PipelineRunError as exc:
        raise pipeline_failure(exc) from exc
    click.echo(_ingest_counts(summary, len(refused)))
    click.echo(
        f"ingested {summary.cells} changed series × window cells in {len(summary.run_ids)} runs "
        f"({summary.seconds:.1f}s); {len(summary.new_series)} new series; "
        f"latest window {summary.latest_window}"
    )
    _require_something_accepted(summary, refused)


def _land(paths: Sequence[Path], settings: Settings) -> list:
    """Land `paths`, or refuse them all (exit 4) when one lies outside the allowed roots."""
    from forecasting_pipeline import operations
    from forecasting_pipeline.ingestion.roots import PathOutsideRootsError

    try:
        return operations.land_paths(paths, settings.landing_dir, settings.allowed_ingest_roots)
    except PathOutsideRootsError as exc:
        raise InputRejectedError(str(exc), _OUTSIDE_ROOTS_HINT) from exc


_OUTSIDE_ROOTS_HINT = (
    "copy the file into the working directory or the landing folder, or add its folder to "
    f"{INGEST_ROOTS_VAR} (folders separated by '{os.pathsep}'); nothing was ingested"
)


def _ingest_counts(summary, not_landed: int = 0) -> str:
    """Files and rows of an ingest: accepted in green, quarantined or held in yellow, rejected in red."""
    statuses = [outcome.status for outcome in summary.files]
    counts = [
        (statuses.count("staged"), "staged", "green"),
        (statuses.count("unchanged"), "unchanged", None),
        (statuses.count("held"), "held", "yellow"),
        (statuses.count("rejected") + not_landed, "rejected", "red"),
    ]
    accepted = sum(f.rows_accepted for f in summary.files)
    quarantined = sum(f.rows_quarantined for f in summary.files)
    rows = [(accepted, "accepted", "green"), (quarantined, "quarantined", "yellow")]

    def part(count: int, what: str, colour: str | None) -> str:
        return click.style(f"{count} {what}", fg=colour, bold=True) if count and colour else f"{count} {what}"

    return "files: " + ", ".join(part(*c) for c in counts) + "; rows: " + ", ".join(part(*r) for r in rows)


def _require_something_accepted(summary, refused: list) -> None:
    """Exit 4 when files were refused, rejected or held and no row was accepted."""
    bad = [o for o in [*refused, *summary.files] if o.status in ("rejected", "held")]
    if not bad or any(outcome.rows_accepted for outcome in summary.files):
        return
    first = bad[0]
    if first.status == "held":
        raise InputRejectedError(
            f"{first.path.name}: {first.message}",
            "fix the file and land it again, or accept its rows anyway with "
            "`forecasting-pipeline ingest --release-held`; the reasons per row are in "
            "forecasting.quarantine and forecasting.data_quality_results",
        )
    more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
    raise InputRejectedError(f"nothing accepted: {first.path.name}: {first.message}{more}")


@main.command(
    epilog=examples(
        "forecasting-pipeline forecast --input sales.csv --output forecasts.csv",
        "forecasting-pipeline forecast --input sales.parquet --horizon 14 --preset fast --output out.csv",
        "forecasting-pipeline forecast --window 2016-10-30 --max-steps 100   # re-forecast ingested data",
    )
)
@click.option(
    "--input",
    "input_path",
    default=None,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Long-format CSV or Parquet (unique_id, ds, y [, drivers]) to ingest and forecast.",
)
@click.option("--horizon", default=None, type=click.IntRange(min=1), help="Steps ahead for every series.")
@click.option(
    "--output",
    default=None,
    type=click.Path(dir_okay=False, path_type=Path),
    help="CSV of the champion forecasts: unique_id, ds, yhat, yhat_lo/hi_80/95, model.",
)
@click.option(
    "--preset",
    default=None,
    type=click.Choice(["fast", "medium", "best"]),
    help="Families, tuning, folds and time budget from the catalog's presets "
    "[default with --input: medium; without: the catalog's own settings].",
)
@click.option(
    "--id-column", default="unique_id", show_default=True, help="With --input: the series id column."
)
@click.option("--time-column", default="ds", show_default=True, help="With --input: the timestamp column.")
@click.option("--target-column", default="y", show_default=True, help="With --input: the value column.")
@click.option(
    "--window", default=None, help="Date window to train and forecast [default: the latest with data]."
)
@click.option(
    "--max-steps",
    default=None,
    type=int,
    help="Training steps of each neural family [default: the preset's].",
)
@click.option(
    "--trials",
    default=None,
    type=int,
    help="Hyper-parameter trials per family and group [default: the preset's].",
)
def forecast(
    input_path: Path | None,
    horizon: int | None,
    output: Path | None,
    preset: str | None,
    id_column: str,
    time_column: str,
    target_column: str,
    window: str | None,
    max_steps: int | None,
    trials: int | None,
) -> None:
    """Ingest (with --input), tune, train, backtest, choose champions and publish forecasts.

    Every series is forecast from its own last timestamp. Exit status 0 when forecasts were
    published, 4 when the input was unreadable, rejected or held, 1 when a run failed (the
    message says which and why, and what to do).
    """
    from forecasting_pipeline import operations
    from forecasting_pipeline.ingestion.validation import ColumnRoles
    from forecasting_pipeline.resources.database import DatabaseResource

    started = time.time()
    if horizon is not None:
        # Read by the model catalog resource when the definitions load, below.
        os.environ["FP_FORECAST_HORIZON"] = str(horizon)
    deployment = _deployment()
    instance = _instance()
    database = DatabaseResource(url=deployment.database_url)
    series_ids = None
    if input_path is not None:
        from forecasting_pipeline.ingestion.roots import PathOutsideRootsError, refuse_outside

        try:  # before the file is first read, to list its series
            refuse_outside([input_path], deployment.settings.allowed_ingest_roots)
        except PathOutsideRootsError as exc:
            raise InputRejectedError(str(exc), _OUTSIDE_ROOTS_HINT) from exc
        series_ids = _input_series(
            input_path, {"id": id_column, "time": time_column, "target": target_column}
        )
        for outcome in _land([input_path], deployment.settings):
            raise InputRejectedError(f"{outcome.path}: {outcome.message}")
        roles = ColumnRoles(series_id=id_column, timestamp=time_column, target=target_column)
        try:
            ingested = operations.ingest(
                instance, deployment, roles=roles, progress=Progress(), show_steps=True
            )
        except operations.PipelineRunError as exc:
            raise pipeline_failure(exc) from exc
        click.echo(_ingest_counts(ingested))
        _require_accepted(ingested, input_path)
        preset = preset or "medium"
    configs: dict = {}
    if preset is not None:
        run = operations.preset_run(
            preset,
            started,
            str(deployment.settings.model_catalog) if deployment.settings.model_catalog else None,
        )
        configs = run.configs
        click.echo(
            f"preset {preset}: time budget until {time.strftime('%H:%M:%S', time.localtime(run.deadline))}"
        )
    if max_steps:
        configs.setdefault("global_model_config", {})["max_steps"] = max_steps
        configs.setdefault("backtest_config", {})["max_steps"] = max_steps
    if trials is not None:
        configs.setdefault("search_config", {})["trials"] = trials
    _quiet_training_logs()
    try:
        window = window or operations.latest_window(database)
        result = operations.forecast(
            instance, window, _series_keys(instance), show_steps=True, progress=Progress(), **configs
        )
    except operations.PipelineRunError as exc:
        raise pipeline_failure(exc) from exc
    click.echo(
        f"trained in {result.train_seconds:.1f}s; backtested, selected and published in "
        f"{result.forecast_seconds:.1f}s ({time.time() - started:.0f}s in all)"
    )
    _print_forecasts(deployment, window)
    if output is not None:
        written = _write_published(database, series_ids, output)
        click.echo(f"wrote {written} rows to {output}")


def _input_series(path: Path, roles: dict[str, str]) -> list[str]:
    """The series ids of an input file, or a message saying what is wrong with it and what to do.

    `roles` maps option name (id, time, target) to the column the user named for it.
    """
    import polars as pl

    try:
        if path.suffix == ".parquet":
            columns = list(pl.read_parquet_schema(path))
        else:
            with path.open("rb") as handle:
                if b"\x00" in handle.read(8192):
                    raise ValueError("binary content")
            columns = pl.read_csv(path, n_rows=0, infer_schema=False).columns
    except Exception as exc:
        raise InputRejectedError(
            f"{path}: not a readable CSV or Parquet file ({str(exc).splitlines()[0]}); expected a long "
            "table with columns unique_id, ds, y"
        ) from exc
    missing = {option: column for option, column in roles.items() if column not in columns}
    if missing:
        names = ", ".join(f"{column!r} (--{option}-column)" for option, column in missing.items())
        raise InputRejectedError(
            f"{path.name}: no column {names}; its columns are {columns}",
            "name yours with --id-column, --time-column and --target-column",
        )
    id_column = roles["id"]
    if path.suffix == ".parquet":
        frame = pl.read_parquet(path, columns=[id_column])
    else:
        frame = pl.read_csv(path, columns=[id_column], infer_schema=False)
    # Stripped as validation strips them: " North " is stored as "North", and --output must find it.
    ids = frame[id_column].drop_nulls().cast(pl.String).str.strip_chars().unique().sort().to_list()
    if not ids:
        raise InputRejectedError(f"{path.name}: no rows with a series id in column {id_column!r}")
    return ids


def _require_accepted(ingested, path: Path) -> None:
    """Stop when the file was rejected, held or yielded no rows, saying why and what to do."""
    for outcome in ingested.files:
        if outcome.status == "rejected":
            raise InputRejectedError(f"{path.name}: rejected: {outcome.message}")
        if outcome.status == "held":
            raise InputRejectedError(
                f"{path.name}: {outcome.message}. Its rows are kept",
                "fix the file and run again, or accept its rows anyway with "
                "`forecasting-pipeline ingest --release-held`; the reasons per row are in "
                "forecasting.quarantine and forecasting.data_quality_results",
            )
    if ingested.latest_window is None:
        raise InputRejectedError(f"{path.name}: no usable observations were ingested")


def _write_published(database, series_ids: list[str] | None, output: Path) -> int:
    from forecasting_pipeline.storage.champions import newest_published

    with database.transaction() as conn:
        published = newest_published(conn, series_ids)
    if published.height == 0:
        raise CliError(
            "no champion forecasts were published for these series",
            "see the failed steps above; `forecasting-pipeline leaderboard` shows what was backtested",
        )
    columns = ["unique_id", "ds", "yhat", "yhat_lo_80", "yhat_hi_80", "yhat_lo_95", "yhat_hi_95", "model"]
    output.parent.mkdir(parents=True, exist_ok=True)
    published.select(columns).write_csv(output, datetime_format="%Y-%m-%d %H:%M:%S")
    return published.height


@main.command(
    epilog=examples(
        "forecasting-pipeline leaderboard",
        "forecasting-pipeline leaderboard --series FR --metric smape",
        "forecasting-pipeline leaderboard --window 2016-10-30",
    )
)
@click.option("--series", "series_id", default=None, help="One series' ranking instead of the groups'.")
@click.option("--window", default=None, help="Backtest window [default: the newest with metrics].")
@click.option(
    "--metric",
    default="mase",
    show_default=True,
    help="Metric to rank by: mase, smape, mae, rmse, scaled_mql, coverage_80, coverage_95.",
)
def leaderboard(series_id: str | None, window: str | None, metric: str) -> None:
    """Rank every candidate on the backtest folds: per frequency group, or for one series.

    Lower is better; the best candidate of each group shows in green.
    """
    _print_leaderboard(_deployment(), window, metric, series_id)


def _print_leaderboard(
    deployment, window: str | None, metric: str = "mase", series_id: str | None = None
) -> None:
    import polars as pl

    from forecasting_pipeline.resources.database import DatabaseResource
    from forecasting_pipeline.storage.backtests import leaderboard_rows

    with DatabaseResource(url=deployment.database_url).transaction() as conn:
        table = leaderboard_rows(conn, window, metric, series_id)
    if table.height == 0:
        raise CliError(
            "no backtest metrics yet" + (f" for window {window}" if window else ""),
            "run `forecasting-pipeline forecast` (or `demo`) first"
            + ("; leave out --window for the newest" if window else ""),
        )
    metrics = [c for c in table.columns if c not in ("window_key", "freq_group", "model_name", "series")]
    scope = f"series {series_id}" if series_id else "each frequency group"
    heading(
        f"\nLeaderboard of window {table['window_key'][0]}, {scope}, by {metric} on the backtest folds "
        "(lower is better; coverage in %):"
    )
    for (group,), rows in table.group_by("freq_group", maintain_order=True):
        click.secho(f"\n{group} ({rows['series'].max()} series)", bold=True)
        header = f"{'rank':>4} {'candidate':<18}" + "".join(f"{m:>12}" for m in metrics)
        click.secho(header, bold=True)
        click.echo("-" * len(header))
        values = [pl.col(m).round(3).cast(pl.String).fill_null("-").str.pad_start(12) for m in metrics]
        line = pl.concat_str(
            [
                pl.col("rank").cast(pl.String).str.pad_start(4),
                pl.lit(" "),
                pl.col("model_name").str.pad_end(18),
                *values,
            ]
        )
        lines = rows.with_row_index("rank", offset=1).select(
            pl.when(pl.col("rank") == 1).then(style_expr(line, fg="green", bold=True)).otherwise(line)
        )
        echo_lines(lines)


@main.command(
    epilog=examples("forecasting-pipeline drivers", "forecasting-pipeline drivers --window 2016-10-30")
)
@click.option("--window", default=None, help="Study window [default: the newest studied].")
def drivers(window: str | None) -> None:
    """Which drivers the models take, why, and which features explain the champions' errors."""
    _print_drivers(_deployment(), window)


def _print_drivers(deployment, window: str | None) -> None:
    import polars as pl

    from forecasting_pipeline.resources.database import DatabaseResource
    from forecasting_pipeline.storage.studies import driver_selection_rows, feature_importance_rows

    with DatabaseResource(url=deployment.database_url).transaction() as conn:
        decisions = driver_selection_rows(conn, window)
        effects = feature_importance_rows(conn, window)
    if decisions.height == 0 and effects.height == 0:
        click.secho(
            "\nNo driver studies yet: run `forecasting-pipeline demo` or `forecast` first.", fg="yellow"
        )
        return
    if decisions.height:
        heading(
            f"\nDrivers of window {decisions['window_key'][0]} (forecasting.driver_selection; the tests "
            "behind them in forecasting.granger_tests, correlations in forecasting.correlations):"
        )
        lines = decisions.select(
            pl.concat_str(
                [
                    pl.lit("  "),
                    pl.col("freq_group").str.pad_end(10),
                    pl.col("driver").str.pad_end(16),
                    pl.when(pl.col("selected") == "t")
                    .then(style_expr(pl.lit("used    "), fg="green"))
                    .otherwise(style_expr(pl.lit("not used"), dim=True)),
                    pl.lit("  "),
                    pl.col("reason"),
                ]
            )
        )
        click.echo("\n".join(lines.to_series().to_list()))
    if effects.height:
        numbers = effects.with_columns(
            pl.col("importance", "relative", "baseline_error", "model_error").cast(pl.Float64)
        )
        heading(
            f"\nFeature effects on the champions' backtest error, window {numbers['window_key'][0]} "
            "(forecasting.feature_importances): the increase in the error model's scaled MAE when a "
            "group is shuffled within each series; above zero, the group explains error the champion left."
        )
        for (group,), rows in numbers.group_by("freq_group", maintain_order=True):
            baseline, model = rows["baseline_error"][0], rows["model_error"][0]
            click.echo(f"{group}: champion scaled MAE {baseline:.3f}, error model (held out) {model:.3f}")
            if model >= baseline:
                click.secho(
                    "  the features explain none of the champion's error here (the error model does no "
                    "better than predicting no error), so the ranking below is noise",
                    fg="yellow",
                )
            lines = rows.select(
                pl.concat_str(
                    [
                        pl.col("rank").str.pad_start(4),
                        pl.lit(" "),
                        pl.col("feature_group").str.pad_end(24),
                        pl.col("importance").round(4).cast(pl.String).str.pad_start(10),
                        pl.lit("  ("),
                        (pl.col("relative") * 100).round(1).cast(pl.String),
                        pl.lit("% of the champion's error)"),
                    ]
                )
            )
            click.echo("\n".join(lines.to_series().to_list()))


@main.group()
def champion() -> None:
    """Each series' champion model: history and restore.

    \b
    Examples:
      forecasting-pipeline champion history FR
      forecasting-pipeline champion restore --series FR
    """


@champion.command(
    "restore",
    epilog=examples(
        "forecasting-pipeline champion restore --series FR            # the previous champion",
        "forecasting-pipeline champion restore --series FR --to AutoETS",
        "forecasting-pipeline champion restore --all",
    ),
)
@click.option("--series", "series_ids", multiple=True, help="Series to restore (repeatable).")
@click.option("--all", "all_series", is_flag=True, help="Restore every series' previous champion.")
@click.option(
    "--to", "to_model", default=None, help="Make this candidate the champion instead of the previous one."
)
def champion_restore(series_ids: tuple[str, ...], all_series: bool, to_model: str | None) -> None:
    """Make the previous champion (or --to MODEL) champion again and republish its forecasts."""
    from forecasting_pipeline import operations
    from forecasting_pipeline.resources.database import DatabaseResource

    if not series_ids and not all_series:
        raise click.UsageError("name --series ID (repeatable) or --all")
    deployment = _deployment()
    events = operations.restore_champions(
        DatabaseResource(url=deployment.database_url),
        None if all_series else list(series_ids),
        to_model,
        reason="restored from the CLI",
    )
    if not events:
        raise CliError(
            "nothing to restore: no earlier champion for these series",
            "`forecasting-pipeline champion history SERIES` lists each series' champions; "
            "--to MODEL makes any backtested candidate the champion",
        )
    for event in events:
        click.echo(
            f"{event['series_id']}: {event['replaced']} -> "
            f"{click.style(str(event['restored']), fg='green', bold=True)} (republished)"
        )


@champion.command("history", epilog=examples("forecasting-pipeline champion history FR"))
@click.argument("series_id")
def champion_history(series_id: str) -> None:
    """Every champion change of SERIES_ID, newest first: first champion and promotions in green,
    restores in yellow."""
    import polars as pl

    from forecasting_pipeline.resources.database import DatabaseResource
    from forecasting_pipeline.storage.champions import champion_history as history

    deployment = _deployment()
    with DatabaseResource(url=deployment.database_url).transaction() as conn:
        events = history(conn, series_id)
    if not events:
        raise CliError(
            f"{series_id}: no champion recorded yet",
            "series ids are case-sensitive; `forecasting-pipeline leaderboard --series ID` shows whether "
            "it was backtested, `forecasting-pipeline forecast` chooses champions",
        )
    event = pl.col("event").str.pad_end(8)
    lines = pl.DataFrame(events, infer_schema_length=None).select(
        pl.concat_str(
            [
                pl.col("recorded_at").dt.strftime("%Y-%m-%d %H:%M UTC"),
                pl.lit(" "),
                pl.when(pl.col("event").is_in(["first", "promote"]))
                .then(style_expr(event, fg="green"))
                .when(pl.col("event") == "restore")
                .then(style_expr(event, fg="yellow"))
                .otherwise(event),
                pl.lit(" "),
                style_expr(pl.col("model_name").str.pad_end(16), bold=True),
                pl.lit(" (was "),
                pl.col("previous_model").fill_null("-"),
                pl.lit(") window "),
                pl.col("window_key"),
                pl.lit(": "),
                pl.col("reason").fill_null(""),
            ]
        )
    )
    echo_lines(lines)


@main.group()
def db() -> None:
    """The PostgreSQL database: schema migrations and the embedded server."""


@db.command(epilog=examples("forecasting-pipeline db upgrade"))
def upgrade() -> None:
    """Apply pending migrations in sql/ to the `forecasting` schema (idempotent).

    Starts the embedded server first when FP_DATABASE_URL is unset.
    """
    deployment = _deployment()
    click.echo(f"database: {_describe_database(deployment)}")


@db.command(epilog=examples("forecasting-pipeline db stop"))
def stop() -> None:
    """Stop the embedded PostgreSQL server, if one runs under FP_HOME.

    It starts again by itself with the next command that needs it.
    """
    from forecasting_pipeline.storage.embedded import stop_embedded_server

    folder = load_settings().embedded_db_dir
    stopped = stop_embedded_server(folder)
    click.echo(f"stopped the embedded server in {folder}" if stopped else "no embedded server was running")


@main.command(
    epilog=examples(
        "forecasting-pipeline backfill --from 2016-10-09 --to 2016-10-30",
        "forecasting-pipeline backfill --from 2016-10-09 --to 2016-10-16 --asset feature_table",
        "forecasting-pipeline backfill --from 2016-10-09 --to 2016-10-30 --submit   # the daemon runs it",
    )
)
@click.option(
    "--from", "first_window", required=True, help="First date window (partition key), e.g. 2016-11-06."
)
@click.option("--to", "last_window", required=True, help="Last date window (inclusive).")
@click.option(
    "--asset",
    "assets",
    multiple=True,
    help="Asset to recompute (repeatable) [default: everything downstream of ingestion].",
)
@click.option(
    "--submit",
    is_flag=True,
    help="Hand the backfill to the Dagster daemon (as the UI does) instead of running it here.",
)
def backfill(first_window: str, last_window: str, assets: tuple[str, ...], submit: bool) -> None:
    """Recompute assets for every series over a range of windows, as few runs as possible.

    Runs here, one partition-range run per job, counted as they finish; with --submit the
    daemon runs it as an asset backfill (Overview → Backfills in the UI).
    """
    from forecasting_pipeline import operations

    _deployment()
    instance = _instance()
    try:
        summary = operations.backfill(
            instance, first_window, last_window, list(assets) or None, submit=submit, progress=Progress()
        )
    except operations.PipelineRunError as exc:
        raise pipeline_failure(exc) from exc
    except ValueError as exc:  # an unknown asset or window: the options were wrong
        raise click.UsageError(str(exc)) from exc
    if not submit:
        click.secho(f"backfilled {first_window}..{last_window} in {len(summary.runs)} runs", fg="green")


@main.command(
    context_settings={"ignore_unknown_options": True},
    epilog=examples(
        "forecasting-pipeline ui",
        "forecasting-pipeline ui --host 0.0.0.0 --port 3001",
        "forecasting-pipeline ui --code-server-log-level debug   # extra arguments go to dagster dev",
    ),
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface the UI listens on.")
@click.option("--port", default=3000, show_default=True, help="Port of the UI.")
@click.argument("dagster_args", nargs=-1, type=click.UNPROCESSED)
def ui(host: str, port: int, dagster_args: tuple[str, ...]) -> None:
    """Start `dagster dev` (UI + daemon) on the same PostgreSQL-backed instance as the CLI.

    Ctrl-C (or SIGTERM) stops the webserver, daemon and code servers, and the embedded
    PostgreSQL when this command started it. Extra arguments go to `dagster dev`.
    """
    from forecasting_pipeline.dagster_services import running_dagster_dev
    from forecasting_pipeline.storage.embedded import embedded_server_running

    settings = load_settings()
    was_running = embedded_server_running(settings.embedded_db_dir)
    deployment = _deployment()
    _instance()  # creates Dagster's tables (and a configured gpu pool limit) before the UI starts
    click.echo(f"database: {_describe_database(deployment)}; DAGSTER_HOME={deployment.dagster_home}")
    started_here = deployment.settings.embedded_db_dir if deployment.embedded and not was_running else None
    with running_dagster_dev(host, port, dagster_args, embedded_dir=started_here) as server:
        click.echo(f"Dagster UI: http://{host}:{port} (Ctrl-C stops it)")
        try:
            server.wait()
        except KeyboardInterrupt:
            click.echo(
                "stopping the Dagster services" + (" and the embedded PostgreSQL" if started_here else "")
            )


@main.command(
    epilog=examples(
        "forecasting-pipeline metrics",
        "forecasting-pipeline metrics --host 0.0.0.0 --port 9877   # for a Prometheus on another host",
        "curl -s http://127.0.0.1:9877/metrics | grep ^fp_dagster_runs",
    ),
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option(
    "--port", default=9877, show_default=True, type=click.IntRange(0, 65535), help="Port of /metrics."
)
def metrics(host: str, port: int) -> None:
    """Serve Prometheus metrics of the pipeline, its data and its models on /metrics.

    Every scrape reads the Dagster instance and the domain tables: runs by job and status,
    durations, pools, asset freshness and partition states, check results, ingested and
    quarantined rows, dataset staleness, training cost, forecast accuracy and drift. Metrics,
    dashboard and alerts: docs/monitoring.md. Runs until Ctrl-C.
    """
    from dagster import DagsterInstance

    from forecasting_pipeline.monitoring.exporter import build_registry, serving

    deployment = _deployment()
    registry = build_registry(deployment.settings, deployment.database_url, DagsterInstance.get())
    try:
        with serving(registry, host, port) as bound:
            click.echo(f"metrics: http://{host}:{bound}/metrics (Ctrl-C stops)")
            threading.Event().wait()
    except KeyboardInterrupt:
        click.echo("metrics exporter stopped")
    except OSError as exc:  # the port is taken, or the interface does not exist
        raise click.UsageError(f"cannot listen on {host}:{port}: {exc}") from exc


@main.command(
    epilog=examples(
        "forecasting-pipeline rerun 49888eea-9ee1-43c0-8d43-18d828768cf8",
    ),
)
@click.argument("run_id")
def rerun(run_id: str) -> None:
    """Re-execute a failed run from its failure, like the UI's "Re-execute from failure".

    Only the steps that did not succeed run again (a step lost with its worker, one that
    crashed), over the same partitions and configuration; the others' outputs are reused. The
    run id is in the error of the command that failed, and on the UI's Runs page.
    """
    from forecasting_pipeline.automation.launch import reexecute_from_failure
    from forecasting_pipeline.operations import require_success

    _deployment()
    instance = _instance()
    try:
        result = reexecute_from_failure(instance, run_id)
    except ValueError as exc:  # an unknown run, or one that did not fail
        raise click.UsageError(str(exc)) from exc
    require_success(result, f"re-execution of run {run_id}")
    click.secho(f"run {result.run_id} re-executed {run_id} from its failure: succeeded", fg="green")


@main.command(
    epilog=examples(
        "FP_EXECUTOR=celery forecasting-pipeline worker --queue cpu",
        "FP_EXECUTOR=celery forecasting-pipeline worker --queue gpu --gpus 0",
        "forecasting-pipeline worker --queue cpu --concurrency 4 --name cpu-a@%h",
    ),
)
@click.option(
    "--queue",
    required=True,
    type=click.Choice(QUEUES),
    help="Queue to serve: `gpu` takes the steps that tune, train and backtest neural models, "
    "`cpu` all others.",
)
@click.option(
    "--concurrency",
    default=1,
    show_default=True,
    type=click.IntRange(min=1),
    help="Steps this worker runs at once. A step already uses several cores (or a whole GPU): raise it only "
    "for spare capacity.",
)
@click.option(
    "--gpus",
    default=None,
    help="GPUs this worker's steps see (CUDA_VISIBLE_DEVICES), e.g. `0` or `0,1`. Default: every GPU of the "
    "host. One worker per GPU scales out; one worker with all GPUs and FP_TRAINING_DEVICES scales one "
    "model up.",
)
@click.option(
    "--name", default=None, help="Worker name in the event log; `%h` is the host. Default: QUEUE@host."
)
@click.option(
    "--loglevel",
    default="INFO",
    show_default=True,
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
    help="Celery's log level (tasks received and finished at INFO).",
)
def worker(queue: str, concurrency: int, gpus: str | None, name: str | None, loglevel: str) -> None:
    """Serve a Celery queue: execute the steps of runs made with FP_EXECUTOR=celery.

    The run's process (the CLI, or the code server for runs launched from the UI) submits each
    step to RabbitMQ (FP_CELERY_BROKER_URL) and waits for it; any worker serving the step's
    queue runs it, on this host or another one that shares the database (FP_DATABASE_URL),
    the intermediates (FP_STORAGE_URI) and the MLflow server (MLFLOW_TRACKING_URI). A worker
    that dies mid-step fails that step after FP_WORKER_LOST_SECONDS; re-execute the run from
    failure once a worker is back. SIGTERM or Ctrl-C lets running steps finish, twice stops now.
    """
    from forecasting_pipeline.execution.worker import (
        device_summary,
        plan_worker,
        run_worker,
        single_host_stores,
    )

    deployment = _deployment()
    settings = load_settings()  # after the deployment exported the database URL
    plan = plan_worker(queue, concurrency, gpus, name)
    plan.apply_devices()
    click.echo(f"worker {plan.name}: queue {queue}, {concurrency} at a time, {device_summary(queue)}")
    broker = _without_password(settings.celery_broker_url)
    click.echo(f"database: {_describe_database(deployment)}; broker: {broker}")
    if settings.executor != "celery":
        click.secho(
            f"note: FP_EXECUTOR={settings.executor} here: runs started from this environment execute their "
            "own steps; this worker serves runs of FP_EXECUTOR=celery processes",
            fg="yellow",
        )
    for note in single_host_stores(settings, deployment.embedded):
        click.secho(f"note: {note}: only workers on this host can share it", fg="yellow")
    run_worker(settings, plan, loglevel.upper())


def _without_password(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL SQLAlchemy parses: show only its scheme
        return url.split("://", 1)[0] + "://…"


@main.command()
@click.option(
    "--output",
    required=True,
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="HTML file to write (one self-contained page: inline images and styles, nothing fetched).",
)
@click.option("--window", default=None, help="Window to report on (default: the newest with forecasts).")
@click.option(
    "--max-series",
    default=12,
    show_default=True,
    type=click.IntRange(min=0),
    help="Series drawn as fan charts (the first by id).",
)
def report(output: Path, window: str | None, max_series: int) -> None:
    """Write an HTML report: leaderboard, champions, fan charts, backtest errors, studies, data quality."""
    from forecasting_pipeline.reporting.report import compose_report
    from forecasting_pipeline.resources.database import DatabaseResource

    deployment = _deployment()
    written = compose_report(
        DatabaseResource(url=deployment.database_url).engine, window=window, max_series=max_series
    )
    if written.window is None:
        raise CliError(
            "no forecasts yet",
            hint="run `forecasting-pipeline demo`, or `forecasting-pipeline forecast`, then report again",
        )
    if not written.has_forecasts:
        raise CliError(
            f"window {written.window} has no forecasts",
            hint=f"the newest window with forecasts is {written.newest_forecast_window}: "
            "leave out --window to report on it",
        )
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(written.html, encoding="utf-8")
    click.echo(
        f"wrote {output} (window {written.window}; plots: {written.plots}, "
        f"fan charts: {len(written.fan_series)})"
    )


if __name__ == "__main__":
    main()
