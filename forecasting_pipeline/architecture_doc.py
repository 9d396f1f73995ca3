"""The generated part of `docs/architecture.md`: the asset graph as the code defines it.

A hand-drawn diagram goes stale the first time someone adds an asset or changes a dependency, so
the graph, the partitions of each asset, the jobs and the sensors are rendered from the real
`Definitions` (`forecasting_pipeline.definitions.defs`) and written between two markers in the
page. `python -m forecasting_pipeline.architecture_doc` rewrites that block; a test fails when the
committed block differs from what the code renders.

Nothing rendered depends on the deployment (calendar start, cron, automation switch), only on
the code, so every checkout renders the same text.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from forecasting_pipeline.settings import REPO_ROOT

ARCHITECTURE_PAGE = REPO_ROOT / "docs" / "architecture.md"
START_MARKER = "<!-- asset-graph:start -->"
END_MARKER = "<!-- asset-graph:end -->"
REGENERATE_COMMAND = "python -m forecasting_pipeline.architecture_doc"


@dataclass(frozen=True)
class _Edge:
    upstream: str
    downstream: str
    label: str  # how the downstream partition reads the upstream ones; empty: the same partition


@dataclass(frozen=True)
class _Asset:
    name: str
    group: str
    partitions: str
    pool: str | None
    description: str
    checks: tuple[str, ...]


def _dimension_order(names: Iterable[str]) -> list[str]:
    """Series first, then the date: the order the project writes a cell in ("series × date")."""
    from forecasting_pipeline.schemas import SERIES_DIMENSION

    return sorted(names, key=lambda name: (name != SERIES_DIMENSION, name))


def describe_partitions(partitions_def: object) -> str:
    """A partitions definition in the project's words: `series × date`, `date`, `unpartitioned`.

    Only the shape is described, never the keys: the date calendar comes from each deployment's
    data, so its windows have no place in a page every checkout shares.
    """
    from dagster import (
        DynamicPartitionsDefinition,
        MultiPartitionsDefinition,
        StaticPartitionsDefinition,
        TimeWindowPartitionsDefinition,
    )

    from forecasting_pipeline.partitions import DATE_DIMENSION

    if partitions_def is None:
        return "unpartitioned"
    if isinstance(partitions_def, MultiPartitionsDefinition):
        return " × ".join(_dimension_order(d.name for d in partitions_def.partitions_defs))
    if isinstance(partitions_def, TimeWindowPartitionsDefinition):
        return DATE_DIMENSION
    if isinstance(partitions_def, DynamicPartitionsDefinition):
        return str(partitions_def.name)
    if isinstance(partitions_def, StaticPartitionsDefinition):
        return f"static ({len(partitions_def.get_partition_keys())} keys)"
    return type(partitions_def).__name__


def _describe_dimension_mapping(dimension: str, mapping: object) -> str:
    from dagster import IdentityPartitionMapping, TimeWindowPartitionMapping

    if isinstance(mapping, IdentityPartitionMapping):
        return f"same {dimension}"
    if isinstance(mapping, TimeWindowPartitionMapping):
        start, end = mapping.start_offset, mapping.end_offset
        if end == 0 and start < 0:
            return f"same {dimension} and {-start} earlier"
        return f"{dimension} offsets {start}…{end}"
    return f"{dimension}: {type(mapping).__name__}"


def describe_mapping(mapping: object, upstream_partitions: object, downstream_partitions: object) -> str:
    """What a dependency's partition mapping means for one downstream partition; empty for the
    default between equal definitions (each partition reads the same partition upstream)."""
    from dagster import (
        MultiPartitionMapping,
        MultiPartitionsDefinition,
        MultiToSingleDimensionPartitionMapping,
    )

    if mapping is None:
        same = describe_partitions(upstream_partitions) == describe_partitions(downstream_partitions)
        return "" if same else "default mapping"
    if isinstance(mapping, MultiToSingleDimensionPartitionMapping):
        dimension = mapping.partition_dimension_name
        if isinstance(upstream_partitions, MultiPartitionsDefinition):
            return f"every series, same {dimension}"
        return f"same {dimension}"
    if isinstance(mapping, MultiPartitionMapping):
        parts = {
            name: _describe_dimension_mapping(name, dimension.partition_mapping)
            for name, dimension in mapping.downstream_mappings_by_upstream_dimension.items()
        }
        return ", ".join(parts[name] for name in _dimension_order(parts))
    return type(mapping).__name__


def _one_line(text: str | None) -> str:
    """The first paragraph of a docstring or description, on one line."""
    return " ".join((text or "").strip().split("\n\n")[0].split())


def _topological(names: list[str], edges: list[_Edge]) -> list[str]:
    """Upstream before downstream; ties keep the order `Definitions` lists the assets in."""
    remaining = {name: {e.upstream for e in edges if e.downstream == name} for name in names}
    ordered: list[str] = []
    while remaining:
        ready = next(name for name in names if name in remaining and not remaining[name] - set(ordered))
        ordered.append(ready)
        del remaining[ready]
    return ordered


def _collect() -> tuple[list[_Asset], list[_Edge]]:
    from forecasting_pipeline.definitions import defs

    assets: list[_Asset] = []
    edges: list[_Edge] = []
    partitions_by_name: dict[str, object] = {}
    checks: dict[str, list[str]] = {}
    for checks_def in defs.asset_checks or []:
        for spec in checks_def.check_specs:
            checks.setdefault(spec.asset_key.to_user_string(), []).append(spec.key.name)
    pending_deps = []
    for assets_def in defs.assets or []:
        for spec in assets_def.specs:
            name = spec.key.to_user_string()
            partitions_by_name[name] = spec.partitions_def
            own_checks = [c.name for c in assets_def.check_specs if c.asset_key == spec.key]
            assets.append(
                _Asset(
                    name=name,
                    group=spec.group_name or "default",
                    partitions=describe_partitions(spec.partitions_def),
                    pool=assets_def.op.pool,
                    description=_one_line(spec.description),
                    checks=tuple(own_checks + checks.get(name, [])),
                )
            )
            pending_deps.extend((dep, name, spec.partitions_def) for dep in spec.deps)
    for dep, downstream, downstream_partitions in pending_deps:
        upstream = dep.asset_key.to_user_string()
        label = describe_mapping(
            dep.partition_mapping, partitions_by_name.get(upstream), downstream_partitions
        )
        edges.append(_Edge(upstream, downstream, label))
    order = _topological([a.name for a in assets], edges)
    position = {name: index for index, name in enumerate(order)}
    assets.sort(key=lambda a: position[a.name])
    edges.sort(key=lambda e: (position[e.downstream], position.get(e.upstream, -1)))
    return assets, edges


def _node_id(name: str) -> str:
    return name.replace("/", "__")


def _mermaid(assets: list[_Asset], edges: list[_Edge]) -> list[str]:
    groups: dict[str, list[_Asset]] = {}
    for asset in assets:
        groups.setdefault(asset.group, []).append(asset)
    lines = ["```mermaid", "flowchart LR"]
    for group, members in groups.items():
        lines.append(f'  subgraph group_{_node_id(group)}["{group}"]')
        for asset in members:
            label = f"{asset.name}<br/>{asset.partitions}" + (f"<br/>pool {asset.pool}" if asset.pool else "")
            lines.append(f'    {_node_id(asset.name)}["{label}"]')
        lines.append("  end")
    for edge in edges:
        arrow = f'-->|"{edge.label}"|' if edge.label else "-->"
        lines.append(f"  {_node_id(edge.upstream)} {arrow} {_node_id(edge.downstream)}")
    lines.append("```")
    return lines


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _assets_table(assets: list[_Asset], edges: list[_Edge]) -> list[str]:
    lines = [
        "| asset | group | partitions | reads | pool | checks | what it holds |",
        "|---|---|---|---|---|---|---|",
    ]
    for asset in assets:
        reads = ", ".join(
            f"`{e.upstream}`" + (f" ({e.label})" if e.label else "")
            for e in edges
            if e.downstream == asset.name
        )
        checks = ", ".join(f"`{name}`" for name in asset.checks)
        lines.append(
            f"| `{asset.name}` | {asset.group} | {asset.partitions} | {_cell(reads) or '—'} | "
            f"{asset.pool or '—'} | {checks or '—'} | {_cell(asset.description)} |"
        )
    return lines


def _jobs_table(assets: list[_Asset]) -> list[str]:
    from forecasting_pipeline.definitions import defs

    graph = defs.resolve_asset_graph()
    order = [a.name for a in assets]
    lines = ["| job | partitions | assets | what it does |", "|---|---|---|---|"]
    for job in defs.jobs or []:
        selected = {key.to_user_string() for key in job.selection.resolve(graph)}
        names = ", ".join(f"`{name}`" for name in order if name in selected)
        partitions = describe_partitions(getattr(job, "partitions_def", None))
        lines.append(f"| `{job.name}` | {partitions} | {names} | {_cell(_one_line(job.description))} |")
    return lines


def _automation_table() -> list[str]:
    from dagster import RunStatusSensorDefinition

    from forecasting_pipeline.definitions import defs

    lines = ["| name | kind | evaluated | job | what it does |", "|---|---|---|---|---|"]
    for sensor in defs.sensors or []:
        kind = "run-status sensor" if isinstance(sensor, RunStatusSensorDefinition) else "sensor"
        every = f"every {sensor.minimum_interval_seconds} s" if sensor.minimum_interval_seconds else "—"
        jobs = ", ".join(f"`{t.job_name}`" for t in sensor.targets) if sensor.has_jobs else "—"
        lines.append(
            f"| `{sensor.name}` | {kind} | {every} | {jobs} | {_cell(_one_line(sensor.description))} |"
        )
    for schedule in defs.schedules or []:
        # The cron and zone come from settings (FP_SCHEDULE_CRON, FP_SCHEDULE_TIMEZONE), not the code.
        when = "`FP_SCHEDULE_CRON` in `FP_SCHEDULE_TIMEZONE`"
        lines.append(
            f"| `{schedule.name}` | schedule | {when} | `{schedule.job_name}` | "
            f"{_cell(_one_line(schedule.description))} |"
        )
    return lines


def render_asset_graph() -> str:
    """The generated block of `docs/architecture.md`, markers excluded."""
    assets, edges = _collect()
    lines = [
        f"<!-- Generated from forecasting_pipeline.definitions by `{REGENERATE_COMMAND}`; do not edit. -->",
        "",
        *_mermaid(assets, edges),
        "",
        "Edge labels say which upstream partitions one downstream partition reads; an unlabelled edge "
        "reads the same partition.",
        "",
        *_assets_table(assets, edges),
        "",
        "Jobs (a run targets one partitions definition, so each job holds the assets of one):",
        "",
        *_jobs_table(assets),
        "",
        "Sensors and schedules:",
        "",
        *_automation_table(),
    ]
    return "\n".join(lines) + "\n"


def generated_block(page: str) -> str:
    """The text between the markers of a page (without them); ValueError when they are missing."""
    start = page.find(START_MARKER)
    end = page.find(END_MARKER)
    if start < 0 or end < start:
        raise ValueError(f"the page has no {START_MARKER} … {END_MARKER} block")
    return page[start + len(START_MARKER) : end].strip("\n") + "\n"


def replace_block(page: str, block: str) -> str:
    """The page with its generated block replaced by `block`."""
    generated_block(page)  # the markers must be there
    head, rest = page.split(START_MARKER, 1)
    _, tail = rest.split(END_MARKER, 1)
    return f"{head}{START_MARKER}\n{block.strip(chr(10))}\n{END_MARKER}{tail}"


def main(page: Path = ARCHITECTURE_PAGE) -> None:
    """Rewrite the generated block of the architecture page in place."""
    text = page.read_text(encoding="utf-8")
    page.write_text(replace_block(text, render_asset_graph()), encoding="utf-8")
    sys.stdout.write(f"updated the asset graph in {page}\n")


if __name__ == "__main__":
    main()
