"""``python -m services.<name>``: run one service until SIGTERM or Ctrl-C; ``python -m services
<name> <name> ...``: several in one process (``caravan up --processes``)."""

import asyncio
import gc
import logging
from collections.abc import Callable, Mapping
from typing import Protocol

import uvloop
from pydantic import ValidationError

from shared.db.migrate import SchemaBehind
from shared.logs import configure_logging
from shared.runtime import Service, signal_event
from shared.settings import (
    NO_DATABASE_URL,
    InstanceSettings,
    Settings,
    SettingsRefused,
    UnreadableSecret,
    check_settings,
    named_faults,
    no_database_url,
    service_settings,
)
from shared.telemetry import SERVICE, configure_tracing, shutdown_tracing


class Composition(Protocol):
    """A service's composition root, the module ``services/<name>/bootstrap.py``."""

    def checks(self, settings: Settings) -> list[Callable[[], object]]:
        """What the service refuses of ``settings`` beyond what every service refuses, each
        a call raising ValueError (:func:`shared.settings.check_settings`)."""
        ...

    def bootstrap(self, settings: Settings) -> Service:
        """The service composed (nothing connected yet)."""
        ...


log = logging.getLogger(__name__)


def run(compositions: Mapping[str, Composition]) -> None:
    """Run the services ``compositions`` compose, each with its own settings (its own
    database role and Kafka login), consumer group, pool, outbox relay and HTTP port, in one
    event loop.

    Several in one process wake less often than each in its own, so that each record costs
    less CPU (``bench/HISTORY.md``, "Fewer processes"); the price is a process holding each
    hosted service's credentials.

    A service whose schema is behind its code (:class:`shared.db.migrate.SchemaBehind`) stops
    them all: each such refusal one error line, and the process exits 2; so do settings any
    hosted service refuses (:func:`refused_settings`), all of every service named in one
    line, before any service is composed."""
    settings, refused = refused_settings(compositions)
    if refused:  # one line, as a schema behind
        configure_logging("+".join(compositions), instance=InstanceSettings().instance_id)
        log.error("settings refused: %s", refused)
        raise SystemExit(2)
    first = next(iter(settings.values()))  # the process's own settings alike in each
    configure_logging("+".join(compositions), first.log_level, first.instance_id)
    for name in compositions:
        configure_tracing(name)

    async def main() -> None:
        stop = signal_event()
        # Kafka clients bind to the running loop, so the services are composed inside it.
        services = [c.bootstrap(settings[name]) for name, c in compositions.items()]
        # The cyclic garbage collector took 10-17 % of each service's CPU under load, 40 % of
        # that in full collections re-scanning what startup made (modules, models, tables).
        # Frozen, startup's objects are never scanned again; young collections run every
        # 10,000 allocations instead of 700, so full ones come 14 times less often.
        gc.freeze()
        gc.set_threshold(10_000, 10, 10)
        outcomes = await asyncio.gather(
            *(_serve(service, stop) for service in services), return_exceptions=True
        )
        behind = [str(o) for o in outcomes if isinstance(o, SchemaBehind)]
        for refusal in behind:  # one line each, no traceback: for the operator, not a bug
            log.error("%s", refusal)
        if behind:
            raise SystemExit(2)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome

    try:
        uvloop.run(main())
    finally:
        shutdown_tracing()


def refused_settings(compositions: Mapping[str, Composition]) -> tuple[dict[str, Settings], str]:
    """Each hosted service's settings, and what any of them refuses (its settings, its
    ``checks``), every refusal once, in one line ("" if none); each names the services
    refusing it where the process hosts several. All are asked before any is composed: one
    refusing after another was made left the other's engine and producer unclosed."""
    settings: dict[str, Settings] = {}
    refusing: dict[str, list[str]] = {}  # each refusal, and the services that refuse it
    several = len(compositions) > 1
    for name, composition in compositions.items():
        try:
            settings[name] = service_settings(name)
            check_settings(settings[name], composition.checks(settings[name]))
        except (ValidationError, SettingsRefused, UnreadableSecret) as exc:
            for said in _refusals(exc):
                if said == NO_DATABASE_URL and several:  # each its own variable
                    said = no_database_url(name)
                refusing.setdefault(said, []).append(name)
    return settings, "; ".join(
        f"{said} ({', '.join(names)})" if several else said for said, names in refusing.items()
    )


def _refusals(exc: ValidationError | SettingsRefused | UnreadableSecret) -> list[str]:
    if isinstance(exc, SettingsRefused):
        return exc.refusals
    return named_faults(exc) if isinstance(exc, ValidationError) else [str(exc)]


async def _serve(service: Service, stop: asyncio.Event) -> None:
    """Serve one service in a task of its own, named its own in logs, spans and metrics; when
    it stops (asked to, or failing), the others in the process stop too."""
    SERVICE.set(service.name)
    try:
        await service.serve(stop)
    finally:
        stop.set()
