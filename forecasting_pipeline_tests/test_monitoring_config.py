"""The monitoring stack's configuration, checked offline: Prometheus, its alerts, Grafana, compose.

Every metric an alert, an alert test or a dashboard panel names must be one the exporter serves
(`catalogue.BY_NAME`), with labels it has: a renamed metric or label would otherwise leave an
alert that never fires or a panel that stays empty, and nothing would say so. Every alert has a
runbook section in docs/monitoring.md and unit tests that make it fire and keep it quiet.
promtool and docker-compose check what they can when installed (`.ci/run` installs both); the
rest needs neither.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from forecasting_pipeline.monitoring.catalogue import BY_NAME, METRICS
from forecasting_pipeline.settings import REPO_ROOT

MONITORING = REPO_ROOT / "deploy" / "monitoring"
PROMETHEUS_CONFIG = MONITORING / "prometheus.yml"
ALERTS = MONITORING / "alerts.yml"
ALERTS_TEST = MONITORING / "alerts_test.yml"
GRAFANA = MONITORING / "grafana"
DATASOURCES = GRAFANA / "provisioning" / "datasources" / "prometheus.yml"
DASHBOARD_PROVIDERS = GRAFANA / "provisioning" / "dashboards" / "dashboards.yml"
DASHBOARD = GRAFANA / "dashboards" / "forecasting-pipeline.json"
COMPOSE = REPO_ROOT / "docker-compose.yml"
GPU_COMPOSE = REPO_ROOT / "docker-compose.gpu.yml"
DOC = REPO_ROOT / "docs" / "monitoring.md"

SCRAPE_JOB = "forecasting-pipeline"
# Labels Prometheus gives every scraped series; with honor_labels a metric's own `job` wins.
TARGET_LABELS = frozenset({"job", "instance"})
REQUIRED_ALERTS = {
    "PipelineRunFailed",
    "PipelineJobFailing",
    "DatasetStale",
    "BlockingCheckFailing",
    "AccuracyDrift",
    "IntervalCoverageOffNominal",
    "MetricsExporterDown",
    "MetricsSectionFailing",
}
SEVERITIES = {"page", "ticket"}
# Catalogue metrics no dashboard panel shows, each with its reason. Empty: every one is shown.
NOT_ON_DASHBOARD: dict[str, str] = {}

METRIC_NAME = re.compile(r"\bfp_[a-z0-9_]+\b")
SELECTOR = re.compile(r"\b(fp_[a-z0-9_]+)\s*\{([^}]*)\}")
MATCHER_LABEL = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")
QUOTED = re.compile(r"\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*'")
GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
TEMPLATE_LABEL = re.compile(r"\$labels\.([a-zA-Z_][a-zA-Z0-9_]*)")
LEGEND_LABEL = re.compile(r"\{\{\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}")
SERIES = re.compile(r"^\s*([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(?:\{(.*)\})?\s*$")
SERIES_LABEL = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*\"(?:[^\"\\]|\\.)*\"")
RUNBOOK = re.compile(r"^docs/monitoring\.md#([a-z0-9-]+)$")
DOC_LINK = re.compile(r"\]\(((?:[a-z0-9_-]+\.md)?)#([a-z0-9-]+)\)")


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _rules() -> list[dict[str, Any]]:
    (group,) = _yaml(ALERTS)["groups"]
    assert group["name"] == "forecasting-pipeline"
    return group["rules"]


def _dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def _panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, rows included, and the panels of collapsed rows."""
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def _targets(dashboard: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for panel in _panels(dashboard):
        for target in panel.get("targets", []):
            yield panel["title"], target


def _services() -> dict[str, Any]:
    return _yaml(COMPOSE)["services"]  # PyYAML resolves the `<<: *app` merge keys


def _provisioned_uid() -> str:
    (datasource,) = _yaml(DATASOURCES)["datasources"]
    return datasource["uid"]


def _scrape_config() -> dict[str, Any]:
    (job,) = [job for job in _yaml(PROMETHEUS_CONFIG)["scrape_configs"] if job["job_name"] == SCRAPE_JOB]
    return job


def _mounts(service: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """Container path -> (source, mode) of a service's short-syntax volumes."""
    mounts = {}
    for volume in service.get("volumes", []):
        source, target, *mode = volume.split(":")
        mounts[target] = (source, mode[0] if mode else "rw")
    return mounts


# --------------------------------------------------------------------------- PromQL, by regex


def _without_strings(expr: str) -> str:
    return QUOTED.sub('""', expr)


def _metrics_in(text: str) -> set[str]:
    """fp_ names anywhere, quoted ones included: annotations run queries written as strings."""
    return set(METRIC_NAME.findall(text))


def _label_problems(expr: str, where: str) -> list[str]:
    """Labels an expression matches on or groups by that none of its fp_ metrics has.

    A regex reading, not a PromQL parser: selector matchers are checked against their metric,
    `by`/`on`/`ignoring`/`without`/`group_*` lists against the labels of all the expression's
    fp_ metrics together (plus those Prometheus adds). Enough to catch a renamed label.
    """
    problems = []
    metrics = _metrics_in(expr)
    for name in sorted(metrics - set(BY_NAME)):
        problems.append(f"{where}: {name} is not in the catalogue")
    for name, matchers in SELECTOR.findall(expr):
        if name in BY_NAME:
            known = set(BY_NAME[name].labels) | TARGET_LABELS
            for label in MATCHER_LABEL.findall(_without_strings(matchers)):
                if label not in known:
                    problems.append(f"{where}: {name} has no label {label!r}")
    available = set(TARGET_LABELS)
    for name in metrics & set(BY_NAME):
        available |= set(BY_NAME[name].labels)
    for labels in GROUPING.findall(_without_strings(expr)):
        for label in filter(None, (part.strip() for part in labels.split(","))):
            if label not in available:
                problems.append(f"{where}: no metric of the expression has label {label!r}")
    return problems


def _output_labels(expr: str) -> set[str]:
    labels = set(TARGET_LABELS)
    for name in _metrics_in(expr) & set(BY_NAME):
        labels |= set(BY_NAME[name].labels)
    return labels


# --------------------------------------------------------------------------- markdown anchors


def _anchors(path: Path) -> set[str]:
    """GitHub's anchors of a markdown file's headings (fenced code is not a heading)."""
    anchors, fenced = set(), False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and (heading := re.match(r"^#{1,6}\s+(.*?)\s*$", line)):
            text = re.sub(r"[^\w\- ]", "", heading.group(1).lower())
            anchors.add(text.replace(" ", "-"))
    return anchors


# --------------------------------------------------------------------------- alert rules


def test_every_required_alert_exists_with_severity_annotations_and_for():
    rules = _rules()
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names)), "an alert is defined twice"
    assert set(names) >= REQUIRED_ALERTS
    for rule in rules:
        assert set(rule) == {"alert", "expr", "for", "labels", "annotations"}, rule["alert"]
        assert rule["labels"]["severity"] in SEVERITIES, rule["alert"]
        assert {"summary", "description", "runbook"} <= set(rule["annotations"]), rule["alert"]
        assert re.fullmatch(r"\d+[smh]", rule["for"]), f"{rule['alert']}: for {rule['for']!r}"


def test_alerts_name_only_catalogue_metrics_and_their_labels():
    problems = []
    for rule in _rules():
        where = f"alert {rule['alert']}"
        problems += _label_problems(rule["expr"], where)
        labels = _output_labels(rule["expr"])
        for name, text in rule["annotations"].items():
            problems += _label_problems(text, f"{where}, annotation {name}")
            problems += [
                f"{where}, annotation {name}: $labels.{label} is not a label of its series"
                for label in TEMPLATE_LABEL.findall(text)
                if label not in labels
            ]
    assert problems == []


def test_the_thresholds_come_from_the_exporter_not_the_rule():
    """FP_STALE_DATA_AFTER_HOURS and FP_DRIFT_THRESHOLD change the alerts without a rule edit."""
    expr = {rule["alert"]: rule["expr"] for rule in _rules()}
    assert "fp_dataset_stale_after_seconds" in expr["DatasetStale"]
    assert "fp_drift_threshold_ratio" in expr["AccuracyDrift"]
    assert "fp_forecast_interval_nominal_coverage" in expr["IntervalCoverageOffNominal"]
    assert 'up{job="forecasting-pipeline"}' in expr["MetricsExporterDown"]


def test_every_runbook_is_a_section_of_the_monitoring_doc():
    anchors = _anchors(DOC)
    for rule in _rules():
        runbook = RUNBOOK.match(rule["annotations"]["runbook"])
        assert runbook, f"{rule['alert']}: runbook must be docs/monitoring.md#<section>"
        assert runbook.group(1) == rule["alert"].lower(), "the section is named after the alert"
        assert runbook.group(1) in anchors, f"docs/monitoring.md has no section {runbook.group(1)}"


def _alert_cases() -> Iterator[tuple[str, bool]]:
    for test in _yaml(ALERTS_TEST)["tests"]:
        for case in test.get("alert_rule_test", []):
            yield case["alertname"], bool(case.get("exp_alerts"))


def test_every_alert_has_unit_tests_that_fire_it_and_keep_it_quiet():
    cases = set(_alert_cases())
    for rule in _rules():
        assert (rule["alert"], True) in cases, f"no test makes {rule['alert']} fire"
        assert (rule["alert"], False) in cases, f"no test where {rule['alert']} must stay quiet"
    assert {name for name, _ in cases} <= {rule["alert"] for rule in _rules()}, "a test of no alert"


def test_alert_test_series_look_like_scraped_catalogue_metrics():
    """The input series carry exactly the labels a scrape gives them: the metric's own plus
    instance and job, so a test cannot pass on a label the exporter does not serve."""
    tests = _yaml(ALERTS_TEST)["tests"]
    assert _yaml(ALERTS_TEST)["rule_files"] == ["alerts.yml"]
    problems = []
    for test in tests:
        for item in test["input_series"]:
            parsed = SERIES.match(item["series"])
            assert parsed, item["series"]
            name, labels = parsed.group(1), set(SERIES_LABEL.findall(parsed.group(2) or ""))
            if name == "up":
                continue
            if name not in BY_NAME:
                problems.append(f"{test['name']}: {name} is not in the catalogue")
            elif labels != set(BY_NAME[name].labels) | TARGET_LABELS:
                problems.append(f"{test['name']}: {name} with labels {sorted(labels)}")
        for case in test.get("promql_expr_test", []):
            problems += _label_problems(case["expr"], test["name"])
    assert problems == []


PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not on PATH (Debian: apt-get install prometheus; .ci/run does)"
)


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)


@needs_promtool
def test_promtool_accepts_the_prometheus_config_and_its_rule_file():
    checked = _promtool("check", "config", str(PROMETHEUS_CONFIG))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    checked = _promtool("check", "rules", str(ALERTS))
    assert checked.returncode == 0, checked.stdout + checked.stderr


@needs_promtool
def test_the_alert_rules_pass_their_unit_tests():
    tested = _promtool("test", "rules", str(ALERTS_TEST))
    assert tested.returncode == 0, tested.stdout + tested.stderr


@needs_promtool
def test_every_panel_query_is_valid_promql(tmp_path):
    """Grafana shows a broken query as an error on one panel; promtool parses them all here,
    each as a recording rule."""
    rules = [
        {"record": f"dashboard:panel_{i}", "expr": target["expr"]}
        for i, (_, target) in enumerate(_targets(_dashboard()))
    ]
    path = tmp_path / "panels.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "panels", "rules": rules}]}), encoding="utf-8")
    checked = _promtool("check", "rules", str(path))
    assert checked.returncode == 0, checked.stdout + checked.stderr


# --------------------------------------------------------------------------- Prometheus


def test_prometheus_scrapes_the_metrics_service_every_minute_and_loads_the_alerts():
    config = _yaml(PROMETHEUS_CONFIG)
    job = _scrape_config()
    assert job.get("scrape_interval", config["global"]["scrape_interval"]) == "60s"
    assert job.get("metrics_path", "/metrics") == "/metrics"
    (static,) = job["static_configs"]
    assert static["targets"] == [f"metrics:{_metrics_port()}"], "the compose service and its --port"
    assert config["rule_files"] == [ALERTS.name]
    # Relative rule files resolve against the config's folder: mounted side by side.
    mounts = _mounts(_services()["prometheus"])
    config_target = next(t for t, (s, _) in mounts.items() if s.endswith(PROMETHEUS_CONFIG.name))
    assert mounts[str(Path(config_target).parent / ALERTS.name)][0].endswith(ALERTS.name)


def test_prometheus_keeps_the_run_metrics_job_label():
    """Without honor_labels the Dagster job label of the run metrics becomes `exported_job`,
    and every alert and panel reading `job` would see the scrape job instead."""
    if any(TARGET_LABELS & set(spec.labels) for spec in METRICS):
        assert _scrape_config().get("honor_labels") is True


# --------------------------------------------------------------------------- docker-compose


def _metrics_port() -> int:
    command = _services()["metrics"]["command"]
    return int(command[command.index("--port") + 1])


def _published_on_loopback_only(service: dict[str, Any]) -> bool:
    return all(str(port).startswith("127.0.0.1:") for port in service.get("ports", []))


def test_the_metrics_service_is_the_app_serving_the_exporter_inside_the_network():
    services = _services()
    metrics = services["metrics"]
    command = metrics["command"]
    assert command[:2] == ["forecasting-pipeline", "metrics"]
    assert command[command.index("--host") + 1] == "0.0.0.0", "Prometheus reaches it from its container"
    # The same image, environment and volumes as the other app services (the `*app` anchor).
    for key in ("image", "environment", "volumes"):
        assert metrics[key] == services["code-server"][key], key
    assert metrics["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert _published_on_loopback_only(metrics)


def test_prometheus_and_grafana_are_pinned_published_on_loopback_and_mount_the_repository_config():
    services = _services()
    volumes = set(_yaml(COMPOSE)["volumes"])
    prometheus, grafana = services["prometheus"], services["grafana"]
    assert re.fullmatch(r"prom/prometheus:v\d+\.\d+\.\d+", prometheus["image"])
    assert re.fullmatch(r"grafana/grafana:11\.\d+\.\d+", grafana["image"])
    assert prometheus["ports"] == ["127.0.0.1:9090:9090"]
    assert grafana["ports"] == ["127.0.0.1:3001:3000"], "3000 on the host is the Dagster UI"
    repo_files = {
        "prometheus": {
            "./deploy/monitoring/prometheus.yml": PROMETHEUS_CONFIG,
            "./deploy/monitoring/alerts.yml": ALERTS,
        },
        "grafana": {
            "./deploy/monitoring/grafana/provisioning": GRAFANA / "provisioning",
            "./deploy/monitoring/grafana/dashboards": DASHBOARD.parent,
        },
    }
    for name, expected in repo_files.items():
        mounted = {source: mode for source, mode in _mounts(services[name]).values()}
        for source, path in expected.items():
            assert path.exists(), path
            assert mounted.get(source) == "ro", f"{name} mounts {source} read-only"
        data = [source for source in mounted if not source.startswith(".")]
        assert data and set(data) <= volumes, f"{name} keeps its data in a named volume"


def test_grafana_takes_its_admin_password_from_the_environment_only():
    raw = _services()["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"]
    assert raw.startswith("${GRAFANA_ADMIN_PASSWORD:?"), "required, never defaulted"
    env_example = (REPO_ROOT / ".env.example").read_text(encoding="utf-8")
    assert re.search(r"^GRAFANA_ADMIN_PASSWORD=", env_example, flags=re.MULTILINE)


def test_no_credentials_in_the_monitoring_files():
    for path in sorted(MONITORING.rglob("*")):
        if path.is_file():
            text = path.read_text(encoding="utf-8")
            assert not re.search(r"(?i)(password|secret|token|api_?key)\s*[:=]\s*[\"']?\w", text), path
            assert not re.search(r"://[^/\s:@]+:[^/\s@]+@", text), f"{path}: a URL with credentials"


DOCKER_COMPOSE = shutil.which("docker-compose")


def _compose_config(tmp_path: Path, *files: Path, **variables: str) -> subprocess.CompletedProcess[str]:
    """`docker-compose config` with only the given variables: an empty env file keeps a
    developer's `.env` out of it."""
    empty = tmp_path / "empty.env"
    empty.write_text("", encoding="utf-8")
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), **variables}
    args = [DOCKER_COMPOSE, "--env-file", str(empty)]
    for path in files:
        args += ["-f", str(path)]
    return subprocess.run(
        [*args, "config"], capture_output=True, text=True, timeout=120, cwd=REPO_ROOT, env=env
    )


PASSWORDS = {
    "POSTGRES_PASSWORD": "placeholder",
    "RABBITMQ_PASSWORD": "placeholder",
    "GRAFANA_ADMIN_PASSWORD": "placeholder",
}


@pytest.mark.skipif(DOCKER_COMPOSE is None, reason="docker-compose not on PATH (.ci/run installs it)")
@pytest.mark.parametrize("files", [(COMPOSE,), (COMPOSE, GPU_COMPOSE)], ids=["cpu", "gpu"])
def test_docker_compose_accepts_the_stack_with_the_monitoring_services(tmp_path, files):
    rendered = _compose_config(tmp_path, *files, **PASSWORDS)
    assert rendered.returncode == 0, rendered.stderr
    services = yaml.safe_load(rendered.stdout)["services"]
    assert {"metrics", "prometheus", "grafana"} <= set(services)
    assert services["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"] == "placeholder"
    assert "forecasting-pipeline metrics" in " ".join(services["metrics"]["command"])


@pytest.mark.skipif(DOCKER_COMPOSE is None, reason="docker-compose not on PATH (.ci/run installs it)")
def test_docker_compose_refuses_to_start_grafana_without_an_admin_password(tmp_path):
    without = {k: v for k, v in PASSWORDS.items() if k != "GRAFANA_ADMIN_PASSWORD"}
    rendered = _compose_config(tmp_path, COMPOSE, **without)
    assert rendered.returncode != 0
    assert "GRAFANA_ADMIN_PASSWORD" in rendered.stderr


# --------------------------------------------------------------------------- Grafana


def test_grafana_is_provisioned_with_the_compose_prometheus_and_the_dashboard_folder():
    (datasource,) = _yaml(DATASOURCES)["datasources"]
    assert datasource["type"] == "prometheus" and datasource["uid"]
    assert datasource["url"] == "http://prometheus:9090", "the compose service and its port"
    (provider,) = _yaml(DASHBOARD_PROVIDERS)["providers"]
    assert provider["type"] == "file"
    mounts = _mounts(_services()["grafana"])
    assert mounts[provider["options"]["path"]][0] == "./deploy/monitoring/grafana/dashboards"


def test_the_dashboard_has_its_uid_unique_panel_ids_and_no_overlapping_panels():
    dashboard = _dashboard()
    assert dashboard["uid"] == "forecasting-pipeline"
    assert dashboard["schemaVersion"] >= 39
    panels = list(_panels(dashboard))
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), "duplicate panel ids"
    cells: dict[tuple[int, int], str] = {}
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]


def test_every_panel_queries_the_provisioned_datasource():
    uid = _provisioned_uid()
    for panel in _panels(_dashboard()):
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": uid}, panel["title"]
        assert panel["targets"], f"{panel['title']} has no query"
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == uid, panel["title"]


def test_panels_name_only_catalogue_metrics_and_their_labels():
    problems = []
    for title, target in _targets(_dashboard()):
        problems += _label_problems(target["expr"], f"panel {title!r}")
        labels = _output_labels(target["expr"])
        problems += [
            f"panel {title!r}: legend {{{{{label}}}}} is not a label of {target['expr']}"
            for label in LEGEND_LABEL.findall(target.get("legendFormat", ""))
            if label not in labels
        ]
    assert problems == []


def _used_metrics(exprs: Iterable[str]) -> set[str]:
    return set().union(*(_metrics_in(expr) for expr in exprs))


def test_every_catalogue_metric_is_on_the_dashboard():
    used = _used_metrics(target["expr"] for _, target in _targets(_dashboard()))
    assert set(NOT_ON_DASHBOARD) <= set(BY_NAME), "an exception for a metric that does not exist"
    assert not set(NOT_ON_DASHBOARD) & used, "an exception for a metric the dashboard shows"
    assert set(BY_NAME) - set(NOT_ON_DASHBOARD) - used == set()


# --------------------------------------------------------------------------- the operator doc


def test_the_doc_describes_every_metric_and_has_a_section_per_alert():
    text = DOC.read_text(encoding="utf-8")
    assert [spec.name for spec in METRICS if f"`{spec.name}`" not in text] == []
    anchors = _anchors(DOC)
    assert [rule["alert"] for rule in _rules() if rule["alert"].lower() not in anchors] == []


def test_the_docs_links_to_sections_resolve():
    text = DOC.read_text(encoding="utf-8")
    links = DOC_LINK.findall(text)
    assert links, "found no section link: parse broken?"
    for page, anchor in links:
        target = DOC.parent / page if page else DOC
        assert anchor in _anchors(target), f"{page or DOC.name}#{anchor}"


def test_the_doc_names_real_commands():
    """Every `forecasting-pipeline X` the runbooks tell an operator to type is a CLI command."""
    from forecasting_pipeline.cli import main

    commands = set(re.findall(r"forecasting-pipeline ([a-z][a-z-]*)", DOC.read_text(encoding="utf-8")))
    assert commands - set(main.commands) == set()
