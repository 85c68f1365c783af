"""Benchmarks: scripts run as ``.venv/bin/python bench/<name>.py`` (and importable, for tests)."""

import argparse
from collections.abc import Iterable
from typing import Any

from services import SERVICES


def add_processes(parser: argparse.ArgumentParser, results: str) -> None:
    """``--processes N``: the five services in ``N`` processes (``caravan up --processes``).
    A run in fewer is not the design's one process each, so it is written apart
    (:func:`processes_suffix`)."""
    parser.add_argument(
        "--processes",
        type=int,
        default=len(SERVICES),
        choices=range(1, len(SERVICES) + 1),
        help="processes the five services run in (caravan up --processes); fewer: reported "
        f"apart, in bench/results/{results}-<N>-processes.json",
    )


def processes_suffix(processes: int) -> str:
    """``-<N>-processes`` in the results' names of a run in fewer processes than services."""
    return "" if processes == len(SERVICES) else f"-{processes}-processes"


def mark_windows(ax: Any, windows: Iterable[tuple[str, float, float]]) -> None:
    """Shade each ``(name, start, end)`` window of a plot over time (seconds on the x axis),
    its name written up its left edge: the soak's faults, the pipeline's measured windows.
    A window of no length (a kill) is drawn half a second wide."""
    for i, (name, start, end) in enumerate(windows):
        ax.axvspan(start, max(end, start + 0.5), alpha=0.2, color=f"C{(i % 8) + 1}")
        ax.annotate(
            name,
            (start, 1.0),
            xycoords=("data", "axes fraction"),
            rotation=90,
            fontsize=7,
            va="top",
        )
