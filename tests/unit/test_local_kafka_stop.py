"""``LocalKafka.stop`` ends every node this object launched, even one it no longer finds by
its pidfile: a start that fails half-way (a node that dies at startup, then a retry) must
not leave a broker JVM running behind the process that gave up on it."""

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from caravan.infra.kafka import LocalKafka

SLEEPER = [sys.executable, "-c", "import time; time.sleep(120)"]


@pytest.fixture
def launched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalKafka]:
    """A one-node LocalKafka whose node it launched (a sleeping process stands in for the
    JVM: no broker needed) and whose pidfile is then gone, as a failed attempt's cleanup
    leaves it; the process is killed afterwards whatever the test did."""
    kafka = LocalKafka(tmp_path / "kafka", first_port=29971)
    monkeypatch.setattr(kafka, "_java", lambda libs, heap=None: SLEEPER)
    node = kafka._nodes[0]
    node.home.mkdir(parents=True)
    kafka._launch(node, tmp_path)
    proc = kafka._procs[node.index]
    node.pidfile.unlink()
    try:
        yield kafka
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_stop_ends_a_launched_node_whose_pidfile_is_gone(launched: LocalKafka) -> None:
    proc = launched._procs[0]
    launched.stop(timeout=5)
    assert proc.wait(timeout=10) is not None


def test_a_node_it_launched_is_known_by_its_process_not_its_pidfile(
    launched: LocalKafka,
) -> None:
    first = launched._procs[0]
    try:
        assert launched._pid(launched._nodes[0]) == first.pid  # still ours, pidfile or not
    finally:
        launched.stop(timeout=5)
    assert first.wait(timeout=10) is not None
