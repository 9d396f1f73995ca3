"""Which device trains models: the same asset runs on a laptop, in CI and on a GPU node.

One global model may also train on several GPUs of a node (Lightning's data parallelism): each
GPU gets its own process, holding a replica of the model and a share of the series, and the
gradients are averaged after every step. How those processes start matters here, because a fit
runs inside a Dagster step process, a long-lived worker or a thread of a Celery worker:

- `ddp_spawn` starts fresh interpreters with multiprocessing's `spawn` and hands them the pickled
  trainer, model and data. It needs nothing from the command line and works from any thread,
  so it is the one strategy this resource uses for several devices.
- `ddp` (and `deepspeed`, `fsdp`, which launch the same way) starts every other rank by running
  `sys.argv` again: inside a step or a worker that is the step's or the worker's own command, so
  each rank would execute the whole step (database writes, MLflow runs) or start another worker.
- `ddp_fork` / `ddp_notebook` fork the calling process: refused by Lightning once CUDA is
  initialised there (any earlier GPU fit of a long-lived worker, even the previous family of the
  same step) and unsafe in a process with threads (a Celery threads pool, Dagster's own).

`settings.TRAINING_STRATEGIES` lists what a deployment may choose, and says why the rest are
refused.
"""

from __future__ import annotations

from typing import Any, Literal

from dagster import ConfigurableResource
from pydantic import Field, field_validator

ALL_DEVICES = -1  # `devices`: every GPU torch sees (Lightning's own spelling of "all")

# What `strategy="auto"` means with several devices: Lightning's own auto choice would be `ddp`,
# whose launcher re-runs the command line (see the module docstring).
DEFAULT_MULTI_DEVICE_STRATEGY = "ddp_spawn"


class AcceleratorResource(ConfigurableResource):
    """`auto` takes CUDA when torch sees a GPU and falls back to the CPU otherwise."""

    device: Literal["auto", "cuda", "cpu"] = Field(default="auto")
    cuda_precision: Literal["16-mixed", "bf16-mixed", "32-true"] = Field(
        default="16-mixed", description="Lightning precision on CUDA: mixed precision halves memory."
    )
    devices: int = Field(
        default=1,
        description="GPUs that one global model's training uses: a count, or -1 for every GPU torch "
        "sees. Only on CUDA; the CPU always trains in one process.",
    )
    strategy: Literal["auto", "ddp_spawn", "ddp_spawn_find_unused_parameters_true"] = Field(
        default="auto",
        description="Lightning strategy of a training on several GPUs; `auto` is `ddp_spawn`. Use the "
        "`find_unused_parameters_true` variant for a family whose layers are not all used every step.",
    )

    @field_validator("devices")
    @classmethod
    def _a_count_or_all(cls, devices: int) -> int:
        if devices == 0 or devices < ALL_DEVICES:
            raise ValueError(f"devices={devices}: give a positive count or -1 (every GPU)")
        return devices

    def resolve_device(self) -> str:
        import torch  # imported on use: loading definitions must stay fast

        if self.device == "cpu":
            return "cpu"
        available = torch.cuda.is_available()
        if self.device == "cuda" and not available:
            raise RuntimeError("device=cuda was requested but torch sees no CUDA device")
        return "cuda" if available else "cpu"

    def resolve_devices(self) -> int:
        """How many devices one distributed training uses: 1 on the CPU, else the GPUs asked for.

        Asking for more GPUs than torch sees is an error, as `device=cuda` without one is: a step
        that silently trained on fewer would make its timings and its batch size a surprise.
        """
        if self.resolve_device() != "cuda":
            return 1
        import torch

        visible = torch.cuda.device_count()
        if self.devices == ALL_DEVICES:
            return max(visible, 1)
        if self.devices > visible:
            raise RuntimeError(f"devices={self.devices} was requested but torch sees {visible} GPU(s)")
        return self.devices

    def trainer_kwargs(self, *, distributed: bool = False) -> dict[str, Any]:
        """Lightning Trainer arguments for the resolved device.

        One device unless `distributed`: only the training of a global model asks for several,
        since one long fit is what pays for starting a process per GPU (several seconds each:
        every rank imports torch and neuralforecast again and receives a pickled copy of the
        panel) and for the gradient exchange after every step. The other fits stay on one device:

        - hyperparameter trials are many short fits; running trials side by side on separate
          GPUs (more steps or workers in the `gpu` pool) uses the GPUs better, and the pruning
          callback that reports to the Optuna study cannot cross into spawned processes;
        - backtests refit small models fold after fold and run per window and series partition,
          so they scale out the same way;
        - prediction runs on one device anyway: neuralforecast 3.3 predicts on GPU 0 whenever
          torch sees several GPUs, because Lightning's multi-process `predict` returns nothing
          to the calling process (Nixtla/neuralforecast#392 and #1037).

        A model trained on n devices takes n batches per step (each rank draws `batch_size`
        series), so it sees n times the windows of a one-device fit with the same `max_steps`.
        """
        if self.resolve_device() != "cuda":
            return {"accelerator": "cpu", "devices": 1}
        devices = self.resolve_devices() if distributed else 1
        if devices == 1:
            return {"accelerator": "gpu", "devices": 1, "precision": self.cuda_precision}
        strategy = DEFAULT_MULTI_DEVICE_STRATEGY if self.strategy == "auto" else self.strategy
        return {
            "accelerator": "gpu",
            "devices": devices,
            "strategy": strategy,
            "precision": self.cuda_precision,
        }
