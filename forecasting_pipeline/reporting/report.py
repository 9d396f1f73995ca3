"""One self-contained HTML page of a deployment: what it forecasts, how well, why, and from what data.

The page is written for someone without access to the Dagster UI or the database: every image
is an inline PNG, the styles are inline, and nothing is fetched when it opens (no scripts, no
external URLs), so it can be mailed or archived as one file. It reads the domain tables in one
read-only, repeatable-read transaction, so a pipeline run writing meanwhile cannot make one
section disagree with another. Every list is capped in SQL with its full count beside it, and
every text from the data is escaped.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import polars as pl
from sqlalchemy import Connection, Engine

from forecasting_pipeline.reporting import plots
from forecasting_pipeline.storage import reports
from forecasting_pipeline.storage.backtests import leaderboard_rows
from forecasting_pipeline.storage.catalog import known_series
from forecasting_pipeline.storage.studies import (
    driver_selection_rows,
    feature_importance_rows,
    granger_report,
)

RANK_METRIC = "mase"
# Lists a person reads: longer ones are cut, with the full count said.
MAX_TABLE_ROWS = 200
MAX_FILES = 50
# Error-by-horizon plots: the best candidates of each group, and at most this many groups.
MAX_MODELS_PER_PLOT = 10
MAX_GROUPS = 6
# Series in the series × driver heatmap (the plot labels at most 30 of them).
MAX_HEATMAP_SERIES = 60
ADJUSTED_P_THRESHOLD = 0.05


@dataclass(frozen=True)
class FanChart:
    """What one fan chart draws: the inputs of `plots.fan_chart` for one series."""

    series_id: str
    model_name: str
    cutoff: datetime
    interval_method: str
    history: pl.DataFrame  # ds, y
    forecast: pl.DataFrame  # ds, y_hat, lo_80, hi_80, lo_95, hi_95
    actuals: pl.DataFrame  # ds, y

    @property
    def title(self) -> str:
        return f"{self.series_id}: {self.model_name} from {self.cutoff:%Y-%m-%d %H:%M}"


@dataclass(frozen=True)
class FanCharts:
    total_series: int
    charts: list[FanChart]


@dataclass
class Report:
    """The document, and what a caller needs to say about it without parsing it back."""

    html: str
    window: str | None  # None: the deployment has no forecasts yet
    has_forecasts: bool  # the window has predictions
    plots: int
    newest_forecast_window: str | None  # of the deployment, whatever window was asked for
    fan_series: list[str] = field(default_factory=list)


def build_report(engine: Engine, *, window: str | None = None, max_series: int = 12) -> str:
    """The report of `window` (default: the newest window with predictions) as one HTML document."""
    return compose_report(engine, window=window, max_series=max_series).html


def compose_report(engine: Engine, *, window: str | None = None, max_series: int = 12) -> Report:
    """The report with what the CLI says about it (window, plot count, whether there was anything)."""
    with engine.connect() as conn:
        conn.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
        with conn.begin():
            return _compose(conn, window, max(0, max_series))


def fan_chart_inputs(
    conn: Connection, window: str, max_series: int, series_ids: Sequence[str] | None = None
) -> FanCharts:
    """The published forecasts of the window's first `max_series` series (by id; of `series_ids`
    when given), each with its recent history and the actuals that arrived after its origin."""
    data = reports.fan_data(conn, window, max_series, series_ids=series_ids)
    history = data.history.partition_by("series_id", as_dict=True)
    actuals = data.actuals.partition_by("series_id", as_dict=True)
    empty = pl.DataFrame(schema={"ds": pl.Datetime("us"), "y": pl.Float64})
    charts = []
    for (series_id,), forecast in data.forecasts.partition_by("series_id", as_dict=True).items():
        first = forecast.row(0, named=True)
        charts.append(
            FanChart(
                series_id=str(series_id),
                model_name=first["model_name"],
                cutoff=first["cutoff"],
                interval_method=first["interval_method"],
                history=history.get((series_id,), empty).select("ds", "y"),
                forecast=forecast.select(
                    "ds", pl.col("yhat").alias("y_hat"), "lo_80", "hi_80", "lo_95", "hi_95"
                ),
                actuals=actuals.get((series_id,), empty).select("ds", "y"),
            )
        )
    return FanCharts(data.total_series, charts)


class _Page:
    """The document being written, and how many plots it holds."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.plots = 0

    def add(self, *parts: str) -> None:
        self.parts.extend(parts)

    def image(self, png: bytes, alt: str, caption: str = "", css_class: str = "plot", **data: str) -> None:
        self.plots += 1
        attributes = "".join(f' data-{name}="{_e(value)}"' for name, value in data.items())
        caption_html = f"<figcaption>{_e(caption)}</figcaption>" if caption else ""
        self.add(
            f'<figure class="{css_class}"{attributes}>{plots.html_image(png, alt)}{caption_html}</figure>'
        )


def _compose(conn: Connection, window: str | None, max_series: int) -> Report:
    overview = reports.overview(conn)
    chosen = window or overview.newest_forecast_window
    has_forecasts = chosen is not None and reports.has_predictions(conn, chosen)
    page = _Page()
    _header(page, overview, chosen, has_forecasts)
    fan_series: list[str] = []
    if chosen is None:
        page.add(
            '<section><p class="empty">No forecasts yet: run <code>forecasting-pipeline demo</code> or '
            "materialize <code>predictions</code> first.</p></section>"
        )
    else:
        _leaderboard(page, conn, chosen)
        _champions(page, conn, chosen)
        fan_series = _forecasts(page, conn, chosen, max_series)
        _backtest(page, conn, chosen)
        _studies(page, conn, chosen, max_series)
    _quality(page, conn)
    title = f"Forecasting report, window {chosen}" if chosen else "Forecasting report"
    document = "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>",
            *page.parts,
            "<footer>Written by <code>forecasting-pipeline report</code> from the tables of schema "
            "<code>forecasting</code>; images are inline PNG, nothing is fetched.</footer>",
            "</body></html>",
        ]
    )
    return Report(document, chosen, has_forecasts, page.plots, overview.newest_forecast_window, fan_series)


def _header(page: _Page, overview: reports.Overview, window: str | None, has_forecasts: bool) -> None:
    generated = datetime.now(UTC)
    data_windows = (
        f"{overview.data_windows} ({overview.first_data_window} to {overview.newest_data_window})"
        if overview.data_windows
        else "none"
    )
    facts = [
        ("report window", window or "none: no forecasts yet"),
        ("series", overview.series),
        ("observations", overview.observations),
        ("newest observation", overview.newest_observation),
        ("windows with data", data_windows),
        ("windows with forecasts", overview.forecast_windows),
        ("newest window with forecasts", overview.newest_forecast_window),
        ("newest published window", overview.newest_published_window),
        ("generated", f"{generated:%Y-%m-%d %H:%M:%S} UTC"),
    ]
    page.add(
        f"<header><h1>{_e('Forecasting report' + (f', window {window}' if window else ''))}</h1>",
        '<dl class="summary">',
        *(f"<dt>{_e(name)}</dt><dd>{_e(_text(value))}</dd>" for name, value in facts),
        "</dl>",
    )
    if window is not None and not has_forecasts:
        page.add(
            f'<p class="warn">Window {_e(window)} has no forecasts; the sections below say what it has.</p>'
        )
    page.add(
        '<nav><a href="#leaderboard">leaderboard</a> · <a href="#champions">champions</a> · '
        '<a href="#forecasts">forecasts</a> · <a href="#backtest">backtest errors</a> · '
        '<a href="#studies">driver studies</a> · <a href="#quality">data quality</a></nav></header>'
    )


def _leaderboard(page: _Page, conn: Connection, window: str) -> None:
    """The ranking `forecasting-pipeline leaderboard` prints, from the same storage function."""
    page.add('<section id="leaderboard"><h2>Leaderboard</h2>')
    table = leaderboard_rows(conn, window, RANK_METRIC)
    if table.height == 0:
        page.add(_empty(f"No backtest metrics in window {window}."), "</section>")
        return
    metrics = [c for c in table.columns if c not in ("window_key", "freq_group", "model_name", "series")]
    page.add(
        f"<p>Every candidate of window {_e(window)} on the backtest folds, each frequency group, by "
        f"{_e(RANK_METRIC)} (lower is better; coverage in %). Source: <code>forecasting.backtest_metrics"
        "</code>.</p>"
    )
    for (group,), rows in table.group_by("freq_group", maintain_order=True):
        page.add(f"<h3>{_e(str(group))} ({_e(_text(rows['series'].max()))} series)</h3>")
        ranked = rows.with_row_index("rank", offset=1).select("rank", "model_name", *metrics)
        page.add(
            _table(
                ["rank", "candidate", *metrics],
                ranked,
                css_class="leaderboard",
                data={"group": str(group)},
            )
        )
    page.add("</section>")


def _champions(page: _Page, conn: Connection, window: str) -> None:
    page.add('<section id="champions"><h2>Champions</h2>')
    champions = reports.champion_rows(conn, window, MAX_TABLE_ROWS)
    if not champions.rows:
        page.add(_empty("No series has a champion yet."), "</section>")
        return
    page.add(
        f"<p>Each series' current champion, and what model selection decided in window {_e(window)}. "
        f"{_shown(len(champions.rows), champions.total, 'series')} Source: "
        "<code>forecasting.current_champions</code>, <code>forecasting.selection_decisions</code>.</p>",
        _table(
            [
                "series",
                "champion",
                "since window",
                "event",
                "decision",
                "metric",
                "best candidate",
                "its score",
                "champion's score",
                "intervals",
                "forecast origin",
            ],
            _records(
                champions.rows,
                [
                    "series_id",
                    "champion",
                    "since_window",
                    "event",
                    "decision",
                    "metric",
                    "challenger",
                    "challenger_score",
                    "champion_score",
                    "interval_method",
                    "cutoff",
                ],
            ),
            css_class="champions",
        ),
        "</section>",
    )


def _forecasts(page: _Page, conn: Connection, window: str, max_series: int) -> list[str]:
    page.add('<section id="forecasts"><h2>Published forecasts</h2>')
    fans = fan_chart_inputs(conn, window, max_series)
    if not fans.charts:
        reason = (
            f"Window {window} published forecasts of {fans.total_series} series; none are shown "
            "(--max-series 0)."
            if fans.total_series
            else f"Window {window} has no published forecasts (see the leaderboard and champions for why)."
        )
        page.add(_empty(reason), "</section>")
        return []
    page.add(
        f"<p>Each series' champion forecast of window {_e(window)} with its 80% (darker) and 95% "
        "(lighter) intervals, the history before the forecast origin, and in red the actuals that "
        f"arrived after it. {_shown(len(fans.charts), fans.total_series, 'series')} Source: "
        "<code>forecasting.published_forecasts</code>, <code>forecasting.observations</code>.</p>",
        '<div class="grid">',
    )
    for chart in fans.charts:
        png = plots.fan_chart(chart.history, chart.forecast, chart.actuals, title=chart.title)
        actuals = f"{chart.actuals.height} actuals so far" if chart.actuals.height else "no actuals yet"
        page.image(
            png,
            f"fan chart of series {chart.series_id}",
            f"{chart.series_id}: {chart.model_name}, {chart.forecast.height} steps, "
            f"{chart.interval_method} intervals, {actuals}",
            css_class="fan-chart",
            series=chart.series_id,
        )
    page.add("</div></section>")
    return [chart.series_id for chart in fans.charts]


def _backtest(page: _Page, conn: Connection, window: str) -> None:
    page.add('<section id="backtest"><h2>Backtest error by horizon step</h2>')
    errors = reports.step_errors(conn, window)
    if errors.height == 0:
        page.add(_empty(f"No backtest folds in window {window}."), "</section>")
        return
    scaled = errors["scaled"].is_not_null().any()
    value, metric = ("scaled", "MASE") if scaled else ("error", "MAE")
    groups = errors["freq_group"].unique(maintain_order=True).to_list()
    measure = "absolute error over each series' MASE scale" if scaled else "absolute error"
    page.add(
        f"<p>Mean {measure} of each candidate's fold forecasts, per step ahead: where the error "
        f"grows with the horizon. At most the {MAX_MODELS_PER_PLOT} best candidates per frequency "
        "group are drawn. "
        f"{_shown(min(len(groups), MAX_GROUPS), len(groups), 'frequency groups')} Source: "
        "<code>forecasting.backtest_folds</code>.</p>",
        '<div class="grid">',
    )
    for group in groups[:MAX_GROUPS]:
        rows = errors.filter(pl.col("freq_group") == group)
        best = (
            rows.group_by("model")
            .agg(pl.col(value).mean().alias("mean"))
            .sort("mean", "model", nulls_last=True)
            .head(MAX_MODELS_PER_PLOT)["model"]
        )
        shown = rows.filter(pl.col("model").is_in(best.implode())).select(
            "model", "step", pl.col(value).alias("error")
        )
        png = plots.error_by_horizon(shown, title=f"{group}: {metric} by horizon step", metric=metric)
        page.image(png, f"backtest error by horizon step, group {group}", css_class="error-by-horizon")
    page.add("</div></section>")


def _studies(page: _Page, conn: Connection, window: str, max_series: int) -> None:
    page.add('<section id="studies"><h2>Driver studies</h2>')
    lagged = reports.lagged_correlations(conn, window)
    by_series = reports.driver_correlations(conn, window, MAX_HEATMAP_SERIES)
    if lagged.height or by_series.height:
        page.add(
            "<h3>Correlations</h3><p>Pearson correlation of each target with its drivers: the median "
            "across series for each lead of the driver (in steps), and each series at lead 0. Source: "
            "<code>forecasting.correlations</code>.</p>",
            '<div class="grid">',
        )
        if lagged.height:
            page.image(
                plots.correlation_heatmap(lagged, title="median Pearson by driver lead (steps)"),
                "correlation heatmap: drivers by lead",
                css_class="heatmap",
            )
        if by_series.height:
            page.image(
                plots.correlation_heatmap(by_series, title="Pearson of each series with each driver"),
                "correlation heatmap: series by driver",
                css_class="heatmap",
            )
        page.add("</div>")
    else:
        page.add(_empty(f"No correlation study in window {window}."))
    _drivers(page, conn, window)
    _granger(page, conn, window, max_series)
    _feature_effects(page, conn, window)
    page.add("</section>")


def _drivers(page: _Page, conn: Connection, window: str) -> None:
    page.add("<h3>Selected drivers</h3>")
    decisions = driver_selection_rows(conn, window)
    if decisions.height == 0:
        page.add(_empty(f"No driver decisions in window {window}."))
        return
    rows = decisions.select(
        "freq_group",
        "driver",
        pl.when(pl.col("selected") == "t").then(pl.lit("used")).otherwise(pl.lit("not used")),
        pl.col("series_passing").cast(pl.Int64),
        pl.col("series_tested").cast(pl.Int64),
        pl.col("median_lag").cast(pl.Float64),
        "reason",
    )
    page.add(
        "<p>The drivers each frequency group's models take, and the Granger evidence behind them. "
        "Source: <code>forecasting.driver_selection</code>.</p>",
        _table(
            ["group", "driver", "models", "series passing", "series tested", "median lag", "why"],
            rows,
            css_class="drivers",
        ),
    )


def _granger(page: _Page, conn: Connection, window: str, max_series: int) -> None:
    page.add("<h3>Granger causality</h3>")
    summary = granger_report(conn, window, known_series(conn))
    if summary.height == 0:
        page.add(_empty(f"No Granger tests in window {window}."))
        return
    counts = ["tests", "testable", "adj p<0.05", "adj p<0.01"]
    summary = summary.head(MAX_TABLE_ROWS).with_columns(
        pl.col(counts).cast(pl.Int64), pl.col("median lag").cast(pl.Float64)
    )
    page.add(
        "<p>Per driver and direction, how many series' tests pass after the Benjamini–Hochberg "
        "correction across the window. Source: <code>forecasting.granger_tests</code>.</p>",
        _table(
            ["group", "cause kind", "cause", "direction", *counts, "median lag", "not testable"],
            summary.select(
                "group", "cause_kind", "cause", "direction", *counts, "median lag", "not testable"
            ),
            css_class="granger-summary",
        ),
    )
    tests = reports.granger_rows(conn, window, max(1, max_series))
    shown = len({row["series_id"] for row in tests})
    page.add(
        f"<p>Every test of the first {shown} series: adjusted p below {ADJUSTED_P_THRESHOLD} passes.</p>",
        _table(
            ["series", "cause", "kind", "direction", "lag", "p", "adjusted p", "passes", "not testable"],
            _records(
                tests,
                ["series_id", "cause", "cause_kind", "direction", "lag", "p_value", "adjusted_p", "reason"],
            )
            .with_columns(
                (pl.col("adjusted_p") < ADJUSTED_P_THRESHOLD).fill_null(False).alias("passes"),
                pl.col("p_value", "adjusted_p").cast(pl.Float64),
            )
            .select(
                "series_id",
                "cause",
                "cause_kind",
                "direction",
                "lag",
                "p_value",
                "adjusted_p",
                "passes",
                "reason",
            ),
            css_class="granger",
        ),
    )


def _feature_effects(page: _Page, conn: Connection, window: str) -> None:
    page.add("<h3>Feature effects on the champions' error</h3>")
    effects = feature_importance_rows(conn, window)
    if effects.height == 0:
        page.add(_empty(f"No feature effects measured in window {window}."))
        return
    numbers = effects.with_columns(
        pl.col("importance", "relative", "baseline_error", "model_error").cast(pl.Float64),
        pl.col("rank").cast(pl.Int64),
    )
    page.add(
        "<p>The increase in an error model's scaled MAE when a feature group is shuffled within each "
        "series; above zero, the group explains error the champion left. Where the error model does "
        "no better than the champion's own error, the ranking is noise. Source: "
        "<code>forecasting.feature_importances</code>.</p>",
        _table(
            [
                "group",
                "rank",
                "feature group",
                "importance",
                "share of error",
                "champion error",
                "error model",
            ],
            numbers.select(
                "freq_group",
                "rank",
                "feature_group",
                "importance",
                "relative",
                "baseline_error",
                "model_error",
            ),
            css_class="feature-effects",
        ),
    )


def _quality(page: _Page, conn: Connection) -> None:
    page.add('<section id="quality"><h2>Data quality</h2>')
    quality = reports.quality_rows(conn, MAX_FILES)
    total_files = sum(quality.files_by_status.values())
    if total_files == 0:
        page.add(_empty("No files have landed yet."))
    else:
        statuses = ", ".join(f"{count} {status}" for status, count in quality.files_by_status.items())
        page.add(
            f"<h3>Landed files</h3><p>{_e(statuses)}. "
            f"{_shown(len(quality.newest_files), total_files, 'files, newest first')} Source: "
            "<code>forecasting.landed_files</code>.</p>",
            _table(
                [
                    "file",
                    "status",
                    "rows read",
                    "accepted",
                    "quarantined",
                    "series",
                    "from",
                    "to",
                    "staged",
                    "why",
                ],
                _records(
                    quality.newest_files,
                    [
                        "file_name",
                        "status",
                        "rows_read",
                        "rows_accepted",
                        "rows_quarantined",
                        "series_count",
                        "first_ts",
                        "last_ts",
                        "staged_at",
                        "reason",
                    ],
                ),
                css_class="files",
            ),
        )
    page.add("<h3>Quarantined rows</h3>")
    if quality.quarantine_by_reason:
        page.add(
            "<p>Rows refused at ingestion, kept with their reason. Source: "
            "<code>forecasting.quarantine</code>.</p>",
            _table(
                ["reason", "rows", "files", "newest"],
                _records(quality.quarantine_by_reason, ["reason", "rows", "files", "newest"]),
                css_class="quarantine",
            ),
        )
    else:
        page.add(_empty("No quarantined rows."))
    page.add("<h3>Data-quality checks</h3>")
    if quality.latest_checks:
        page.add(
            "<p>The latest result of each expectation checked on landed batches (the asset checks of "
            "<code>raw_observations</code>). Source: <code>forecasting.data_quality_results</code>.</p>",
            _table(
                ["check", "expectation", "blocking", "passed", "evaluated", "unexpected", "checked", "what"],
                _records(
                    quality.latest_checks,
                    [
                        "check_name",
                        "expectation",
                        "blocking",
                        "success",
                        "evaluated",
                        "unexpected",
                        "checked_at",
                        "description",
                    ],
                ),
                css_class="checks",
            ),
        )
    else:
        page.add(_empty("No data-quality results stored."))
    page.add("</section>")


def _table(
    headers: Sequence[str],
    frame: pl.DataFrame,
    *,
    css_class: str = "",
    data: dict[str, str] | None = None,
) -> str:
    """An HTML table of an already bounded frame (its columns in `headers`' order), every cell
    formatted as `_text` would and escaped by polars, column by column; numbers right-aligned."""
    attributes = "".join(f' data-{name}="{_e(value)}"' for name, value in (data or {}).items())
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = ""
    if frame.height:
        cells = [_cell(frame[name]) for name in frame.columns]
        body = frame.select(pl.concat_str([pl.lit("<tr>"), *cells, pl.lit("</tr>")]).str.join("")).item()
    return (
        f'<table class="{_e(css_class)}"{attributes}><thead><tr>{head}</tr></thead>'
        f"<tbody>{body}</tbody></table>"
    )


def _records(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> pl.DataFrame:
    """Bounded result rows (dicts) as a frame of `columns`, for `_table`."""
    if not rows:
        return pl.DataFrame(schema=dict.fromkeys(columns, pl.String))
    return pl.DataFrame(list(rows), infer_schema_length=None).select(columns)


def _cell(column: pl.Series) -> pl.Expr:
    """`<td>` of each value of `column`, formatted like `_text` and HTML-escaped."""
    dtype = column.dtype
    value = pl.col(column.name)
    numeric = dtype.is_numeric()
    if dtype == pl.Boolean:
        text = pl.when(value.is_null()).then(None).when(value).then(pl.lit("yes")).otherwise(pl.lit("no"))
    elif dtype.is_integer():
        text = _thousands(value.cast(pl.Int64).cast(pl.String))
    elif numeric:
        text = _decimal_text(value.cast(pl.Float64))
    elif isinstance(dtype, pl.Datetime):
        text = value.dt.strftime("%Y-%m-%d %H:%M")
    elif dtype == pl.Date:
        text = value.dt.strftime("%Y-%m-%d")
    else:
        text = value.cast(pl.String)
    escaped = (
        text.fill_null("–")
        .str.replace_all("&", "&amp;", literal=True)
        .str.replace_all("<", "&lt;", literal=True)
        .str.replace_all(">", "&gt;", literal=True)
        .str.replace_all('"', "&quot;", literal=True)
        .str.replace_all("'", "&#x27;", literal=True)
    )
    return pl.concat_str([pl.lit('<td class="n">' if numeric else "<td>"), escaped, pl.lit("</td>")])


def _thousands(digits: pl.Expr) -> pl.Expr:
    """`1234567` -> `1,234,567` (what `f"{n:,}"` writes), grouped on the reversed digits."""
    grouped = digits.str.reverse().str.replace_all(r"(\d{3})", "${1},").str.reverse()
    return grouped.str.strip_chars_start(",").str.replace(r"^-,", "-")


def _fixed(value: pl.Expr, decimals: int) -> pl.Expr:
    """`value` with exactly `decimals` decimals, as `f"{x:.{decimals}f}"` writes it."""
    scaled = (value.abs() * 10**decimals).round(0).cast(pl.Int64)
    whole = (scaled // 10**decimals).cast(pl.String)
    fraction = (scaled % 10**decimals).cast(pl.String).str.zfill(decimals)
    sign = pl.when((value < 0) & (scaled > 0)).then(pl.lit("-")).otherwise(pl.lit(""))
    return pl.concat_str([sign, whole, pl.lit("."), fraction])


def _decimal_text(value: pl.Expr) -> pl.Expr:
    """Three decimals, or `1.23e-04` below 0.001 where p-values live; NaN and null as a dash."""
    exponent = value.abs().log10().floor()
    mantissa = value / pl.lit(10.0).pow(exponent)
    carried = mantissa.abs().round(2) >= 10  # 9.996e-4 is written 1.00e-03
    mantissa = pl.when(carried).then(mantissa / 10).otherwise(mantissa)
    exponent = pl.when(carried).then(exponent + 1).otherwise(exponent).cast(pl.Int64)
    scientific = pl.concat_str(
        [
            _fixed(mantissa, 2),
            pl.lit("e"),
            pl.when(exponent < 0).then(pl.lit("-")).otherwise(pl.lit("+")),
            exponent.abs().cast(pl.String).str.zfill(2),
        ]
    )
    small = (value != 0) & (value.abs() < 0.001)
    return pl.when(value.is_nan()).then(None).when(small).then(scientific).otherwise(_fixed(value, 3))


def _text(value: Any) -> str:
    """A cell as text: three decimals (scientific below 0.001, where p-values live), dates to the minute."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value != value:
            return "–"
        return f"{value:.2e}" if value != 0 and abs(value) < 0.001 else f"{value:.3f}"
    if isinstance(value, datetime):
        return f"{value:%Y-%m-%d %H:%M}"
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def _shown(shown: int, total: int, what: str) -> str:
    return f"Showing all {total} {what}." if shown >= total else f"Showing {shown} of {total} {what}."


def _empty(message: str) -> str:
    return f'<p class="empty">{_e(message)}</p>'


def _e(value: str) -> str:
    return html.escape(value, quote=True)


_CSS = """
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;color:#1d1d1f;margin:0 auto;
max-width:1200px;padding:0 20px 40px}
h1{font-size:22px;margin:20px 0 8px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #ddd}
h3{font-size:15px;margin:18px 0 6px}
dl.summary{display:grid;grid-template-columns:max-content auto;gap:2px 14px;margin:8px 0}
dl.summary dt{color:#555}dl.summary dd{margin:0}
nav{margin:10px 0;font-size:13px}nav a{color:#1f5fa8}
table{border-collapse:collapse;font-size:12px;margin:6px 0 12px}
th,td{border:1px solid #ddd;padding:3px 7px;text-align:left;vertical-align:top}
th{background:#f3f4f6}td.n{text-align:right;font-variant-numeric:tabular-nums}
tbody tr:nth-child(even){background:#fafafa}
.grid{display:flex;flex-wrap:wrap;gap:10px}
figure{margin:0;border:1px solid #eee;padding:4px}figure img{display:block;max-width:100%}
figcaption{font-size:12px;color:#555;padding:2px 4px}
.empty{color:#777;font-style:italic}.warn{color:#a15c00}
code{font-size:12px;background:#f3f4f6;padding:0 3px}
footer{margin-top:30px;font-size:12px;color:#777}
"""
