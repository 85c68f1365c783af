"""``caravan status``'s processes under ``caravan up``: each as the kernel says it is."""

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from caravan import checkout
from caravan.ops.dashboard import Snapshot
from caravan.ops.status import _processes, lines, status_of
from services import SERVICES
from shared.settings import Settings


def test_under_caravan_up_a_stopped_process_and_a_gone_one_are_wrong(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A process of ``caravan up`` stopped (``kill -STOP``) or gone is said so by its pid:
    under ``--processes 2`` one process hosts three services, all frozen at once."""
    settings = Settings(token="cvn_" + "s" * 43)
    monkeypatch.setattr(checkout, "running_up", lambda: True)
    monkeypatch.setattr(checkout, "up_runs_with", lambda name, value: True)
    monkeypatch.setattr(checkout, "UP_PIDS", tmp_path / "up.pids")
    held = subprocess.Popen(["sleep", "60"])
    ended = subprocess.Popen(["true"])
    ended.wait()
    try:
        os.kill(held.pid, signal.SIGSTOP)
        os.waitid(os.P_PID, held.pid, os.WSTOPPED | os.WNOWAIT)  # stopped by now
        recorded = {
            "orders+inventory": {"pid": os.getpid()},
            "payments+notifications+platform": {"pid": held.pid},
            "dashboard": {"pid": ended.pid},
        }
        checkout.UP_PIDS.write_text(json.dumps(recorded))
        processes = _processes(settings)
    finally:
        held.kill()
        held.wait()
    assert processes == {
        "orders+inventory": {"pid": os.getpid(), "state": "running"},
        "payments+notifications+platform": {"pid": held.pid, "state": "stopped"},
        "dashboard": {"pid": ended.pid, "state": "gone"},
    }
    snap = Snapshot(at=0.0, instances={s: {"127.0.0.1:1": "up"} for s in SERVICES})
    status = status_of(snap, processes)
    assert status.wrong[:2] == [
        f"process payments+notifications+platform (pid {held.pid}) stopped",
        f"process dashboard (pid {ended.pid}) gone",
    ]
    assert f"  process orders+inventory (pid {os.getpid()}) running" in lines(status)
