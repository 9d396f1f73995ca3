"""What a tuning or training step cost: wall time, peak memory, device."""

from __future__ import annotations

import resource
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass
class Usage:
    device: str
    wall_seconds: float = 0.0
    peak_rss_mb: float = 0.0
    gpu_peak_mb: float | None = None


@contextmanager
def measure(device: str) -> Iterator[Usage]:
    """Measure the enclosed work; on CUDA the GPU's peak allocation is reset first.

    Peak RSS is the process's high-water mark (the kernel keeps no per-interval peak): in a
    step that trains several families it is the largest so far, which is what sizing needs.
    """
    usage = Usage(device)
    cuda = device == "cuda"
    if cuda:
        import torch

        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    try:
        yield usage
    finally:
        usage.wall_seconds = time.perf_counter() - started
        usage.peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        if cuda:
            import torch

            usage.gpu_peak_mb = torch.cuda.max_memory_allocated() / 2**20
