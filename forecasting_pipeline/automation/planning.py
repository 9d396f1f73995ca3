"""Turn the set of changed series × window cells into as few partition-range runs as it takes.

A run covers a rectangle: a range of windows × a range of series in the order their keys were
added (Dagster's order for dynamic partitions). Cells are grouped by the windows they need; the
series of a group are split where their positions leave a hole wider than `max_gap` — filling a
small hole (re-running unchanged cells, which changes nothing) is cheaper than another run.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

# A run costs about a second of fixed work; an extra unchanged cell about 20-30 ms of bookkeeping.
DEFAULT_MAX_GAP = 16


@dataclass(frozen=True)
class Rectangle:
    first_window: str
    last_window: str
    series_keys: list[str]  # contiguous in partition order: first..last is the run's range


def _runs(positions: np.ndarray, max_gap: int) -> list[tuple[int, int]]:
    """Split sorted integer positions into [first, last] runs where the gap exceeds `max_gap`."""
    if positions.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(positions) > max_gap + 1)
    starts = np.concatenate([[0], breaks + 1])
    ends = np.concatenate([breaks, [positions.size - 1]])
    return [(int(positions[s]), int(positions[e])) for s, e in zip(starts, ends, strict=True)]


def plan_rectangles(
    cells: pl.DataFrame, series_order: list[str], window_order: list[str], max_gap: int = DEFAULT_MAX_GAP
) -> list[Rectangle]:
    """Rectangles covering every (partition_key, window_key) of `cells`."""
    if cells.height == 0:
        return []
    series_position = pl.DataFrame(
        {"partition_key": series_order, "series_pos": np.arange(len(series_order))},
        schema={"partition_key": pl.Utf8, "series_pos": pl.Int64},
    )
    window_position = pl.DataFrame(
        {"window_key": window_order, "window_pos": np.arange(len(window_order))},
        schema={"window_key": pl.Utf8, "window_pos": pl.Int64},
    )
    located = cells.join(series_position, on="partition_key").join(window_position, on="window_key")
    # Each series needs a contiguous window range from its first to its last changed window.
    spans = located.group_by("series_pos").agg(
        pl.col("window_pos").min().alias("first"), pl.col("window_pos").max().alias("last")
    )
    rectangles: list[Rectangle] = []
    for (first, last), group in spans.group_by(["first", "last"], maintain_order=True):
        positions = np.sort(group["series_pos"].to_numpy())
        for low, high in _runs(positions, max_gap):
            rectangles.append(
                Rectangle(window_order[first], window_order[last], series_order[low : high + 1])
            )
    return sorted(rectangles, key=lambda r: (r.first_window, r.series_keys[0]))
