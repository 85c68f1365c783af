"""How ``make test`` shares the tests out over its pytest-xdist workers (tests/workers.py):
whole files, in the order collected, and the money checks (the file that sorts last in
tests/e2e) on every worker after all the others it ran, since each worker's database holds
only what its own tests did."""

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, cast

import pytest

from tests.workers import LoadFileOnEveryWorker

LAST = "e2e/test_zz.py"
COLLECTION = [
    "e2e/test_a.py::test_1",
    "e2e/test_a.py::test_2",
    "e2e/test_b.py::test_1",
    "e2e/test_c.py::test_1",
    "e2e/test_d.py::test_1",
    f"{LAST}::test_ledger",
    f"{LAST}::test_refused",
    "reliability/test_r.py::test_1",
]


@dataclass(eq=False)
class Worker:
    """A pytest-xdist worker as the scheduler sees it: it runs what it is sent, when told."""

    name: str
    sent: list[int] = field(default_factory=list)
    ran: list[str] = field(default_factory=list)
    shutting_down: bool = False

    @property
    def gateway(self) -> SimpleNamespace:
        return SimpleNamespace(id=self.name)

    def send_runtest_some(self, indices: list[int]) -> None:
        self.sent += indices

    def shutdown(self) -> None:
        self.shutting_down = True


def run(workers: list[Worker]) -> LoadFileOnEveryWorker:
    """The run to its end: each worker in turn ends the first test it was sent."""
    config = SimpleNamespace(
        getvalue=lambda name: ["popen"] * len(workers) if name == "tx" else None,
        option=SimpleNamespace(loadscopereorder=False),
    )
    sched = LoadFileOnEveryWorker(cast(pytest.Config, config), every=[LAST])
    nodes = cast(list[Any], workers)
    for node in nodes:
        sched.add_node(node)
        sched.add_node_collection(node, COLLECTION)
    sched.schedule()
    while busy := [w for w in workers if w.sent]:
        for worker in busy:
            index = worker.sent.pop(0)
            worker.ran.append(COLLECTION[index])
            sched.mark_test_complete(cast(Any, worker), index)
    assert sched.tests_finished and not sched.has_pending, sched.workqueue
    return sched


def test_each_worker_runs_the_money_checks_after_its_other_files() -> None:
    gw0, gw1 = Worker("gw0"), Worker("gw1")
    run([gw0, gw1])
    for worker in (gw0, gw1):
        last = [n for n in worker.ran if n.startswith(LAST)]
        assert last == [f"{LAST}::test_ledger", f"{LAST}::test_refused"], worker.ran
        before = worker.ran[: worker.ran.index(last[0])]
        assert before and all(n.startswith("e2e/") for n in before), worker.ran
        assert worker.shutting_down
    others = [n for n in gw0.ran + gw1.ran if not n.startswith(LAST)]
    assert sorted(others) == sorted(n for n in COLLECTION if not n.startswith(LAST))
    for worker in (gw0, gw1):  # in the order collected
        order = [COLLECTION.index(n) for n in worker.ran]
        assert order == sorted(order), worker.ran
    assert {"e2e/test_a.py::test_1", "e2e/test_a.py::test_2"} <= set(gw0.ran)  # whole files


def test_one_worker_runs_everything_once_in_the_order_collected() -> None:
    (gw0,) = workers = [Worker("gw0")]
    sched = run(workers)
    assert gw0.ran == COLLECTION
    assert not sched.workqueue and gw0.shutting_down
