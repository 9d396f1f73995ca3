"""The data-quality suite that judges a landed batch as a whole, before its rows are accepted.

Row-level validation refuses bad rows one by one; on its own that would let a batch in which a
third of the rows are broken through, quietly shrinking the data. This suite looks at the batch
"as landed" (refused rows included) and says, per problem, whether it is rare enough to accept
the batch. Each outcome becomes one Dagster asset check, wired elsewhere.

Great Expectations 1.x does the judging (plain GX: dagster-ge needs GX < 1), so a threshold is
GX's own `mostly` and GX alone decides success. GX takes seconds to import, so it is imported
only when a suite runs: the Dagster code location imports this module and must load fast.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any

import polars as pl

if TYPE_CHECKING:
    import pandas as pd

FILE = "file"
LINE = "line"
SERIES_ID = "series_id"
TS = "ts"
Y = "y"
MISSING_COLUMN = "missing_column"
CONFLICTING_DUPLICATE = "conflicting_duplicate"
ON_GRID = "on_grid"
STEPS_MISSING_BEFORE = "steps_missing_before"

# What the suite reads. `reason` (the row-level verdict) is deliberately not among them: the
# suite judges the landed data itself, independently of how ingestion happened to label it.
INPUT_SCHEMA: dict[str, type[pl.DataType] | pl.DataType] = {
    FILE: pl.Utf8,
    LINE: pl.Int64,
    SERIES_ID: pl.Utf8,
    TS: pl.Datetime,
    Y: pl.Float64,
    MISSING_COLUMN: pl.Utf8,
    CONFLICTING_DUPLICATE: pl.Boolean,
    ON_GRID: pl.Boolean,
    STEPS_MISSING_BEFORE: pl.Int64,
}

# Derived: why a target is unusable ("missing", "NaN", "inf", "-inf"), null when it is fine. A
# label rather than a boolean, so a failure's sample says what was wrong instead of `False`.
_Y_PROBLEM = "y_problem"

SAMPLE_SIZE = 5  # unexpected values and row locations kept per check: enough to find the culprit

CHECK_NAMES: tuple[str, ...] = (
    "required_columns",
    "series_ids_present",
    "timestamps_parse",
    "finite_targets",
    "no_conflicting_duplicates",
    "on_series_grid",
    "no_gaps",
    "within_bounds",
)


@dataclass(frozen=True)
class QualityThresholds:
    """How much of each problem a batch may carry and still be accepted.

    Fractions are of the rows an expectation evaluates: rows whose value it ignores (an unknown
    grid position, say) count neither way.
    """

    max_failing_fraction: float = 0.01  # a blocking check fails above this fraction of unexpected rows
    max_gap_fraction: float = 0.05  # the (non-blocking) gap warning fires above this fraction
    lower_bound: float | None = None  # optional bounds on y; `within_bounds` runs only when one is set
    upper_bound: float | None = None

    def __post_init__(self) -> None:
        # Caught here rather than by GX mid-validation, where it would read as a failed check.
        for name in ("max_failing_fraction", "max_gap_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {value!r}")
        for name in ("lower_bound", "upper_bound"):
            value = getattr(self, name)
            if value is not None and math.isnan(value):
                raise ValueError(f"{name} must be a number, got NaN")
        if (
            self.lower_bound is not None
            and self.upper_bound is not None
            and self.lower_bound > self.upper_bound
        ):
            raise ValueError(f"lower_bound {self.lower_bound} exceeds upper_bound {self.upper_bound}")

    @property
    def has_bounds(self) -> bool:
        return self.lower_bound is not None or self.upper_bound is not None


@dataclass(frozen=True)
class ExpectationOutcome:
    check_name: str  # stable identifier, used as the Dagster asset-check name
    description: str  # one human sentence, shown in the UI
    expectation: str  # GX expectation class name, e.g. "ExpectColumnValuesToNotBeNull"
    blocking: bool
    success: bool
    evaluated: int  # rows the expectation looked at
    unexpected: int
    unexpected_fraction: float
    # JSON-serializable: threshold, mostly, the expectation's arguments, `sample` (up to
    # SAMPLE_SIZE unexpected values), `rows` (their file and line), and `error` when GX failed.
    details: dict[str, Any]


@dataclass(frozen=True)
class _Check:
    name: str
    description: str
    expectation: str
    column: str
    blocking: bool
    threshold: float
    kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def mostly(self) -> float:
        return 1.0 - self.threshold


def _bounds_phrase(lower: float | None, upper: float | None) -> str:
    if lower is not None and upper is not None:
        return f"between {lower:g} and {upper:g}"
    if lower is not None:
        return f"at least {lower:g}"
    return f"at most {upper:g}"


def _checks(thresholds: QualityThresholds) -> list[_Check]:
    """The suite for these thresholds, in CHECK_NAMES order."""
    limit = thresholds.max_failing_fraction
    checks = [
        _Check(
            "required_columns",
            "Every landed row comes from a file that has all the required columns.",
            "ExpectColumnValuesToBeNull",
            MISSING_COLUMN,
            blocking=True,
            threshold=limit,
        ),
        _Check(
            "series_ids_present",
            "Every landed row names its series.",
            "ExpectColumnValuesToNotBeNull",
            SERIES_ID,
            blocking=True,
            threshold=limit,
        ),
        _Check(
            "timestamps_parse",
            "Every landed row has a timestamp that parses.",
            "ExpectColumnValuesToNotBeNull",
            TS,
            blocking=True,
            threshold=limit,
        ),
        _Check(
            "finite_targets",
            "Every landed row has a target value that is present and finite.",
            "ExpectColumnValuesToBeNull",
            _Y_PROBLEM,
            blocking=True,
            threshold=limit,
        ),
        _Check(
            "no_conflicting_duplicates",
            "No series has different target values landed for the same timestamp.",
            "ExpectColumnValuesToBeInSet",
            CONFLICTING_DUPLICATE,
            blocking=True,
            threshold=limit,
            kwargs={"value_set": [False]},
        ),
        _Check(
            "on_series_grid",
            "Timestamps lie on their series' sampling grid.",
            "ExpectColumnValuesToBeInSet",
            ON_GRID,
            blocking=True,
            threshold=limit,
            kwargs={"value_set": [True]},
        ),
        _Check(
            "no_gaps",
            "Series have no missing steps on their sampling grid (a warning; it never blocks).",
            "ExpectColumnValuesToBeBetween",
            STEPS_MISSING_BEFORE,
            blocking=False,
            threshold=thresholds.max_gap_fraction,
            kwargs={"max_value": 0},
        ),
    ]
    if thresholds.has_bounds:
        bounds = {"min_value": thresholds.lower_bound, "max_value": thresholds.upper_bound}
        checks.append(
            _Check(
                "within_bounds",
                f"Target values are {_bounds_phrase(thresholds.lower_bound, thresholds.upper_bound)}.",
                "ExpectColumnValuesToBeBetween",
                Y,
                blocking=True,
                threshold=limit,
                kwargs={k: v for k, v in bounds.items() if v is not None},
            )
        )
    return checks


def _conformed(batch: pl.DataFrame) -> pl.DataFrame:
    """The input columns with their documented dtypes; an all-null column may arrive as `Null`."""
    absent = [c for c in INPUT_SCHEMA if c not in batch.columns]
    if absent:
        raise ValueError(f"landed batch lacks columns {absent}")
    columns = []
    for name, dtype in INPUT_SCHEMA.items():
        keep = name == TS and isinstance(batch.schema[name], pl.Datetime)  # any unit or time zone
        columns.append(pl.col(name) if keep else pl.col(name).cast(dtype))
    return batch.select(columns)


def _gx_frame(batch: pl.DataFrame, with_y: bool) -> pd.DataFrame:
    """Only the columns the suite reads, shaped so that pandas gets them cheaply.

    Every extra column costs: GX's pandas engine copies the whole frame for each expectation
    that ignores nulls. Text becomes categorical because a batch repeats few distinct file and
    series names, and categorical avoids one Python string object per row.
    """
    y = pl.col(Y)
    y_problem = (
        pl.when(y.is_null())
        .then(pl.lit("missing"))
        .when(y.is_nan())
        .then(pl.lit("NaN"))
        .when(y == math.inf)
        .then(pl.lit("inf"))
        .when(y == -math.inf)
        .then(pl.lit("-inf"))
    )
    columns = [
        pl.col(FILE).cast(pl.Categorical),
        pl.col(LINE),
        pl.col(MISSING_COLUMN).cast(pl.Categorical),
        pl.col(SERIES_ID).cast(pl.Categorical),
        pl.col(TS),
        y_problem.cast(pl.Categorical).alias(_Y_PROBLEM),
        pl.col(CONFLICTING_DUPLICATE),
        pl.col(ON_GRID),
        pl.col(STEPS_MISSING_BEFORE),
    ]
    if with_y:
        columns.append(y)
    return batch.select(columns).to_pandas()


def _import_gx() -> Any:
    """Import GX with usage statistics off, so that validating never reaches the network."""
    os.environ["GX_ANALYTICS_ENABLED"] = "False"
    import great_expectations as gx

    return gx


def _run_suite(frame: pd.DataFrame, checks: list[_Check]) -> dict[str, Any]:
    """Every expectation in one validation of one batch, so GX computes shared metrics once."""
    gx = _import_gx()
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    # A fresh in-memory context per run: nothing on disk, nothing shared between runs or threads,
    # no usage statistics, and no tqdm bars spilling into the run's captured stderr.
    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False),
    )
    context = gx.get_context(project_config=config, mode="ephemeral")
    batch_definition = (
        context.data_sources.add_pandas("landed")
        .add_dataframe_asset("landed_batch")
        .add_batch_definition_whole_dataframe("whole_batch")
    )
    suite = context.suites.add(gx.ExpectationSuite(name="landed_quality"))
    for check in checks:
        expectation_class = getattr(gx.expectations, check.expectation)
        suite.add_expectation(
            expectation_class(
                column=check.column, mostly=check.mostly, meta={"check_name": check.name}, **check.kwargs
            )
        )
    # The suite is set-like: it silently drops an expectation equal to one already in it.
    if len(suite.expectations) != len(checks):
        raise RuntimeError("two landed-quality checks configure the same expectation")

    # BASIC: counts plus a few unexpected values and rows. SUMMARY (GX's default) and COMPLETE
    # also list the index of every unexpected row, which costs seconds when a problem is
    # widespread, exactly when the answer is already clear.
    result_format = {
        "result_format": "BASIC",
        "partial_unexpected_count": SAMPLE_SIZE,
        "include_unexpected_rows": True,
    }
    # A ValidationDefinition loads the batch once; `batch.validate` would load it a second
    # time, and every load fingerprints the whole frame (about a second per 5M rows).
    validation = context.validation_definitions.add(
        gx.ValidationDefinition(name="landed_quality", data=batch_definition, suite=suite)
    ).run(batch_parameters={"dataframe": frame}, result_format=result_format)
    # Failed expectations come first in GX's list, so results are matched by name, not position.
    return {r.expectation_config.meta["check_name"]: r for r in validation.results}


def _json_safe(value: Any) -> Any:
    """Samples end up in Dagster metadata and logs, which take plain JSON values only."""
    import pandas as pd

    if value is None or value is pd.NaT or value is pd.NA:
        return None
    if isinstance(value, pd.Timestamp | datetime | date | time):
        return value.isoformat()
    if isinstance(value, pd.Timedelta | timedelta):
        return str(value)
    if hasattr(value, "item") and not isinstance(value, str | bytes):  # numpy scalars
        if str(getattr(value, "dtype", "")).startswith(("datetime64", "timedelta64")):
            return _json_safe(pd.Timestamp(value) if value.dtype.kind == "M" else pd.Timedelta(value))
        value = value.item()
    if isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        return value if math.isfinite(value) else ("inf" if value > 0 else "-inf")
    return str(value)


def _sample_rows(rows: pd.DataFrame | None) -> list[dict[str, Any]]:
    """Where the first unexpected rows came from, so someone can open the file at that line."""
    import pandas as pd

    if rows is None or len(rows) == 0:
        return []
    head = rows.head(SAMPLE_SIZE)
    return [
        {FILE: None if pd.isna(file) else str(file), LINE: None if pd.isna(line) else int(line)}
        for file, line in zip(head[FILE], head[LINE], strict=True)
    ]


def _error_message(result: Any) -> str | None:
    """GX's error for an expectation it could not evaluate, whichever shape GX reported it in."""
    info = result.exception_info or {}
    if info.get("raised_exception"):  # the expectation itself raised
        return str(info.get("exception_message"))
    for entry in info.values():  # a metric it needs raised: {metric id: exception info}
        for candidate in entry if isinstance(entry, list | set | tuple) else [entry]:
            if isinstance(candidate, dict) and candidate.get("raised_exception"):
                return str(candidate.get("exception_message"))
    if not result.success and not result.result:
        return "GX reported a failure without a result"
    return None


def _outcome(check: _Check, result: Any) -> ExpectationOutcome:
    details: dict[str, Any] = {"threshold": check.threshold, "mostly": check.mostly, **check.kwargs}
    error = _error_message(result)
    if error is not None:
        # GX catches errors per expectation; a check that could not run must never read as passed.
        details.update(error=error, sample=[], rows=[])
        return ExpectationOutcome(
            check.name, check.description, check.expectation, check.blocking, False, 0, 0, 0.0, details
        )

    stats = result.result or {}
    # Only expectations that ignore nulls report missing_count; the not-null ones evaluate all rows.
    evaluated = int(stats.get("element_count") or 0) - int(stats.get("missing_count") or 0)
    unexpected = int(stats.get("unexpected_count") or 0)
    values = list(stats.get("partial_unexpected_list") or [])[:SAMPLE_SIZE]
    if check.expectation == "ExpectColumnValuesToNotBeNull":
        values = [None] * len(values)  # null by definition; pandas would show NaN or NaT
    details["sample"] = [_json_safe(v) for v in values]
    details["rows"] = _sample_rows(stats.get("unexpected_rows"))
    return ExpectationOutcome(
        check_name=check.name,
        description=check.description,
        expectation=check.expectation,
        blocking=check.blocking,
        success=bool(result.success),
        evaluated=evaluated,
        unexpected=unexpected,
        unexpected_fraction=unexpected / evaluated if evaluated else 0.0,
        details=details,
    )


def validate_landed_batch(
    batch: pl.DataFrame, thresholds: QualityThresholds = QualityThresholds()
) -> list[ExpectationOutcome]:
    """Judge a landed batch, refused rows included, against the landed-quality suite.

    Returns one outcome per check in CHECK_NAMES order (`within_bounds` only when a bound is
    set). A failed blocking outcome means the batch should not be accepted; `no_gaps` only
    warns, because gaps are a property of the source rather than damage to this batch.
    """
    checks = _checks(thresholds)
    frame = _gx_frame(_conformed(batch), with_y=thresholds.has_bounds)
    results = _run_suite(frame, checks)
    return [_outcome(check, results[check.name]) for check in checks]
