"""The asset graph in docs/architecture.md is the one the code defines."""

from __future__ import annotations

import re

from forecasting_pipeline.architecture_doc import (
    ARCHITECTURE_PAGE,
    END_MARKER,
    REGENERATE_COMMAND,
    START_MARKER,
    describe_partitions,
    generated_block,
    render_asset_graph,
    replace_block,
)


def test_the_committed_graph_is_what_the_definitions_render():
    committed = generated_block(ARCHITECTURE_PAGE.read_text(encoding="utf-8"))
    assert committed == render_asset_graph(), (
        f"the asset graph in docs/architecture.md is out of date with forecasting_pipeline.definitions; "
        f"regenerate it with `{REGENERATE_COMMAND}`"
    )


def test_the_diagram_has_every_asset_and_every_dependency_of_the_asset_graph():
    from forecasting_pipeline.definitions import defs

    graph = defs.resolve_asset_graph()
    expected = {
        (parent.to_user_string(), key.to_user_string())
        for key in graph.get_all_asset_keys()
        for parent in graph.get(key).parent_keys
    }
    block = render_asset_graph()
    drawn = set(re.findall(r"^  (\w+) -->(?:\|\"[^\"]*\"\|)? (\w+)$", block, flags=re.MULTILINE))
    assert drawn == expected
    for key in graph.get_all_asset_keys():
        name = key.to_user_string()
        partitions = describe_partitions(graph.get(key).partitions_def)
        assert f'    {name}["{name}<br/>{partitions}' in block


def test_partitions_are_described_by_shape_not_by_keys():
    from forecasting_pipeline.partitions import date_partitions, series_date_partitions

    assert describe_partitions(series_date_partitions) == "series × date"
    assert describe_partitions(date_partitions) == "date"
    assert describe_partitions(None) == "unpartitioned"


def test_replacing_the_block_keeps_the_prose_around_it():
    page = f"# Title\n\nbefore\n\n{START_MARKER}\nold\n{END_MARKER}\n\nafter\n"
    replaced = replace_block(page, "new graph\n")
    assert replaced == f"# Title\n\nbefore\n\n{START_MARKER}\nnew graph\n{END_MARKER}\n\nafter\n"
    assert generated_block(replaced) == "new graph\n"
