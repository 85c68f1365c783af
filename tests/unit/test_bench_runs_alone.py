"""A bench run holds its cluster's folder alone (``system.run_alone``): a second run on the
same ports stops at once, before it starts, stops or removes anything, instead of sharing
the first run's Kafka and PostgreSQL and stopping them under it when it ends."""

import contextlib
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from caravan import system
from caravan.checkout import CACHE, REPO_ROOT

PORT = 29993  # no test or default run uses it


def test_a_second_holder_is_refused_until_the_first_lets_go(tmp_path: Path) -> None:
    base = tmp_path / "bench-1"
    with system.run_alone(base):
        with (
            pytest.raises(SystemExit, match="in use by another run") as refused,
            system.run_alone(base),
        ):
            pytest.fail("two runs held one folder")
        assert "bench-1" in str(refused.value)
        assert "wait for it to end, or give this run other ports" in str(refused.value)
        with (
            pytest.raises(SystemExit, match=r"in use by .*: stop that one first"),
            system.run_alone(base, "stop that one first"),  # as 'caravan up' says
        ):
            pytest.fail("two runs held one folder")
    with system.run_alone(base):  # released when the first run ended
        pass


@pytest.fixture
def held() -> Iterator[Path]:
    """The folders the bench scripts would use on ``PORT``, held by this test, each with a
    file that a second run must leave where it is; removed, with their locks, while still
    held. Another test run of this checkout holding them (two at once) is refused here: it
    removed the holder's folders and locks as it failed, and the holder's bench then took
    the ports and started for real (Kafka, PostgreSQL, services on HTTP 19580-19584, left
    running when the test's 120 s ran out)."""
    bases = [CACHE / f"{kind}-{PORT}" for kind in ("bench", "soak")]
    with contextlib.ExitStack() as holding:
        try:
            for base in bases:
                holding.enter_context(system.run_alone(base))
        except SystemExit as refused:  # a SystemExit breaks pytest's fixture teardown
            pytest.fail(f"another test run of this checkout holds them: {refused}")
        try:
            for base in bases:
                base.mkdir(parents=True)
                (base / "kept").write_text("the first run's data")
            yield CACHE
        finally:
            for base in bases:
                shutil.rmtree(base, ignore_errors=True)
                base.with_name(f"{base.name}.lock").unlink(missing_ok=True)


@pytest.mark.parametrize(
    "script", ["bench/pipeline.py --fresh", "bench/soak.py", "bench/inventory_reservations.py"]
)
def test_a_bench_on_ports_in_use_stops_before_it_starts_anything(held: Path, script: str) -> None:
    path, *flags = script.split()
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, path, "--kafka-port", str(PORT), *flags],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    assert "is in use by another run on the same ports" in done.stderr
    assert "starting" not in done.stdout + done.stderr  # nor Kafka, nor PostgreSQL
    assert time.monotonic() - started < 60
    for kind in ("bench", "soak"):
        assert (held / f"{kind}-{PORT}" / "kept").read_text() == "the first run's data"
