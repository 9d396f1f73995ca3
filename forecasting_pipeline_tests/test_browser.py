"""The Dagster UI in a real browser: what a user sees after the pipeline ran.

The bundled data is forecast with tiny models on this module's PostgreSQL instance; then
`dagster-webserver` and `dagster-daemon` start on that instance, exactly as a deployment runs
them, and headless Chromium (Debian's package, driven by Playwright) opens the asset graph, a
partitions page and a predictions materialization with its fan chart. Screenshots go to
FP_SCREENSHOT_DIR (default: test-artifacts/screenshots in the repository). A backfill launched
through the webserver's GraphQL API must then finish with success under the daemon.

A separate CI step (`pytest -m browser`): it needs Chromium, and starts Dagster's processes.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from forecasting_pipeline.settings import REPO_ROOT
from forecasting_pipeline_tests import dagster_processes
from forecasting_pipeline_tests.conftest import ingest_and_forecast, query_frame, scalar

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("FP_CHROMIUM", "/usr/bin/chromium")
# Chromium's background services try to reach Google; this network refuses them, noisily.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WINDOW = "2016-10-30"
SERIES = ("BE", "FR")
STAGES = ("ingest", "features", "studies", "training", "evaluation", "forecast", "monitoring")
# Node labels the graph shows in full (longer names are shortened with an ellipsis).
UPSTREAM_OF_PREDICTIONS = (
    "raw_observations",
    "correlation_study",
    "granger_study",
    "training_panel",
    "global_models",
    "local_models",
    "backtest_folds",
    "model_selection",
    "predictions",
)
CATALOG = (*UPSTREAM_OF_PREDICTIONS, "feature_table", "feature_effects", "forecast_accuracy")


@pytest.fixture(scope="module")
def screenshots() -> Path:
    folder = Path(os.environ.get("FP_SCREENSHOT_DIR") or REPO_ROOT / "test-artifacts" / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def forecast(deployment, instance):
    return ingest_and_forecast(deployment, instance)


@pytest.fixture(scope="module")
def services(forecast, deployment, tmp_path_factory) -> Iterator[int]:
    """Webserver and daemon on the module's instance (its DAGSTER_HOME and database)."""
    port = dagster_processes.free_port()
    folder = tmp_path_factory.mktemp("services")
    env = {**os.environ, "MLFLOW_LOGGING_LEVEL": "WARNING"}
    bin_dir = dagster_processes.BIN
    workspace = ["-w", dagster_processes.WORKSPACE]
    webserver_log = (folder / "webserver.log").open("w")
    daemon_log = (folder / "daemon.log").open("w")
    webserver = dagster_processes.start(
        [str(bin_dir / "dagster-webserver"), *workspace, "-h", "127.0.0.1", "-p", str(port)],
        env,
        webserver_log,
    )
    daemon = dagster_processes.start([str(bin_dir / "dagster-daemon"), "run", *workspace], env, daemon_log)
    try:
        dagster_processes.wait_for_assets(port, webserver)
        yield port
    finally:
        dagster_processes.stop(webserver)
        dagster_processes.stop(daemon)
        webserver_log.close()
        daemon_log.close()


@pytest.fixture(scope="module")
def browser(services) -> Iterator[Any]:
    if not Path(CHROMIUM).exists() and not shutil.which(CHROMIUM):
        pytest.fail(f"no Chromium at {CHROMIUM}: apt-get install chromium (or set FP_CHROMIUM)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, services):
    context = browser.new_context(
        viewport={"width": 1400, "height": 1000}, base_url=f"http://127.0.0.1:{services}"
    )
    page = context.new_page()
    page.set_default_timeout(60_000)
    yield page
    context.close()


def _metadata_row(page, key: str):
    """The metadata table's row of entry `key` (its first cell is exactly the key)."""
    return page.locator(f'xpath=//tr[td[1][normalize-space(.)="{key}"]]').first


def test_the_asset_graph_shows_every_stage_and_the_catalog_every_asset(page, screenshots):
    page.goto("/asset-groups")  # the global lineage: one box per stage
    for stage in STAGES:
        page.get_by_text(stage, exact=True).first.wait_for()
    page.screenshot(path=str(screenshots / "asset-groups.png"))

    # What predictions are made from, asset by asset, inside their stages.
    page.goto("/assets/predictions?view=lineage&lineageScope=upstream&lineageDepth=8")
    for asset in UPSTREAM_OF_PREDICTIONS:
        page.get_by_text(asset, exact=True).first.wait_for()
    page.wait_for_timeout(1000)  # let the graph settle before the picture
    page.screenshot(path=str(screenshots / "asset-graph.png"))

    page.goto("/assets")
    for asset in CATALOG:
        page.locator("a", has_text=asset).first.wait_for()
    page.screenshot(path=str(screenshots / "asset-catalog.png"))


def test_a_partition_page_shows_that_cells_own_counts(page, screenshots, db_engine):
    observations = scalar(
        db_engine,
        "SELECT rows FROM forecasting.cell_versions WHERE series_id = 'FR' AND window_key = :w",
        w=WINDOW,
    )
    page.goto(f"/assets/raw_observations?view=partitions&partition={WINDOW}%7CFR")
    page.get_by_text("Materialized", exact=False).first.wait_for()
    row = _metadata_row(page, "observations")
    row.wait_for()
    page.screenshot(path=str(screenshots / "raw-observations-partitions.png"), full_page=True)
    assert str(observations) in row.inner_text()
    for series_id in SERIES:
        assert page.get_by_text(series_id, exact=True).count() > 0


def test_a_predictions_materialization_renders_its_fan_chart(page, screenshots, db_engine):
    champion = scalar(
        db_engine,
        "SELECT DISTINCT model_name FROM forecasting.published_forecasts "
        "WHERE series_id = 'FR' AND window_key = :w",
        w=WINDOW,
    )
    page.goto(f"/assets/predictions?view=partitions&partition={WINDOW}%7CFR")
    champion_row = _metadata_row(page, "champion")
    champion_row.wait_for()
    assert champion in champion_row.inner_text()
    _metadata_row(page, "fan_chart").get_by_text("Show Markdown").click()
    chart = page.get_by_role("dialog").locator("img").first
    chart.wait_for()
    width, height, loaded = chart.evaluate("img => [img.naturalWidth, img.naturalHeight, img.complete]")
    page.screenshot(path=str(screenshots / "predictions-fan-chart.png"))
    assert loaded and width > 300 and height > 150
    assert chart.get_attribute("alt") == f"FR: {champion}, window {WINDOW}"


def test_a_backfill_launched_through_graphql_succeeds_under_the_daemon(services, instance, db_engine):
    keys = [f"{WINDOW}|{series_id}" for series_id in SERIES]
    before = query_frame(
        db_engine, "SELECT DISTINCT dagster_run_id FROM forecasting.features WHERE window_key = :w", w=WINDOW
    )
    launched = dagster_processes.graphql(
        services,
        dagster_processes.BACKFILL_MUTATION,
        {"assets": [{"path": ["feature_table"]}, {"path": ["granger_study"]}], "partitions": keys},
    )["launchPartitionBackfill"]
    assert launched["__typename"] == "LaunchBackfillSuccess", launched
    status_query = """
    query($id: String!) { partitionBackfillOrError(backfillId: $id) {
      ... on PartitionBackfill { status runs(limit: 10) { runId status } } } }
    """
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        backfill = dagster_processes.graphql(services, status_query, {"id": launched["backfillId"]})[
            "partitionBackfillOrError"
        ]
        if backfill["status"] not in ("REQUESTED", "CANCELING", "FAILING"):
            break
        time.sleep(3)
    assert backfill["status"] in ("COMPLETED", "COMPLETED_SUCCESS"), backfill
    assert backfill["runs"] and all(run["status"] == "SUCCESS" for run in backfill["runs"]), backfill
    after = query_frame(
        db_engine, "SELECT DISTINCT dagster_run_id FROM forecasting.features WHERE window_key = :w", w=WINDOW
    )
    # The features of both cells were rewritten by the backfill's run, not left from the demo's.
    assert set(after["dagster_run_id"]) <= {run["runId"] for run in backfill["runs"]}
    assert set(after["dagster_run_id"]).isdisjoint(set(before["dagster_run_id"]))
