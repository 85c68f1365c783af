"""``bench/growth.py``: a long closed loop's rate a minute at a time, against the orders
confirmed by each minute's end; what falls outside the closed loop, or in a partial minute
at its end, is left out."""

from bench.growth import minutes


def test_whole_minutes_of_the_closed_loop_only() -> None:
    seconds = [2.0 * i for i in range(200)]  # 0-400 s in 2 s buckets
    # 100/s during the warm-up; in the closed loop 150/s the first minute, 120/s after
    rates = [100.0 if s < 31 else 150.0 if s < 91 else 120.0 for s in seconds]
    report = {
        "timeline": {
            "bucket_seconds": 2.0,
            "seconds": seconds,
            "confirmed_per_second": rates,
            "phases": [
                {"what": "warming up (64 in flight)", "start_s": 0.0, "end_s": 20.0},
                {"what": "closed loop (64 in flight)", "start_s": 31.0, "end_s": 241.0},
            ],
        }
    }
    rows = minutes(report)
    assert [r["minute"] for r in rows] == [0, 1, 2]  # the half minute at the end is left out
    assert [r["confirmed_per_second"] for r in rows] == [150.0, 120.0, 120.0]
    assert [r["orders"] for r in rows] == [9000.0, 16200.0, 23400.0]
