"""Which device trains models: the same asset runs on a laptop, in CI and on a GPU node."""

from __future__ import annotations

from typing import Any, Literal

from dagster import ConfigurableResource
from pydantic import Field


class AcceleratorResource(ConfigurableResource):
    """`auto` takes CUDA when torch sees a GPU and falls back to the CPU otherwise."""

    device: Literal["auto", "cuda", "cpu"] = Field(default="auto")
    cuda_precision: Literal["16-mixed", "bf16-mixed", "32-true"] = Field(
        default="16-mixed", description="Lightning precision on CUDA: mixed precision halves memory."
    )

    def resolve_device(self) -> str:
        import torch  # imported on use: loading definitions must stay fast

        if self.device == "cpu":
            return "cpu"
        available = torch.cuda.is_available()
        if self.device == "cuda" and not available:
            raise RuntimeError("device=cuda was requested but torch sees no CUDA device")
        return "cuda" if available else "cpu"

    def trainer_kwargs(self) -> dict[str, Any]:
        """Lightning Trainer arguments for the resolved device."""
        if self.resolve_device() == "cuda":
            return {"accelerator": "gpu", "devices": 1, "precision": self.cuda_precision}
        return {"accelerator": "cpu", "devices": 1}
