"""User story: after a window is forecast, `forecasting-pipeline report --output r.html` writes one
HTML page a person can open offline, with a fan chart per forecast series drawn from the stored
forecasts, history and actuals, and the same leaderboard the database holds; the plots behind it
are real images of their inputs, and an empty deployment gets a message saying what to do."""

from __future__ import annotations

import base64
import io
from datetime import datetime, timedelta
from html.parser import HTMLParser

import matplotlib.image
import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner

from forecasting_pipeline import operations
from forecasting_pipeline.cli import main
from forecasting_pipeline.reporting import plots
from forecasting_pipeline.reporting.report import build_report, fan_chart_inputs
from forecasting_pipeline_tests.conftest import (
    TINY_BACKTEST,
    TINY_GLOBAL_MODEL,
    land_and_ingest,
    query_frame,
    series_keys,
)

# A week before the data ends: the forecast's origin lies in the past, so actuals arrive after it.
WINDOW = "2016-10-23"
SERIES = ["BE", "FR"]
HORIZON = 24
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def forecasted(deployment, instance):
    """The demo's path with tiny models and no tuning, for a window whose actuals have already landed."""
    land_and_ingest(deployment, instance)
    return operations.forecast(
        instance,
        WINDOW,
        series_keys(instance),
        global_model_config=TINY_GLOBAL_MODEL,
        search_config={"families": []},  # the report reads what tuning decides, not how
        backtest_config=TINY_BACKTEST,
    )


class _Page(HTMLParser):
    """Every tag with its attributes, and the cell texts of every table, in document order."""

    def __init__(self, document: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.tables: list[tuple[dict[str, str | None], list[list[str]]]] = []
        self._cell: list[str] | None = None
        self.feed(document)

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        self.tags.append((tag, attributes))
        if tag == "table":
            self.tables.append((attributes, []))
        elif tag == "tr" and self.tables:
            self.tables[-1][1].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][1][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)

    def images(self) -> list[dict[str, str | None]]:
        return [attrs for tag, attrs in self.tags if tag == "img"]


def _decoded(png: bytes) -> np.ndarray:
    assert png.startswith(PNG_SIGNATURE)
    return matplotlib.image.imread(io.BytesIO(png))


def _drawn(png: bytes) -> None:
    """A PNG that decodes and shows something: more than one colour across its pixels."""
    pixels = _decoded(png)
    assert pixels.ndim == 3 and pixels.shape[0] > 20 and pixels.shape[1] > 20
    assert len(np.unique(pixels.reshape(-1, pixels.shape[-1]), axis=0)) > 10


def _lines(figure) -> dict[str, object]:
    return {line.get_label(): line for line in figure.axes[0].get_lines()}


def _hours(start: datetime, count: int) -> list[datetime]:
    return [start + timedelta(hours=i) for i in range(count)]


def test_each_plot_is_a_png_of_its_data_and_empty_inputs_say_no_data():
    origin = datetime(2024, 3, 1)
    history = pl.DataFrame({"ds": _hours(origin - timedelta(hours=71), 72), "y": np.sin(np.arange(72) / 5)})
    forecast = pl.DataFrame({"ds": _hours(origin + timedelta(hours=1), 24), "y_hat": np.linspace(0, 1, 24)})
    forecast = forecast.with_columns(
        lo_80=pl.col("y_hat") - 0.5, hi_80=pl.col("y_hat") + 0.5, lo_95=pl.col("y_hat") - 1, hi_95=None
    )
    matrix = pl.DataFrame(
        {"row": ["a", "a", "b", "b"], "column": ["x", "y", "x", "y"], "value": [1.0, -0.5, 0.2, None]}
    )
    errors = pl.DataFrame({"model": ["A"] * 4 + ["B"] * 4, "step": [1, 2, 3, 4] * 2, "error": np.arange(8.0)})
    for png in (
        plots.fan_chart(history, forecast, None, title="series $AAPL <1>"),
        plots.correlation_heatmap(matrix, title="correlations"),
        plots.error_by_horizon(errors, title="errors", metric="MASE"),
    ):
        _drawn(png)
    empty = (
        plots.fan_chart(pl.DataFrame(), pl.DataFrame(), None),
        plots.fan_chart(history.clear(), forecast.clear(), pl.DataFrame({"ds": [], "y": []})),
        plots.correlation_heatmap(pl.DataFrame()),
        plots.error_by_horizon(
            pl.DataFrame(schema={"model": pl.String, "step": pl.Int64, "error": pl.Float64})
        ),
    )
    for png in empty:
        assert _decoded(png).shape[:2] == _decoded(empty[0]).shape[:2]  # the small "no data" figure
    texts = [t.get_text() for t in plots.fan_chart_figure(pl.DataFrame(), pl.DataFrame()).axes[0].texts]
    assert texts == ["no data"]


def test_the_fan_chart_draws_exactly_its_inputs():
    origin = datetime(2024, 3, 1)
    history = pl.DataFrame({"ds": _hours(origin - timedelta(hours=47), 48), "y": np.arange(48.0)})
    forecast = pl.DataFrame(
        {
            "ds": _hours(origin + timedelta(hours=1), 6),
            "y_hat": [50.0, 51, 52, 53, 54, 55],
            "lo_80": [45.0, 46, 47, 48, 49, 50],
            "hi_80": [55.0, 56, 57, 58, 59, 60],
            "lo_95": [None] * 6,  # a band whose bounds are all null is not drawn
            "hi_95": [None] * 6,
        },
        schema_overrides={"lo_95": pl.Float64, "hi_95": pl.Float64},
    )
    actuals = pl.DataFrame({"ds": _hours(origin + timedelta(hours=1), 3), "y": [49.0, 52, 50]})
    figure = plots.fan_chart_figure(history, forecast, actuals, title="FR")
    lines = _lines(figure)
    assert set(lines) == {"history", "forecast", "actuals", "forecast origin"}
    for label, frame, column in (
        ("history", history, "y"),
        ("forecast", forecast, "y_hat"),
        ("actuals", actuals, "y"),
    ):
        np.testing.assert_array_equal(lines[label].get_xdata(), frame["ds"].to_numpy())
        np.testing.assert_array_equal(lines[label].get_ydata(), frame[column].to_numpy())
    assert lines["actuals"].get_linestyle() == "None" and lines["actuals"].get_marker() == "o"
    assert lines["forecast origin"].get_xdata()[0] == history["ds"].max()
    bands = {band.get_label(): band for band in figure.axes[0].collections}
    assert set(bands) == {"80% interval"}
    band = bands["80% interval"].get_paths()[0].vertices[:, 1]
    assert set(band) >= {45.0, 50.0, 55.0, 60.0}
    assert {t.get_text() for t in figure.axes[0].get_legend().get_texts()} >= {
        "history",
        "forecast",
        "actuals",
    }


def test_heatmap_labels_are_capped_and_images_embed_with_escaped_alt_text():
    many = pl.DataFrame(
        {
            "row": [f"series-{i}" for i in range(75) for _ in range(3)],
            "column": ["a", "b", "c"] * 75,
            "value": np.linspace(-1, 1, 225),
        }
    )
    figure = plots.correlation_heatmap_figure(many, title="many")
    shown = [t.get_text() for t in figure.axes[0].get_yticklabels()]
    assert 0 < len(shown) <= plots.MAX_LABELS and shown[0] == "series-0"
    assert "showing" in figure.axes[0].get_title()
    image = figure.axes[0].get_images()[0].get_array()
    assert image.shape == (75, 3) and image[0, 0] == -1.0 and image[-1, -1] == 1.0

    png = plots.error_by_horizon(pl.DataFrame({"model": ["A", "A"], "step": [1, 2], "error": [1.0, 2.0]}))
    encoded = base64.b64encode(png).decode()
    assert (
        plots.markdown_image(png, "errors [all]") == f"![errors \\[all\\]](data:image/png;base64,{encoded})"
    )
    tag = plots.html_image(png, 'a "quoted" <b>alt</b>')
    assert (
        tag
        == f'<img alt="a &quot;quoted&quot; &lt;b&gt;alt&lt;/b&gt;" src="data:image/png;base64,{encoded}">'
    )


def test_fan_chart_inputs_are_the_published_forecast_its_history_and_later_actuals(forecasted, db_engine):
    with db_engine.connect() as conn:
        fans = fan_chart_inputs(conn, WINDOW, 12)
    assert fans.total_series == len(SERIES) and [c.series_id for c in fans.charts] == SERIES
    for chart in fans.charts:
        published = pl.from_pandas(
            query_frame(
                db_engine,
                "SELECT ds, yhat, lo_80, hi_80, lo_95, hi_95, cutoff FROM forecasting.published_forecasts "
                "WHERE window_key = :w AND series_id = :s ORDER BY step",
                w=WINDOW,
                s=chart.series_id,
            )
        )
        assert published.height == HORIZON and chart.forecast.height == HORIZON
        np.testing.assert_array_equal(chart.forecast["y_hat"].to_numpy(), published["yhat"].to_numpy())
        np.testing.assert_allclose(chart.forecast["lo_95"].to_numpy(), published["lo_95"].to_numpy())
        cutoff = published["cutoff"][0]
        assert chart.cutoff == cutoff and chart.history["ds"].max() == cutoff
        observed = pl.from_pandas(
            query_frame(
                db_engine,
                "SELECT ts AS ds, y FROM forecasting.observations WHERE series_id = :s ORDER BY ts",
                s=chart.series_id,
            )
        )
        before = observed.filter(pl.col("ds") <= cutoff).tail(chart.history.height)
        assert chart.history.height == 4 * HORIZON
        assert chart.history.equals(before.cast(chart.history.schema))
        after = observed.filter((pl.col("ds") > cutoff) & (pl.col("ds") <= published["ds"].max()))
        assert after.height == HORIZON and chart.actuals.equals(after.cast(chart.actuals.schema))
        # What the report draws is these frames, point for point.
        figure = plots.fan_chart_figure(chart.history, chart.forecast, chart.actuals, title=chart.title)
        lines = _lines(figure)
        np.testing.assert_array_equal(lines["history"].get_ydata(), chart.history["y"].to_numpy())
        np.testing.assert_array_equal(lines["forecast"].get_ydata(), published["yhat"].to_numpy())
        np.testing.assert_array_equal(lines["actuals"].get_ydata(), after["y"].to_numpy())


def test_the_cli_writes_a_self_contained_report_with_a_fan_chart_per_series_and_the_leaderboard(
    forecasted, deployment, db_engine, tmp_path
):
    output = tmp_path / "out" / "report.html"
    result = CliRunner().invoke(
        main, ["report", "--output", str(output)], env={"FP_DATABASE_URL": deployment.database_url}
    )
    assert result.exit_code == 0, result.output
    document = output.read_text(encoding="utf-8")
    page = _Page(document)
    assert str(output) in result.output and f"window {WINDOW}" in result.output
    assert f"plots: {len(page.images())}, fan charts: {len(SERIES)}" in result.output

    # Self-contained: no scripts, no stylesheets or fonts fetched, every image inline.
    assert document.startswith("<!DOCTYPE html>") and document.rstrip().endswith("</html>")
    assert not [tag for tag, _ in page.tags if tag in ("script", "link", "iframe", "object", "embed")]
    for _, attributes in page.tags:
        for name in ("src", "href"):
            value = attributes.get(name) or ""
            assert not value.lower().startswith(("http:", "https:", "//")), value
    assert "http://" not in document and "https://" not in document
    for image in page.images():
        assert image["src"].startswith("data:image/png;base64,")
        _drawn(base64.b64decode(image["src"].removeprefix("data:image/png;base64,")))

    # One fan chart per published series.
    fan_charts = [attrs for tag, attrs in page.tags if tag == "figure" and attrs.get("class") == "fan-chart"]
    assert sorted(attrs["data-series"] for attrs in fan_charts) == SERIES
    alts = [image["alt"] for image in page.images()]
    assert sorted(a for a in alts if a.startswith("fan chart of series")) == [
        f"fan chart of series {s}" for s in SERIES
    ]

    # The leaderboard shows what the database holds for the window, rank by rank.
    stored = pl.from_pandas(
        query_frame(
            db_engine,
            "SELECT model_name, metric, value FROM forecasting.backtest_metrics WHERE window_key = :w "
            "AND series_id IS NULL AND step IS NULL AND metric <> 'series'",
            w=WINDOW,
        )
    )
    tables = [(attrs, rows) for attrs, rows in page.tables if attrs.get("class") == "leaderboard"]
    assert [attrs["data-group"] for attrs, _ in tables] == ["hourly"]
    header, *rows = tables[0][1]
    assert header[:3] == ["rank", "candidate", "mase"]
    assert sorted(row[1] for row in rows) == sorted(stored["model_name"].unique())
    checked = 0
    for row in rows:
        for metric, cell in zip(header[2:], row[2:], strict=True):
            value = stored.filter((pl.col("model_name") == row[1]) & (pl.col("metric") == metric))["value"]
            if value.len() == 0 or value[0] is None:
                assert cell == "–"
                continue
            assert float(cell) == pytest.approx(value[0], rel=1e-3, abs=5e-4), (row[1], metric)
            checked += 1
    assert checked >= len(rows) * 4
    mase = [float(row[2]) for row in rows]
    assert mase == sorted(mase) and [int(row[0]) for row in rows] == list(range(1, len(rows) + 1))

    for section in ("champions", "forecasts", "backtest", "studies", "quality"):
        assert f'<section id="{section}">' in document
    assert "epf_fr_be.csv" in document  # the landed file, in the data-quality section


def test_max_series_caps_the_fan_charts_and_a_window_without_forecasts_is_refused(
    forecasted, deployment, db_engine, tmp_path
):
    env = {"FP_DATABASE_URL": deployment.database_url}
    output = tmp_path / "one.html"
    result = CliRunner().invoke(main, ["report", "--output", str(output), "--max-series", "1"], env=env)
    assert result.exit_code == 0, result.output
    page = _Page(output.read_text(encoding="utf-8"))
    fans = [
        attrs["data-series"]
        for tag, attrs in page.tags
        if tag == "figure" and attrs.get("class") == "fan-chart"
    ]
    assert fans == ["BE"] and "Showing 1 of 2 series" in output.read_text(encoding="utf-8")
    assert "fan charts: 1)" in result.output

    refused = CliRunner().invoke(
        main, ["report", "--output", str(tmp_path / "none.html"), "--window", "2016-10-02"], env=env
    )
    assert refused.exit_code == 1 and not (tmp_path / "none.html").exists()
    assert "error: window 2016-10-02 has no forecasts" in refused.output
    assert f"hint: the newest window with forecasts is {WINDOW}" in refused.output


def test_an_empty_deployment_gets_a_report_that_says_so_and_the_cli_says_what_to_do(fresh_database, tmp_path):
    url = fresh_database()
    result = CliRunner().invoke(
        main, ["report", "--output", str(tmp_path / "r.html")], env={"FP_DATABASE_URL": url}
    )
    assert result.exit_code == 1 and "error: no forecasts yet" in result.output
    assert "hint: run `forecasting-pipeline demo`" in result.output
    assert not (tmp_path / "r.html").exists()
    from forecasting_pipeline.resources.database import engine_for

    document = build_report(engine_for(url))
    page = _Page(document)
    assert not page.images() and "No forecasts yet" in document and "No files have landed yet." in document
