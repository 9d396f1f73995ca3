"""The Kubernetes deployment, checked offline: no cluster, no Helm, no GPU.

`deploy/kubernetes/values.yaml` configures the official Dagster chart, and docs/scale-out.md shows
a `k8s_job_executor` run config. Neither can be applied here, so each part is handed to the code
that consumes it in a cluster: the run launcher's config to `K8sRunLauncher` (its schema, then
its constructor), the executor example to `k8s_job_executor`'s schema, the instance settings to
Dagster's instance schema, and the op tags of every step of the asset graph to dagster-k8s' own
step-job construction, which yields the Kubernetes Job a step would get. What the chart's
templates do between the values and those objects (camelCase keys to the launcher's config, a
code location's container context) is mirrored here from the chart's templates, named where done.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import kubernetes.client
import pytest
import yaml
from dagster import ExecutorDefinition
from dagster._config import process_config
from dagster._core.code_pointer import ModuleCodePointer
from dagster._core.errors import DagsterInvalidConfigError
from dagster._core.execution.api import create_execution_plan
from dagster._core.instance.config import dagster_instance_config_schema, validate_concurrency_config
from dagster._core.origin import JobPythonOrigin, RepositoryPythonOrigin
from dagster._core.storage.dagster_run import DagsterRun
from dagster_k8s import K8sRunLauncher, k8s_job_executor
from dagster_k8s.container_context import K8sContainerContext
from dagster_k8s.job import (
    UserDefinedDagsterK8sConfig,
    construct_dagster_k8s_job,
    get_k8s_job_name,
    get_user_defined_k8s_config,
)

from forecasting_pipeline.assets.conventions import GPU_OP_TAGS
from forecasting_pipeline.settings import REPO_ROOT, VARIABLES, load_settings

VALUES_FILE = REPO_ROOT / "deploy" / "kubernetes" / "values.yaml"
SCALE_OUT_DOC = REPO_ROOT / "docs" / "scale-out.md"
# The fenced YAML block after this marker in docs/scale-out.md is the executor example.
EXECUTOR_EXAMPLE_MARKER = "<!-- k8s-executor-run-config -->"

# Names the chart derives from the release named in values.yaml's install command.
RELEASE = "forecasting"
NAMESPACE = "forecasting"
FULLNAME = f"{RELEASE}-dagster"  # `dagster.fullname` of the main chart
USER_DEPLOYMENTS_FULLNAME = f"{RELEASE}-dagster-user-deployments"  # ... of the subchart
GPU_ASSETS = {"hyperparameter_search", "global_models", "backtest_folds"}
GPU = "nvidia.com/gpu"

# Keys the chart's values schema accepts (helm/dagster/schema in dagster-io/dagster, the chart of
# Dagster 1.13): a misspelt key would be ignored by Helm, silently dropping the setting.
CHART_TOP_LEVEL_KEYS = {
    "global", "dagsterWebserver", "dagster-user-deployments", "postgresql",
    "generatePostgresqlPasswordSecret", "generateCeleryConfigSecret", "rabbitmq", "redis", "flower",
    "ingress", "imagePullSecrets", "computeLogManager", "scheduler", "runLauncher", "pythonLogs",
    "dagsterDaemon", "busybox", "migrate", "telemetry", "serviceAccount", "retention",
    "additionalInstanceConfig", "concurrency",
}  # fmt: skip
CHART_USER_DEPLOYMENT_KEYS = {
    "name", "image", "dagsterApiGrpcArgs", "codeServerArgs", "includeConfigInLaunchedRuns", "port",
    "env", "envConfigMaps", "envSecrets", "annotations", "nodeSelector", "affinity", "tolerations",
    "podSecurityContext", "securityContext", "resources", "livenessProbe", "readinessProbe",
    "startupProbe", "labels", "volumeMounts", "volumes", "schedulerName", "initContainers",
    "sidecarContainers", "service",
}  # fmt: skip
# The chart's `_run-launcher.tpl`: K8sRunLauncher values key -> dagster.yaml run launcher key.
CHART_LAUNCHER_KEYS = {
    "image": "job_image", "imagePullPolicy": "image_pull_policy", "jobNamespace": "job_namespace",
    "loadInclusterConfig": "load_incluster_config", "kubeconfigFile": "kubeconfig_file",
    "envConfigMaps": "env_config_maps", "envSecrets": "env_secrets", "envVars": "env_vars",
    "volumeMounts": "volume_mounts", "volumes": "volumes", "labels": "labels",
    "failPodOnRunFailure": "fail_pod_on_run_failure", "resources": "resources",
    "schedulerName": "scheduler_name", "securityContext": "security_context",
    "runK8sConfig": "run_k8s_config",
}  # fmt: skip
CHART_RUN_K8S_CONFIG_KEYS = {
    "containerConfig": "container_config", "podSpecConfig": "pod_spec_config",
    "podTemplateSpecMetadata": "pod_template_spec_metadata", "jobSpecConfig": "job_spec_config",
    "jobMetadata": "job_metadata",
}  # fmt: skip

# A kubeconfig naming a cluster nobody runs: enough for dagster-k8s to build its API clients,
# which connect only when a job is created.
OFFLINE_KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters: [{name: offline, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: offline, user: {token: offline-placeholder}}]
contexts: [{name: offline, context: {cluster: offline, user: offline, namespace: forecasting}}]
current-context: offline
"""


def _values() -> dict[str, Any]:
    return yaml.safe_load(VALUES_FILE.read_text(encoding="utf-8"))


def _deployment(values: Mapping[str, Any]) -> dict[str, Any]:
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    return deployment


def _names(refs: list[Mapping[str, str]] | None) -> list[str]:
    return [ref["name"] for ref in refs or [] if ref.get("name")]


def run_launcher_config(values: Mapping[str, Any]) -> dict[str, Any]:
    """The `run_launcher.config` the chart renders into the instance's dagster.yaml
    (`dagsterYaml.runLauncher.k8s` in the chart's `_run-launcher.tpl`)."""
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    config: dict[str, Any] = {
        "load_incluster_config": launcher["loadInclusterConfig"],
        "job_namespace": launcher.get("jobNamespace") or NAMESPACE,
        "image_pull_policy": launcher["imagePullPolicy"],
        "service_account_name": FULLNAME,
        "dagster_home": values["global"]["dagsterHome"],
        "instance_config_map": f"{FULLNAME}-instance",
        "postgres_password_secret": values["global"]["postgresqlSecretName"],
    }
    for key, value in launcher.items():
        if key in ("loadInclusterConfig", "jobNamespace", "imagePullPolicy") or value in (None, [], {}):
            continue
        if key in ("envConfigMaps", "envSecrets"):
            value = _names(value)
        elif key == "image":
            value = f"{value['repository']}:{value['tag']}"
        elif key == "runK8sConfig":
            value = {CHART_RUN_K8S_CONFIG_KEYS[k]: v for k, v in value.items() if v}
        config[CHART_LAUNCHER_KEYS[key]] = value
    return config


def code_location_container_context(values: Mapping[str, Any]) -> dict[str, Any]:
    """The container context the chart gives the code location, which dagster-k8s applies to its
    runs and steps (`dagsterUserDeployments.k8sContainerContext` in the subchart's helpers)."""
    deployment = _deployment(values)
    k8s: dict[str, Any] = {
        "image_pull_policy": deployment["image"]["pullPolicy"],
        "env_config_maps": [
            f"{USER_DEPLOYMENTS_FULLNAME}-{deployment['name']}-user-env",
            *_names(deployment.get("envConfigMaps")),
        ],
        "namespace": NAMESPACE,
        "service_account_name": f"{USER_DEPLOYMENTS_FULLNAME}-user-deployments",
        "run_k8s_config": {"pod_spec_config": {"automount_service_account_token": True}},
    }
    if deployment.get("envSecrets"):
        k8s["env_secrets"] = _names(deployment["envSecrets"])
    for chart_key, key in (("volumeMounts", "volume_mounts"), ("volumes", "volumes")):
        if deployment.get(chart_key):
            k8s[key] = deployment[chart_key]
    for key in ("labels", "resources"):
        if deployment.get(key):
            k8s[key] = deployment[key]
    return {"k8s": k8s}


def _image(values: Mapping[str, Any]) -> str:
    image = _deployment(values)["image"]
    return f"{image['repository']}:{image['tag']}"


@pytest.fixture(scope="module")
def kubeconfig(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("kube") / "config"
    path.write_text(OFFLINE_KUBECONFIG, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def launcher(kubeconfig: Path) -> K8sRunLauncher:
    """The run launcher the daemon would build from the chart's dagster.yaml; outside a cluster it
    reads the offline kubeconfig instead of the pod's service account."""
    config = run_launcher_config(_values())
    processed = process_config(K8sRunLauncher.config_type(), config)
    assert processed.success, processed.errors
    offline = {**processed.value, "load_incluster_config": False, "kubeconfig_file": str(kubeconfig)}
    return K8sRunLauncher(**offline)


@pytest.fixture(scope="module")
def step_tags() -> Iterator[dict[str, Mapping[str, str]]]:
    """Each step of the asset graph's job and its tags, as the step handler receives them (plan
    creation resolves the resources' config, so the database URL must exist, not answer)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FP_DATABASE_URL", "postgresql+psycopg2://offline@127.0.0.1:1/offline")
        from forecasting_pipeline.definitions import defs

        plan = create_execution_plan(defs.resolve_job_def("__ASSET_JOB"))
    yield {step.key: step.tags for step in plan.steps}


def step_job(
    launcher: K8sRunLauncher,
    tags: Mapping[str, str],
    step_key: str,
    executor_config: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The Kubernetes Job the k8s_job_executor would create for one step, as the JSON it sends.

    The same calls as `K8sStepHandler.launch_step`: the run's container context (the launcher's
    settings and the code location's), then the executor's `step_k8s_config`, the step's
    `dagster-k8s/config` tags and its `per_step_k8s_config`, turned into a Job by
    `construct_dagster_k8s_job`.
    """
    executor_config = executor_config or {}
    values = _values()
    origin = JobPythonOrigin(
        "__ASSET_JOB",
        RepositoryPythonOrigin(
            executable_path=sys.executable,
            code_pointer=ModuleCodePointer("forecasting_pipeline.definitions", "defs", None),
            container_image=_image(values),
            container_context=code_location_container_context(values),
        ),
    )
    run = DagsterRun(job_name="__ASSET_JOB", run_id="0123456789abcdef", job_code_origin=origin)
    step_defaults = executor_config.get("step_k8s_config", {})
    per_step = executor_config.get("per_step_k8s_config", {}).get(step_key, {})
    context = (
        K8sContainerContext.create_for_run(run, launcher, include_run_tags=False)
        .merge(K8sContainerContext(run_k8s_config=UserDefinedDagsterK8sConfig.from_dict(step_defaults)))
        .merge(K8sContainerContext(run_k8s_config=get_user_defined_k8s_config(tags)))
        .merge(K8sContainerContext(run_k8s_config=UserDefinedDagsterK8sConfig.from_dict(per_step)))
    )
    job_config = context.get_k8s_job_config(None, launcher).with_image(_image(values))
    job_name = f"dagster-step-{get_k8s_job_name(run.run_id, step_key)}"
    job = construct_dagster_k8s_job(
        job_config=job_config,
        args=["dagster", "api", "execute_step"],
        job_name=job_name,
        pod_name=job_name,
        component="step_worker",
        user_defined_k8s_config=context.run_k8s_config,
        labels={"dagster/op": step_key},
    )
    return kubernetes.client.ApiClient().sanitize_for_serialization(job)


def _pod(job: Mapping[str, Any]) -> Mapping[str, Any]:
    return job["spec"]["template"]["spec"]


def _limits(job: Mapping[str, Any]) -> Mapping[str, str]:
    return (_pod(job)["containers"][0].get("resources") or {}).get("limits") or {}


def executor_example() -> dict[str, Any]:
    """The `execution:` run config docs/scale-out.md shows for the k8s_job_executor."""
    text = SCALE_OUT_DOC.read_text(encoding="utf-8")
    assert EXECUTOR_EXAMPLE_MARKER in text, f"docs/scale-out.md lost {EXECUTOR_EXAMPLE_MARKER}"
    block = re.search(r"```yaml\n(.*?)```", text.split(EXECUTOR_EXAMPLE_MARKER, 1)[1], flags=re.DOTALL)
    assert block, "no ```yaml block after the marker"
    return yaml.safe_load(block.group(1))


# --------------------------------------------------------------------------- the chart's values


def test_every_key_of_the_values_file_is_one_the_chart_reads():
    values = _values()
    assert set(values) - CHART_TOP_LEVEL_KEYS == set()
    assert set(_deployment(values)) - CHART_USER_DEPLOYMENT_KEYS == set()
    assert set(values["runLauncher"]["config"]["k8sRunLauncher"]) - set(CHART_LAUNCHER_KEYS) == set()
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    assert values["dagsterDaemon"]["runCoordinator"]["type"] == "QueuedRunCoordinator"
    assert values["postgresql"]["enabled"] is False, "the database is external, never the chart's"


def test_dagster_home_is_the_images_own_writable_folder():
    """Steps write their captured output under DAGSTER_HOME as the image's unprivileged user."""
    dockerfile = (REPO_ROOT / "Dockerfile").read_text(encoding="utf-8")
    image_home = re.search(r"DAGSTER_HOME=(\S+)", dockerfile)
    assert image_home, "the Dockerfile no longer sets DAGSTER_HOME"
    assert _values()["global"]["dagsterHome"] == image_home.group(1)
    assert 'chown -R dagster:dagster "${DAGSTER_HOME}"' in dockerfile


def test_the_code_location_runs_this_project_with_the_k8s_executor_and_shared_storage():
    deployment = _deployment(_values())
    assert deployment["dagsterApiGrpcArgs"] == ["-m", "forecasting_pipeline.definitions"]
    env = deployment["env"]
    settings = load_settings({**env, "FP_DATABASE_URL": "postgresql+psycopg2://u@db/forecasting"})
    assert settings.executor == "k8s"
    assert env["FP_STORAGE_URI"].startswith("s3://")
    assert set(env) <= {variable.name for variable in VARIABLES}, "only documented settings"
    mounted = {mount["mountPath"] for mount in deployment["volumeMounts"]}
    assert env["FP_HOME"] in mounted, "FP_HOME (the landing folder) must be the shared volume"


def test_no_secret_is_written_in_the_values_file():
    values = _values()
    env = _deployment(values)["env"]
    assert not {"FP_DATABASE_URL", "MLFLOW_TRACKING_URI"} & set(env), "these come from the Secret"
    assert _names(_deployment(values)["envSecrets"]) == ["forecasting-pipeline-env"]
    assert "postgresqlPassword" not in values["postgresql"]
    assert values["generatePostgresqlPasswordSecret"] is False
    text = VALUES_FILE.read_text(encoding="utf-8")
    assert not re.search(r"(?i)(password|token|secret_access_key)\s*:\s*\S", text)
    assert not re.search(r"://[^/\s:@]+:[^/\s@]+@", text), "a URL with credentials"


# --------------------------------------------------------------------------- the run launcher


def test_the_run_launcher_config_is_valid_for_k8s_run_launcher(launcher: K8sRunLauncher):
    assert launcher.fail_pod_on_run_failure is True
    assert launcher.postgres_password_secret == "forecasting-dagster-pg"
    assert launcher.run_k8s_config["job_spec_config"] == {"ttlSecondsAfterFinished": 86400}


def test_the_schema_check_rejects_a_misspelt_key():
    config = run_launcher_config(_values())
    assert process_config(K8sRunLauncher.config_type(), config).success
    config["run_k8s_config"] = {"pod_spec": {}}
    assert not process_config(K8sRunLauncher.config_type(), config).success


def instance_settings(values: Mapping[str, Any]) -> dict[str, Any]:
    """The run queue, run monitoring and concurrency parts of the instance's dagster.yaml as the
    chart renders them (`_run-coordinator.tpl`, `_concurrency.tpl`, `configmap-instance.yaml`)."""
    daemon = values["dagsterDaemon"]
    queued = (daemon["runCoordinator"].get("config") or {}).get("queuedRunCoordinator") or {}
    monitoring = daemon["runMonitoring"]
    concurrency = values["concurrency"]
    coordinator: dict[str, Any] = {"module": "dagster.core.run_coordinator", "class": "QueuedRunCoordinator"}
    own_limits = {
        "max_concurrent_runs": queued.get("maxConcurrentRuns"),
        "tag_concurrency_limits": queued.get("tagConcurrencyLimits"),
    }
    if any(value is not None for value in own_limits.values()):
        coordinator["config"] = {key: value for key, value in own_limits.items() if value is not None}
    return {
        "run_coordinator": coordinator,
        "run_monitoring": {
            "enabled": monitoring["enabled"],
            "start_timeout_seconds": monitoring["startTimeoutSeconds"],
            "max_resume_run_attempts": monitoring["maxResumeRunAttempts"],
            "poll_interval_seconds": monitoring["pollIntervalSeconds"],
            "free_slots_after_run_end_seconds": monitoring["freeSlotsAfterRunEndSeconds"],
        },
        "concurrency": {
            "pools": {"default_limit": concurrency["pools"]["defaultLimit"]},
            "runs": {"max_concurrent_runs": concurrency["runs"]["maxConcurrentRuns"]},
        },
    }


def test_the_instance_settings_pass_dagsters_instance_schema():
    values = _values()
    assert values["concurrency"]["enabled"] is True
    instance = instance_settings(values)
    processed = process_config(dagster_instance_config_schema(), instance)
    assert processed.success, processed.errors
    validate_concurrency_config(instance)
    assert processed.value["concurrency"]["pools"]["default_limit"] == 1
    assert processed.value["run_monitoring"]["max_resume_run_attempts"] == 0


def test_dagster_refuses_the_run_queues_own_limit_beside_a_concurrency_block():
    """Why values.yaml leaves maxConcurrentRuns of the run coordinator unset."""
    values = _values()
    values["dagsterDaemon"]["runCoordinator"]["config"] = {"queuedRunCoordinator": {"maxConcurrentRuns": 8}}
    with pytest.raises(DagsterInvalidConfigError):
        validate_concurrency_config(instance_settings(values))


# --------------------------------------------------------------------------- the steps' pods


def test_gpu_steps_get_a_gpu_limit_and_tolerate_gpu_nodes(launcher, step_tags):
    assert set(step_tags) >= GPU_ASSETS
    for step_key in sorted(GPU_ASSETS):
        job = step_job(launcher, step_tags[step_key], step_key)
        assert _limits(job)[GPU] == "1", step_key
        tolerations = _pod(job)["tolerations"]
        assert {"key": GPU, "operator": "Exists", "effect": "NoSchedule"} in tolerations


def test_the_gpu_limit_adds_to_the_code_locations_resources_and_keeps_its_secret_and_volume(
    launcher, step_tags
):
    job = step_job(launcher, step_tags["global_models"], "global_models")
    container = _pod(job)["containers"][0]
    assert container["resources"]["requests"] == {"cpu": "1", "memory": "4Gi"}
    assert container["resources"]["limits"] == {"memory": "16Gi", GPU: "1"}
    assert {"secretRef": {"name": "forecasting-pipeline-env"}} in container["envFrom"]
    assert {"name": "forecasting-home", "mountPath": "/var/lib/forecasting"} in container["volumeMounts"]
    assert _pod(job)["securityContext"] == {"fsGroup": 10001}
    assert job["spec"]["ttlSecondsAfterFinished"] == 86400
    assert container["image"] == _image(_values())


def test_cpu_steps_ask_for_no_gpu_and_stay_off_gpu_nodes(launcher, step_tags):
    cpu_steps = sorted(set(step_tags) - GPU_ASSETS)
    assert {"training_panel", "local_models", "predictions"} <= set(cpu_steps)
    for step_key in cpu_steps:
        job = step_job(launcher, step_tags[step_key], step_key)
        assert GPU not in _limits(job), step_key
        assert not _pod(job).get("tolerations"), step_key


def test_the_gpu_op_tags_are_a_valid_pod_fragment_for_the_kubernetes_client():
    k8s = GPU_OP_TAGS["dagster-k8s/config"]
    (toleration,) = k8s["pod_spec_config"]["tolerations"]
    assert kubernetes.client.V1Toleration(**toleration).key == GPU
    requirements = kubernetes.client.V1ResourceRequirements(**k8s["container_config"]["resources"])
    assert requirements.limits == {GPU: "1"}
    with pytest.raises(TypeError):
        kubernetes.client.V1Toleration(**{**toleration, "effekt": "NoSchedule"})


# --------------------------------------------------------------------------- the executor


def test_the_documented_executor_config_is_valid_for_k8s_job_executor(launcher, step_tags):
    example = executor_example()
    config = example["execution"]["config"]
    processed = process_config(k8s_job_executor.config_schema.config_type, config)
    assert processed.success, processed.errors
    per_step = config["per_step_k8s_config"]
    assert set(per_step) <= set(step_tags), "per_step_k8s_config names steps of the asset graph"
    # The example trains one run's global models on four GPUs of one accelerator type: its node
    # selector, GPU limit and FP_TRAINING_DEVICES override the op tags' single GPU in the pod.
    override = per_step["global_models"]
    job = step_job(launcher, step_tags["global_models"], "global_models", config)
    assert _pod(job)["nodeSelector"] == override["pod_spec_config"]["node_selector"]
    gpus = override["container_config"]["resources"]["limits"][GPU]
    assert _limits(job)[GPU] == gpus != "1"
    assert {"name": "FP_TRAINING_DEVICES", "value": gpus} in _pod(job)["containers"][0]["env"]
    # Every other step keeps one GPU (or none) and gets the example's larger requests.
    other = step_job(launcher, step_tags["backtest_folds"], "backtest_folds", config)
    assert _limits(other)[GPU] == "1" and "nodeSelector" not in _pod(other)
    requests = config["step_k8s_config"]["container_config"]["resources"]["requests"]
    assert _pod(other)["containers"][0]["resources"]["requests"] == requests
    broken = {**config, "step_k8s_config": {"container": {}}}
    assert not process_config(k8s_job_executor.config_schema.config_type, broken).success


def test_fp_executor_k8s_selects_dagster_k8s_job_executor():
    from forecasting_pipeline.execution.executors import executor_for

    chosen = executor_for(load_settings({"FP_EXECUTOR": "k8s"}))
    assert isinstance(chosen, ExecutorDefinition)
    assert chosen is k8s_job_executor
    assert executor_for(load_settings({"FP_EXECUTOR": "local"})) is None
