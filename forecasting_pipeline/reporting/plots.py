"""Small PNG plots of forecasts, correlations and errors, for Dagster metadata and the HTML report.

Figures are built with matplotlib's object-oriented API on an Agg canvas, never through pyplot:
asset runs that render in threads of one process then share no global figure state, and no GUI
backend is ever picked. Figures are small (7 × 3 in at 90 dpi) so each renders in tens of
milliseconds and a report of a dozen series stays a few hundred kilobytes.

Every `*_figure` function returns the `Figure` (what the tests inspect); the public functions
return its PNG bytes. Empty inputs give a small figure that says "no data" instead of failing,
so a report or a materialization never breaks on a window that has nothing to show yet.
"""

from __future__ import annotations

import base64
import html
import io
import math

import matplotlib
import numpy as np
import polars as pl
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
from matplotlib.figure import Figure

FIGSIZE = (7.0, 3.0)
DPI = 90
# More tick labels than this on a heatmap axis overlap into a black bar: show every k-th.
MAX_LABELS = 30
# Colours: one hue for the forecast and its intervals, so the fan reads as one object.
HISTORY_COLOUR = "#404040"
FORECAST_COLOUR = "#1f5fa8"
ACTUALS_COLOUR = "#d62728"
INTERVAL_LEVELS = (95, 80)  # drawn widest first, so the narrower band sits on top
INTERVAL_ALPHA = {95: 0.15, 80: 0.3}
_CHAR_INCHES = 0.05
# Cells with no value in grey: white is 0 on a diverging map and would read as "no link".
_HEATMAP_COLOURS = matplotlib.colormaps["RdBu_r"].with_extremes(bad="#d9d9d9")


def fan_chart(
    history: pl.DataFrame,
    forecast: pl.DataFrame,
    actuals: pl.DataFrame | None = None,
    *,
    title: str = "",
) -> bytes:
    """PNG of the recent history, the forecast with its 80% and 95% bands, and later actuals.

    `history` and `actuals` have `ds, y`; `forecast` has `ds, y_hat` and any of `lo_80, hi_80,
    lo_95, hi_95` (absent or null bounds draw no band).
    """
    return figure_png(fan_chart_figure(history, forecast, actuals, title=title))


def correlation_heatmap(matrix: pl.DataFrame, *, title: str = "") -> bytes:
    """PNG of a correlation matrix given in long form (`row, column, value` in [-1, 1])."""
    return figure_png(correlation_heatmap_figure(matrix, title=title))


def error_by_horizon(errors: pl.DataFrame, *, title: str = "", metric: str = "MAE") -> bytes:
    """PNG of each model's mean error per horizon step (`model, step, error`): where errors grow."""
    return figure_png(error_by_horizon_figure(errors, title=title, metric=metric))


def markdown_image(png: bytes, alt: str) -> str:
    """An inline Markdown image, for `MetadataValue.md` (the Dagster UI renders data URIs)."""
    escaped = alt.replace("\\", "\\\\").replace("[", "\\[").replace("]", "\\]").replace("\n", " ")
    return f"![{escaped}](data:image/png;base64,{_base64(png)})"


def html_image(png: bytes, alt: str) -> str:
    """An inline `<img>`: the report stays one file that opens anywhere, offline."""
    return f'<img alt="{html.escape(alt, quote=True)}" src="data:image/png;base64,{_base64(png)}">'


def figure_png(figure: Figure) -> bytes:
    """The figure as PNG bytes."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def fan_chart_figure(
    history: pl.DataFrame,
    forecast: pl.DataFrame,
    actuals: pl.DataFrame | None = None,
    *,
    title: str = "",
) -> Figure:
    """The fan chart as a Figure; its lines are labelled `history`, `forecast` and `actuals`."""
    history = _points(history, "y")
    forecast = _points(forecast, "y_hat")
    actuals = _points(actuals, "y")
    if history.height == 0 and forecast.height == 0 and actuals.height == 0:
        return no_data_figure(title)
    figure, axes = _figure(margins=(0.08, 0.8, 0.12, 0.9))
    if history.height:
        axes.plot(
            history["ds"].to_numpy(), _floats(history, "y"), color=HISTORY_COLOUR, lw=1, label="history"
        )
    if forecast.height:
        ds = forecast["ds"].to_numpy()
        for level in INTERVAL_LEVELS:
            lower, upper = f"lo_{level}", f"hi_{level}"
            if lower in forecast.columns and upper in forecast.columns:
                lo, hi = _floats(forecast, lower), _floats(forecast, upper)
                if np.isfinite(lo).any() and np.isfinite(hi).any():
                    axes.fill_between(
                        ds,
                        lo,
                        hi,
                        color=FORECAST_COLOUR,
                        alpha=INTERVAL_ALPHA[level],
                        linewidth=0,
                        label=f"{level}% interval",
                    )
        axes.plot(ds, _floats(forecast, "y_hat"), color=FORECAST_COLOUR, lw=1.3, label="forecast")
    if actuals.height:
        axes.plot(
            actuals["ds"].to_numpy(),
            _floats(actuals, "y"),
            linestyle="none",
            marker="o",
            markersize=2.5,
            color=ACTUALS_COLOUR,
            label="actuals",
        )
    origin = history["ds"].max() if history.height else forecast["ds"].min() if forecast.height else None
    if origin is not None:
        axes.axvline(origin, color="#888888", lw=0.8, linestyle="--", label="forecast origin")
    if _is_temporal(history, forecast, actuals):
        locator = AutoDateLocator(maxticks=8)
        axes.xaxis.set_major_locator(locator)
        axes.xaxis.set_major_formatter(ConciseDateFormatter(locator))
    axes.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=6, frameon=False)
    axes.margins(x=0.01)
    _title(axes, title)
    return figure


def correlation_heatmap_figure(matrix: pl.DataFrame, *, title: str = "") -> Figure:
    """The heatmap as a Figure; more than MAX_LABELS rows or columns show every k-th label."""
    if matrix.height == 0 or not {"row", "column", "value"} <= set(matrix.columns):
        return no_data_figure(title)
    cells = (
        matrix.select(
            pl.col("row").cast(pl.String), pl.col("column").cast(pl.String), pl.col("value").cast(pl.Float64)
        )
        .drop_nulls(["row", "column"])
        .group_by("row", "column", maintain_order=True)
        .agg(pl.col("value").mean())
    )
    if cells.height == 0:
        return no_data_figure(title)
    rows = cells["row"].unique(maintain_order=True).to_list()
    columns = cells["column"].unique(maintain_order=True).to_list()
    indexed = cells.with_columns(
        pl.col("row").replace_strict(rows, range(len(rows)), return_dtype=pl.Int64).alias("i"),
        pl.col("column").replace_strict(columns, range(len(columns)), return_dtype=pl.Int64).alias("j"),
    )
    grid = np.full((len(rows), len(columns)), np.nan)
    grid[indexed["i"].to_numpy(), indexed["j"].to_numpy()] = indexed["value"].fill_null(np.nan).to_numpy()
    height = min(5.0, max(FIGSIZE[1], 1.2 + 0.12 * min(len(rows), MAX_LABELS)))
    # Margins from the longest labels (6 pt text is about 0.05 in a character): a layout engine
    # would measure them exactly but doubles the rendering time.
    left = (0.15 + _CHAR_INCHES * max(len(_short(r)) for r in rows)) / FIGSIZE[0]
    bottom = (0.2 + 0.72 * _CHAR_INCHES * max(len(_short(c)) for c in columns)) / height
    figure, axes = _figure((FIGSIZE[0], height), margins=(left, 0.82, bottom, 1 - 0.35 / height))
    image = axes.imshow(
        np.ma.masked_invalid(grid),
        cmap=_HEATMAP_COLOURS,
        vmin=-1.0,
        vmax=1.0,
        aspect="auto",
        interpolation="nearest",
    )
    x_every = _label_ticks(axes, columns, axis="x")
    y_every = _label_ticks(axes, rows, axis="y")
    if grid.size <= 64:
        _annotate(axes, grid)
    colourbar = figure.colorbar(image, cax=figure.add_axes((0.85, bottom, 0.02, 1 - 0.35 / height - bottom)))
    colourbar.ax.tick_params(labelsize=7)
    skipped = [
        f"{math.ceil(len(labels) / every)} of {len(labels)} {name} labels"
        for every, labels, name in ((x_every, columns, "column"), (y_every, rows, "row"))
        if every > 1
    ]
    _title(axes, f"{title} (showing {'; '.join(skipped)})".strip() if skipped else title)
    return figure


def error_by_horizon_figure(errors: pl.DataFrame, *, title: str = "", metric: str = "MAE") -> Figure:
    """The error-by-step chart as a Figure: one line per model, labelled with the model's name."""
    if errors.height == 0 or not {"model", "step", "error"} <= set(errors.columns):
        return no_data_figure(title)
    means = (
        errors.select(
            pl.col("model").cast(pl.String), pl.col("step").cast(pl.Int64), pl.col("error").cast(pl.Float64)
        )
        .drop_nulls()
        .group_by("model", "step")
        .agg(pl.col("error").mean())
        .sort("model", "step")
    )
    if means.height == 0:
        return no_data_figure(title)
    figure, axes = _figure(margins=(0.08, 0.8, 0.15, 0.9))
    models = means.partition_by("model", maintain_order=True, as_dict=True)
    colours = matplotlib.colormaps["tab10" if len(models) <= 10 else "tab20"]
    for index, ((model,), rows) in enumerate(models.items()):
        axes.plot(
            rows["step"].to_numpy(),
            rows["error"].to_numpy(),
            lw=1.1,
            marker="o" if rows.height <= 30 else None,
            markersize=2,
            color=colours(index % colours.N),
            label=_plain(str(model)),
        )
    axes.set_xlabel("horizon step", fontsize=7)
    axes.set_ylabel(f"mean {metric}", fontsize=7)
    axes.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=6, frameon=False)
    _title(axes, title)
    return figure


def no_data_figure(title: str = "") -> Figure:
    """A small figure saying there is nothing to draw."""
    figure = Figure(figsize=(3.5, 1.0), dpi=DPI)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    axes.axis("off")
    axes.text(0.5, 0.45, "no data", ha="center", va="center", fontsize=9, color="#555555")
    if title:
        axes.set_title(_plain(title), fontsize=8)
    return figure


def _figure(
    figsize: tuple[float, float] = FIGSIZE, *, margins: tuple[float, float, float, float]
) -> tuple[Figure, Axes]:
    """A figure with one axes placed by fixed margins (left, right, bottom, top as fractions)."""
    figure = Figure(figsize=figsize, dpi=DPI)
    FigureCanvasAgg(figure)
    left, right, bottom, top = margins
    figure.subplots_adjust(left=left, right=right, bottom=bottom, top=top)
    axes = figure.add_subplot(1, 1, 1)
    axes.tick_params(labelsize=7)
    axes.grid(True, lw=0.3, alpha=0.5)
    return figure, axes


def _title(axes: Axes, title: str) -> None:
    if title:
        axes.set_title(_plain(title), fontsize=9)


def _plain(label: str) -> str:
    """Text as written: an unescaped `$` (a series id like `$AAPL`) would start matplotlib math."""
    return label.replace("$", r"\$")


def _points(frame: pl.DataFrame | None, value: str) -> pl.DataFrame:
    """The frame's rows with a timestamp, sorted by it; empty (not None) when there are none."""
    if frame is None or frame.height == 0 or "ds" not in frame.columns or value not in frame.columns:
        return pl.DataFrame()
    return frame.filter(pl.col("ds").is_not_null()).sort("ds")


def _floats(frame: pl.DataFrame, column: str) -> np.ndarray:
    """A column as float64 with NaN for nulls: matplotlib leaves gaps at NaN."""
    return frame[column].cast(pl.Float64).fill_null(np.nan).to_numpy()


def _is_temporal(*frames: pl.DataFrame) -> bool:
    return any(frame.height and frame.schema["ds"].is_temporal() for frame in frames)


def _label_ticks(axes: Axes, labels: list[str], *, axis: str) -> int:
    """Tick every label, or every k-th when there are more than MAX_LABELS; returns k."""
    every = max(1, math.ceil(len(labels) / MAX_LABELS))
    positions = range(0, len(labels), every)
    shown = [_short(labels[p]) for p in positions]
    if axis == "x":
        axes.set_xticks(list(positions), shown, fontsize=6, rotation=45, ha="right", rotation_mode="anchor")
    else:
        axes.set_yticks(list(positions), shown, fontsize=6)
    axes.grid(False)
    return every


def _short(label: str, width: int = 18) -> str:
    return _plain(label if len(label) <= width else label[: width - 1] + "…")


def _annotate(axes: Axes, grid: np.ndarray) -> None:
    """Write each cell's value: with a handful of cells the number reads faster than the colour."""
    rows, cols = np.nonzero(np.isfinite(grid))
    for i, j in zip(rows.tolist(), cols.tolist(), strict=True):
        value = float(grid[i, j])
        axes.text(
            j,
            i,
            f"{value:.2f}",
            ha="center",
            va="center",
            fontsize=6,
            color="white" if abs(value) > 0.6 else "black",
        )


def _base64(png: bytes) -> str:
    return base64.b64encode(png).decode("ascii")
