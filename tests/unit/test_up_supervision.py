"""``caravan up``'s watch over its services (``ServiceProcesses.supervise``) and the
``caravan pause``/``resume`` commands that ask it to stop or start one, without processes:
the e2e test in ``tests/e2e/test_ops.py`` runs it on the real services."""

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from caravan import checkout, cli, system
from caravan.output import OperatorError
from services import SERVICES
from tests.unit.conftest import Caravan


class Exited:
    """A process that has exited with ``code``."""

    def __init__(self, code: int) -> None:
        self.returncode = code

    def poll(self) -> int:
        return self.returncode


def test_a_service_that_keeps_exiting_stops_caravan_up_instead_of_starting_for_ever(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    procs = system.ServiceProcesses({}, tmp_path)
    started: list[tuple[str, ...]] = []

    def start(names: tuple[str, ...] = SERVICES, instance: int = 1) -> None:
        started.append(names)
        for name in names:
            procs.procs[name] = Exited(1)  # type: ignore[assignment]

    monkeypatch.setattr(procs, "start", start)
    for name in SERVICES:
        procs.procs[name] = Exited(0) if name == "orders" else _Running()  # type: ignore[assignment]
    for second in range(system.MAX_EXITS - 1):
        said = procs.supervise(set(), now=100.0 + second)
        assert len(said) == 1 and said[0].startswith("service orders exited with")
    with pytest.raises(OperatorError, match="orders exited 5 times within a minute"):
        procs.supervise(set(), now=104.0)
    assert started == [("orders",)] * (system.MAX_EXITS - 1)
    procs.exits["orders"] = [0.0] * 10  # long ago: counted no more
    assert procs.supervise(set(), now=1000.0)[0].startswith("service orders exited with 1")


class _Running:
    returncode = None

    def poll(self) -> None:
        return None


class SlowToStop:
    """A service process that takes its time to stop (SIGTERM does not end it; SIGKILL
    does), and whose first wait a Ctrl-C cuts short."""

    def __init__(self) -> None:
        self.returncode: int | None = None
        self.waits = 0

    def poll(self) -> int | None:
        return self.returncode

    def send_signal(self, sig: int) -> None:
        pass

    def wait(self, timeout: float | None = None) -> int:
        self.waits += 1
        if self.waits == 1:
            raise KeyboardInterrupt
        if self.returncode is None:
            raise subprocess.TimeoutExpired("python -m services.orders", timeout or 0)
        return self.returncode

    def kill(self) -> None:
        self.returncode = -9


def test_ctrl_c_while_a_paused_service_stops_leaves_it_to_caravan_up_to_end(
    tmp_path: Path,
) -> None:
    procs = system.ServiceProcesses({}, tmp_path)
    orders = SlowToStop()
    procs.procs["orders"] = orders  # type: ignore[assignment]
    with pytest.raises(KeyboardInterrupt):
        procs.supervise({"orders"})  # caravan pause orders, then Ctrl-C while it stops
    procs.stop(timeout=0.1)  # caravan up's finally
    assert (orders.returncode, procs.procs) == (-9, {})


def test_pause_and_resume_wait_for_caravan_up_to_do_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(checkout, "PAUSED", tmp_path / "paused")
    monkeypatch.setattr(checkout, "UP_PIDS", tmp_path / "up.pids")
    monkeypatch.setattr(checkout, "running_up", lambda: True)
    keys: dict[str, dict[str, object]] = {"orders": {}, "payments+notifications+platform": {}}
    checkout.UP_PIDS.write_text(json.dumps(keys))

    def up_watch() -> None:  # what caravan up's loop does with the markers, a little later
        time.sleep(0.3)
        if "notifications" in checkout.paused():
            checkout.UP_PIDS.write_text('{"orders": {}}')
        else:
            checkout.UP_PIDS.write_text(json.dumps(keys))

    def run(*args: str) -> str:
        """``caravan ARGS`` while caravan up's loop acts on it; what it printed."""
        watch = threading.Thread(target=up_watch)
        watch.start()
        done = CliRunner().invoke(cli.app, list(args))
        watch.join()
        assert done.exit_code == 0, done.output
        return done.output

    said = run("pause", "notifications")
    assert "paused notifications (and payments, platform, in its process)" in said
    assert checkout.paused() == {"notifications"}
    said = run("resume", "notifications")
    assert "resumed notifications (payments+notifications+platform)" in said
    assert checkout.paused() == set()


def test_resume_of_a_service_not_paused_and_pause_of_a_paused_one_say_nothing_changed(
    caravan: Caravan, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both said "resumed orders (orders)" and "paused orders", exit 0, changing nothing."""
    monkeypatch.setattr(checkout, "running_up", lambda: True)
    checkout.UP_PIDS.parent.mkdir(parents=True)
    checkout.UP_PIDS.write_text('{"orders": {}}')  # it runs
    code, out, err = caravan("resume", "orders")
    assert (code, out + err) == (0, "orders is not paused, nothing changed\n")
    checkout.PAUSED.mkdir()
    (checkout.PAUSED / "inventory").touch()  # paused: caravan up stopped it
    code, out, err = caravan("pause", "inventory")
    said = "inventory is paused already; `caravan resume inventory` starts it again\n"
    assert (code, out + err) == (0, said)
    assert checkout.paused() == {"inventory"}


def test_pause_refuses_an_unknown_service_and_no_running_caravan_up(
    caravan: Caravan, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, err = caravan("pause", "shipping")
    assert code == 2 and "none of orders" in out + err
    monkeypatch.setattr(checkout, "running_up", lambda: False)
    code, out, err = caravan("pause", "orders")
    assert code == 1 and "no `caravan up` runs" in out + err
    assert checkout.paused() == set()


def test_running_up_is_whether_the_lock_of_caravan_up_is_held(tmp_path: Path) -> None:
    base = tmp_path / "up"
    assert not checkout.running_up(base)
    with system.run_alone(base):
        assert running_elsewhere(base)
    assert not checkout.running_up(base)


def running_elsewhere(base: Path) -> bool:
    """``running_up`` asked from another process (a lock is the holder's own to take again)."""
    code = (
        "from pathlib import Path; from caravan import checkout; "
        f"print(checkout.running_up(Path({str(base)!r})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return out.stdout.strip() == "True"
