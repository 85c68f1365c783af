"""How the pipeline bench measures the framework's floor and the CPU of each process."""

import multiprocessing
import time

import psutil

from bench.pipeline import Processes, records_per_second


def test_the_relay_floor_is_paced_by_the_records_own_create_times() -> None:
    # 8,000 records over one second: 8,000/s, whenever anybody looked at the topic (it was
    # timed by polls 0.2 s apart, which counted up to 0.2 s of waiting: 6,700/s here).
    times = [1_000_000 + n * 1000 // 8000 for n in range(8001)]
    assert abs(records_per_second(times) - 8000) < 10


def _burn(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def test_the_cpu_of_a_child_that_exited_between_two_samples_is_counted() -> None:
    # PostgreSQL's autovacuum workers and backends come and go; the CPU of those that exited
    # was lost (or, alive at one sample and gone at the next, taken away).
    me = psutil.Process()
    cpu = Processes({"group": [me]})
    before = cpu.cpu_seconds()["group"]
    child = multiprocessing.get_context("fork").Process(target=_burn, args=(0.5,))
    child.start()
    child.join()
    assert cpu.cpu_seconds()["group"] - before >= 0.45
