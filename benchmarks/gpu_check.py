"""GPU check for a lent GPU node: one small global model through the pipeline's own training path.

Trains the catalog's NHITS on a synthetic panel with the `AcceleratorResource` the deployment
would build (device=cuda), first on one GPU, then (if torch sees more than one) on every GPU
with the spawned processes `FP_TRAINING_DEVICES=all` gives, and predicts after each fit, as
`global_models` does. Prints device, GPU count, strategy, precision, fit and predict time, and
checks that every series got a full forecast (neuralforecast predicts on one GPU after a
multi-GPU fit). Not run in CI; about a minute on one GPU:

    .venv/bin/python benchmarks/gpu_check.py [--series 2000] [--steps 200] [--precision 16-mixed]

Exit status 0 when every fit and prediction succeeded, 1 otherwise.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import pandas as pd


def synthetic_panel(series: int, length: int, seed: int = 7) -> pd.DataFrame:
    """Daily series with a weekly cycle, a trend and noise, each on its own scale."""
    rng = np.random.default_rng(seed)
    t = np.arange(length)
    ds = pd.date_range("2023-01-01", periods=length, freq="D")
    frames = []
    for i in range(series):
        level = rng.uniform(10, 1000)
        y = level * (1 + 0.2 * np.sin(2 * np.pi * t / 7) + 0.001 * t) + rng.normal(0, 0.05 * level, length)
        frames.append(pd.DataFrame({"unique_id": f"s{i:05d}", "ds": ds, "y": y}))
    return pd.concat(frames, ignore_index=True)


def check(label: str, devices: int, args: argparse.Namespace, panel: pd.DataFrame) -> bool:
    from forecasting_pipeline.modeling.catalog import NeuralShape
    from forecasting_pipeline.modeling.fitting import fit_neural_model, predict_neural
    from forecasting_pipeline.resources.accelerator import AcceleratorResource
    from forecasting_pipeline.resources.model_catalog import ModelCatalogResource

    accelerator = AcceleratorResource(device="cuda", devices=devices, cuda_precision=args.precision)
    trainer_kwargs = accelerator.trainer_kwargs(distributed=True)
    (spec,) = ModelCatalogResource().catalog().neural(["NHITS"])
    shape = NeuralShape(
        horizon=args.horizon,
        input_size=4 * args.horizon,
        max_steps=args.steps,
        seed=1,
        trainer_kwargs=trainer_kwargs,
    )
    print(
        f"[{label}] device={accelerator.resolve_device()} devices={trainer_kwargs['devices']} "
        f"strategy={trainer_kwargs.get('strategy', 'single device')} precision={trainer_kwargs['precision']} "
        f"series={panel['unique_id'].nunique()} steps={args.steps}",
        flush=True,
    )
    try:
        started = time.perf_counter()
        fit = fit_neural_model(panel, spec, {"batch_size": args.batch_size}, shape, "D")
        fitted = time.perf_counter() - started
        started = time.perf_counter()
        forecast = predict_neural(fit, None)
        predicted = time.perf_counter() - started
    except Exception as exc:  # report and go on to the next configuration
        print(f"[{label}] FAILED: {type(exc).__name__}: {exc}", flush=True)
        return False
    per_series = forecast.groupby("unique_id").size()
    complete = len(per_series) == panel["unique_id"].nunique() and bool((per_series == args.horizon).all())
    print(
        f"[{label}] fit {fitted:.1f} s ({args.steps / fitted:.1f} steps/s), predict {predicted:.1f} s, "
        f"loss points {len(fit.train_losses)}, forecasts complete: {complete}",
        flush=True,
    )
    return complete


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=2000)
    parser.add_argument("--length", type=int, default=400)
    parser.add_argument("--horizon", type=int, default=14)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--precision", default="16-mixed", choices=["16-mixed", "bf16-mixed", "32-true"])
    args = parser.parse_args()

    import torch

    if not torch.cuda.is_available():
        print("torch sees no CUDA device: nothing to check here", flush=True)
        return 1
    gpus = torch.cuda.device_count()
    names = ", ".join(torch.cuda.get_device_name(i) for i in range(gpus))
    print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {gpus} GPU(s): {names}", flush=True)
    panel = synthetic_panel(args.series, args.length)
    ok = check("one GPU", 1, args, panel)
    if gpus > 1:
        ok = check(f"all {gpus} GPUs", -1, args, panel) and ok
    else:
        print("one GPU only: the multi-GPU fit (FP_TRAINING_DEVICES=all) is not exercised", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":  # the guard ddp_spawn needs: each spawned rank imports this module again
    sys.exit(main())
