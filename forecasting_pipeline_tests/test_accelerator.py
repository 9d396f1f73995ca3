"""Unit tests of device selection for training."""

from __future__ import annotations

import pytest
import torch

from forecasting_pipeline.resources.accelerator import AcceleratorResource

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
