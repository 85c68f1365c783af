"""Benchmarks: scripts run as ``.venv/bin/python bench/<name>.py`` (and importable, for tests)."""

import argparse

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
