"""How a run over several pytest-xdist workers (``make test``: ``-n 3``) shares out the tests:
whole files, in the order collected (``--dist loadfile --no-loadscope-reorder``, the
project's pytest options), each worker a session of its own (its own Kafka, PostgreSQL and
services: ``tests/conftest.py``). A file of checks over everything its session did runs on
every worker, after the files before it there, since each worker's database holds only what
that worker's tests did."""

from collections.abc import Sequence

import pytest
from xdist.remote import Producer
from xdist.scheduler import LoadFileScheduling
from xdist.workermanage import WorkerController


class LoadFileOnEveryWorker(LoadFileScheduling):
    """``--dist loadfile``, save that each file of ``every`` runs on every worker: a copy
    each, taken in its turn, and left queued until the last worker has taken it."""

    def __init__(
        self, config: pytest.Config, log: Producer | None = None, every: Sequence[str] = ()
    ) -> None:
        super().__init__(config, log)
        self.every = set(every)
        self.taken: dict[str, set[WorkerController]] = {}

    def _assign_work_unit(self, node: WorkerController) -> None:
        had = self.assigned_work.setdefault(node, {})
        scope = next((scope for scope in self.workqueue if scope not in had), None)
        if scope is None:  # only files that it ran already wait, for the other workers
            return
        if scope in self.every:
            work_unit = dict(self.workqueue[scope])
            taken = self.taken.setdefault(scope, set())
            taken.add(node)
            if len(taken) >= len(self.nodes):
                del self.workqueue[scope]
        else:
            work_unit = self.workqueue.pop(scope)
        had[scope] = work_unit
        collection = self.registered_collections[node]
        node.send_runtest_some(
            [collection.index(nodeid) for nodeid, completed in work_unit.items() if not completed]
        )

    def _reschedule(self, node: WorkerController) -> None:
        had = self.assigned_work.get(node, {})
        if not node.shutting_down and all(scope in had for scope in self.workqueue):
            node.shutdown()  # nothing is left that it has not run: it ends with what it has
            return
        super()._reschedule(node)
