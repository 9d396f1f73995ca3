"""Which files ingestion may read: those inside the allowed roots, judged by where they really are.

`ingest` copies whatever path it is given into the landing folder, and a refused row keeps its
raw text in `forecasting.quarantine`, so reading a path is enough to move its content into the
database (and into the UI). A path is therefore checked after links and `..` are resolved:
neither `data/../../etc/passwd` nor a link in the landing folder to a secret file gets in.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from forecasting_pipeline.settings import INGEST_ROOTS_VAR


class PathOutsideRootsError(ValueError):
    """A path given to ingest lies outside every allowed root; nothing was landed."""


def real_path(path: Path) -> Path:
    """Where `path` really is: every link followed and `..` removed, even for a missing path."""
    return Path(os.path.realpath(path))


def within_roots(path: Path, roots: Sequence[Path]) -> bool:
    real = real_path(path)
    return any(real == root or real.is_relative_to(root) for root in roots)


def describe_roots(roots: Sequence[Path]) -> str:
    return ", ".join(str(root) for root in roots)


def refuse_outside(paths: Iterable[Path], roots: Sequence[Path]) -> None:
    """Raise for the first paths outside `roots`, naming them and where they lead."""
    outside = [Path(path) for path in paths if not within_roots(Path(path), roots)]
    if not outside:
        return
    shown = []
    for path in outside[:3]:
        real = real_path(path)
        shown.append(str(path) if real == Path(os.path.abspath(path)) else f"{path} (leads to {real})")
    more = f" and {len(outside) - 3} more" if len(outside) > 3 else ""
    raise PathOutsideRootsError(
        f"refused to read {'; '.join(shown)}{more}: outside the folders ingestion may read "
        f"({describe_roots(roots)}; {INGEST_ROOTS_VAR})"
    )
