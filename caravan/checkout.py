"""Where this checkout keeps what ``caravan up`` runs, and how the other commands find the
system it runs (``caravan pause``/``resume`` among them): kept apart from caravan/system.py
(which starts it, and imports the clients of Kafka and PostgreSQL) so that every command may
read it at no cost."""

import fcntl
import json
import os
from pathlib import Path
from typing import Any

from services import SERVICES

REPO_ROOT = Path(__file__).resolve().parents[1]
CACHE = REPO_ROOT / ".cache"

UP_ENV = CACHE / "up.env.json"
"""Where ``caravan up`` says how to reach the system it runs (Kafka's address and, on a SASL
cluster, the admin's login; the admin's database URL), for the other commands."""


def use_running_system(environ: dict[str, str] | os._Environ[str] = os.environ) -> None:
    """Let a command reach the system ``caravan up`` runs from this checkout, with three
    Kafka nodes (port 19092) or SASL as well: the commands looked for one node on 9092 with
    no login. What the environment names already wins."""
    for name, value in _up_env().items():
        environ.setdefault(name, value)


def _up_env() -> dict[str, str]:
    """What the running ``caravan up`` wrote to :data:`UP_ENV` (nothing if it did not)."""
    try:
        env: dict[str, str] = json.loads(UP_ENV.read_text())
    except (FileNotFoundError, ValueError):
        return {}
    return env


LOCAL_PORTS_VAR = "CARAVAN_UP_LOCAL_PORTS"
"""The setting that moves them (docs/configuration.md, README's ports): "KAFKA,POSTGRES",
the ports of the broker and the cluster ``caravan up`` runs itself."""


def up_seconds(variable: str, default: float) -> float:
    """How long ``caravan up`` waits for a part it starts: ``variable``'s seconds, else
    ``default``; anything else than a number above 0 refused, naming it."""
    from caravan.output import OperatorError

    given = os.environ.get(variable) or str(default)
    try:
        seconds = float(given)
    except ValueError:
        seconds = 0.0
    if not 0 < seconds < float("inf"):
        raise OperatorError(f"{variable} must be a number of seconds above 0, not {given!r}")
    return seconds


def local_ports(kafka_nodes: int = 1) -> tuple[int, int]:
    """The ports of the Kafka (its first node) and the PostgreSQL ``caravan up`` runs itself,
    where the other commands look for them too."""
    kafka, _, postgres = os.environ.get(LOCAL_PORTS_VAR, "").partition(",")
    return int(kafka or (9092 if kafka_nodes == 1 else 19092)), int(postgres or 15432)


def local_kafka() -> str:
    """The bootstrap server of the Kafka ``caravan up`` runs itself (one node), on the port
    :func:`local_ports` gives it: where a command given no ``KAFKA_BOOTSTRAP_SERVERS`` looks."""
    from caravan.infra.ports import HOST

    kafka, _ = local_ports()
    return f"{HOST}:{kafka}"


UP_PIDS = CACHE / "up.pids"
"""The processes the running ``caravan up`` started (caravan.system's ``record_processes``)."""

PAUSED = CACHE / "up-paused"
"""One empty file per service that ``caravan pause`` stopped under ``caravan up``."""


def recorded_processes(pid_file: Path) -> dict[str, dict[str, Any]]:
    """What caravan.system's ``record_processes`` wrote to ``pid_file`` (nothing if it did
    not)."""
    try:
        found: dict[str, dict[str, Any]] = json.loads(pid_file.read_text())
    except (FileNotFoundError, ValueError):
        return {}
    return found


def paused(folder: Path | None = None) -> set[str]:
    """The services paused in ``folder`` (:data:`PAUSED`)."""
    return {p.name for p in (folder or PAUSED).glob("*") if p.name in SERVICES}


def paused_beside(kafka_bootstrap: str) -> set[str]:
    """The services ``caravan pause`` stopped under the ``caravan up`` that runs from this
    checkout, if it runs the Kafka at ``kafka_bootstrap`` (the operations page watching the
    system it runs); none otherwise: pauses an earlier run left, a page watching another
    system."""
    return paused() if up_runs_with("KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap) else set()


def running_on(database_url: str) -> set[str]:
    """The services the ``caravan up`` of this checkout runs, not paused, on the database at
    ``database_url`` (the admin's URL it wrote to :data:`UP_ENV`); none where it does not
    run, or runs on another database."""
    return set(SERVICES) - paused() if up_runs_with("DATABASE_URL", database_url) else set()


def up_runs_with(name: str, value: str | None) -> bool:
    """Whether the ``caravan up`` of this checkout runs with ``value`` as the ``name`` it
    wrote to :data:`UP_ENV` (its Kafka's bootstrap servers, its admin's database URL): a
    command reaching that Kafka or PostgreSQL reaches the one it runs."""
    return value is not None and _up_env().get(name) == value and running_up()


def running_up(base: Path = CACHE / "up") -> bool:
    """Whether a ``caravan up`` runs from this checkout (it holds caravan.system's
    ``run_alone`` lock)."""
    lock = base.with_name(f"{base.name}.lock")
    if not lock.exists():
        return False
    with lock.open("a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False
