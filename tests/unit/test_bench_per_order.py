"""The benchmark's figures per order (``bench.pipeline.Meter.between``): CPU in ms by
process and for the system without the bench's own driver, Kafka records, commits and
consumer steps, each over the orders confirmed in the window."""

from bench.pipeline import DRIVER, Meter, Sample


def test_per_order_figures_divide_what_each_counter_moved_by_the_orders() -> None:
    before = Sample(
        wall=100.0,
        cpu={"orders": 10.0, "kafka": 20.0, "postgres": 5.0, DRIVER: 1.0},
        offsets={"orders.requests.v1": 1_000, "orders.events.v1": 2_000},
        commits=500,
        statements=0,
        consumed={"handled": 300.0, "skipped": 100.0},
    )
    after = Sample(
        wall=110.0,  # 10 s
        cpu={"orders": 12.0, "kafka": 21.0, "postgres": 5.5, DRIVER: 1.5},
        offsets={"orders.requests.v1": 1_200, "orders.events.v1": 2_400},
        commits=740,
        statements=0,
        consumed={"handled": 2_300.0, "skipped": 1_500.0},
    )
    got = Meter.between(before, after, orders=200)
    assert got["cpu_percent"] == {"orders": 20.0, "kafka": 10.0, "postgres": 5.0, DRIVER: 5.0}
    assert got["cpu_percent_total"] == 40.0
    assert got["cpu_ms_per_order"] == {"orders": 10.0, "kafka": 5.0, "postgres": 2.5, DRIVER: 2.5}
    assert got["cpu_ms_per_order_system"] == 17.5  # the driver's 2.5 left out
    assert got["kafka_records_per_order"] == 3.0
    assert got["db_commits_per_order"] == 1.2
    assert got["consumer_steps_per_order"] == 10.0
    assert got["records_consumed_per_order"] == 17.0
    assert "db_statements_per_order" not in got  # counted only with --statements
