"""The one Definitions object: what it wires, and that Dagster's own validator accepts it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from dagster import AssetKey, BackfillPolicy

from forecasting_pipeline.definitions import defs
from forecasting_pipeline.settings import REPO_ROOT

SLICE = [
    "raw_observations",
    "observation_history",
    "feature_table",
    "correlation_study",
    "granger_study",
    "training_panel",
    "hyperparameter_search",
    "global_models",
    "local_models",
    "backtest_folds",
    "model_selection",
    "predictions",
    "feature_effects",
    "forecast_accuracy",
]


def test_the_vertical_slice_is_wired_left_to_right():
    graph = defs.resolve_asset_graph()
    assert {key.to_user_string() for key in graph.get_all_asset_keys()} == set(SLICE)
    parents = {name: {p.to_user_string() for p in graph.get(AssetKey(name)).parent_keys} for name in SLICE}
    assert parents == {
        "raw_observations": set(),
        "observation_history": {"raw_observations"},
        "feature_table": {"raw_observations"},
        "correlation_study": {"observation_history"},
        "granger_study": {"raw_observations", "correlation_study"},
        "training_panel": {"observation_history", "granger_study"},
        "hyperparameter_search": {"training_panel"},
        "global_models": {"training_panel", "hyperparameter_search"},
        "local_models": {"training_panel", "hyperparameter_search"},
        "backtest_folds": {"global_models", "local_models"},
        "model_selection": {"backtest_folds"},
        "predictions": {"model_selection"},
        "feature_effects": {"predictions"},
        "forecast_accuracy": {"raw_observations", "predictions"},
    }
    (check,) = [key for key in graph.asset_check_keys if key.asset_key == AssetKey("model_selection")]
    assert check.name == "promotions_confirmed"


def test_every_asset_batches_a_backfill_into_one_run_and_training_uses_the_gpu_pool():
    for name in SLICE:
        policy = defs.resolve_assets_def(name).backfill_policy
        # The history version is per window (its data version), so one window per run.
        expected = (
            BackfillPolicy.multi_run(1) if name == "observation_history" else BackfillPolicy.single_run()
        )
        assert policy == expected, name
    for name in ("global_models", "hyperparameter_search", "backtest_folds"):
        op = defs.resolve_assets_def(name).op
        assert op.pool == "gpu"
        # Tags a distributed executor routes on: dagster-k8s container limits and a Celery queue.
        k8s = json.loads(op.tags["dagster-k8s/config"])  # Dagster keeps tag values as JSON text
        limits = k8s["container_config"]["resources"]["limits"]
        assert limits == {"nvidia.com/gpu": "1"} and op.tags["dagster-celery/queue"] == "gpu"
    assert "dagster-celery/queue" not in defs.resolve_assets_def("local_models").op.tags
    for job in (
        "ingest_observations",
        "study_correlations",
        "study_series",
        "train_models",
        "publish_forecasts",
        "measure_feature_effects",
    ):
        assert defs.resolve_job_def(job) is not None


def test_the_database_url_is_an_env_var_not_a_literal():
    database = defs.resources["database"]
    assert "FP_DATABASE_URL" in repr(database) and "postgresql" not in repr(database)


def test_dagster_definitions_validate_passes(deployment):
    env = {**os.environ, "FP_DATABASE_URL": deployment.database_url}
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "dagster",
            "definitions",
            "validate",
            "-w",
            str(REPO_ROOT / "workspace.yaml"),
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "All code locations passed validation" in completed.stderr + completed.stdout


def test_code_versions_are_derived_from_the_code_that_computes_each_asset():
    from forecasting_pipeline.assets import training, tuning
    from forecasting_pipeline.assets.conventions import _code_parts, derive_code_version

    versions = {name: defs.resolve_assets_def(name).code_versions_by_key[AssetKey(name)] for name in SLICE}
    assert len(set(versions.values())) == len(SLICE), versions
    assert "0.1.0" not in versions.values()
    body = training.global_models.op.compute_fn.decorated_fn
    assert versions["global_models"] == derive_code_version(body)
    assert derive_code_version(body, "anything else") != versions["global_models"]
    # What counts: the body, the helpers of its module it reaches, the package modules they use.
    sources, modules = _code_parts(body)
    assert any("def _train_neural(" in source for source in sources)
    assert {"forecasting_pipeline.modeling.fitting", "forecasting_pipeline.storage.predictions"} <= {
        module.__name__ for module in modules
    }
    # Modules an asset imports lazily (to keep Optuna out of definitions loading) count too.
    search_source = Path(tuning.__file__).parent.parent.joinpath("modeling", "search.py").read_text()
    tune_body = tuning.hyperparameter_search.op.compute_fn.decorated_fn
    assert versions["hyperparameter_search"] == derive_code_version(tune_body, search_source)


def test_the_gpu_pool_limit_comes_from_configuration_and_is_never_reset(instance, deployment):
    from dataclasses import replace

    from forecasting_pipeline.bootstrap import apply_pool_limits

    storage = instance.event_log_storage
    storage.set_concurrency_slots("gpu", 3)  # an operator's choice in the UI
    apply_pool_limits(instance, replace(deployment.settings, gpu_pool_limit=None))
    assert storage.get_concurrency_info("gpu").slot_count == 3
    apply_pool_limits(instance, replace(deployment.settings, gpu_pool_limit=2))
    assert storage.get_concurrency_info("gpu").slot_count == 2


def test_every_asset_reads_well_in_the_catalog():
    """Stage groups, a description, an owner, kinds and a code version on every asset."""
    graph = defs.resolve_asset_graph()
    stages = {"ingest", "features", "studies", "training", "evaluation", "forecast", "monitoring"}
    for key in graph.get_all_asset_keys():
        spec = graph.get(key)
        name = key.to_user_string()
        assert spec.group_name in stages, name
        assert spec.description and len(spec.description) > 40, name
        assert spec.owners == ["team:forecasting"], name
        assert spec.kinds, name
        assert spec.code_version, name
    assert {graph.get(k).group_name for k in graph.get_all_asset_keys()} == stages
