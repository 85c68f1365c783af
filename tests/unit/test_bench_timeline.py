"""The benchmark's run over time (``bench.pipeline.timeline``): orders confirmed per second
and their p99 in each bucket from the first order, failed orders left out, and the measured
windows on the same clock; the pipeline's and the soak's plots over time mark their windows
one way (``bench.mark_windows``)."""

from pathlib import Path

import matplotlib

from bench import mark_windows, soak
from bench.pipeline import Driver, plot, timeline

matplotlib.use("Agg")


def a_run() -> Driver:
    driver = Driver("unused:9092")
    start = 1000.0
    # 0-2 s: four orders confirmed in 0.1 s, one cancelled; 2-4 s: none; 4-6 s: two, slower.
    for i, (sent, done) in enumerate([(0.0, 0.1), (0.5, 0.6), (1.0, 1.1), (1.5, 1.6), (1.7, 1.8)]):
        driver.sent[f"r{i}"] = start + sent
        driver.done[f"r{i}"] = start + done
    driver.failed["r4"] = "order.cancelled"
    driver.sent["late1"], driver.done["late1"] = start + 3.0, start + 4.5
    driver.sent["late2"], driver.done["late2"] = start + 3.5, start + 5.5
    driver.sent["unfinished"] = start + 5.9
    driver.phases = [
        ("warming up (64 in flight)", start - 0.01, start + 2.0),
        ("idle", 3.0 + start, 6.0 + start),
    ]
    return driver


def test_confirmed_orders_and_their_p99_by_bucket() -> None:
    over_time = timeline(a_run(), bucket=2.0)
    assert over_time["seconds"] == [0.0, 2.0, 4.0]
    assert over_time["confirmed_per_second"] == [2.0, 0.0, 1.0]
    assert over_time["p99_ms"] == [100.0, None, 2000.0]
    assert over_time["phases"] == [
        {"what": "warming up (64 in flight)", "start_s": 0.0, "end_s": 2.0},
        {"what": "idle", "start_s": 3.0, "end_s": 6.0},
    ]


def test_a_run_without_orders_has_an_empty_timeline() -> None:
    assert timeline(Driver("unused:9092"))["seconds"] == []


def test_the_plot_draws_the_timeline(tmp_path: Path) -> None:
    steps = [
        {"offered_per_second": rate, "confirmed_per_second": rate, "latency": latency}
        for rate, latency in [(10.0, {"p50_ms": 80.0, "p95_ms": 90.0, "p99_ms": 95.0})]
    ]
    report = {
        "open_loop": steps,
        "closed_loop": {"confirmed_per_second": 20.0, "in_flight": 64},
        "headline": {"label": "test"},
        "measured_at": "now",
        "timeline": timeline(a_run()),
    }
    path = tmp_path / "run.png"
    plot(report, path)
    assert path.stat().st_size > 10_000


def test_windows_are_shaded_and_named() -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    try:
        mark_windows(ax, [("kill -9", 5.0, 5.0), ("idle", 10.0, 20.0)])
        widths = [patch.get_window_extent().width for patch in ax.patches]
        assert len(widths) == 2 and 0 < widths[0] < widths[1]  # a kill is drawn, narrow
        assert [text.get_text() for text in ax.texts] == ["kill -9", "idle"]
    finally:
        plt.close(fig)


def test_the_soak_plot_marks_its_faults(tmp_path: Path) -> None:
    report = {
        "timeline": [[0.0, 0, 0], [10.0, 80, 75], [20.0, 160, 160]],
        "faults": [["kill -9:orders", 5.0, 5.0], ["two brokers down", 8.0, 15.0]],
        "service_processes": 5,
    }
    path = tmp_path / "soak.png"
    assert soak.plot(report, path)
    assert path.stat().st_size > 10_000
