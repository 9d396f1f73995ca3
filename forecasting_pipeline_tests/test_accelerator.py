"""Unit tests of device selection for training: which device, and how many GPUs one fit uses."""

from __future__ import annotations

from typing import get_args

import pytest
import torch

from forecasting_pipeline.resources.accelerator import ALL_DEVICES, AcceleratorResource
from forecasting_pipeline.settings import TRAINING_STRATEGIES, SettingsError, load_settings

no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="asserts behaviour without a GPU")


def test_default_device_is_auto():
    assert AcceleratorResource().device == "auto"


@no_gpu
def test_auto_falls_back_to_cpu_without_a_gpu():
    accelerator = AcceleratorResource(device="auto")
    assert accelerator.resolve_device() == "cpu"
    assert accelerator.trainer_kwargs() == {"accelerator": "cpu", "devices": 1}


@no_gpu
def test_cuda_without_a_gpu_is_an_error():
    with pytest.raises(RuntimeError, match="device=cuda"):
        AcceleratorResource(device="cuda").resolve_device()


def test_cpu_is_honoured_whatever_the_hardware():
    accelerator = AcceleratorResource(device="cpu")
    assert accelerator.resolve_device() == "cpu"
    assert accelerator.trainer_kwargs() == {"accelerator": "cpu", "devices": 1}


# The branches for the other kind of machine, with torch's answer pinned.


@pytest.mark.parametrize("device", ["auto", "cuda"])
def test_a_visible_gpu_is_used(monkeypatch: pytest.MonkeyPatch, device: str):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    accelerator = AcceleratorResource(device=device)
    assert accelerator.resolve_device() == "cuda"
    assert accelerator.trainer_kwargs() == {"accelerator": "gpu", "devices": 1, "precision": "16-mixed"}


def test_cpu_wins_over_a_visible_gpu(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert AcceleratorResource(device="cpu").trainer_kwargs() == {"accelerator": "cpu", "devices": 1}


def test_auto_without_a_visible_gpu(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert AcceleratorResource(device="auto").resolve_device() == "cpu"
    with pytest.raises(RuntimeError):
        AcceleratorResource(device="cuda").trainer_kwargs()


# Several GPUs for one global model: settings, then the Trainer arguments they become.


def test_training_devices_and_strategy_default_to_one_gpu_and_auto():
    settings = load_settings({})
    assert (settings.training_devices, settings.training_strategy) == (1, "auto")


@pytest.mark.parametrize(
    ("raw", "devices"), [("1", 1), ("4", 4), ("all", ALL_DEVICES), (" ALL ", ALL_DEVICES)]
)
def test_training_devices_is_a_count_or_all(raw: str, devices: int):
    assert load_settings({"FP_TRAINING_DEVICES": raw}).training_devices == devices


@pytest.mark.parametrize("raw", ["0", "-1", "two", "1.5", "auto"])
def test_a_device_count_that_is_not_positive_or_all_is_refused(raw: str):
    with pytest.raises(SettingsError, match=r"FP_TRAINING_DEVICES=.*positive count or all"):
        load_settings({"FP_TRAINING_DEVICES": raw})


@pytest.mark.parametrize("raw", ["auto", "ddp_spawn", "DDP_Spawn", "ddp_spawn_find_unused_parameters_true"])
def test_spawning_strategies_are_accepted(raw: str):
    assert load_settings({"FP_TRAINING_STRATEGY": raw}).training_strategy == raw.lower()


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("ddp", "re-running this process's command line"),
        ("ddp_find_unused_parameters_true", "re-running this process's command line"),
        ("deepspeed_stage_2", "re-running this process's command line"),
        ("fsdp", "re-running this process's command line"),
        ("ddp_fork", "forks the worker process"),
        ("ddp_notebook", "forks the worker process"),
        ("ddp_spawn_find_unused_parameters_false", "only spawn variants"),
    ],
)
def test_strategies_unsafe_inside_a_worker_are_refused_with_the_reason(raw: str, reason: str):
    with pytest.raises(SettingsError, match=rf"FP_TRAINING_STRATEGY='{raw}' is refused: .*{reason}"):
        load_settings({"FP_TRAINING_STRATEGY": raw})


@pytest.mark.parametrize("raw", ["dp", "horovod", "single_device"])
def test_an_unknown_strategy_names_the_choices(raw: str):
    with pytest.raises(SettingsError, match="expected one of auto, ddp_spawn, ddp_spawn_find_unused"):
        load_settings({"FP_TRAINING_STRATEGY": raw})


def test_the_resource_offers_exactly_the_strategies_settings_accept():
    field = AcceleratorResource.model_fields["strategy"]
    assert set(get_args(field.annotation)) == set(TRAINING_STRATEGIES)


def test_the_deployment_resource_gets_devices_and_strategy_from_settings():
    from forecasting_pipeline.definitions import build_resources

    settings = load_settings({"FP_TRAINING_DEVICES": "all", "FP_TRAINING_STRATEGY": "ddp_spawn"})
    accelerator = build_resources(settings)["accelerator"]
    assert isinstance(accelerator, AcceleratorResource)
    assert (accelerator.devices, accelerator.strategy) == (ALL_DEVICES, "ddp_spawn")


@pytest.fixture
def four_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)


@pytest.mark.usefixtures("four_gpus")
@pytest.mark.parametrize(("devices", "used"), [(2, 2), (4, 4), (ALL_DEVICES, 4)])
def test_a_global_model_trains_on_the_gpus_asked_for_with_spawned_processes(devices: int, used: int):
    kwargs = AcceleratorResource(devices=devices).trainer_kwargs(distributed=True)
    assert kwargs == {"accelerator": "gpu", "devices": used, "strategy": "ddp_spawn", "precision": "16-mixed"}


@pytest.mark.usefixtures("four_gpus")
def test_the_chosen_spawn_strategy_and_precision_are_passed_on():
    accelerator = AcceleratorResource(
        devices=2, strategy="ddp_spawn_find_unused_parameters_true", cuda_precision="bf16-mixed"
    )
    kwargs = accelerator.trainer_kwargs(distributed=True)
    assert kwargs["strategy"] == "ddp_spawn_find_unused_parameters_true"
    assert kwargs["precision"] == "bf16-mixed"


@pytest.mark.usefixtures("four_gpus")
def test_trials_backtests_and_predictions_keep_one_gpu_whatever_devices_says():
    # They ask without `distributed`: many short fits, each better on a GPU of its own.
    kwargs = AcceleratorResource(devices=ALL_DEVICES, strategy="ddp_spawn").trainer_kwargs()
    assert kwargs == {"accelerator": "gpu", "devices": 1, "precision": "16-mixed"}


@pytest.mark.usefixtures("four_gpus")
def test_more_gpus_than_the_node_has_is_an_error():
    with pytest.raises(RuntimeError, match=r"devices=8 was requested but torch sees 4 GPU\(s\)"):
        AcceleratorResource(devices=8).trainer_kwargs(distributed=True)


def test_every_gpu_of_a_one_gpu_node_is_a_plain_single_device_fit(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    kwargs = AcceleratorResource(devices=ALL_DEVICES).trainer_kwargs(distributed=True)
    assert kwargs == {"accelerator": "gpu", "devices": 1, "precision": "16-mixed"}  # no process spawned


@pytest.mark.parametrize("devices", [2, ALL_DEVICES])
def test_the_cpu_fallback_trains_in_one_process(monkeypatch: pytest.MonkeyPatch, devices: int):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    accelerator = AcceleratorResource(devices=devices, strategy="ddp_spawn")
    assert accelerator.resolve_devices() == 1
    assert accelerator.trainer_kwargs(distributed=True) == {"accelerator": "cpu", "devices": 1}


@pytest.mark.usefixtures("four_gpus")
def test_cpu_wins_over_several_visible_gpus():
    accelerator = AcceleratorResource(device="cpu", devices=4)
    assert accelerator.trainer_kwargs(distributed=True) == {"accelerator": "cpu", "devices": 1}


@pytest.mark.parametrize("devices", [0, -2])
def test_a_device_count_of_the_resource_that_means_nothing_is_an_error(devices: int):
    with pytest.raises(ValueError, match=rf"devices={devices}: give a positive count or -1"):
        AcceleratorResource(device="cpu", devices=devices)
