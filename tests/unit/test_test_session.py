"""What the test session (tests/conftest.py) sets for every test, checked under the suite
itself: a setting that is not in force lets the tests it was for fail on a loaded machine."""

import re
from pathlib import Path

from hypothesis import settings

from caravan.infra.kafka import CONTROLLER_PORT_OFFSET
from tests.conftest import OWN_PORTS, RUNS_APART, WORKER_PORT_STEP

TESTS = Path(__file__).parents[1]


def test_property_tests_run_without_hypothesis_deadline() -> None:
    """The profile "caravan" is the one in force: no deadline on an example, for a test
    without settings of its own and for one that sets others (a module's ``@settings``
    takes the rest from the loaded profile). Without it, an example slower than 200 ms
    (CI at load 10-25) failed with DeadlineExceeded, or Flaky. By its name too: with CI
    set, the profile hypothesis loads itself ("ci") has no deadline either."""
    assert settings.get_current_profile_name() == "caravan"
    assert settings().deadline is None
    assert settings(max_examples=5).deadline is None


def test_no_two_servers_a_test_starts_share_a_port() -> None:
    """Each server a test module starts of its own has ports no other server of the session
    has (``OWN_PORTS``): two brokers of two tests on one port (test_demo_stopped's and
    test_relay_kafka_silent's, both the session's Kafka port + 4) could let the later test
    on a worker find the other's broker, still stopping or frozen, where it looked for its
    own. Every offset stays below a broker's controller (1000 above it) and below the next
    worker's ports."""
    for kind, users in OWN_PORTS.items():
        taken: dict[int, str] = {}
        for user, ports in users.items():
            assert user == "the session" or module_file(user).is_file(), user
            for offset in ports:
                assert taken.setdefault(offset, user) == user, f"{kind} + {offset}: {user}"
            limit = CONTROLLER_PORT_OFFSET if kind == "kafka" else WORKER_PORT_STEP
            assert ports.start >= 0 and ports.stop <= limit, (kind, user, ports)


def test_every_port_a_test_takes_above_the_sessions_is_in_the_table() -> None:
    """No test adds to the session's ports but through ``own_port`` (tests/conftest.py), so
    that the table says every port taken; and each module in it takes its ports so."""
    added = re.compile(
        r"\b(KAFKA|POSTGRES|HTTP)_PORT\b\s*[-+]"  # tests/conftest.py's
        r"|\[.CARAVAN_\w*PORT.\]\)?\s*[-+]|\.port\(.\w+.\)\s*[-+]"  # a service's (System)
    )
    found = [
        f"{path.relative_to(TESTS.parent)}:{n}: {line.strip()}"
        for path in sorted(TESTS.rglob("*.py"))
        if path != TESTS / "conftest.py"
        for n, line in enumerate(path.read_text().splitlines(), start=1)
        if added.search(line)
    ]
    assert found == []
    for kind, users in OWN_PORTS.items():
        for user in users.keys() - {"the session"}:
            assert f'own_port("{kind}", __name__)' in module_file(user).read_text(), user


def module_file(name: str) -> Path:
    return TESTS.parent.joinpath(*name.split(".")).with_suffix(".py")


def test_the_ports_a_run_takes_are_as_running_md_says() -> None:
    """docs/running.md tells whoever gives a run other ports how many above each it takes,
    from ``OWN_PORTS``: a row added above the others moves the figure, here and there."""
    said = (TESTS.parent / "docs" / "running.md").read_text()
    said = " ".join(said.split())
    for kind, name in (("kafka", "Kafka's"), ("postgres", "PostgreSQL's"), ("http", "HTTP's")):
        above = max(ports.stop for ports in OWN_PORTS[kind].values()) - 1
        phrases = (f"{name} port and the {above} above it", f"{name} and the {above} above it")
        assert any(phrase in said for phrase in phrases), f"running.md lacks {phrases[0]!r}"


def run_ports(kind: str, start: int, workers: int = 3) -> set[int]:
    """Every port a test run whose session port of ``kind`` is ``start`` takes of that kind:
    its ``OWN_PORTS``, each worker's 1500 above, each broker's controller 1000 above."""
    offsets = {offset for ports in OWN_PORTS[kind].values() for offset in ports}
    taken = {start + n * WORKER_PORT_STEP + offset for n in range(workers) for offset in offsets}
    if kind == "kafka":
        taken |= {port + CONTROLLER_PORT_OFFSET for port in taken}
    return taken


def test_two_runs_as_far_apart_as_running_md_says_share_no_port() -> None:
    """docs/running.md says how far apart two runs' (two checkouts') ports must be; two runs
    so far apart, or farther short of the spacings it warns of, each with ``make test``'s
    three workers, share no port, of any kind: a test adding a port past that spacing fails
    here. (It said how many ports a run takes, not how far apart to give two, and left the
    sum to the reader.)"""
    assert "CARAVAN_TEST_WORKERS ?= 3" in (TESTS.parent / "Makefile").read_text()
    said = " ".join((TESTS.parent / "docs" / "running.md").read_text().split())
    assert f"two runs' ports of each kind at least {RUNS_APART} apart" in said
    spacings = (500, 1000, 1500, 2000, 2500, 3000, 4000)
    listed = ", ".join(map(str, spacings[:-1])) + f" or {spacings[-1]}"
    assert f"never within {RUNS_APART} of {listed} apart" in said
    for kind in OWN_PORTS:
        for apart in range(RUNS_APART, spacings[-1] + 500):
            if any(abs(apart - spacing) < RUNS_APART for spacing in spacings):
                continue
            shared = run_ports(kind, 20000) & run_ports(kind, 20000 + apart)
            assert not shared, (kind, apart, sorted(shared))
