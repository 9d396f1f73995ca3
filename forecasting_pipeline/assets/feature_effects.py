"""Feature effects: which features and drivers explain the champions' backtest error.

An error model (ridge, fitted across fold cutoffs and scored on held-out cutoffs) predicts each
champion's scaled backtest error from the features known when the fold forecast was made;
permuting one feature group within each series and measuring how much worse the error model
gets is that group's importance. A driver with a large importance carries information the
champion left unused; one near zero adds nothing the champion does not already know.
"""

from dataclasses import replace
from typing import Any

import polars as pl
from dagster import AssetDep, AssetExecutionContext, MaterializeResult, MetadataValue
from pydantic import Field

from forecasting_pipeline.assets.conventions import markdown_table, note_run, pipeline_asset
from forecasting_pipeline.assets.features import FeatureConfig
from forecasting_pipeline.assets.history_slices import history_slices, points_before_anchor
from forecasting_pipeline.modeling.feature_effects import EffectSettings, permutation_effects
from forecasting_pipeline.modeling.features import FeatureSpec, build_features, feature_groups
from forecasting_pipeline.partitions import SAME_WINDOW, date_partitions
from forecasting_pipeline.resources.database import DatabaseResource
from forecasting_pipeline.schemas import DS, UNIQUE_ID, driver_columns
from forecasting_pipeline.storage.backtests import champion_fold_errors
from forecasting_pipeline.storage.studies import replace_feature_importances

# Features derived from the target are taken at the fold's cutoff (what was known when the
# forecast was made); calendar features and drivers at the forecast's own timestamp.
_AT_CUTOFF = ("target_lags", "target_rolling")


class EffectsConfig(FeatureConfig):
    repeats: int = Field(default=5, gt=0, description="Permutations per feature group.")
    ridge: float | None = Field(
        default=None, ge=0, description="L2 penalty of the error model; default: chosen on held-out folds."
    )
    seed: int = Field(default=1)

    def settings(self) -> EffectSettings:
        return EffectSettings(repeats=self.repeats, ridge=self.ridge, seed=self.seed)


@pipeline_asset(
    partitions_def=date_partitions,
    deps=[AssetDep("predictions", partition_mapping=SAME_WINDOW)],
    group_name="studies",
    kinds={"polars", "postgres"},
)
def feature_effects(
    context: AssetExecutionContext, config: EffectsConfig, database: DatabaseResource
) -> MaterializeResult:
    """Permutation importance of each feature group on the champions' backtest error, per
    frequency group, in `forecasting.feature_importances`.

    Features are rebuilt from history with the feature table's settings for every fold
    timestamp, which may lie in windows whose feature table was never materialized.
    """
    spec = config.spec()
    summary: list[dict[str, Any]] = []
    shown = pl.DataFrame()
    for window in context.partition_keys:
        with database.transaction() as conn:
            note_run(context, conn)
            errors = champion_fold_errors(conn, window)
            for (group,), group_errors in errors.partition_by("freq_group", as_dict=True).items():
                design, groups = _design(conn, window, group_errors, spec)
                effects = permutation_effects(design, groups, config.settings())
                if effects.reason is not None:
                    context.log.warning(f"window {window}, {group}: no feature effects ({effects.reason})")
                    continue
                stored = effects.importances.with_columns(
                    pl.lit(effects.baseline_error).alias("baseline_error"),
                    pl.lit(effects.model_error).alias("model_error"),
                    pl.lit(effects.rows).alias("rows"),
                    pl.lit(effects.cutoffs).alias("cutoffs"),
                )
                replace_feature_importances(conn, window, group, stored, context.run_id)
                summary.append(
                    {
                        "window": window,
                        "group": group,
                        "rows": effects.rows,
                        "champion error (scaled MAE)": round(effects.baseline_error, 4),
                        "error model (held out)": round(effects.model_error, 4),
                        "ridge": effects.ridge,
                        "top group": effects.importances["feature_group"][0],
                    }
                )
                shown = effects.importances.select(
                    pl.lit(group).alias("group"),
                    "rank",
                    "feature_group",
                    pl.col("importance").round(4),
                    pl.col("relative").round(4),
                )
    return MaterializeResult(
        metadata={
            "groups": MetadataValue.md(markdown_table(pl.DataFrame(summary)))
            if summary
            else "no champion folds",
            "importances": MetadataValue.md(markdown_table(shown)) if shown.height else "none",
        }
    )


def _design(
    conn: Any, window: str, errors: pl.DataFrame, spec: FeatureSpec
) -> tuple[pl.DataFrame, dict[str, str]]:
    """Design rows (unique_id, cutoff, error, features…) of one group's champion folds."""
    series_ids = errors[UNIQUE_ID].unique().sort().to_list()
    first_cutoff = errors["cutoff"].min()
    parts: list[pl.DataFrame] = []
    groups: dict[str, str] = {}
    # Slices give each frequency alias' series, group and season; their range is set below.
    for part in history_slices(conn, window, series_ids, lambda _: 0, from_window_start=False).slices:
        # From the lookback before the first fold's cutoff, not the window's start.
        since = points_before_anchor(first_cutoff, part.freq, spec.lookback_steps(part.season))
        history = replace(part, since=since).read(conn)
        drivers = driver_columns(history.columns)
        features = build_features(
            history, spec=spec, season=part.season, group=part.group, drivers=drivers, since=first_cutoff
        )
        part_groups = feature_groups(features.columns, drivers)
        at_cutoff = [c for c, g in part_groups.items() if g in _AT_CUTOFF]
        at_target = [c for c, g in part_groups.items() if g not in _AT_CUTOFF]
        rows = (
            errors.filter(pl.col(UNIQUE_ID).is_in(part.series_ids))
            .join(features.select(UNIQUE_ID, DS, *at_target), on=[UNIQUE_ID, DS], how="left")
            .join(
                features.select(UNIQUE_ID, pl.col(DS).alias("cutoff"), *at_cutoff),
                on=[UNIQUE_ID, "cutoff"],
                how="left",
            )
        )
        parts.append(rows.drop("freq_group", DS, "step"))
        groups.update(part_groups)
    design = pl.concat(parts, how="diagonal_relaxed") if parts else pl.DataFrame()
    return design, {c: g for c, g in groups.items() if c in design.columns}
