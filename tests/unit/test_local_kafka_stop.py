"""``LocalKafka.stop`` ends every node this object launched, even one it no longer finds by
its pidfile: a start that fails half-way (a node that dies at startup, then a retry) must
not leave a broker JVM running behind the process that gave up on it."""

import sys
from pathlib import Path

import pytest

from caravan.infra.kafka import LocalKafka

SLEEPER = [sys.executable, "-c", "import time; time.sleep(120)"]


def test_stop_ends_a_launched_node_whose_pidfile_is_gone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kafka = LocalKafka(tmp_path / "kafka", first_port=29971)
    monkeypatch.setattr(kafka, "_java", lambda libs, heap=None: SLEEPER)  # no broker needed
    node = kafka._nodes[0]
    node.home.mkdir(parents=True)
    kafka._launch(node, tmp_path)
    proc = kafka._procs[node.index]
    try:
        node.pidfile.unlink()  # what a failed attempt's cleanup left
        kafka.stop(timeout=5)
        assert proc.wait(timeout=10) is not None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_node_it_launched_is_known_by_its_process_not_its_pidfile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kafka = LocalKafka(tmp_path / "kafka", first_port=29971)
    monkeypatch.setattr(kafka, "_java", lambda libs, heap=None: SLEEPER)
    node = kafka._nodes[0]
    node.home.mkdir(parents=True)
    kafka._launch(node, tmp_path)
    first = kafka._procs[node.index]
    try:
        node.pidfile.unlink()
        assert kafka._pid(node) == first.pid  # still ours, pidfile or not
    finally:
        kafka.stop(timeout=5)
    assert first.wait(timeout=10) is not None
