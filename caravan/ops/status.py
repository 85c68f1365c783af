"""``caravan status``: the state of the running system in one look, for a terminal (over ssh,
no browser) or a script (its exit code, ``--json``). It is one sample of the operations page
(:func:`caravan.ops.dashboard.collect`): each service and each of its instances as the page
reads them (up, degraded, unhealthy, frozen, down, paused) with what their ``/healthz`` says;
Kafka and PostgreSQL as the sample found them (PostgreSQL asked directly where no service
answers); each consumer group's lag; the outbox rows
waiting and those set aside; the dead letters waiting; the orders pending past the stuck
threshold. Under the ``caravan up`` of this checkout, each process it runs too, as the kernel
says it is (running, stopped by ``kill -STOP``, gone). What is wrong is listed last, one line
each, and makes the command exit 1."""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import text

from caravan import checkout
from caravan.ops.dashboard import ASK_WITHIN, FROZEN, FROZEN_NOTE, Refusals, Snapshot, collect
from services import SERVICES
from shared.db.engine import address, answered_within, async_engine, described
from shared.settings import Settings
from shared.topics import consumer_group

UP = "up"

DOWN_NOTE = "nothing answers on its port: exited, not started, or not reachable from here"
"""What is said of an instance ``down`` (its ``/metrics`` refused or unreachable)."""


@dataclass
class Status:
    """What ``caravan status`` says (:func:`status_of`), as ``--json`` prints it."""

    at: float
    services: dict[str, dict[str, Any]] = field(default_factory=dict)
    processes: dict[str, dict[str, Any]] = field(default_factory=dict)  # under caravan up
    kafka: str = "ok"
    postgresql: str = "ok"
    consumer_lag: dict[str, float] = field(default_factory=dict)  # per consumer group
    outbox_waiting: dict[str, float] = field(default_factory=dict)  # per service
    outbox_set_aside: dict[str, float] = field(default_factory=dict)
    dead_letters_waiting: dict[str, int] | None = None  # per dead-letter topic; None: unknown
    pending_over: float | None = None  # the stuck threshold, seconds, as the orders API said
    pending: int | None = None  # orders pending past it; None: unknown
    shared_cause: str | None = None
    unknown: dict[str, str] = field(default_factory=dict)  # figure → why it could not be read
    wrong: list[str] = field(default_factory=list)


def _reason(snap: Snapshot, service: str, address: str, state: str) -> str:
    """Why an instance of ``service`` is in ``state``: the checks its ``/healthz`` named not ok
    (``kafka: no answer for 32 s``), else what its ``/healthz`` said where it did not answer;
    for one frozen or down, what that means."""
    if state == FROZEN:
        return FROZEN_NOTE
    if state == "down":
        return DOWN_NOTE
    if state == "paused":
        return f"by caravan pause; caravan resume {service} starts it again"
    checks = snap.instance_checks.get(service, {}).get(address)
    if checks is None:
        said = snap.healths.get(service, {}).get(address, "")
        return "" if state == UP else f"/healthz: {said}"
    return "; ".join(f"{name}: {what}" for name, what in checks.items() if what != "ok")


def _state(snap: Snapshot, service: str) -> str:
    """``service``'s state: its instances' where they all say one, else the first not up."""
    states = list(snap.instances.get(service, {}).values())
    if service in snap.frozen:
        return FROZEN
    if service in snap.paused:
        return "paused"
    if service in snap.down:
        return "down"
    return next((s for s in states if s != UP), UP)


def _postgresql(snap: Snapshot) -> str | None:
    """PostgreSQL as the services' ``/healthz`` say it (each asks it ``SELECT 1``): ok where one
    says so, else the first one's words; None where none answered."""
    said = [
        checks["database"]
        for service in SERVICES
        for checks in snap.instance_checks.get(service, {}).values()
        if "database" in checks
    ]
    if "ok" in said:
        return "ok"
    return said[0] if said else None


NOT_ASKED = "unknown: no service answered /healthz"

ASKED_OK = "ok (asked directly)"
"""PostgreSQL as :func:`asked_directly` found it answering."""

NONE_TO_ASK = (
    "unknown: no service answered /healthz, and none to ask directly (no DATABASE_URL;"
    " caravan up's own PostgreSQL is not running)"
)


async def asked_directly(database_url: str | None) -> str:
    """PostgreSQL as one ``SELECT 1`` of the command's own finds it, within the sample's bound
    on each question (:data:`~caravan.ops.dashboard.ASK_WITHIN`): asked where no service's
    ``/healthz`` said, every one down, where ``caravan status`` said ``unknown`` with the
    database down or up alike. A fault is said with where, never the login
    (:func:`~shared.db.engine.described`)."""
    if database_url is None:
        return NONE_TO_ASK
    engine = async_engine(database_url)
    try:
        async with answered_within(engine, ASK_WITHIN), engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except Exception as exc:
        return described(exc, address(engine))
    finally:
        await engine.dispose()
    return ASKED_OK


def _processes(settings: Settings) -> dict[str, dict[str, Any]]:
    """The processes the ``caravan up`` of this checkout runs on this Kafka, each with its pid
    and state as ``/proc`` says it: ``running``, ``stopped`` (``kill -STOP``), or ``gone``;
    none where no ``caravan up`` runs here."""
    if not checkout.running_up() or not checkout.up_runs_with(
        "KAFKA_BOOTSTRAP_SERVERS", settings.kafka_bootstrap_servers
    ):
        return {}
    found = {}
    for key, recorded in checkout.recorded_processes(checkout.UP_PIDS).items():
        pid = int(recorded["pid"])
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            state = "gone"
        else:
            letter = stat.rpartition(")")[2].split()[0]
            state = {"T": "stopped", "t": "stopped", "Z": "gone"}.get(letter, "running")
        found[key] = {"pid": pid, "state": state}
    return found


def status_of(
    snap: Snapshot, processes: dict[str, dict[str, Any]], asked: str = NOT_ASKED
) -> Status:
    """What ``caravan status`` says of ``snap``, and what is wrong in it: PostgreSQL as
    ``asked`` (:func:`asked_directly`) where no service's ``/healthz`` said."""
    status = Status(at=snap.at, processes=processes, shared_cause=snap.shared)
    for service in SERVICES:
        instances = {
            address: {"state": state, "reason": _reason(snap, service, address, state)}
            for address, state in snap.instances.get(service, {}).items()
        }
        state = _state(snap, service)
        reasons = [i["reason"] for i in instances.values() if i["state"] != UP and i["reason"]]
        said = reasons[0] if reasons else snap.refused.get(service, "")
        status.services[service] = {"state": state, "reason": said, "instances": instances}
        if state != UP:
            status.wrong.append(f"{service} {state}")  # why: on its line, and in services
        if service in snap.lag:
            status.consumer_lag[consumer_group(service)] = snap.lag[service]
        if service in snap.outbox:
            status.outbox_waiting[service] = snap.outbox[service]
        if snap.outbox_refused.get(service):
            status.outbox_set_aside[service] = snap.outbox_refused[service]
            rows = snap.outbox_refused[service]
            status.wrong.append(f"{service}: {rows:.0f} outbox row(s) Kafka refused, set aside")
    for key, process in processes.items():
        if process["state"] != "running":
            status.wrong.append(f"process {key} (pid {process['pid']}) {process['state']}")
    if "members" in snap.unavailable:
        status.kafka = snap.unavailable["members"]
        status.wrong.append(f"Kafka: {status.kafka}")
    status.postgresql = _postgresql(snap) or asked
    if status.postgresql not in ("ok", ASKED_OK):
        status.wrong.append(f"PostgreSQL: {status.postgresql}")
    for figure in ("dead_letters", "stuck"):
        if figure in snap.unavailable:
            status.unknown[figure] = snap.unavailable[figure]
    if "dead_letters" not in snap.unavailable:
        status.dead_letters_waiting = snap.letters_waiting()
        waiting = sum(status.dead_letters_waiting.values())
        if waiting:
            status.wrong.append(f"{waiting} dead letter(s) waiting: caravan dlq list")
    else:
        status.wrong.append(f"dead letters unknown: {snap.unavailable['dead_letters']}")
    if "stuck" not in snap.unavailable:
        status.pending, status.pending_over = snap.stuck_total, snap.stuck_after
        if snap.stuck_total:
            over = f"{snap.stuck_after:.0f} s" if snap.stuck_after is not None else "the threshold"
            status.wrong.append(f"{snap.stuck_total} order(s) pending over {over}: caravan stuck")
    else:
        status.wrong.append(f"orders pending unknown: {snap.unavailable['stuck']}")
    return status


async def sampled(
    settings: Settings,
    stuck_after: float | None,
    further: dict[str, list[str]],
    database_url: str | None,  # asked where no service says (:func:`asked_directly`)
) -> Status:
    """One sample of the running system, as the operations page takes it, and its status."""
    snap = await collect(settings, stuck_after, Refusals(), further=further)
    asked = NOT_ASKED if _postgresql(snap) else await asked_directly(database_url)
    return status_of(snap, _processes(settings), asked)


def as_json(status: Status) -> dict[str, Any]:
    return {**status.__dict__, "ok": not status.wrong}


def lines(status: Status) -> list[str]:
    """What ``caravan status`` prints, a line each, its time as the command line's tables show
    times (:func:`caravan.output.at`)."""
    from datetime import UTC, datetime

    from caravan.output import at

    said = [f"status at {at(datetime.fromtimestamp(status.at, UTC))}"]
    width = max(len(s) for s in SERVICES)
    for service, shown in status.services.items():
        reason = f": {shown['reason']}" if shown["reason"] else ""
        said.append(f"  {service:<{width}}  {shown['state']}{reason}")
        if len(shown["instances"]) > 1:
            for address, instance in shown["instances"].items():
                why = f": {instance['reason']}" if instance["reason"] else ""
                said.append(f"  {'':<{width}}    {address} {instance['state']}{why}")
    for key, process in status.processes.items():
        said.append(f"  process {key} (pid {process['pid']}) {process['state']}")
    said.append(f"Kafka: {status.kafka}")
    said.append(f"PostgreSQL: {status.postgresql}")
    lag = ", ".join(f"{group} {n:.0f}" for group, n in status.consumer_lag.items())
    said.append(f"consumer lag: {lag or 'unknown'}")
    waiting = ", ".join(f"{service} {n:.0f}" for service, n in status.outbox_waiting.items())
    said.append(f"outbox rows waiting: {waiting or 'unknown'}")
    if status.dead_letters_waiting is not None:
        said.append(f"dead letters waiting: {sum(status.dead_letters_waiting.values())}")
    if status.pending is not None:
        over = f" over {status.pending_over:.0f} s" if status.pending_over is not None else ""
        said.append(f"orders pending{over}: {status.pending}")
    if status.shared_cause is not None:
        said.append(f"shared cause: {status.shared_cause}")
    if status.wrong:
        said.append(f"wrong ({len(status.wrong)}):")
        said += [f"  {what}" for what in status.wrong]
    else:
        said.append("all well")
    return said
