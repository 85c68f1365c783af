"""Fixtures of the unit tests."""

import logging
import re
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from caravan import checkout, cli, system
from shared import logs

Caravan = Callable[..., tuple[int, str, str]]

QUIETED = ("aiokafka", "faststream", "uvicorn.access", "httpx", "httpcore")
"""The loggers :func:`shared.logs.configure_logging` quiets."""


@pytest.fixture(autouse=True)
def logging_as_it_was() -> Iterator[None]:
    """The process's logging put back after each test: a command run in-process through
    ``main()`` may configure it as a service's (``caravan dashboard`` does, before it serves),
    whose handler would then say, and count as its faults' (:data:`shared.logs.FAULTS`),
    every later test's lines."""
    root = logging.getLogger()
    levels = {name: logging.getLogger(name).level for name in ("", *QUIETED)}
    yield
    for handler in root.handlers[:]:
        if isinstance(handler.formatter, logs.JsonFormatter):
            root.removeHandler(handler)
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


@pytest.fixture
def caravan(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> Caravan:
    """``caravan ARGS`` through ``main()``: its exit code, stdout and stderr. What ``caravan
    up`` keeps in the checkout's ``.cache`` (its lock, pids, pauses) is under ``tmp_path``, and
    it leaves this process's signal handlers alone; no port of the machine counts as taken
    (other programs may hold 8080-8084 and 8090) unless a test says so."""
    monkeypatch.setattr(checkout, "use_running_system", lambda: None)
    monkeypatch.setattr(checkout, "CACHE", tmp_path / "cache")
    monkeypatch.setattr(checkout, "UP_PIDS", tmp_path / "cache" / "up.pids")
    monkeypatch.setattr(checkout, "UP_ENV", tmp_path / "cache" / "up.env.json")
    monkeypatch.setattr(checkout, "PAUSED", tmp_path / "cache" / "up-paused")
    monkeypatch.setattr(system, "stop_on_signals", lambda: None)
    monkeypatch.setattr(system, "ignore_stop_signals", lambda: None)
    monkeypatch.setattr(system, "port_open", lambda port: False)
    for name in ("KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL", "JAVA_HOME", "CARAVAN_ENVIRONMENT"):
        monkeypatch.delenv(name, raising=False)

    def run(*args: str) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["caravan", *args])
        with pytest.raises(SystemExit) as exited:
            cli.main()
        said = capsys.readouterr()
        code = exited.value.code
        return code if isinstance(code, int) else 1, said.out, said.err

    return run


def uncoloured(text: str) -> str:
    """What a command printed through Typer's own console (usage errors, ``--help``) without
    the colours it gives them where GITHUB_ACTIONS, FORCE_COLOR or PY_COLORS is set."""
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


class Clock:
    """A clock that moves when a test moves it (``now``, in seconds)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def saying_retried_faults(handler: logging.Handler, monkeypatch: pytest.MonkeyPatch) -> Clock:
    """``handler`` saying a retried fault's lines as a service's log handler does
    (:func:`shared.logs.configure_logging`): through the process's faults
    (:data:`shared.logs.FAULTS`), none met yet (as they were after the test), on a clock the
    test moves (the one returned). One handler a test: each counts the lines it is shown."""
    clock = Clock()
    monkeypatch.setattr(logs.FAULTS, "clock", clock)
    monkeypatch.setattr(logs.FAULTS, "_spells", {})
    handler.addFilter(logs.FAULTS)
    return clock


@pytest.fixture
def faults(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> Iterator[Clock]:
    """The lines ``caplog`` holds, info and up, as a service's log handler says them
    (:func:`saying_retried_faults`); the faults' clock, which the test moves."""
    caplog.set_level(logging.INFO)
    yield saying_retried_faults(caplog.handler, monkeypatch)
    caplog.handler.removeFilter(logs.FAULTS)  # the session's one handler, every test's


def said(caplog: pytest.LogCaptureFixture, logger: str) -> list[tuple[str, str]]:
    """The level and words of each line ``logger`` logged that ``caplog`` holds."""
    return [(r.levelname, r.getMessage()) for r in caplog.records if r.name == logger]


def kafka_away_a_minute(warned: str) -> list[tuple[str, str]]:
    """What :func:`said` holds of Kafka away met every 5 s for 65 s (``warned`` each time),
    then Kafka answering: one warning, its repeat a minute later, one line that it answers."""
    return [
        ("WARNING", warned),
        ("WARNING", f"{warned} (11 more like it not logged; the first 60 s ago)"),
        (
            "INFO",
            "Kafka answers again, 65 s after it was first found away"
            " (0 warnings of it not logged since the last that was)",
        ),
    ]


class Coordinator:
    """A Kafka client, as :func:`shared.messaging.kafka_admin.described` asks through it, whose
    group coordinator (node 1) answers DescribeGroups as Kafka's versions 0-2 do: a group of
    ``errors`` with that error code and no member (COORDINATOR_LOAD_IN_PROGRESS while it loads
    the group), any other Stable, with one member, ``<group>-1``."""

    def __init__(self, errors: Mapping[str, int] | None = None) -> None:
        self.errors = dict(errors or {})

    async def coordinator_lookup(self, kind: int, group: str) -> int:
        return 1

    async def send(self, node: int, request: Any) -> Any:
        groups: list[tuple[Any, ...]] = []
        for group in request.groups:
            if group in self.errors:
                groups.append((self.errors[group], group, "", "", "", []))
            else:
                member = (f"{group}-1", "", "", b"", b"")  # no client id, host, assignment
                groups.append((0, group, "Stable", "consumer", "range", [member]))
        return SimpleNamespace(groups=groups)
