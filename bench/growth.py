"""How the closed loop holds up as the tables grow: long closed loops side by side.

    .venv/bin/python bench/growth.py LABEL=RUN.json [LABEL=RUN.json ...] --output OUT.png

Each run is the JSON of ``bench/pipeline.py --quick --fresh --duration 900 --output
RUN.json`` (a closed loop of 15 minutes on a new cluster; ``timeline`` in its report). The
plot draws each run's confirmed orders per second, a minute at a time, against the orders
confirmed since its closed loop began, and prints the minutes' rates; ``OUT.json`` beside
the plot keeps them.
"""

import argparse
import json
from pathlib import Path
from typing import Any

MINUTE = 60.0


def minutes(report: dict[str, Any]) -> list[dict[str, float]]:
    """The closed loop's rate in each whole minute, and the orders confirmed by its end."""
    over_time = report["timeline"]
    (window,) = [p for p in over_time["phases"] if p["what"].startswith("closed loop")]
    bucket = over_time["bucket_seconds"]
    rates: dict[int, list[float]] = {}
    for second, rate in zip(over_time["seconds"], over_time["confirmed_per_second"], strict=True):
        if window["start_s"] <= second and second + bucket <= window["end_s"]:
            rates.setdefault(int((second - window["start_s"]) // MINUTE), []).append(rate)
    rows, confirmed = [], 0.0
    for minute, values in sorted(rates.items()):
        if (len(values) + 1) * bucket < MINUTE:
            continue  # a partial minute at the window's end (a bucket may straddle an edge)
        rate = sum(values) / len(values)
        confirmed += rate * MINUTE
        rows.append({"minute": minute, "confirmed_per_second": round(rate, 1), "orders": confirmed})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", metavar="LABEL=RUN.json")
    parser.add_argument("--output", type=Path, required=True, help="the plot (.png)")
    args = parser.parse_args()
    runs = {}
    for arg in args.runs:
        label, _, path = arg.rpartition("=")
        report = json.loads(Path(path).read_text())
        closed = report["closed_loop"]
        runs[label or path] = {
            "measured_at": report["measured_at"],
            "closed_loop_confirmed_per_second": closed["confirmed_per_second"],
            # PostgreSQL's CPU per order, in ms: what the tables' growth shows in first
            "postgres_cpu_ms_per_order": round(
                10 * closed["cpu_percent"]["postgres"] / closed["confirmed_per_second"], 2
            ),
            "minutes": minutes(report),
        }
    for label, run in runs.items():
        rates = " ".join(f"{m['confirmed_per_second']:.0f}" for m in run["minutes"])
        print(
            f"{label}: {run['closed_loop_confirmed_per_second']} orders/s, PostgreSQL"
            f" {run['postgres_cpu_ms_per_order']} ms of CPU per order; by minute {rates}"
        )
    args.output.with_suffix(".json").write_text(json.dumps(runs, indent=2) + "\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    for label, run in runs.items():
        ax.plot(
            [m["orders"] / 1000 for m in run["minutes"]],
            [m["confirmed_per_second"] for m in run["minutes"]],
            "o-",
            label=f"{label}, {run['measured_at'][11:16]}: {run['closed_loop_confirmed_per_second']}"
            f"/s, PostgreSQL {run['postgres_cpu_ms_per_order']} ms/order",
        )
    ax.set(
        xlabel="orders confirmed since the closed loop began, thousands (at the minute's end)",
        ylabel="confirmed orders / s (a minute's mean)",
        title="Caravan pipeline: the closed loop as the tables grow, 64 orders in flight",
        ylim=(0, None),
    )
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.24))
    fig.tight_layout()
    fig.savefig(args.output, dpi=100, bbox_inches="tight")
    print(f"wrote {args.output} and {args.output.with_suffix('.json')}")


if __name__ == "__main__":
    main()
