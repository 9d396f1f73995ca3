"""How a series moves with its drivers and with other series; no Dagster and no database in here.

Driver correlations answer "is this exogenous column worth feeding a model, and at what lead?",
so each one is measured per series, at lag 0 and with the driver leading by up to `max_lag` rows.
Cross-series correlations answer "which series share a signal?" (candidates for global models,
hierarchies or shared drivers) and have to stay cheap at 10,000 series, so they are built from a
few matrix products over a timestamps × series matrix, one column block at a time.

Every correlation is taken over pairwise-complete rows only (both sides present), which is what
`scipy.stats.pearsonr` / `spearmanr` give when handed the overlapping rows; NaN counts as missing.
A correlation that does not mean anything (fewer than 3 pairs, or a side that is constant over the
pairs) is null rather than a number that looks like evidence.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from forecasting_pipeline.schemas import DS, UNIQUE_ID, Y

if TYPE_CHECKING:
    from matplotlib.axes import Axes

DRIVER = "driver"
LAG = "lag"
PEARSON = "pearson"
SPEARMAN = "spearman"
PAIRS = "n"
BEST_LAG = "best_lag"
BEST_LAG_PEARSON = "best_lag_pearson"
PEER_ID = "peer_id"
RANK = "rank"

# Two points always lie on a line, so a correlation needs at least three pairs to say anything.
MIN_PAIRS = 3

LAGGED_SCHEMA: dict[str, pl.DataType] = {
    UNIQUE_ID: pl.String(),
    DRIVER: pl.String(),
    LAG: pl.Int32(),
    PEARSON: pl.Float64(),
    PAIRS: pl.Int64(),
}
DRIVER_SCHEMA: dict[str, pl.DataType] = {
    UNIQUE_ID: pl.String(),
    DRIVER: pl.String(),
    PEARSON: pl.Float64(),
    SPEARMAN: pl.Float64(),
    PAIRS: pl.Int64(),
    BEST_LAG: pl.Int32(),
    BEST_LAG_PEARSON: pl.Float64(),
}
CROSS_SCHEMA: dict[str, pl.DataType] = {
    UNIQUE_ID: pl.String(),
    PEER_ID: pl.String(),
    PEARSON: pl.Float64(),
    PAIRS: pl.Int64(),
    RANK: pl.Int32(),
}

# A pair's variance term n*Sxx - Sx^2 below this fraction of n*Sxx is rounding noise of a side that
# is constant over the overlap; dividing by it would turn that noise into a confident +-1.
_RELATIVE_VARIANCE_FLOOR = 1e-12


def _numeric(column: str) -> pl.Expr:
    """A column as Float64 with NaN as null, so NaN is skipped pairwise like a missing value."""
    return pl.col(column).cast(pl.Float64).fill_nan(None)


def _by_series(history: pl.DataFrame, drivers: Sequence[str]) -> pl.LazyFrame:
    """Rows in time order within each series, so a lag is a row shift inside the series."""
    missing = [column for column in (UNIQUE_ID, DS, Y, *drivers) if column not in history.columns]
    if missing:
        raise KeyError(f"history lacks columns {missing}")
    return (
        history.lazy()
        .select(pl.col(UNIQUE_ID).cast(pl.String), DS, _numeric(Y), *(_numeric(d) for d in drivers))
        .sort(UNIQUE_ID, DS)
    )


def _lagged_within_series(column: str, lag: int) -> pl.Expr:
    """`column` shifted down `lag` rows, null where the row `lag` above belongs to another series.

    On a frame sorted by series this equals `shift(lag).over(unique_id)` without a window pass.
    """
    if lag == 0:
        return pl.col(column)
    same_series = pl.col(UNIQUE_ID).shift(lag) == pl.col(UNIQUE_ID)
    return pl.when(same_series).then(pl.col(column).shift(lag))


def _pearson_by_series(
    frame: pl.LazyFrame, pairs: Mapping[str, tuple[pl.Expr, pl.Expr]], *, ranks: bool = False
) -> pl.LazyFrame:
    """`unique_id, key, pearson, n` for each named (x, y) pair of columns, per series.

    Both sides are nulled where either is missing, so the pair means, ranks and sums all see the
    same pairwise-complete rows (what scipy gets when handed those rows). Centering by the pair
    means before the sums, as scipy does, keeps the result exact to rounding for series with large
    levels; after that every statistic is a plain sum/min/max per series, which polars aggregates
    on its fast path instead of evaluating expressions group by group. Constancy is tested on the
    values themselves (min == max): the centered sum of squares of a constant column is rounding
    noise, not zero. With `ranks`, each side is replaced by its average rank among those rows,
    which makes the result Spearman's rho with scipy's tie handling.
    """
    sides: list[pl.Expr] = []
    for i, (x, y) in enumerate(pairs.values()):
        both = x.is_not_null() & y.is_not_null()
        for side, values in (("x", x), ("y", y)):
            kept = pl.when(both).then(values)
            if ranks:
                kept = kept.rank("average").over(UNIQUE_ID).cast(pl.Float64)
            sides.append(kept.alias(f"{side}{i}"))
    centered = [
        (pl.col(f"{side}{i}") - pl.col(f"{side}{i}").mean().over(UNIQUE_ID)).alias(f"{side}{i}c")
        for i in range(len(pairs))
        for side in ("x", "y")
    ]
    sums = []
    for i in range(len(pairs)):
        x, y, xc, yc = pl.col(f"x{i}"), pl.col(f"y{i}"), pl.col(f"x{i}c"), pl.col(f"y{i}c")
        sums.append(
            pl.struct(
                x.count().cast(pl.Int64).alias(PAIRS),
                (xc * yc).sum().alias("sxy"),
                (xc * xc).sum().alias("sxx"),
                (yc * yc).sum().alias("syy"),
                (x.min() != x.max()).alias("x_varies"),
                (y.min() != y.max()).alias("y_varies"),
            ).alias(f"p{i}")
        )
    keys = pl.LazyFrame({"cell": [f"p{i}" for i in range(len(pairs))], "key": list(pairs)})
    r = pl.col("sxy") / (pl.col("sxx") * pl.col("syy")).sqrt()
    meaningful = (pl.col(PAIRS) >= MIN_PAIRS) & pl.col("x_varies") & pl.col("y_varies")
    return (
        frame.select(UNIQUE_ID, *sides)
        .with_columns(centered)
        .group_by(UNIQUE_ID)
        .agg(sums)
        .unpivot(index=UNIQUE_ID, variable_name="cell")
        .unnest("value")
        .join(keys, on="cell")
        .select(
            UNIQUE_ID,
            "key",
            pl.when(meaningful).then(r.clip(-1.0, 1.0)).cast(pl.Float64).alias(PEARSON),
            PAIRS,
        )
    )


def lagged_correlations(history: pl.DataFrame, drivers: Sequence[str], max_lag: int) -> pl.DataFrame:
    """Pearson of y_t with driver_{t-k} per series, driver and k in 0..max_lag (driver leads by k rows).

    Shifts are rows within each series (series are on regular grids), so k means "k periods ahead".

    Columns: unique_id, driver, lag (Int32), pearson (Float64), n (Int64 = pairs used, both non-null).
    null pearson when n < 3 or either side constant.

    One lag at a time: the shifted, centered working columns then cost rows × drivers, not
    rows × drivers × lags, which is what keeps long lag scans affordable at 10,000 series.
    """
    if max_lag < 0:
        raise ValueError(f"max_lag must be >= 0, got {max_lag}")
    drivers = list(dict.fromkeys(drivers))
    if not drivers or history.is_empty():
        return pl.DataFrame(schema=LAGGED_SCHEMA)
    ordered = _by_series(history, drivers).collect()
    frames = []
    for lag in range(max_lag + 1):
        pairs = {driver: (_lagged_within_series(driver, lag), pl.col(Y)) for driver in drivers}
        frames.append(
            _pearson_by_series(ordered.lazy(), pairs)
            .select(UNIQUE_ID, pl.col("key").alias(DRIVER), pl.lit(lag, pl.Int32).alias(LAG), PEARSON, PAIRS)
            .collect()
        )
    return pl.concat(frames).cast(LAGGED_SCHEMA).sort(UNIQUE_ID, DRIVER, LAG)


def driver_correlations(history: pl.DataFrame, drivers: Sequence[str], max_lag: int) -> pl.DataFrame:
    """One row per (series, driver): lag-0 pearson and spearman, n, and the driver's most telling lead.

    best_lag is the k maximizing |pearson| over 0..max_lag (ties -> the smallest k, the lead that
    is cheapest to use); best_lag_pearson is the signed pearson there. Both are null when no lag
    gives a correlation. Spearman uses average ranks of the pairwise-complete rows only, as
    `scipy.stats.spearmanr` does on those rows, so a monotone but non-linear driver still shows.

    Columns: unique_id, driver, pearson, spearman, n, best_lag (Int32), best_lag_pearson.
    """
    drivers = list(dict.fromkeys(drivers))
    lagged = lagged_correlations(history, drivers, max_lag)
    if lagged.is_empty():
        return pl.DataFrame(schema=DRIVER_SCHEMA)
    spearman = _pearson_by_series(
        _by_series(history, drivers), {driver: (pl.col(driver), pl.col(Y)) for driver in drivers}, ranks=True
    ).select(UNIQUE_ID, pl.col("key").alias(DRIVER), pl.col(PEARSON).alias(SPEARMAN))
    best = (
        lagged.lazy()
        .filter(pl.col(PEARSON).is_not_null())
        .sort(pl.col(PEARSON).abs(), pl.col(LAG), descending=[True, False])
        .group_by(UNIQUE_ID, DRIVER)
        .agg(pl.col(LAG).first().alias(BEST_LAG), pl.col(PEARSON).first().alias(BEST_LAG_PEARSON))
    )
    return (
        lagged.lazy()
        .filter(pl.col(LAG) == 0)
        .select(UNIQUE_ID, DRIVER, PEARSON, PAIRS)
        .join(spearman, on=[UNIQUE_ID, DRIVER], how="left")
        .join(best, on=[UNIQUE_ID, DRIVER], how="left")
        .select(list(DRIVER_SCHEMA))
        .cast(DRIVER_SCHEMA)
        .sort(UNIQUE_ID, DRIVER)
        .collect()
    )


def _panel_matrix(panel: pl.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """`(ids, values, mask, counts)`: a timestamps × series matrix of y centered per series, 0 where missing.

    Centering by each series' own mean does not change any pairwise correlation (the pairwise
    formula re-centers over the overlap), but it keeps the moment sums small, so the
    cancellation in n*Sxy - Sx*Sy costs few digits even for series with large levels.
    """
    observed = (
        panel.lazy()
        .select(pl.col(UNIQUE_ID).cast(pl.String), DS, _numeric(Y).alias(Y))
        .filter(pl.col(Y).is_not_null() & pl.col(Y).is_finite())
        .with_columns(
            (pl.col(UNIQUE_ID).rank("dense") - 1).cast(pl.Int64).alias("_col"),
            (pl.col(DS).rank("dense") - 1).cast(pl.Int64).alias("_row"),
            (pl.col(Y) - pl.col(Y).mean().over(UNIQUE_ID)).alias("_centered"),
        )
        .collect()
    )
    ids = observed.group_by("_col").agg(pl.col(UNIQUE_ID).first()).sort("_col")[UNIQUE_ID].to_numpy()
    n_rows = int(observed["_row"].max()) + 1 if observed.height else 0
    rows = observed["_row"].to_numpy()
    cols = observed["_col"].to_numpy()
    values = np.zeros((n_rows, ids.size))
    mask = np.zeros((n_rows, ids.size))
    values[rows, cols] = observed["_centered"].to_numpy()
    mask[rows, cols] = 1.0
    return ids, values, mask, mask.sum(axis=0)


def cross_series_correlations(
    panel: pl.DataFrame, top_k: int, min_overlap: int = 10, *, block_size: int = 512
) -> pl.DataFrame:
    """For each series, its top_k peers by |pearson| of y over pairwise-complete timestamps.

    Exact (what `scipy.stats.pearsonr` gives on the overlapping rows) for ragged panels: with the
    0/1 mask M and centered values X, the overlap moments of every pair are matrix products
    (n = MᵀM, Sx = XᵀM, Sxx = (X²)ᵀM, Sxy = XᵀX, ...) and
    corr = (n*Sxy - Sx*Sy) / sqrt((n*Sxx - Sx²)(n*Syy - Sy²)). The products are taken for
    `block_size` series at a time against all series, so memory is O(series × block_size) on
    top of the matrix itself instead of O(series²).

    Pairs overlapping on fewer than `min_overlap` timestamps (never fewer than 3) are skipped, as
    are pairs where either side is constant over the overlap. Among the reported peers, ties in
    |pearson| are ranked by peer id, so the output order is deterministic.

    Columns: unique_id, peer_id, pearson, n, rank (Int32, 1 = strongest).
    """
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    min_pairs = max(int(min_overlap), MIN_PAIRS)
    ids, values, mask, counts = _panel_matrix(panel)
    n_series = ids.size
    if n_series < 2:
        return pl.DataFrame(schema=CROSS_SCHEMA)
    squares = values * values
    # Series observed fewer than min_pairs times cannot reach the overlap threshold with anyone.
    eligible = counts >= min_pairs
    k = min(top_k, n_series - 1)
    parts: list[pl.DataFrame] = []
    for start in range(0, n_series, block_size):
        block = slice(start, min(start + block_size, n_series))
        if not eligible[block].any():
            continue
        # Rows are this block's series (owners), columns every candidate peer, so the top-k search
        # runs along contiguous memory.
        owner_mask, owner_values, owner_squares = mask[:, block].T, values[:, block].T, squares[:, block].T
        pair_n = owner_mask @ mask
        sum_own = owner_values @ mask
        sum_peer = owner_mask @ values
        sum_own_sq = owner_squares @ mask
        sum_peer_sq = owner_mask @ squares
        sum_cross = owner_values @ values
        var_own = pair_n * sum_own_sq - sum_own * sum_own
        var_peer = pair_n * sum_peer_sq - sum_peer * sum_peer
        valid = (
            (pair_n >= min_pairs)
            & (var_own > _RELATIVE_VARIANCE_FLOOR * pair_n * sum_own_sq)
            & (var_peer > _RELATIVE_VARIANCE_FLOOR * pair_n * sum_peer_sq)
        )
        owners = np.arange(block.start, block.stop)
        valid[owners - block.start, owners] = False
        with np.errstate(invalid="ignore", divide="ignore"):
            corr = np.clip((pair_n * sum_cross - sum_own * sum_peer) / np.sqrt(var_own * var_peer), -1.0, 1.0)
        strength = np.where(valid, np.abs(corr), -np.inf)
        # argpartition finds each owner's k strongest peers in O(series); only those k get sorted,
        # by strength descending, then by peer index (ids are sorted, so by id) ascending.
        candidates = np.argpartition(-strength, k - 1, axis=1)[:, :k]
        candidate_strength = np.take_along_axis(strength, candidates, axis=1)
        order = np.lexsort((candidates, -candidate_strength), axis=1)
        peers = np.take_along_axis(candidates, order, axis=1)
        keep = np.isfinite(np.take_along_axis(candidate_strength, order, axis=1))
        local, slot = np.nonzero(keep)
        peer_idx = peers[local, slot]
        parts.append(
            pl.DataFrame(
                {
                    UNIQUE_ID: ids[local + block.start],
                    PEER_ID: ids[peer_idx],
                    PEARSON: corr[local, peer_idx],
                    PAIRS: pair_n[local, peer_idx].round().astype(np.int64),
                    RANK: (slot + 1).astype(np.int32),
                },
                schema=CROSS_SCHEMA,
            )
        )
    if not parts:
        return pl.DataFrame(schema=CROSS_SCHEMA)
    return pl.concat(parts).sort(UNIQUE_ID, RANK)


def _lag_matrix(lagged: pl.DataFrame) -> tuple[list[str], list[int], np.ndarray]:
    """Driver × lag matrix of the median pearson across series: one row a reader can scan per driver."""
    medians = (
        lagged.group_by(DRIVER, LAG)
        .agg(pl.col(PEARSON).median())
        .pivot(on=LAG, index=DRIVER, values=PEARSON)
        .sort(DRIVER)
    )
    lags = sorted(int(column) for column in medians.columns if column != DRIVER)
    matrix = medians.select(pl.col(str(lag)).cast(pl.Float64) for lag in lags).to_numpy()
    return medians[DRIVER].to_list(), lags, matrix


def _cross_matrix(cross: pl.DataFrame, limit: int = 20) -> tuple[list[str], np.ndarray]:
    """Correlation matrix among the `limit` best-connected series: the hubs are what a reader looks for."""
    links = (
        pl.concat([cross.select(pl.col(UNIQUE_ID).alias("id")), cross.select(pl.col(PEER_ID).alias("id"))])
        .group_by("id")
        .agg(pl.len().alias("links"))
        .sort(["links", "id"], descending=[True, False])
        .head(limit)
    )
    chosen = links["id"].to_list()
    position = pl.DataFrame({"id": chosen, "pos": list(range(len(chosen)))})
    pairs = (
        cross.select(UNIQUE_ID, PEER_ID, PEARSON)
        .join(position.rename({"id": UNIQUE_ID, "pos": "i"}), on=UNIQUE_ID)
        .join(position.rename({"id": PEER_ID, "pos": "j"}), on=PEER_ID)
        .filter(pl.col(PEARSON).is_not_null())
    )
    matrix = np.full((len(chosen), len(chosen)), np.nan)
    i, j, r = pairs["i"].to_numpy(), pairs["j"].to_numpy(), pairs[PEARSON].to_numpy()
    matrix[i, j] = r
    matrix[j, i] = r
    np.fill_diagonal(matrix, 1.0)
    return chosen, matrix


def _short(label: str, width: int = 14) -> str:
    return _plain(label if len(label) <= width else label[: width - 1] + "…")


def _plain(label: str) -> str:
    """Text as written: a `$` in a driver or series id (`$$`, `$AAPL`) would start matplotlib
    math, and an unbalanced formula fails the whole study."""
    return label.replace("$", r"\$")


def correlation_heatmap(lagged: pl.DataFrame, cross: pl.DataFrame | None, title: str) -> bytes:
    """PNG of the driver × lag medians and, when given, the cross-series matrix of the hub series.

    The median across series (not the mean) is shown so a few series with spurious ±1 on short
    overlaps do not colour a whole driver. Uses the object-oriented Agg API rather than pyplot so
    concurrent asset runs in one process never share pyplot's global figure state.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    has_lagged = lagged.height > 0
    has_cross = cross is not None and cross.height > 0
    panels = int(has_lagged) + int(has_cross)
    figure = Figure(figsize=(8, 4) if panels == 2 else (5, 4) if panels else (4, 1.5), dpi=100)
    FigureCanvasAgg(figure)
    if not panels:
        axes = figure.add_subplot(1, 1, 1)
        axes.axis("off")
        axes.text(0.5, 0.5, "no correlations to show", ha="center", va="center")
        axes.set_title(_plain(title), fontsize=9)
    else:
        axes_list = figure.subplots(1, panels, squeeze=False)[0]
        # Missing cells in grey: white is the colour of 0 on a diverging map and would read as "no link".
        colours = matplotlib.colormaps["RdBu_r"].with_extremes(bad="#d9d9d9")
        style = {"cmap": colours, "vmin": -1.0, "vmax": 1.0, "aspect": "auto", "interpolation": "nearest"}
        image = None
        if has_lagged:
            axes = axes_list[0]
            drivers, lags, matrix = _lag_matrix(lagged)
            image = axes.imshow(matrix, **style)
            axes.set_yticks(range(len(drivers)), [_short(d) for d in drivers], fontsize=7)
            step = max(1, len(lags) // 12)
            axes.set_xticks(range(0, len(lags), step), [str(g) for g in lags[::step]], fontsize=7)
            axes.set_xlabel("lag (driver leads y by k rows)", fontsize=8)
            axes.set_title("median pearson across series", fontsize=8)
            if matrix.shape[1] <= 8 and matrix.size <= 48:
                _annotate(axes, matrix)
        if has_cross:
            assert cross is not None
            axes = axes_list[-1]
            ids, matrix = _cross_matrix(cross)
            image = axes.imshow(matrix, **style)
            labels = [_short(series, 10) for series in ids]
            axes.set_xticks(range(len(ids)), labels, fontsize=6, rotation=90)
            axes.set_yticks(range(len(ids)), labels, fontsize=6)
            axes.set_title("cross-series pearson (best-connected)", fontsize=8)
            if matrix.shape[1] <= 8:
                _annotate(axes, matrix)
        figure.colorbar(image, ax=list(axes_list), shrink=0.8)
        figure.suptitle(_plain(title), fontsize=9)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def _annotate(axes: Axes, matrix: np.ndarray) -> None:
    """Write each cell's value: with a handful of cells the number reads faster than the colour."""
    rows, cols = np.nonzero(np.isfinite(matrix))
    for i, j in zip(rows.tolist(), cols.tolist(), strict=True):
        value = float(matrix[i, j])
        colour = "white" if abs(value) > 0.6 else "black"
        axes.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=6, color=colour)
