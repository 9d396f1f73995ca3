"""`model_selection`: the leaderboard and each series' champion proposal, per series × window.

The best candidate on the window's backtest (by a configured metric) challenges the series'
current champion. It is proposed for promotion only when it beats the champion by a margin on
the same folds; the blocking check `promotions_confirmed` recomputes that from the fold rows
before `predictions` makes any promotion real.
"""

import polars as pl
from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetExecutionContext,
    Config,
    MaterializeResult,
    MetadataValue,
    asset_check,
)
from pydantic import Field, field_validator

from forecasting_pipeline.assets.cell_metadata import add_cell_metadata
from forecasting_pipeline.assets.conventions import markdown_table, note_run, pipeline_asset
from forecasting_pipeline.modeling.ensembles import is_ensemble
from forecasting_pipeline.partitions import series_date_partitions
from forecasting_pipeline.resources.database import DatabaseResource
from forecasting_pipeline.storage.backtests import group_metrics, leaderboard_rows, series_metrics
from forecasting_pipeline.storage.catalog import series_by_window
from forecasting_pipeline.storage.champions import (
    SELECTION_METRICS,
    current_champions,
    replace_decisions,
    unconfirmed_promotions,
)
from forecasting_pipeline.storage.predictions import window_candidates


class SelectionConfig(Config):
    """How champions are chosen; the same values go into every decision row."""

    metric: str = Field(default="mase", description=f"One of {sorted(SELECTION_METRICS)}; lower is better.")
    margin: float = Field(
        default=0.02, ge=0, lt=1, description="A challenger must be this fraction better than the champion."
    )
    series_margin: float = Field(
        default=0.1,
        ge=0,
        lt=1,
        description="A series departs from its group's best candidate only for one this fraction better "
        "on its own folds.",
    )

    @field_validator("metric")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in SELECTION_METRICS:
            raise ValueError(f"selection metric {value!r} is not one of {sorted(SELECTION_METRICS)}")
        return value


def _ranked(scores: pl.DataFrame) -> pl.DataFrame:
    """Candidates per series from best to worst; ties go to single families, then by name."""
    return scores.sort(
        pl.col("series_id"), pl.col("value"), is_ensemble(pl.col("model_name")), pl.col("model_name")
    )


def decide(
    scores: pl.DataFrame,
    champions: pl.DataFrame,
    group_best: pl.DataFrame,
    *,
    metric: str,
    margin: float,
    series_margin: float = 0.0,
) -> pl.DataFrame:
    """One decision per series: first champion, promote, keep, or replace an unscored champion.

    `scores`: series_id, freq_group, model_name, value (the window's backtest metric per series);
    `champions`: series_id, champion; `group_best`: series_id, freq_group, model_name, value —
    per series, the candidate that ranks best over its whole frequency group.

    The challenger is the group's best unless the series' own best beats it on the series' folds
    by `series_margin`: a handful of folds per series is noisy evidence, and choosing each
    series' best on it loses to the group's best out of sample (M1 monthly: 1.20 vs 1.12 MASE).
    Series too short to backtest take the group's best, which never displaces a champion.
    """
    ranked = _ranked(scores).group_by("series_id", maintain_order=True)
    own = ranked.agg(
        pl.col("freq_group").first(),
        pl.col("model_name").first().alias("own_best"),
        pl.col("value").first().alias("own_score"),
        pl.len().alias("candidates"),
    )
    default_scores = scores.select(
        "series_id", pl.col("model_name").alias("group_choice"), pl.col("value").alias("group_score")
    )
    with_default = own.join(
        group_best.select("series_id", pl.col("model_name").alias("group_choice")), on="series_id", how="left"
    ).join(default_scores, on=["series_id", "group_choice"], how="left")
    departs = pl.col("group_score").is_null() | (
        pl.col("own_score") <= pl.col("group_score") * (1 - series_margin)
    )
    best = with_default.select(
        "series_id",
        "freq_group",
        pl.when(departs).then(pl.col("own_best")).otherwise(pl.col("group_choice")).alias("challenger"),
        pl.when(departs).then(pl.col("own_score")).otherwise(pl.col("group_score")).alias("challenger_score"),
        "candidates",
        pl.lit(True).alias("backtested"),
        (departs & (pl.col("own_best") != pl.col("group_choice"))).fill_null(False).alias("own_choice"),
    )
    fallback = group_best.join(best, on="series_id", how="anti").select(
        "series_id",
        "freq_group",
        pl.col("model_name").alias("challenger"),
        pl.col("value").alias("challenger_score"),
        pl.lit(0, dtype=pl.UInt32).alias("candidates"),
        pl.lit(False).alias("backtested"),
        pl.lit(False).alias("own_choice"),
    )
    champion_scores = scores.select(
        "series_id", pl.col("model_name").alias("champion"), pl.col("value").alias("champion_score")
    )
    frame = (
        pl.concat([best, fallback])
        .join(champions, on="series_id", how="left")
        .join(champion_scores, on=["series_id", "champion"], how="left")
    )
    beats = pl.col("challenger_score") <= pl.col("champion_score") * (1 - margin)
    decision = (
        pl.when(pl.col("champion").is_null())
        .then(pl.lit("first"))
        .when(pl.col("champion") == pl.col("challenger"))
        .then(pl.lit("keep"))
        .when(~pl.col("backtested"))
        .then(pl.lit("keep"))
        .when(pl.col("champion_score").is_null())
        .then(pl.lit("replace"))
        .when(beats)
        .then(pl.lit("promote"))
        .otherwise(pl.lit("keep"))
    )
    score = pl.col("challenger_score").round(4).cast(pl.String)
    reason = (
        pl.when(~pl.col("backtested"))
        .then(pl.format("too short to backtest: the group's best by {}", pl.lit(metric)))
        .when((pl.col("decision") == "first") & pl.col("own_choice"))
        .then(
            pl.format(
                "its own best of {} candidates, {} = {}, beats the group's best by more than {}",
                "candidates",
                pl.lit(metric),
                score,
                pl.lit(f"{series_margin:.0%}"),
            )
        )
        .when(pl.col("decision") == "first")
        .then(pl.format("the group's best candidate, {} = {} on this series", pl.lit(metric), score))
        .when(pl.col("decision") == "replace")
        .then(pl.format("champion {} has no backtest in this window", "champion"))
        .when(pl.col("decision") == "promote")
        .then(
            pl.format(
                "{} {} beats {} {} by more than {}",
                score,
                "challenger",
                pl.col("champion_score").round(4).cast(pl.String),
                "champion",
                pl.lit(f"{margin:.0%}"),
            )
        )
        .otherwise(pl.format("champion {} holds", "champion"))
    )
    return (
        frame.with_columns(decision.alias("decision"))
        .with_columns(
            reason.alias("reason"),
            pl.lit(metric).alias("metric"),
            pl.lit(margin).alias("margin"),
            pl.col("candidates").cast(pl.Int64),
        )
        .drop("backtested", "own_choice")
    )


def _group_best(overall: pl.DataFrame, available: pl.DataFrame) -> pl.DataFrame:
    """Per series, the candidate it has forecasts from that ranks best over its frequency group.

    For series too short to backtest: their own folds cannot rank candidates, the group's can.
    """
    if overall.height == 0 or available.height == 0:
        return pl.DataFrame(
            schema={
                "series_id": pl.String,
                "freq_group": pl.String,
                "model_name": pl.String,
                "value": pl.Float64,
            }
        )
    return (
        _ranked(
            available.join(
                overall.select("freq_group", "model_name", "value"), on=["freq_group", "model_name"]
            )
        )
        .group_by("series_id", maintain_order=True)
        .first()
        .select("series_id", "freq_group", "model_name", "value")
    )


@pipeline_asset(
    partitions_def=series_date_partitions,
    deps=["backtest_folds"],
    group_name="evaluation",
    kinds={"postgres"},
)
def model_selection(
    context: AssetExecutionContext, config: SelectionConfig, database: DatabaseResource
) -> MaterializeResult:
    """Per series, the best candidate by the configured metric and what it means for the champion.

    Writes `forecasting.selection_decisions` (first / promote / keep / replace, with both scores
    and the margin); `forecasting.leaderboard` ranks every candidate per series and metric.
    """
    decided: list[pl.DataFrame] = []
    with database.transaction() as conn:
        note_run(context, conn)
        by_window = series_by_window(conn, context.partition_keys)
        for window, series_ids in by_window.items():
            scores = series_metrics(conn, window, series_ids, config.metric)
            group_best = _group_best(
                group_metrics(conn, [window]).filter(pl.col("metric") == config.metric),
                window_candidates(conn, window, series_ids),
            )
            if scores.height == 0 and group_best.height == 0:
                continue
            decisions = decide(
                scores,
                current_champions(conn, series_ids),
                group_best,
                metric=config.metric,
                margin=config.margin,
                series_margin=config.series_margin,
            )
            replace_decisions(conn, window, decisions, context.run_id)
            decided.append(decisions.with_columns(pl.lit(window).alias("window_key")))
    if not decided:
        context.log.warning("no backtest metrics for these cells: nothing to select")
        return MaterializeResult(metadata={"decisions": MetadataValue.json({})})
    decisions = pl.concat(decided)
    add_cell_metadata(
        context,
        decisions.select(
            pl.col("window_key").alias("window"),
            "series_id",
            "decision",
            pl.col("challenger").alias("best_candidate"),
            pl.col("challenger_score").round(4).alias(f"best_{config.metric}"),
            pl.col("champion").alias("previous_champion"),
            pl.col("champion_score").round(4).alias(f"previous_champion_{config.metric}"),
        ),
    )
    with database.transaction() as conn:
        board = leaderboard_rows(conn, max(by_window), config.metric)
    counts = decisions.group_by("decision").len().sort("decision")
    champions = decisions.group_by("challenger").len().sort("len", descending=True)
    return MaterializeResult(
        metadata={
            "decisions": MetadataValue.json(dict(zip(counts["decision"], counts["len"], strict=True))),
            "best_candidate_series": MetadataValue.md(
                markdown_table(champions.rename({"challenger": "candidate", "len": "series"}))
            ),
            "metric": config.metric,
            "margin": config.margin,
            "leaderboard": MetadataValue.md(
                markdown_table(board.drop("window_key").with_columns(pl.selectors.float().round(4)))
            )
            if board.height
            else "no group metrics",
        }
    )


# One evaluation per run, over the run's keys, not a partitioned check: Dagster stores a
# partitioned check's planned state as one row per key, each holding the run's whole key set
# (N² bytes: 2.6 GB for a 10,000-series run, which PostgreSQL refuses), and a single result
# never resolves those rows. The run's keys come from the op context.
@asset_check(
    asset=model_selection,
    blocking=True,
    description="Every proposed promotion beats its champion by the margin on exactly the same folds, "
    "recomputed from forecasting.backtest_folds; publication waits for this.",
)
def promotions_confirmed(context: AssetCheckExecutionContext, database: DatabaseResource) -> AssetCheckResult:
    with database.transaction() as conn:
        by_window = series_by_window(conn, context.op_execution_context.partition_keys)
        failures = [
            failure
            for window, series_ids in by_window.items()
            for failure in unconfirmed_promotions(conn, [window], series_ids)
        ]
    return AssetCheckResult(
        passed=not failures,
        severity=AssetCheckSeverity.ERROR,
        metadata={
            "unconfirmed": len(failures),
            "examples": MetadataValue.json(
                [{k: str(v) for k, v in failure.items()} for failure in failures[:20]]
            ),
        },
    )
