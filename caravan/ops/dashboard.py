"""The operations page: live figures of the running system, gathered from the services'
``/metrics``, the orders API and Kafka, sampled every few seconds.

It reads no service's tables: what it shows is what the services publish about
themselves, so it works the same against a deployment as against ``caravan up``; of a
service that does not answer (down, or paused by ``caravan pause`` under the ``caravan up``
whose Kafka it watches), the consumer lag its group has in Kafka; from Kafka too, each
service's consumer group members (every instance running, wherever it runs) and those gone. It
reads each instance of a service it is told of (its port setting's, and each ``--instance``):
their consumption summed, each one's state listed, one not answering said so, the service's
health its worst one's; the stuck orders and an order's lookup from the first orders instance
that answers. It calls
them with ``CARAVAN_TOKEN`` (or the development token), and leaves a service that refused
it alone for a while (:class:`Refusals`); people need a token with the scope ``ops``: a
bearer header, or pasted once into ``/login``, which keeps it in an HttpOnly,
SameSite=Strict cookie (checked against ``auth.tokens`` on every request, so revoking the
token logs the browser out).
"""

import asyncio
import contextlib
import html
import itertools
import json
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import parse_qs, quote

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from prometheus_client.parser import text_string_to_metric_families
from starlette.exceptions import HTTPException as StarletteHTTPException

from caravan import checkout
from caravan.ops import dlq
from services import SERVICES
from services.orders.entrypoints.schemas import step_said
from shared.addresses import local
from shared.api import bearer_headers
from shared.auth.guard import READ_WITHIN
from shared.db import Database, fault
from shared.http import (
    COOKIE,
    NO_NATIVE_TELEMETRY,
    NO_TOKEN,
    PROBLEM,
    authorize_token,
    elsewhere,
    http_problem,
    install_auth,
    problem,
    require,
    unavailable,
)
from shared.logs import retried
from shared.messaging import kafka_admin
from shared.messaging.relay import KAFKA_AWAY, kafka_answers, kafka_away
from shared.settings import Settings
from shared.topics import Topic, consumer_group

log = logging.getLogger(__name__)
T = TypeVar("T")

LAG_NOTE = (
    "Records past each group's committed offsets. A group commits what it has handled up to"
    " CARAVAN_CONSUMER_COMMIT_INTERVAL_MS (1 s by default) later, so this also counts up to"
    " that much work already done."
)


@dataclass
class Snapshot:
    at: float
    # per instance, cumulative: the service's name for the one on its port setting,
    # <service>@<host:port> for each further one (:func:`instance_addresses`)
    consumed: dict[str, float] = field(default_factory=dict)
    lag: dict[str, float] = field(default_factory=dict)
    outbox: dict[str, float] = field(default_factory=dict)
    outbox_age: dict[str, float] = field(default_factory=dict)
    outbox_refused: dict[str, float] = field(default_factory=dict)  # rows set aside, unsent
    parked: dict[str, float] = field(default_factory=dict)  # events waiting for order.placed
    parked_age: dict[str, float] = field(default_factory=dict)  # the oldest one's, seconds
    platform_problems: dict[str, float] = field(default_factory=dict)  # open, by kind
    platform_apps: list[str] = field(default_factory=list)  # the adapter's configured apps
    callbacks_failed: float | None = None  # platform status callbacks failed
    # per platform adapter instance read, cumulative: the pushes whose order was not fetched,
    # by app then outcome (:data:`NOT_FETCHED`)
    unfetched: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    orders: dict[str, float] = field(default_factory=dict)  # by status
    oldest_pending: float | None = None  # how long the oldest pending order has waited, s
    saga_deadline: float | None = None  # CARAVAN_SAGA_DEADLINE_SECONDS: expired past it
    # per orders instance read, cumulative: POST /orders answered within each bucket's bound,
    # by its le label ("0.05", "+Inf": text, which JSON takes); none answered yet: {}
    placing: dict[str, dict[str, float]] = field(default_factory=dict)
    observed: dict[str, float] = field(default_factory=dict)  # per service: figures as of
    dead_letters: dict[str, int] = field(default_factory=dict)  # per dlq topic: all kept
    redriven: dict[str, int] = field(default_factory=dict)  # per dlq topic: of those, sent back
    discarded: dict[str, int] = field(default_factory=dict)  # per dlq topic: closed, never sent
    letters_at: float = 0.0  # when the dead letters were read (every DEAD_LETTERS_EVERY)
    stuck: list[dict[str, Any]] = field(default_factory=list)  # the oldest (100)
    stuck_total: int = 0  # all of them
    stuck_after: float | None = None  # pending over this many seconds, as the orders API said
    groups: dict[str, str] = field(default_factory=dict)  # per service: its group's state
    members: dict[str, list[str]] = field(default_factory=dict)  # per service: its group's
    # per service: why Kafka could not say its group's members (its coordinator loading, or
    # moving): unknown for now, not none
    members_unknown: dict[str, str] = field(default_factory=dict)
    # per service, each instance's address (host:port) → its state: up, degraded, unhealthy,
    # health unknown (as its /healthz said), down (its /metrics not answering), paused,
    # token refused (HTTP 401), no figures (its /metrics not Prometheus text)
    instances: dict[str, dict[str, str]] = field(default_factory=dict)
    # per service, as its worst instance says (:func:`_health_of`): its /healthz status
    # ("paused" where `caravan pause` stopped it), and each check as the first instance not
    # saying ok says it
    health: dict[str, str] = field(default_factory=dict)
    checks: dict[str, dict[str, str]] = field(default_factory=dict)
    # per service, each instance's address → its /healthz status (or "paused"), and the checks
    # it names
    healths: dict[str, dict[str, str]] = field(default_factory=dict)
    instance_checks: dict[str, dict[str, dict[str, str]]] = field(default_factory=dict)
    down: list[str] = field(default_factory=list)
    # those down whose every instance took the connection and answered nothing in time: alive,
    # held (:func:`away_state`), not exited
    frozen: list[str] = field(default_factory=list)
    paused: list[str] = field(default_factory=list)  # those down that `caravan pause` stopped
    refused: dict[str, str] = field(default_factory=dict)  # service → how it refused the token
    # figure (stuck, dead_letters; a service: its /metrics) → why it is missing
    unavailable: dict[str, str] = field(default_factory=dict)
    # what every service says at once (its database, Kafka, no answer in time): a cause they
    # share, not theirs (:func:`shared_cause`)
    shared: str | None = None

    def letters_waiting(self) -> dict[str, int]:
        """Per dead-letter topic, the letters waiting for an operator: those kept, but those
        a redrive sent back or a discard closed (all of them where the audit trail cannot
        tell which were)."""
        return {
            topic: kept - self.redriven.get(topic, 0) - self.discarded.get(topic, 0)
            for topic, kept in self.dead_letters.items()
        }


REFUSED_NOTE = (
    "Outbox rows Kafka refused for good (too large, an invalid topic), set aside unsent by the"
    " relay: refused_at and refusal in the service's outbox table say when and why"
)


PARKED_NOTE = (
    "Events that came before their order's order.placed (a redriven or replayed order.placed,"
    " partitions added), held back in the service's parked table until it comes; an old one is"
    " an order.placed that may never come (dead-lettered, not redriven)"
)


MEMBERS_NOTE = (
    "Each instance of a service running is a member of its consumer group, as Kafka lists them:"
    " its client id (caravan-<service>-<CARAVAN_INSTANCE_ID>-consumer) and the host it connects"
    " from. The figures above and the throughput are read from each instance the page is told"
    " of: each service's port setting (CARAVAN_<SERVICE>_HTTP_PORT) and caravan dashboard's"
    " --instance (Services, instances)"
)


INSTANCES_NOTE = (
    "Each instance the page reads: the one on the service's port setting and those caravan"
    " dashboard --instance names, each as it answered (down: its /metrics did not answer,"
    " nothing listening; frozen: it took the connection and answered nothing in time). Their"
    " consumption is summed in the throughput; the lag, outbox and parked figures are the"
    " group's and the tables', which each instance says alike"
)


def _cell(said: str, *kinds: str) -> str:
    """A table cell marked as each of ``kinds`` (``stale``, ``act``…; empty ones left out)."""
    marks = " ".join(kind for kind in kinds if kind)
    return f"<td class='{marks}'>{said}</td>" if marks else f"<td>{said}</td>"


def _to_act_on(count: float, stale: str = "") -> str:
    """The cell of what waits for operations (outbox rows set aside, platform problems):
    marked when there are any."""
    return _cell(f"<b>{count:.0f}</b>", "act", stale) if count else _cell("0", stale)


REDRIVEN_NOTE = (
    "Letters sent back to their topic by caravan dlq redrive, as the audit trail says (caravan"
    " dlq list shows when and by whom); a record dead-lettered again after it is a new letter,"
    " waiting"
)
DISCARDED_NOTE = (
    "Letters closed by caravan dlq discard, never to go back (junk nobody can mend), as the"
    " audit trail says (caravan dlq list shows when, by whom and why); Kafka keeps them until"
    " the topic's retention deletes them"
)


def _dead_letter_rows(snap: Snapshot) -> str:
    """Each dead-letter topic's letters waiting (marked when there are any), those sent back
    since (:data:`REDRIVEN_NOTE`) and those discarded (:data:`DISCARDED_NOTE`); where the audit
    trail cannot tell which were, every letter is counted waiting, and why it cannot is
    said."""
    if "dead_letters" in snap.unavailable:
        return f"<tr><td>unavailable: {html.escape(snap.unavailable['dead_letters'])}</td></tr>"
    unknown = snap.unavailable.get("redriven")
    waiting = snap.letters_waiting()
    rows = "".join(
        f"<tr><td>{html.escape(topic)}</td>{_to_act_on(waiting[topic])}"
        f"<td>{'?' if unknown else snap.redriven.get(topic, 0)}</td>"
        f"<td>{'?' if unknown else snap.discarded.get(topic, 0)}</td></tr>"
        for topic in sorted(snap.dead_letters)
    )
    head = (
        f"<tr><th>topic</th><th>waiting</th><th title='{html.escape(REDRIVEN_NOTE)}'>redriven</th>"
        f"<th title='{html.escape(DISCARDED_NOTE)}'>discarded</th></tr>"
    )
    if unknown:
        rows += (
            "<tr><td colspan=4>which were redriven or discarded is not known (all are counted"
            f" waiting): {html.escape(unknown)}</td></tr>"
        )
    return head + rows


def _clock(at: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(at))


UNKNOWN_APP = "unknown"
"""The ``app`` of ``caravan_platform_pushes_total`` counting pushes of no configured app (the
adapter's ``services.platform.metrics.UNKNOWN_APP``, not imported: its figures are the
adapter's); every other ``app`` is one the adapter is configured with."""
NOT_FETCHED = {
    "fetch_signature_refused": "the app's secret on both sides, both clocks",
    "fetch_failed": "the platform's order API (down, slow), the app's api_url",
    "fetch_refused": "the app's api_url (a 404); <code>GET /platform/problems</code>",
}
"""The ``outcome`` of ``caravan_platform_pushes_total`` of a push whose order the platform's
order API did not give (the adapter's ``services.platform.metrics.FetchRefused``): the push
refused, nothing placed and no problem opened; each with what to check."""
UNFETCHED_WINDOW = 600.0
"""Seconds over which the page counts the pushes whose order was not fetched."""
NO_PLATFORM_APP = "no platform app configured (CARAVAN_PLATFORM_APPS)"
"""Said where the platform adapter serves no app (as ``caravan up``'s ready line says it),
instead of its 11 kinds of problem at 0: figures of nothing that could be."""


def _waiting(snap: Snapshot, unfetched: dict[tuple[str, str], float]) -> str:
    """The rows of what waits for an operator, with where it is settled: the platform
    adapter's open problems by kind, its status callbacks failed, and the pushes whose order
    was not fetched in the last 10 minutes by app and outcome (``unfetched``:
    :meth:`Dashboard.unfetched`; one row at 0 while none was). With no app configured, only
    those there are (left by an app since removed), else :data:`NO_PLATFORM_APP`."""
    if not snap.platform_problems and snap.callbacks_failed is None:
        return "<tr><td>no figures</td></tr>"
    served = bool(snap.platform_apps)
    rows = "".join(
        f"<tr><td>platform orders: {html.escape(kind)}</td>{_to_act_on(count)}"
        "<td><code>GET /platform/problems</code></td></tr>"
        for kind, count in sorted(snap.platform_problems.items())
        if served or count
    )
    if snap.callbacks_failed is not None and (served or snap.callbacks_failed):
        rows += (
            f"<tr><td>platform status callbacks failed</td>{_to_act_on(snap.callbacks_failed)}"
            "<td><code>POST /platform/callbacks/retry</code></td></tr>"
        )
    refused = {key: count for key, count in sorted(unfetched.items()) if count}
    rows += "".join(
        f"<tr><td>platform pushes not fetched, last 10 minutes: {html.escape(app)},"
        f" {outcome}</td>{_to_act_on(count)}<td>{NOT_FETCHED[outcome]}</td></tr>"
        for (app, outcome), count in refused.items()
    )
    if served and not refused:
        rows += "<tr><td>platform pushes not fetched, last 10 minutes</td><td>0</td></tr>"
    return rows or f"<tr><td>{NO_PLATFORM_APP}</td></tr>"


HEALTH_NOTE = (
    "Each service's /healthz as it answers it (as its worst instance does, what each says beside"
    " it where they differ): degraded (a 200) is Kafka silent or work that"
    " stopped moving (a consumer or outbox relay stalled), which waits and is lost to nobody;"
    " unhealthy (a 503) is its database away"
)


def _health_rows(snap: Snapshot) -> str:
    """A row per service: its ``/healthz`` status and each check it names (every check any
    service names has a column), as its worst instance says (:func:`_health_of`), marked ok,
    degraded or down (unhealthy, or no answer), or paused (no answer from a service `caravan
    pause` stopped); where its instances say differently, what each says."""
    names = list(dict.fromkeys(name for checks in snap.checks.values() for name in checks))
    rows = ""
    for service in SERVICES:
        status = snap.health.get(service, "not asked")
        kind = _kind(status)
        if service in snap.paused and service not in snap.checks:  # stopped, not failing
            status = kind = "paused"
        healths = snap.healths.get(service, {})
        cell = _marked(kind, status)
        if len(set(healths.values())) > 1:
            each = html.escape(_each(healths))
            cell = (
                f"<td class='{kind}'>{html.escape(status)} <span class='note'>({each})</span></td>"
            )
        named = snap.instance_checks.get(service, {})
        cells = "".join(_check(named, healths, name) for name in names)
        rows += f"<tr><td>{service}</td>{cell}{cells}</tr>"
    head = "".join(f"<th>{html.escape(name)}</th>" for name in names)
    note = html.escape(HEALTH_NOTE)
    return f"<tr><th>service</th><th title='{note}'>health</th>{head}</tr>{rows}"


KINDS = ("ok", "degraded", "down")
"""How a /healthz status is marked, from the best to the worst."""


def _kind(status: str) -> str:
    """The mark of a /healthz status: ok, degraded, or down (unhealthy, no answer)."""
    return status if status in KINDS[:2] else "down"


def _each(said: dict[str, str]) -> str:
    """What each instance says, ``host:port said`` (as the Services table's instances)."""
    return ", ".join(f"{at} {what}" for at, what in said.items())


def _check(named: dict[str, dict[str, str]], healths: dict[str, str], name: str) -> str:
    """A check's cell: what the instances naming it say (each one's, where they differ), ok, or
    marked down where one not saying ok answered /healthz down (unhealthy), else degraded;
    empty where none names it."""
    said = {at: checks[name] for at, checks in named.items() if name in checks}
    if not said:
        return "<td></td>"
    failing = [
        "down" if _kind(healths[at]) == "down" else "degraded"
        for at, what in said.items()
        if what != "ok"
    ]
    kind = max(failing, key=KINDS.index, default="ok")
    return _marked(kind, _each(said) if len(set(said.values())) > 1 else next(iter(said.values())))


def _marked(kind: str, said: str) -> str:
    return f"<td class='{kind}'>{html.escape(said)}</td>"


def _instances(snap: Snapshot, service: str) -> str:
    """The Services table's cell of each instance of ``service`` the page read, as each
    answered: marked down where one did not (its /metrics; the token refused), paused where
    ``caravan pause`` stopped it, degraded where one's /healthz did not say ok."""
    said = snap.instances.get(service, {})
    states = set(said.values())
    kind = (
        "degraded" if states <= FIGURED else "paused" if states <= FIGURED | {"paused"} else "down"
    )
    kind = "" if states <= {"up"} else kind
    return _cell(html.escape(", ".join(f"{at} {state}" for at, state in said.items())), kind)


# The Services table's state and its mark, by what /healthz said; any other answer (none in
# time, not its JSON) is "health unknown", marked degraded, not "up".
_STATES = {
    "ok": ("up", ""),
    "degraded": ("degraded", "degraded"),
    "unhealthy": ("unhealthy", "down"),
}

FIGURES_STALE_AFTER = 20.0
"""Seconds after which a service's sampled figures are shown as old (it samples every 5)."""

NO_FIGURES = "<td></td>" * 6  # a service whose /metrics was not read: no figures, not 0

FIGURED = frozenset({"up", "degraded", "unhealthy", "health unknown"})
"""The states of an instance whose figures were read (:func:`_ask_instance`)."""


REFUSED_STATUSES = frozenset({401, 403})


class Refusals:
    """What refused the page's token (401, 403), not asked again with that token for
    ``backoff`` seconds; another token is tried at once. Every 401 counts towards the
    address's failed-attempt limit (``shared.auth.guard``): a token missing or revoked, offered
    to every service every few seconds, soon had every client on the address (the CLI,
    Prometheus, a local proxy) refused 429 by every service."""

    def __init__(self, backoff: float = 60.0, clock: Callable[[], float] = time.monotonic):
        self.backoff = backoff
        self.clock = clock
        self._refused: dict[str, tuple[str | None, float, str]] = {}  # name → token, when, why

    def refuse(self, name: str, token: str | None, status: int) -> str:
        why = f"HTTP {status}"
        self._refused[name] = (token, self.clock(), why)
        return why

    def holding(self, name: str, token: str | None) -> str | None:
        """Why ``name`` is not to be asked with ``token`` now; None when it may be."""
        entry = self._refused.get(name)
        if entry is None:
            return None
        refused_token, at, why = entry
        if refused_token != token or self.clock() - at >= self.backoff:
            del self._refused[name]
            return None
        return why


def ports(settings: Settings) -> dict[str, int]:
    return {
        "orders": settings.http_port,
        "inventory": settings.inventory_http_port,
        "payments": settings.payments_http_port,
        "notifications": settings.notifications_http_port,
        "platform": settings.platform_http_port,
    }


def further_instances(specs: list[str], host: str) -> dict[str, list[str]]:
    """``caravan dashboard --instance``'s, each ``SERVICE=[HOST:]PORT`` (``host`` where none is
    given): per service, the addresses (``host:port``) of its further instances. Raises
    ValueError saying which one is not."""
    further: dict[str, list[str]] = {}
    for spec in specs:
        service, _, address = spec.partition("=")
        where, _, port = address.rpartition(":")
        if service not in SERVICES or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(
                f"--instance {spec!r}: not SERVICE=[HOST:]PORT, SERVICE one of"
                f" {', '.join(SERVICES)}"
            )
        further.setdefault(service, []).append(f"{where or local(host)}:{int(port)}")
    return further


def instance_addresses(settings: Settings, further: dict[str, list[str]]) -> dict[str, list[str]]:
    """Per service, the addresses of the instances the page reads: the one on its port setting
    first, then each further one it was told of (:func:`further_instances`)."""
    return {
        service: [f"{local(settings.http_host)}:{port}", *further.get(service, [])]
        for service, port in ports(settings).items()
    }


def _most(figures: dict[str, float], key: str, value: float) -> None:
    """A gauge that every instance says alike (its group's, its tables'): the largest said."""
    figures[key] = max(figures.get(key, value), value)


def _read_metrics(
    snap: Snapshot, service: str, name: str, text: str, lag: dict[tuple[str, str], float]
) -> bool:
    """The figures of ``service``'s instance ``name`` from its ``/metrics``, merged with those
    of its other instances: its consumption counted apart (:meth:`Dashboard.throughput`), its
    group's ``lag`` per partition, which each instance says, and its tables' gauges, the
    largest said; whether it was Prometheus text (not a proxy's HTML page, answered 200)."""
    try:
        families = list(text_string_to_metric_families(text))
    except ValueError:
        return False
    if service == "orders":  # read: from now on, what it had not answered yet counts from 0
        snap.placing[name] = {}
    for family in families:
        for sample in family.samples:
            metric, labels, value = sample.name, sample.labels, sample.value
            if metric == "caravan_records_consumed_total":
                snap.consumed[name] = snap.consumed.get(name, 0) + value
            elif metric == "caravan_consumer_lag":
                partition = (labels.get("topic", ""), labels.get("partition", ""))
                lag[partition] = max(lag.get(partition, value), value)
            elif metric == "caravan_outbox_backlog":
                _most(snap.outbox, service, value)
            elif metric == "caravan_outbox_oldest_seconds":
                _most(snap.outbox_age, service, value)
            elif metric == "caravan_outbox_refused_rows":
                _most(snap.outbox_refused, service, value)
            elif metric == "caravan_parked_events":
                _most(snap.parked, service, value)
            elif metric == "caravan_parked_oldest_seconds":
                _most(snap.parked_age, service, value)
            elif metric == "caravan_observed_at_seconds" and labels.get("service") == service:
                # as old as the oldest instance's: each one's gauges stand while it cannot sample
                snap.observed[service] = min(snap.observed.get(service, value), value)
            elif metric == "caravan_orders" and "status" in labels:
                _most(snap.orders, labels["status"], value)
            elif metric == "caravan_orders_oldest_pending_seconds":
                snap.oldest_pending = max(snap.oldest_pending or 0.0, value)
            elif metric == "caravan_orders_saga_deadline_seconds":
                snap.saga_deadline = value
            elif metric == "caravan_http_request_seconds_bucket" and _placing(labels, service):
                placed = snap.placing.setdefault(name, {})
                placed[labels["le"]] = placed.get(labels["le"], 0.0) + value  # all statuses
            elif (
                metric == "caravan_platform_pushes_total"
                and labels.get("app", UNKNOWN_APP) != UNKNOWN_APP
            ):
                if labels["app"] not in snap.platform_apps:  # each configured app's, from 0
                    snap.platform_apps.append(labels["app"])
                if labels.get("outcome") in NOT_FETCHED:
                    by_app = snap.unfetched.setdefault(name, {}).setdefault(labels["app"], {})
                    by_app[labels["outcome"]] = value
            elif metric == "caravan_platform_problems_open" and "kind" in labels:
                _most(snap.platform_problems, labels["kind"], value)
            elif metric == "caravan_platform_callbacks" and labels.get("status") == "failed":
                snap.callbacks_failed = max(snap.callbacks_failed or 0, value)
    return True


def _placing(labels: dict[str, str], service: str) -> bool:
    """Whether a sample of ``caravan_http_request_seconds`` is of ``POST /orders``."""
    return (labels.get("service"), labels.get("method"), labels.get("route")) == (
        service,
        "POST",
        "/orders",
    )


PLACING_WINDOW = 60.0
"""Seconds over which the page says how long ``POST /orders`` took to answer."""


def quantile(q: float, buckets: dict[float, float]) -> float | None:
    """The ``q`` quantile of a histogram's cumulative ``buckets`` (the count within each
    bound, ``inf`` the whole), interpolated within its bucket as Prometheus'
    ``histogram_quantile`` does; past the largest finite bound, that bound. None without
    any."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return None
    rank = q * buckets[bounds[-1]]
    lower, below = 0.0, 0.0
    for bound in bounds:
        within = buckets[bound]
        if within >= rank:
            if bound == float("inf"):
                return lower
            return lower + (bound - lower) * (rank - below) / (within - below)
        lower, below = bound, within
    return lower


async def _ask_instance(
    client: httpx.AsyncClient,
    snap: Snapshot,
    service: str,
    name: str,
    address: str,
    refusals: Refusals,
    token: str | None,
    lag: dict[tuple[str, str], float],
) -> str:
    """One instance of ``service``, named ``name`` (:class:`Refusals`, ``consumed``): its
    ``/healthz`` (:attr:`Snapshot.healths`, :func:`_health_of`) and its ``/metrics``
    (:func:`_read_metrics`); its state, as :attr:`Snapshot.instances` says."""
    status, checks = await _ask_health(client, f"http://{address}/healthz")
    snap.healths.setdefault(service, {})[address] = status
    if checks is not None:
        snap.instance_checks.setdefault(service, {})[address] = checks
    held = refusals.holding(name, token)
    if held is not None:
        return f"token refused ({held})"
    try:
        response = await client.get(f"http://{address}/metrics")
        if response.status_code not in REFUSED_STATUSES:
            response.raise_for_status()
    except httpx.HTTPError as exc:
        return away_state(exc)
    if response.status_code in REFUSED_STATUSES:
        return f"token refused ({refusals.refuse(name, token, response.status_code)})"
    if not _read_metrics(snap, service, name, response.text, lag):
        return "no figures"
    return _STATES.get(status, ("health unknown", ""))[0]


def _health_of(snap: Snapshot, service: str) -> None:
    """``service``'s health as its worst instance's of those whose /healthz named its checks
    (unhealthy, then degraded, then ok; the first's where none did: no answer), and each check
    as the first instance not saying ok says it: a second instance whose database connection
    failed was not shown, the first saying ok for the service. An instance not answering is
    said down in the Services table, and beside the service's health here."""
    said = snap.healths[service]
    named = snap.instance_checks.get(service, {})
    worst = max(named or said, key=lambda at: KINDS.index(_kind(said[at])))
    snap.health[service] = said[worst]
    if named:
        checks: dict[str, str] = {}
        for each in named.values():
            for check, what in each.items():
                if checks.get(check, "ok") == "ok":
                    checks[check] = what
        snap.checks[service] = checks


def _settle(
    snap: Snapshot, service: str, lag: dict[tuple[str, str], float], refused: str | None
) -> None:
    """``service`` as its instances answered: its figures where one gave them (the lag counted
    once per partition); else how the first that refused the token refused it, its /metrics
    not Prometheus text, or down."""
    states = list(snap.instances[service].values())
    if any(state in FIGURED for state in states):
        if lag:
            snap.lag[service] = sum(lag.values())
    elif refused is not None:
        snap.refused[service] = refused
    elif "no figures" in states:
        snap.unavailable[service] = "its /metrics answered something not Prometheus text"
    else:
        snap.down.append(service)
        if set(states) == {FROZEN}:
            snap.frozen.append(service)


def away_state(exc: httpx.HTTPError) -> str:
    """The state of an instance whose ``/metrics`` gave no answer: ``frozen`` where it took the
    connection and answered nothing within :data:`ASK_WITHIN` (its process alive, stopped by
    ``kill -STOP``, swapped out or its event loop blocked: ``caravan up`` does not start it
    again), else ``down`` (nothing listens on its port: exited; or it cannot be reached)."""
    return FROZEN if isinstance(exc, httpx.ReadTimeout) else "down"


ASK_WITHIN = 5.0
"""Seconds the page waits for each instance's ``/healthz`` and ``/metrics``: over ``/healthz``'s
own bound on PostgreSQL (``HEALTH_DB_WITHIN``, 2 s) and a token check's (4 s), so that a
service whose PostgreSQL is frozen is shown unhealthy, saying why, where at 2 s each one
was "down (no answer (ReadTimeout))" and PostgreSQL named nowhere. The services are asked
at once, not one after another."""

FROZEN = "frozen"
FROZEN_NOTE = (
    f"took the connection and answered nothing within {ASK_WITHIN:g} s: its process alive but"
    " held (kill -STOP, swapped out, its event loop blocked), which caravan up does not start"
    " again; look at it with ps -o pid,stat,etime,args -p PID"
)
"""What the page says of a service :func:`away_state` found frozen."""

KAFKA_WITHIN = 5.0
"""Seconds each question the page asks Kafka (its groups' members, the dead letters, the lag
of a service down) may take: a broker frozen held a sample for its client's request timeout
and more, the page saying its figures were stale with no reason, and showing them as they
were (every service up, Kafka ok) while every service said Kafka silent."""

SAMPLE_WITHIN = 30.0
"""Seconds a whole sample may take before it is given up, saying what it waited on."""


ANSWER_MORE = 2.0
"""Seconds the page waits for the orders API's answer about an order beyond the API's own
bound on it (:func:`order_within`): what the API's answer takes once it gave its database
work up (a connection's cleanup, :data:`~shared.db.engine.CLOSE_WITHIN`), and its way here."""


def order_within(settings: Settings) -> float:
    """Seconds the page waits for the orders API's answer about an order, or its stuck orders:
    past the API's bound on a request's database work, ``CARAVAN_HTTP_DB_TIMEOUT_SECONDS``
    (the page reads the same setting), so that the page passes on the 503 that says the
    database did not answer, where at 2 s (the stuck orders: :data:`ASK_WITHIN`) it said the
    API was not reachable (ReadTimeout). With none (0), past what a request needing a new
    connection waits at most, the token check's and the connect's bounds: one on a pooled
    connection may wait for ``CARAVAN_DB_ANSWER_TIMEOUT_SECONDS`` (two minutes), which the
    page does not."""
    api = settings.http_db_timeout_seconds or READ_WITHIN + settings.db_connect_timeout_seconds
    return api + ANSWER_MORE


class KafkaUnanswered(Exception):
    """A question to Kafka not answered within :data:`KAFKA_WITHIN`."""


async def _from_kafka(work: Awaitable[T]) -> T:
    try:
        return await asyncio.wait_for(work, KAFKA_WITHIN)
    except TimeoutError as exc:
        raise KafkaUnanswered(f"Kafka did not answer within {KAFKA_WITHIN:g} s") from exc


def _kafka_said(exc: Exception) -> str:
    """Why a part read from Kafka is missing, in words."""
    if isinstance(exc, KafkaUnanswered):
        return str(exc)
    return f"Kafka unreachable ({exc.__class__.__name__})"


@dataclass
class Progress:
    """What a sample is waiting on (:func:`collect`), and since when (``time.time()``)."""

    doing: str = ""
    since: float = 0.0

    def now(self, doing: str) -> None:
        self.doing, self.since = doing, time.time()


def shared_cause(snap: Snapshot) -> str | None:
    """What every service says at once, said as the likely cause they share, not each one's:
    with PostgreSQL frozen, all five were shown down ("no answer (ReadTimeout)") and
    PostgreSQL named nowhere, and an operator would restart healthy services. None where they
    do not all say it (one service's own fault), or there is one service only."""
    services = [s for s in SERVICES if s in snap.healths and s not in snap.paused]
    if len(services) < 2:
        return None
    checks = [snap.checks.get(service) for service in services]
    if all(c is not None for c in checks):
        for name, what in (("database", "PostgreSQL"), ("kafka", "Kafka")):
            said = [c[name] for c in checks if c is not None and c.get(name, "ok") != "ok"]
            if len(said) == len(services):
                return (
                    f"every service says {what} is not ok ({said[0]}): {what} is the likely"
                    " cause, not the services; restarting them will not mend it"
                )
        return None
    healths = [h for s in services for h in snap.healths[s].values()]
    if all(h.startswith("no answer (") and "Timeout" in h for h in healths):
        return (
            f"no service answered /healthz within {ASK_WITHIN:g} s, all at once: a cause they"
            " share is likely (PostgreSQL, which each reads for its health and its token"
            " checks, or this host), not each service: look at PostgreSQL before restarting any"
        )
    return None


async def collect(
    settings: Settings,
    stuck_after_seconds: float | None,
    refusals: Refusals,
    transport: httpx.AsyncBaseTransport | None = None,  # tests: an httpx.MockTransport
    letters_from: "Snapshot | None" = None,
    kept: dlq.Kept | None = None,
    further: dict[str, list[str]] | None = None,  # per service: :func:`further_instances`
    progress: Progress | None = None,  # what it waits on, as it goes
) -> Snapshot:
    """One snapshot, of each instance the page reads (:func:`instance_addresses`); its dead
    letters as ``letters_from`` counted them, if given (with the audit trail's redrives, not
    read at every sample: :data:`DEAD_LETTERS_EVERY`), else as ``kept`` reads them (those
    come since its last read)."""
    snap = Snapshot(at=time.time())
    began = time.monotonic()
    token = settings.api_token()
    headers = bearer_headers(token)
    step = (progress or Progress()).now
    async with httpx.AsyncClient(
        timeout=ASK_WITHIN, headers=headers, transport=transport
    ) as client:
        addresses_of = instance_addresses(settings, further or {})

        async def ask(service: str, addresses: list[str]) -> tuple[dict[Any, float], str | None]:
            lag: dict[tuple[str, str], float] = {}
            said = snap.instances[service] = {}
            refused = None
            for n, address in enumerate(addresses):
                name = f"{service}@{address}" if n else service
                asked = _ask_instance(client, snap, service, name, address, refusals, token, lag)
                said[address] = await asked
                refused = refused or refusals.holding(name, token)
            return lag, refused

        step("the services' /healthz and /metrics")
        asked = await asyncio.gather(*(ask(s, a) for s, a in addresses_of.items()))
        for service, (lag, refused) in zip(addresses_of, asked, strict=True):
            _settle(snap, service, lag, refused)
            _health_of(snap, service)
        paused = checkout.paused_beside(settings.kafka_bootstrap_servers)
        snap.paused = [service for service in snap.down if service in paused]
        for service in snap.paused:  # caravan pause stops the instance caravan up runs
            first = next(iter(snap.instances[service]))
            snap.instances[service][first] = snap.healths[service][first] = "paused"
            _health_of(snap, service)  # stopped, not unreachable: its health says so
    snap.shared = shared_cause(snap)
    held = snap.refused.get("orders") or refusals.holding("stuck", token)
    if held is not None:
        snap.unavailable["stuck"] = f"token refused ({held})"
    # The stuck orders are waited for past the orders API's bound on its database work (it
    # says why it gave it up), within what is left of the sample's, beside the questions to
    # Kafka and the audit trail: one after another, those waited behind it.
    left = SAMPLE_WITHIN - (time.monotonic() - began) - 1  # a second for the rest to end
    within = max(min(order_within(settings), left), 1.0)

    async def figures() -> None:
        await _from_kafka_and_audit(settings, snap, letters_from, kept, step)
        if held is None:
            step("the orders API's stuck orders")  # what is left to wait on, if it is

    async with asyncio.TaskGroup() as both:
        if held is None:
            orders = addresses_of["orders"]
            stuck = _stuck(settings, orders, snap, stuck_after_seconds, refusals, within, transport)
            both.create_task(stuck)
        both.create_task(figures())
    return snap


async def _from_kafka_and_audit(
    settings: Settings,
    snap: Snapshot,
    letters_from: "Snapshot | None",
    kept: dlq.Kept | None,
    step: Callable[[str], None],
) -> None:
    """The sample's figures read from Kafka (the groups' members, the dead letters, the lag of
    the services down) and the audit trail's redrives (:func:`collect`)."""
    step("Kafka: the consumer groups' members")
    await _group_members(settings, snap)
    if letters_from is not None:
        snap.dead_letters, snap.redriven = letters_from.dead_letters, letters_from.redriven
        snap.discarded = letters_from.discarded
        snap.letters_at = letters_from.letters_at
        for figure in ("dead_letters", "redriven"):
            if figure in letters_from.unavailable:
                snap.unavailable[figure] = letters_from.unavailable[figure]
        step("Kafka: the consumer lag of the services down")
        await _lag_of_those_down(settings, snap)
        return
    try:
        step("Kafka: the dead letters")
        letters = await _from_kafka((kept or dlq.Kept()).read(settings.kafka_bootstrap_servers))
    except Exception as exc:  # Kafka away: the services' own figures still count
        snap.unavailable["dead_letters"] = _kafka_said(exc)
    else:
        step("PostgreSQL: the audit trail's redrives")
        await _dead_letters(settings, snap, letters)
        snap.letters_at = snap.at
        step("Kafka: the consumer lag of the services down")
        await _lag_of_those_down(settings, snap)


DEAD_LETTERS_EVERY = 30.0
"""Seconds between two reads of the dead letters (those come since the last read, and the
audit trail's redrives): the rest of the page is sampled every few seconds."""


async def _dead_letters(settings: Settings, snap: Snapshot, letters: list[dlq.Letter]) -> None:
    """The letters kept in each dead-letter topic, and how many of them a redrive sent back or
    a discard closed, as ``caravan dlq list`` tells them (:func:`caravan.ops.dlq.closed`, from
    the audit trail): the count of letters kept said "12" after all 12 were mended and sent
    back. Where the audit trail cannot tell, why."""
    snap.dead_letters = {topic.dlq: 0 for topic in Topic}
    for letter in letters:
        snap.dead_letters[letter.dlq_topic] += 1
    snap.redriven = dict.fromkeys(snap.dead_letters, 0)
    snap.discarded = dict.fromkeys(snap.dead_letters, 0)
    if not letters:
        return
    if settings.database_url is None:
        snap.unavailable["redriven"] = "no DATABASE_URL"
        return
    try:
        before, why = await dlq.closed(settings.database_url.get_secret_value(), letters)
    except Exception as exc:  # a login that may not read the audit trail, a pool, a fault
        before, why = {}, fault(exc)
    if why is not None:  # PostgreSQL away, never migrated, refusing the page's login
        snap.redriven.clear()
        snap.discarded.clear()
        snap.unavailable["redriven"] = str(why)
    for letter in letters:
        if (closed := before.get(letter.ref)) is not None:
            by = snap.redriven if closed.discarded is None else snap.discarded
            by[letter.dlq_topic] += 1


async def _lag_of_those_down(settings: Settings, snap: Snapshot) -> None:
    """The consumer lag of each service whose ``/metrics`` could not be read (down, paused),
    read as it reads its own (shared.observe): its group's committed offsets on each topic it
    reads, from Kafka. The records waiting for a service away were shown nowhere."""
    if not snap.down:
        return
    from services.orders.asyncapi import consumers  # the one table of who reads what

    reads = consumers(settings)
    for service in snap.down:
        group = consumer_group(service)

        async def read(group: str = group, service: str = service) -> int:
            async with kafka_admin.group_client(
                settings.kafka_bootstrap_servers, group, settings
            ) as consumer:
                lag = 0
                for sub in reads[service]:
                    lag += sum(p.lag for p in await kafka_admin.offsets(consumer, sub.topic.value))
                return lag

        try:
            snap.lag[service] = await _from_kafka(read())
        except KafkaUnanswered:  # Kafka frozen: no figure, and none of the others' either
            return
        except Exception:  # Kafka went away meanwhile: no figure, not 0
            continue


async def _group_members(settings: Settings, snap: Snapshot) -> None:
    """Each service's consumer group as Kafka lists it: its state and its members (every
    instance running, wherever it runs, those the page is not told of too). Asked every
    sample, it tells the page's log of Kafka away and answering again, as a service's
    consumer-lag sample does (:data:`~shared.messaging.relay.KAFKA_AWAY`: one warning, once a
    minute while it lasts, and its end in one line)."""
    services = {consumer_group(service): service for service in SERVICES}
    try:
        groups = await _from_kafka(
            kafka_admin.describe_groups(settings.kafka_bootstrap_servers, services, settings)
        )
    except Exception as exc:  # Kafka away: the services' own figures still count
        snap.unavailable["members"] = _kafka_said(exc)
        if kafka_away(exc) or isinstance(exc, KafkaUnanswered):  # away, or hung
            log.warning("consumer groups sample failed: %r", exc, extra=retried(KAFKA_AWAY))
        return
    kafka_answers(log)
    for group, state in groups.items():
        if state.error is not None:
            snap.members_unknown[services[group]] = (
                f"its coordinator answered {state.error.message}"
            )
            continue
        snap.groups[services[group]] = state.state
        snap.members[services[group]] = state.named()


async def _ask_health(client: httpx.AsyncClient, url: str) -> tuple[str, dict[str, str] | None]:
    """An instance's ``/healthz`` (it takes no token): its status (``ok``, ``degraded``; a 503
    is ``unhealthy``) and every check it names, as it names them; or why it said none."""
    try:
        response = await client.get(url)
        body = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        return f"no answer ({exc.__class__.__name__})", None
    checks = body.get("checks") if isinstance(body, dict) else None
    if response.status_code not in (200, 503) or not isinstance(checks, dict):
        return f"HTTP {response.status_code}, no checks", None
    status = str(body.get("status")) if response.status_code == 200 else "unhealthy"
    return status, {str(name): str(said) for name, said in checks.items()}


async def ask_orders(
    client: httpx.AsyncClient,
    addresses: list[str],
    path: str,
    params: dict[str, float] | None = None,
) -> httpx.Response:
    """The orders API's answer to ``GET path``, from the first of its instances (``addresses``,
    :func:`instance_addresses`) that answers other than 5xx: one away (a deploy, a crash) or
    failing, the next is asked. Any other answer is the answer, a refusal of the token (401,
    403) too: every instance checks it alike. When none does, the first 5xx answer; when none
    answered at all, the first one's HTTPError is raised."""
    failed: httpx.Response | None = None
    error: httpx.HTTPError | None = None
    for address in addresses:
        try:
            response = await client.get(f"http://{address}{path}", params=params)
        except httpx.HTTPError as exc:
            error = error or exc
            continue
        if response.status_code < 500:
            return response
        failed = failed or response
    if failed is not None:
        return failed
    assert error is not None, "no orders instance to ask"
    raise error


async def _stuck(
    settings: Settings,
    addresses: list[str],  # the orders instances', asked in turn (:func:`ask_orders`)
    snap: Snapshot,
    stuck_after_seconds: float | None,  # None: the orders service's default
    refusals: Refusals,
    within: float,  # seconds its answer is waited for (:func:`order_within`)
    transport: httpx.AsyncBaseTransport | None,
) -> None:
    """The orders API's stuck orders, or why there are none to show: its reason where it
    gave its database work up (``HTTP 503: the database did not answer within 8 s; retry``)."""
    token = settings.api_token()
    params = {} if stuck_after_seconds is None else {"older_than_seconds": stuck_after_seconds}
    try:
        async with httpx.AsyncClient(
            timeout=within, headers=bearer_headers(token), transport=transport
        ) as client:
            response = await ask_orders(client, addresses, "/ops/stuck-orders", params)
    except httpx.HTTPError as exc:
        snap.unavailable["stuck"] = f"orders API unreachable ({exc.__class__.__name__})"
        return
    if response.status_code == 200:
        try:
            body = response.json()
        except ValueError:  # a proxy's HTML page: this part unavailable, not the sample
            snap.unavailable["stuck"] = "the orders API answered HTTP 200, not JSON"
            return
        orders = body.get("orders") if isinstance(body, dict) else None
        if not isinstance(orders, list) or not all(isinstance(o, dict) for o in orders):
            snap.unavailable["stuck"] = "the orders API answered HTTP 200, no list of orders"
            return
        total, over = body.get("total"), body.get("older_than_seconds")
        snap.stuck_after = float(over) if isinstance(over, int | float) else stuck_after_seconds
        snap.stuck = orders
        snap.stuck_total = total if isinstance(total, int) else len(orders)
    elif response.status_code in REFUSED_STATUSES:  # a token without the scope ops: 403
        why = refusals.refuse("stuck", token, response.status_code)
        snap.unavailable["stuck"] = f"token refused ({why})"
    else:  # a failing API: not "none", and why where it says (a problem's detail)
        snap.unavailable["stuck"] = f"HTTP {response.status_code}{_detail(response)}"


def _detail(response: httpx.Response) -> str:
    """``: `` and the detail of ``response``'s problem body, if it is one with a detail."""
    try:
        body = response.json()
    except ValueError:
        return ""
    detail = body.get("detail") if isinstance(body, dict) else None
    return f": {detail[:300]}" if isinstance(detail, str) and detail else ""


class Dashboard:
    """Keeps the last ten minutes of snapshots and renders them."""

    def __init__(
        self,
        settings: Settings,
        interval: float = 3.0,
        stuck_after: float | None = None,  # None: the orders service's default
        transport: httpx.AsyncBaseTransport | None = None,  # tests: an httpx.MockTransport
        further: dict[str, list[str]] | None = None,  # per service: :func:`further_instances`
    ):
        self.settings = settings
        self.further = further or {}
        self.interval = interval
        self.stuck_after = stuck_after
        self.transport = transport
        self.refusals = Refusals()
        self.kept = dlq.Kept()  # the dead letters read so far
        self.history: deque[Snapshot] = deque(maxlen=int(600 / interval))
        self.failure: str | None = None  # why the last sampling failed, if it did
        self.progress = Progress()  # what the sampling under way waits on

    async def sample(self) -> Snapshot:
        """Take one snapshot and keep it."""
        last = self.history[-1] if self.history else None
        fresh = last is None or time.time() - last.letters_at >= DEAD_LETTERS_EVERY
        try:
            async with asyncio.timeout(SAMPLE_WITHIN):
                snap = await collect(
                    self.settings,
                    self.stuck_after,
                    self.refusals,
                    self.transport,
                    letters_from=None if fresh else last,
                    kept=self.kept,
                    further=self.further,
                    progress=self.progress,
                )
        except TimeoutError as exc:
            doing = self.progress.doing
            raise TimeoutError(
                f"no sample within {SAMPLE_WITHIN:g} s: given up on {doing}"
            ) from exc
        self.history.append(snap)
        return snap

    async def run(self) -> None:
        while True:
            try:
                await self.sample()
                self.failure = None
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # keep the page up, and say its figures are old
                self.failure = (str(exc) if isinstance(exc, TimeoutError) else repr(exc))[:300]
            await asyncio.sleep(self.interval)

    async def order(self, order_id: str) -> Response:
        """The orders API's answer about one order, passed on (its 404 problem as a 404, its
        503 with its ``Retry-After``), waited for :func:`order_within`; a 502 problem when it
        refuses the page's token, which it is then not asked again with for a while
        (:class:`Refusals`), or answers no JSON; 503 when it cannot be reached."""
        token = self.settings.api_token()
        held = self.refusals.holding("orders", token) or self.refusals.holding("order", token)
        if held is None:
            orders = instance_addresses(self.settings, self.further)["orders"]
            headers = bearer_headers(token)
            try:
                within = order_within(self.settings)
                async with httpx.AsyncClient(
                    timeout=within, headers=headers, transport=self.transport
                ) as client:
                    path = "/orders/" + quote(order_id, safe="")
                    with elsewhere():  # the API bounds its own database work, saying so
                        answer = await ask_orders(client, orders, path)
            except httpx.HTTPError as exc:
                why = f"the orders API is not reachable ({exc.__class__.__name__}); retry"
                return unavailable("Orders API unavailable", why)
            if answer.status_code not in REFUSED_STATUSES:
                media = answer.headers.get("content-type", "").split(";")[0].strip()
                if media in ("application/json", PROBLEM):
                    kept = {k: v for k, v in answer.headers.items() if k == "retry-after"}
                    return Response(answer.content, answer.status_code, kept, media)
                why = f"the orders API answered HTTP {answer.status_code}, not JSON"
                return problem(502, "Bad Gateway", why)
            held = self.refusals.refuse("order", token, answer.status_code)
        why = f"the orders API refused the page's token ({held}); not asked again with it"
        return problem(502, "Bad Gateway", f"{why} for {self.refusals.backoff:.0f} s")

    def stale(self, snap: Snapshot, now: float) -> bool:
        """Whether ``snap`` is older than two samples: sampling has failed since."""
        return now - snap.at > 2 * self.interval

    def freshness(self, snap: Snapshot, now: float) -> str:
        """When ``snap`` was taken; a warning, saying since when, when it is stale."""
        said = f"<p>figures as of {_clock(snap.at)} ({now - snap.at:.0f} s ago)</p>"
        if snap.shared is not None:
            said += f"<p class='warning'><b>shared cause</b>: {html.escape(snap.shared)}</p>"
        if self.stale(snap, now):
            why = f": {html.escape(self.failure)}" if self.failure else ""
            if not self.failure and self.progress.doing:  # a sample under way, waiting
                waited = now - self.progress.since
                why = f": waiting {waited:.0f} s on {html.escape(self.progress.doing)}"
            said += (
                "<p class='warning'><b>stale</b>: sampling has not succeeded since"
                f" {_clock(snap.at)}{why}; the figures below are as they were then</p>"
            )
        return said

    def service_row(self, snap: Snapshot, service: str) -> str:
        """A service's row of the Services table: its state (up, or degraded or unhealthy as
        its ``/healthz`` says, health unknown where it gave no answer, down or paused:
        :meth:`away`, refusing the page's token) and its figures: none where its
        ``/metrics`` was not read, marked stale, with since when, where the service has not
        sampled them for a few of its rounds (its Kafka or its database away: the gauges stay
        as they last were)."""
        name = f"<td>{service}</td>"
        if service in snap.refused:
            said = (
                f"token refused ({html.escape(snap.refused[service])})"
                f" <span class='note'>(left alone for {self.refusals.backoff:.0f} s,"
                " or until CARAVAN_TOKEN changes)</span>"
            )
            return f"<tr>{name}<td>{said}</td>{NO_FIGURES}{_instances(snap, service)}</tr>"
        if service in snap.down:
            return f"<tr>{name}{self.away(snap, service)}{_instances(snap, service)}</tr>"
        said, kind = _STATES.get(snap.health.get(service, "ok"), ("health unknown", "degraded"))
        observed = snap.observed.get(service)
        stale, cells = "stale", NO_FIGURES
        if service in snap.unavailable:
            note = f"no figures: {html.escape(snap.unavailable[service])}"
        elif observed is None:
            note = "no figures sampled yet"
        elif snap.at - observed > FIGURES_STALE_AFTER:
            note = f"figures as of {_clock(observed)}, {snap.at - observed:.0f} s old"
        else:
            note, stale = "", ""
        if service not in snap.unavailable:
            cells = "".join(
                _cell(figure, stale)
                for figure in (
                    f"{snap.lag.get(service, 0):.0f}",
                    f"{snap.outbox.get(service, 0):.0f}",
                    f"{snap.outbox_age.get(service, 0):.1f}",
                )
            )
            cells += _to_act_on(snap.outbox_refused.get(service, 0), stale)
            parked = snap.parked.get(service)
            if parked is None:  # a service that parks nothing
                cells += "<td></td><td></td>"
            else:
                age = snap.parked_age.get(service, 0)
                cells += _cell(f"{parked:.0f}", stale) + _cell(f"{age:.1f}", stale)
        if note:
            said += f" <span class='note'>({note})</span>"
        return f"<tr>{name}{_cell(said, kind)}{cells}{_instances(snap, service)}</tr>"

    def away(self, snap: Snapshot, service: str) -> str:
        """The state and figures of a service whose ``/metrics`` gave no answer: paused (by
        ``caravan pause``, under the ``caravan up`` this page watches), frozen (alive,
        answering nothing: :func:`away_state`) or down, and the
        consumer lag its group has in Kafka (read there: the records waiting for it)."""
        state = "paused" if service in snap.paused else "down"
        notes = []
        if state == "paused":
            notes.append(f"by caravan pause; caravan resume {service} starts it again")
        elif service in snap.frozen:
            state = FROZEN
            notes.append(FROZEN_NOTE)
        lag = snap.lag.get(service)
        if lag is not None:
            notes.append("consumer lag read from Kafka")
        said = state + (f" <span class='note'>({'; '.join(notes)})</span>" if notes else "")
        lag_cell = "<td></td>" if lag is None else _cell(f"{lag:.0f}")
        kind = "down" if state == FROZEN else state  # marked as one down: nothing it does moves
        return _cell(said, kind) + lag_cell + "<td></td>" * 5

    def gone(self) -> dict[str, dict[str, float]]:
        """Per service, the members its group had in the last ten minutes (the snapshots kept)
        that it no longer has, each with when it was last seen: an instance stopped, or
        killed, and not back (one started again under the same client id and host is back).
        None of a group whose members Kafka cannot say now."""
        if not self.history or "members" in self.history[-1].unavailable:
            return {}
        now = self.history[-1]
        gone: dict[str, dict[str, float]] = {}
        for snap in self.history:
            for service, members in snap.members.items():
                if service in now.members_unknown:
                    continue
                for member in set(members) - set(now.members.get(service, [])):
                    gone.setdefault(service, {})[member] = snap.at
        return gone

    def members_rows(self, snap: Snapshot) -> str:
        """A row per service: its consumer group's state, its members (how many, and each
        one's client id and host) and those gone in the last ten minutes, marked."""
        if "members" in snap.unavailable:
            return f"<tr><td>unavailable: {html.escape(snap.unavailable['members'])}</td></tr>"
        gone = self.gone()
        rows = ""
        for service in SERVICES:
            unknown = snap.members_unknown.get(service)
            if unknown is not None:
                rows += (
                    f"<tr><td>{service}</td><td>{consumer_group(service)}</td>"
                    f"<td colspan=4>members unknown for now ({html.escape(unknown)})</td></tr>"
                )
                continue
            members = snap.members.get(service, [])
            left = sorted(gone.get(service, {}).items())
            said = ", ".join(f"{html.escape(m)} (last seen {_clock(at)})" for m, at in left)
            rows += (
                f"<tr><td>{service}</td><td>{consumer_group(service)}</td>"
                f"<td>{html.escape(snap.groups.get(service, ''))}</td><td>{len(members)}</td>"
                f"<td>{html.escape(', '.join(members))}</td>{_cell(said, 'down' if left else '')}"
                "</tr>"
            )
        note = html.escape(MEMBERS_NOTE)
        return (
            "<tr><th>service</th><th>group</th><th>state</th>"
            f"<th title='{note}'>members</th><th>instances (client id, host)</th>"
            f"<th>gone (last 10 minutes)</th></tr>{rows}"
        )

    def throughput(self) -> list[tuple[float, float]]:
        """(time, records consumed per second by all services) between samples. Counted
        service by service, over the services both samples have (one missed a sample: its
        whole count since it started came in one interval); a count that went down is a
        service restarted, whose records since are its count, as Prometheus's ``rate``
        takes it."""
        points = []
        for a, b in itertools.pairwise(self.history):
            consumed = 0.0
            for service in a.consumed.keys() & b.consumed.keys():
                before, now = a.consumed[service], b.consumed[service]
                consumed += now - before if now >= before else now
            points.append((b.at, consumed / (b.at - a.at)))
        return points

    def placing(self, window: float = PLACING_WINDOW) -> tuple[float, float | None]:
        """How many ``POST /orders`` were answered in the last ``window`` seconds (between
        the latest sample and the oldest within it), and their p99, in seconds: counted
        instance by instance, one restarted counted from its start, as :meth:`throughput`."""
        if len(self.history) < 2:
            return 0.0, None
        now = self.history[-1]
        then = next(s for s in self.history if s.at >= now.at - window or s is now)
        if then is now:
            then = self.history[-2]
        answered: dict[float, float] = {}
        for name in now.placing.keys() & then.placing.keys():
            before, after = then.placing[name], now.placing[name]
            restarted = after.get("+Inf", 0.0) < before.get("+Inf", 0.0)
            for le, count in after.items():
                since = count if restarted else count - before.get(le, 0.0)
                answered[float(le)] = answered.get(float(le), 0.0) + since
        return answered.get(float("inf"), 0.0), quantile(0.99, answered)

    def unfetched(self, window: float = UNFETCHED_WINDOW) -> dict[tuple[str, str], float]:
        """Per (app, outcome), the pushes whose order was not fetched in the last ``window``
        seconds (between the latest sample and the oldest within it): counted instance by
        instance, one restarted counted from its start, as :meth:`throughput`."""
        if len(self.history) < 2:
            return {}
        now = self.history[-1]
        then = next(s for s in self.history if s.at >= now.at - window or s is now)
        if then is now:
            then = self.history[-2]
        counted: dict[tuple[str, str], float] = {}
        for name in now.unfetched.keys() & then.unfetched.keys():
            for app, outcomes in now.unfetched[name].items():
                for outcome, count in outcomes.items():
                    before = then.unfetched[name].get(app, {}).get(outcome, 0.0)
                    since = count if count < before else count - before
                    counted[(app, outcome)] = counted.get((app, outcome), 0.0) + since
        return counted

    def page(self) -> str:
        if not self.history:
            return _html("<p>collecting the first figures…</p>")
        snap = self.history[-1]
        now = time.time()
        rows = "".join(self.service_row(snap, s) for s in SERVICES)
        statuses = (
            "".join(
                f"<tr><td>{html.escape(k)}</td><td>{v:.0f}</td></tr>"
                for k, v in sorted(snap.orders.items())
            )
            + _oldest_pending(snap)
            + _placing_row(*self.placing())
        )
        dead_letters = _dead_letter_rows(snap)
        stuck = (
            "".join(
                f"<tr><td><a href='/orders/{html.escape(str(o.get('order_id')))}'>"
                f"{html.escape(str(o.get('order_id')))}</a></td><td>{html.escape(str(o.get('order_ref')))}</td>"
                f"<td>{html.escape(str(o.get('placed_at')))}</td></tr>"
                for o in snap.stuck
            )
            or "<tr><td colspan=3>none</td></tr>"
        )
        if "stuck" in snap.unavailable:
            stuck = (
                f"<tr><td colspan=3>unavailable: {html.escape(snap.unavailable['stuck'])}</td></tr>"
            )
        figures = (
            "<h2>Throughput (records consumed per second, last 10 minutes)</h2>"
            f"{_sparkline(self.throughput())}"
            "<h2>Services</h2><table><tr><th>service</th><th>state</th>"
            f"<th title='{html.escape(LAG_NOTE)}'>consumer lag</th>"
            f"<th>outbox backlog</th><th>oldest unsent (s)</th>"
            f"<th title='{html.escape(REFUSED_NOTE)}'>set aside</th>"
            f"<th title='{html.escape(PARKED_NOTE)}'>parked</th><th>oldest parked (s)</th>"
            f"<th title='{html.escape(INSTANCES_NOTE)}'>instances</th></tr>{rows}</table>"
            f"<h2>Consumer groups</h2><table>{self.members_rows(snap)}</table>"
            f"<h2>Health</h2><table>{_health_rows(snap)}</table>"
            f"<h2>Waiting for operations</h2><table>{_waiting(snap, self.unfetched())}</table>"
            f"<h2>Orders by status</h2><table>{statuses or '<tr><td>no figures</td></tr>'}</table>"
            f"<h2>Dead letters</h2><table>{dead_letters}</table>"
            f"<h2>Stuck orders{_pending_over(snap.stuck_after)}</h2>"
            + (
                f"<p>the oldest {len(snap.stuck)} of {snap.stuck_total}</p>"
                if snap.stuck_total > len(snap.stuck)
                else ""
            )
            + f"<table><tr><th>order</th><th>ref</th><th>placed</th></tr>{stuck}</table>"
        )
        if self.stale(snap, now):  # every figure as it was when sampling last succeeded
            figures = f"<div class='stale'>{figures}</div>"
        return _html(self.freshness(snap, now) + figures)

    def create_app(self) -> FastAPI:
        db = Database(self.settings, schema="auth")

        @contextlib.asynccontextmanager
        async def sampling(_: FastAPI) -> AsyncIterator[None]:
            task = asyncio.create_task(self.run())
            yield
            task.cancel()
            await db.dispose()

        app = FastAPI(
            title="Caravan operations",
            lifespan=sampling,
            docs_url=None,
            redoc_url=None,
            telemetry=NO_NATIVE_TELEMETRY,
        )
        install_auth(app, "dashboard", db, self.settings, cookie=True)
        ops = [require("ops")]

        @app.exception_handler(StarletteHTTPException)
        async def _refused(request: Request, exc: StarletteHTTPException) -> Response:
            """A browser refused a page is sent to the sign-in form (a 401), or shown it
            saying why (:func:`_form_again`: an address throttled, a token without ``ops``);
            a program gets the problem."""
            if exc.status_code == 401 and _browser(request):
                return RedirectResponse("/login", status_code=303)
            if exc.status_code in SIGN_IN_AGAIN and _browser(request):
                return _form_again(exc)
            return http_problem(exc, request)

        @app.get("/login", response_class=HTMLResponse)
        async def login_form() -> str:
            return _login_page("")

        @app.post("/login", response_class=HTMLResponse)
        async def login(request: Request) -> Response:
            """The token from the form, checked like a bearer token, then kept in a cookie. A
            browser's refused is shown the form again, saying why in the refusal's words (a
            401's alike for a token unknown or revoked; none typed in said in the form's) and
            what to do, with its status and headers (a 429's Retry-After)."""
            form = parse_qs((await request.body()).decode("utf-8", "replace"))
            token = (form.get("token") or [""])[0].strip()
            try:
                await authorize_token(request, token, ("ops",))
            except StarletteHTTPException as exc:
                if exc.status_code not in SIGN_IN_AGAIN or not _browser(request):
                    raise
                return _form_again(exc)
            response = RedirectResponse("/", status_code=303)
            response.set_cookie(
                COOKIE,
                token,
                max_age=8 * 3600,
                httponly=True,
                samesite="strict",
                secure=request.url.scheme == "https",
            )
            return response

        @app.post("/logout")
        async def logout() -> Response:
            response = RedirectResponse("/login", status_code=303)
            response.delete_cookie(COOKIE)
            return response

        @app.get("/", response_class=HTMLResponse, dependencies=ops)
        async def index() -> str:
            return self.page()

        @app.get("/api/snapshot", dependencies=ops)
        async def snapshot() -> dict[str, Any]:
            snap = self.history[-1] if self.history else Snapshot(at=time.time())
            unfetched: dict[str, dict[str, float]] = {}
            for (app_name, outcome), count in self.unfetched().items():
                unfetched.setdefault(app_name, {})[outcome] = count
            return {
                **snap.__dict__,
                "dead_letters_waiting": snap.letters_waiting(),
                "throughput": self.throughput(),
                "gone": self.gone(),
                "platform_unfetched": unfetched,
            }

        @app.get("/orders/{order_id}", dependencies=ops)
        async def timeline(order_id: str, request: Request) -> Response:
            answer = await self.order(order_id)
            return _order_page(order_id, answer) if _browser(request) else answer

        return app


def _sparkline(points: list[tuple[float, float]], width: int = 600, height: int = 80) -> str:
    if len(points) < 2:
        return "<p>not enough samples yet</p>"
    top = max(v for _, v in points) or 1.0
    t0, t1 = points[0][0], points[-1][0]
    coords = " ".join(
        f"{(t - t0) / max(t1 - t0, 1e-9) * width:.1f},{height - v / top * height:.1f}"
        for t, v in points
    )
    return (
        f"<svg width='{width}' height='{height}' style='border:1px solid #ccc'>"
        f"<polyline fill='none' stroke='#2a7' stroke-width='2' points='{coords}'/></svg>"
        f"<p>now {points[-1][1]:.1f}/s, peak {top:.1f}/s</p>"
    )


REFRESH = "<meta http-equiv='refresh' content='5'>"


def _browser(request: Request) -> bool:
    """Whether a browser asks (it takes HTML): it is shown a page where a program gets JSON."""
    return "text/html" in request.headers.get("accept", "")


SIGN_IN_AGAIN = {
    401: "sign in with a valid token",
    403: "sign in with a token that has it",
    429: "try again in {wait} s",
}
"""What the sign-in form says after a refusal's own words (``the token is not valid``), a
429's wait its ``Retry-After``."""
FORM_WORDS = {NO_TOKEN: "no token was typed in"}
"""A refusal's words the sign-in form says otherwise: a bearer token is what a program sends,
where a browser's form sent nothing."""


def _form_again(exc: StarletteHTTPException) -> HTMLResponse:
    """The sign-in form, saying why ``exc`` refused a browser (:data:`SIGN_IN_AGAIN`), with
    its status and headers (a 429's Retry-After): a page, not the problem's JSON."""
    why = FORM_WORDS.get(exc.detail, exc.detail)
    wait = (exc.headers or {}).get("Retry-After")
    said = f"{why}: {SIGN_IN_AGAIN[exc.status_code].format(wait=wait)}"
    page = _login_page(f"<p class='warning'>{html.escape(said)}</p>")
    return HTMLResponse(page, exc.status_code, exc.headers)


def _login_page(error: str) -> str:
    return _html(
        f"{error}<form method='post' action='/login'><label>API token with the scope ops "
        "<input type='password' name='token' autocomplete='off' size='60'></label> "
        "<button>sign in</button></form>",
        refresh=False,
    )


def _order_page(order_id: str, answer: Response) -> HTMLResponse:
    """One order as a browser is shown it (the stuck orders' links lead here): its line and
    timeline as ``caravan orders show`` prints them, or what the orders API answered instead
    (its problem's detail), under the same status; a program gets the API's JSON."""
    body = json.loads(bytes(answer.body))
    back = "<p><a href='/'>back to the operations page</a></p>"
    if answer.status_code != 200:
        said = html.escape(str(body.get("detail") or body.get("title") or body))
        shown = f"<h2>Order {html.escape(order_id)}</h2><p>{said}</p>{back}"
        return HTMLResponse(_html(shown, refresh=False), answer.status_code)
    reason = f" ({html.escape(str(body['reason']))})" if body.get("reason") else ""
    total = "" if body.get("total_fen") is None else f", total {int(body['total_fen'])} fen"
    said = (
        f"<p><b>{html.escape(str(body['status']))}</b>{reason}; buyer"
        f" {html.escape(str(body['buyer_id']))}, ref {html.escape(str(body['order_ref']))},"
        f" source {html.escape(str(body['source']))}{total}</p>"
    )
    steps = "".join(
        f"<tr><td>{html.escape(str(step['time']))}</td><td>{html.escape(step_said(step))}</td></tr>"
        for step in body.get("timeline", [])
    )
    table = f"<table><tr><th>time</th><th>event</th></tr>{steps}</table>"
    shown = f"<h2>Order {html.escape(order_id)}</h2>{said}{table}{back}"
    return HTMLResponse(_html(shown, refresh=False))


def _html(body: str, refresh: bool = True) -> str:
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"{REFRESH if refresh else ''}"
        "<title>Caravan operations</title><style>body{font-family:sans-serif;margin:2em}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px}"
        ".ok{color:#176}.degraded{background:#fd6;font-weight:bold}"
        ".down{background:#f99;font-weight:bold}.paused{background:#ddd;font-weight:bold}"
        ".act,.warning{background:#fd6}"
        ".stale{opacity:.5}.note{color:#666}</style>"
        f"</head><body><h1>Caravan operations</h1>{body}</body></html>"
    )


def _oldest_pending(snap: Snapshot) -> str:
    """The row saying how long the oldest pending order has waited, against the deadline it
    is cancelled ``expired`` at (a backlog's orders expire too): none while none is pending,
    or where the orders service does not say it (one before 2026-12-06)."""
    if not snap.oldest_pending:
        return ""
    deadline = "" if snap.saga_deadline is None else f" of {snap.saga_deadline:.0f} s"
    return f"<tr><td>oldest pending</td><td>{snap.oldest_pending:.0f} s{deadline}</td></tr>"


def _placing_row(answered: float, p99: float | None) -> str:
    """The row saying how long ``POST /orders`` took to answer of late (:meth:`Dashboard.placing`):
    none where none was answered, or the orders service does not say it."""
    if p99 is None:
        return ""
    return (
        f"<tr><td>POST /orders p99</td><td>{p99 * 1000:.0f} ms ({answered:.0f} in the last"
        f" {PLACING_WINDOW:.0f} s)</td></tr>"
    )


def _pending_over(seconds: float | None) -> str:
    """The stuck orders' heading's threshold, as the orders API applied it (none: unknown)."""
    return "" if seconds is None else f" (pending over {seconds:.0f} s)"
