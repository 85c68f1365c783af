"""The ``caravan`` command line (CONTRACT.md, Command line)."""

import asyncio
import logging
import os
import sys
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, Protocol, TypeVar
from urllib.parse import unquote

import typer
from pydantic import ValidationError
from pydantic_settings import SettingsError
from rich.text import Text
from typer._click.core import Context
from typer.core import TyperArgument, TyperGroup

from caravan import checkout, inventory_cli, output, payments_cli, platform_cli, tokens_cli
from caravan.arguments import time_opt
from caravan.output import PREPARE_FIRST, OperatorError, console, err_console
from services import SERVICES
from services.orders.domain.order import Canceller
from services.orders.domain.order import Status as OrderStatus
from shared import days
from shared.addresses import served_at
from shared.api import ORDER_CONFIRMED, field_errors
from shared.events.orders import CancelReason
from shared.events.registry import PoisonCode
from shared.seed import Loaded, SeedFile
from shared.settings import (
    DEV_TOKEN_FILE,
    CalendarSettings,
    Settings,
    UnreadableSecret,
    get_settings,
    named_faults,
)

if TYPE_CHECKING:  # what a command imports when it runs (the clients of Kafka, PostgreSQL
    # and HTTP, the services' modules): not on every run, each command pays for its own
    import httpx

    from caravan.ops.dlq import Closed, DeadLetter
    from caravan.ops.parked import Parked
    from caravan.ops.replay import ReplayResult
    from shared.messaging.admin import Topics

# The broker's clients log every refused connection while Kafka starts; the CLI reports itself.
logging.getLogger("aiokafka").setLevel(logging.CRITICAL)


class _Caravan(TyperGroup):
    """The ``caravan`` group. A value Typer refuses through pydantic (a status none of its
    choices: "'done' is not one of ...") is said as the API's 422 says a validator's refusal
    (:func:`shared.api.field_errors`), without pydantic's "Value error, " before it. Every
    command's arguments are named in capitals (:func:`_capitals`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _capitals(self)

    def invoke(self, ctx: Context) -> Any:
        try:
            return super().invoke(ctx)  # the commands' values are read in here
        except typer.BadParameter as exc:
            if isinstance(exc.__cause__, ValidationError):
                exc.message = field_errors(exc.__cause__)[0]["message"]
            raise


def _capitals(group: TyperGroup) -> None:
    """Name the arguments of every command under ``group`` that has no name of its own in
    capitals (``caravan dlq show [OPTIONS] {REF}``), as the docs write them and as the
    platform's are (``{APP}``): Typer showed the parameter's name, a ``{ref}`` that read as a
    placeholder left unfilled."""
    for command in group.commands.values():
        if isinstance(command, TyperGroup):
            _capitals(command)
        for param in command.params:
            if isinstance(param, TyperArgument) and param.metavar is None and param.name:
                param.metavar = param.name.upper()


# Help texts are the commands' docstrings, read as Markdown (the groups under this one too):
# ``caravan up`` shows as code, not with its backticks, and a paragraph's lines are joined.
app = typer.Typer(
    cls=_Caravan,
    help="Caravan: order processing for rural produce marketplaces.",
    no_args_is_help=True,
    rich_markup_mode="markdown",
)
DEMO_SEED = checkout.REPO_ROOT.parent / "shared" / "data" / "shawan-demo.json"


def main() -> None:
    """The ``caravan`` command. What stops a command for a cause the operator is to see to
    is said in one line on stderr rather than in a traceback: an :class:`OperatorError`
    (its exit code), settings the environment gives that :class:`Settings` refuses, a
    database whose tables were never made, and a part of the system that the command cannot
    reach (Kafka, PostgreSQL, a service's HTTP API, at the addresses the environment names);
    exit 2 for the last three (:func:`_fail_outside`)."""
    if sys.argv[1:2] != ["up"]:  # up starts its own (a stale file must not steer it)
        checkout.use_running_system()
    try:
        app()
    except OperatorError as exc:
        _fail(str(exc), exc.exit_code)
    except ValidationError as exc:
        if exc.title not in (Settings.__name__, CalendarSettings.__name__):
            raise  # a model of the command's own: a bug
        _fail(_refused(exc), 2)
    except (UnreadableSecret, SettingsError) as exc:  # a service's own secret file; bad JSON
        _fail(f"settings refused: {exc} (from the environment or .env)", 2)
    except Exception as exc:
        _fail_outside(exc)
        raise


def _fail_outside(exc: Exception) -> None:
    """Fail saying so if ``exc`` is a part of the system the command cannot reach, or
    PostgreSQL unusable (:attr:`~shared.db.engine.Kind.unusable`: not reached, the login
    refused, no connection to spare, never migrated), each with what lifts it, exit 2; or
    asyncpg's client refusing the work, or a value PostgreSQL cannot take, exit 1; else
    return. Not every ``InterfaceError`` is an unreachable PostgreSQL: asyncpg's client
    raises it for work it will not send too (more parameters than a statement may have).

    A client library's exceptions are looked for only if the command imported it (none of
    them can have been raised otherwise): importing SQLAlchemy, aiokafka and httpx to catch
    theirs would cost every command, ``caravan --help`` included, over half a second."""
    if "aiokafka.errors" in sys.modules:
        from aiokafka.errors import KafkaConnectionError

        if isinstance(exc, KafkaConnectionError):
            _unreachable(f"Kafka at {_named_kafka(Settings())}", exc, "KAFKA_BOOTSTRAP_SERVERS")
    if "httpx" in sys.modules:
        import httpx

        if isinstance(exc, httpx.TransportError):
            _unreachable(_http_api(exc), exc)
    if "sqlalchemy.exc" in sys.modules:  # Kafka's and HTTP's first: theirs may wrap an OSError
        from shared.db.engine import Kind, fault

        why = fault(exc)
        if why.kind.unusable:
            lift = output.what_lifts(why.kind)
            joined = ": " if why.kind is Kind.NOT_MIGRATED else "; "
            then = f". {_is_it_up('DATABASE_URL')}" if lift is None else f"{joined}{lift}"
            _fail(f"{why}{then}", 2)
        if why.kind is Kind.CLIENT_REFUSED:
            _fail(f"PostgreSQL's client refused the command's work: {why.error}", 1)
        if why.kind is Kind.BAD_VALUE:
            _fail(f"PostgreSQL cannot take a value the command gave: {why.error}", 1)
    if isinstance(exc, ConnectionError):
        _unreachable("PostgreSQL", exc, "DATABASE_URL")


_IS_IT_UP = "Is the system up (`caravan up`)?"


def _is_it_up(named_by: str | None = None) -> str:
    """What a command that cannot reach a part of the system asks: is the system up. Not
    where this checkout's `caravan up` runs the Kafka or PostgreSQL it could not reach (it
    asked that while `caravan up` started its crashed Kafka again): that it is not answering.
    Not `caravan up` itself, which starts its own Kafka and PostgreSQL unless ``named_by``
    (``KAFKA_BOOTSTRAP_SERVERS``, ``DATABASE_URL``) names one: it waited for that one, and
    says so (it said "Is the system up (`caravan up`)?" to `caravan up`, a minute after a
    reader exported KAFKA_BOOTSTRAP_SERVERS for an example of docs/topics.md)."""
    if named_by is None:
        return _IS_IT_UP
    settings = Settings()
    if named_by == "DATABASE_URL":
        named = settings.database_url.get_secret_value() if settings.database_url else None
    else:
        named = settings.named_kafka()
    if sys.argv[1:2] != ["up"]:
        if not checkout.up_runs_with(named_by, named):
            return _IS_IT_UP
        part = "PostgreSQL" if named_by == "DATABASE_URL" else "Kafka"
        return (
            f"This checkout's `caravan up` is running, but its {part} is not answering:"
            f" restarting after a crash? `caravan up` starts its own {part} again and says when"
            " it is up again; try again then"
        )
    if not named:
        return _IS_IT_UP
    return (
        f"{named_by} is set (in the environment or .env), so `caravan up` uses the one it"
        f" names rather than start its own: start that one, or unset {named_by} for `caravan"
        " up` to start its own"
    )


def _unreachable(what: str, exc: BaseException, named_by: str | None = None) -> NoReturn:
    said = getattr(exc, "orig", None) or exc  # SQLAlchemy's own adds the statement: lines
    _fail(f"cannot reach {what}: {output.error_text(said)}. {_is_it_up(named_by)}", 2)


def _http_api(exc: "httpx.TransportError") -> str:
    """The HTTP API ``exc`` met, by its address (a service's, where the request is unknown)."""
    try:
        url = exc.request.url
    except RuntimeError:  # raised without a request
        return "a service's HTTP API"
    return f"the HTTP API at {url.scheme}://{url.netloc.decode()}"


def _fail(said: str, exit_code: int) -> NoReturn:
    err_console.print(said, style="red")
    raise SystemExit(exit_code)


def _refused(exc: ValidationError) -> str:
    """Why the settings were refused, one line (:func:`shared.settings.named_faults`)."""
    return f"settings refused: {'; '.join(named_faults(exc))} (from the environment or .env)"


def _read(path: Path) -> bytes:
    """What the file a command was given holds, or a usage error naming it."""
    try:
        return path.read_bytes()
    except FileNotFoundError as exc:
        raise typer.BadParameter(f"{path} does not exist") from exc
    except OSError as exc:  # a folder, a file we may not read
        raise typer.BadParameter(f"{path} cannot be read: {exc.strerror or exc}") from exc


def _seed_file(path: Path | None) -> SeedFile:
    chosen = path or DEMO_SEED
    try:
        return SeedFile.model_validate_json(_read(chosen))
    except ValidationError as exc:
        errors = field_errors(exc, whole="file")
        said = [f"{e['field']}: {e['message']}" for e in errors]
        head = f"{chosen} is not a seed file as CONTRACT.md describes ({len(errors)} error(s))"
        raise OperatorError(_listed(head, said), 2) from exc


def _demo_seed(path: Path | None) -> SeedFile:
    """The seed file demo orders are made from, refused before anything starts if it cannot
    make them (no buyers, nothing in season)."""
    from caravan.demo import cannot_drive

    seed = _seed_file(path)
    refused = cannot_drive(seed, days.today())
    if refused is not None:
        raise typer.BadParameter(f"no demo orders from {path or DEMO_SEED}: {refused}")
    return seed


def _load(database_url: str, data: SeedFile) -> Loaded:
    """Load ``data``; what that did (:func:`caravan.seeding.load`)."""
    from caravan.seeding import load
    from services.inventory.handlers import SeedRefused

    try:
        return asyncio.run(load(database_url, data))
    except SeedRefused as exc:
        raise OperatorError(_listed("nothing seeded", exc.reasons), 2) from exc


def _listed(refusal: str, reasons: list[str]) -> str:
    """A refusal of several reasons, one a line below it: a file refused whole was one
    paragraph wrapped in a usage box."""
    return f"{refusal}:" + "".join(f"\n  {reason}" for reason in reasons)


def _database_url() -> str:
    url = _named_database_url()
    if url is None:
        raise typer.BadParameter(f"{output.NO_DATABASE}: run `caravan up` first")
    return url


def _named_database_url() -> str | None:
    """DATABASE_URL, else the local cluster's while it runs; None where neither is: what a
    dry run and ``dlq list``, which go on without the audit trail, are given."""
    url = Settings().database_url
    if url and url.get_secret_value():
        return url.get_secret_value()
    from caravan.infra.postgres import local_postgres

    _, port = checkout.local_ports()
    pg = local_postgres(checkout.CACHE, port)
    return pg.url if pg.is_running() else None


DASHBOARD_PORT_VAR = "CARAVAN_DASHBOARD_PORT"
"""The operations page's port where no ``--dashboard-port`` (``dashboard --port``) is given:
``make up`` moves it with this."""


@app.command()
def up(
    demo: Annotated[
        bool, typer.Option("--demo", help="seed demo data and drive demo orders once ready")
    ] = False,
    seed_file: Annotated[Path | None, typer.Option("--seed", help="seed file for --demo")] = None,
    orders: Annotated[int, typer.Option(min=0, help="demo orders to drive")] = 20,
    kafka_nodes: Annotated[
        int,
        typer.Option(min=1, help="local Kafka nodes: 1, or 3 for a cluster (any number from 1)"),
    ] = 1,
    dashboard_port: Annotated[
        int,
        typer.Option(
            min=1, max=65535, envvar=DASHBOARD_PORT_VAR, help="port of the operations page"
        ),
    ] = 8090,
    kafka_sasl: Annotated[
        bool,
        typer.Option(
            "--kafka-sasl", help="local Kafka with SASL/SCRAM and ACLs (docs/security.md)"
        ),
    ] = False,
    processes: Annotated[
        int,
        typer.Option(
            min=1,
            max=len(SERVICES),
            help="processes the five services run in (fewer: less CPU per order, each "
            "holding several services' credentials; docs/running.md, Processes)",
        ),
    ] = len(SERVICES),
) -> None:
    """Start Kafka, PostgreSQL, the five services and the HTTP API; Ctrl-C stops all of it."""
    from caravan import system

    system.stop_on_signals()
    # A second run would stop this one's brokers when it ends, and share its .cache.
    with system.run_alone(
        checkout.CACHE / "up",
        "one runs per checkout, whatever its ports: stop it, or start this one from another "
        "clone (docs/running.md)",
        held="another `caravan up` runs from this checkout",
    ):
        _up(demo, seed_file, orders, kafka_nodes, dashboard_port, kafka_sasl, processes)


def _refuse_development_servers_in_production(settings: Settings) -> None:
    """In production, ``caravan up`` starts no development broker or database in place of
    those the settings do not name: the services would refuse them (as each refuses to start
    without them, :meth:`Settings.service_refusals`) or run on them. Refused before anything
    starts, naming what to set."""
    if settings.environment == "production" and (refused := settings.service_refusals()):
        raise OperatorError(
            f"settings refused: {'; '.join(refused)} (caravan up starts its own broker and"
            " database only outside production)",
            exit_code=2,
        )


def _up(
    demo: bool,
    seed_file: Path | None,
    orders: int,
    kafka_nodes: int,
    dashboard_port: int,
    kafka_sasl: bool,
    processes: int,
) -> None:
    from sqlalchemy.engine import make_url

    from caravan import system
    from caravan.demo import run_demo
    from services.notifications import texts_go
    from services.platform.served import ready_note

    settings = Settings()
    _refuse_development_servers_in_production(settings)
    seed = _demo_seed(seed_file) if demo else None
    pid_file = checkout.UP_PIDS
    left = system.stop_leftovers(pid_file)
    if left:
        console.print(
            f"stopped {len(left)} process(es) an earlier `caravan up` left running (it was "
            f"killed before it could stop them): {', '.join(left)}",
            style="yellow",
        )
    for name in checkout.paused():  # an earlier run's pauses: this one starts everything
        (checkout.PAUSED / name).unlink()
    started = time.monotonic()
    kafka_port, postgres_port = checkout.local_ports(kafka_nodes)
    system.services_ready_seconds()  # a bad CARAVAN_UP_SERVICES_READY_SECONDS: refused now
    # Asked before anything starts (start_infrastructure asks its brokers' ports).
    services = system.http_ports(system.http_port_env(settings.http_port))
    named_kafka, named_database = named = system.named_servers(settings)
    system.refuse_shared_ports(
        {
            **services,
            "operations page": dashboard_port,
            **({} if named_kafka else system.local_kafka_ports(kafka_port, kafka_nodes)),
            **({} if named_database else {"PostgreSQL": postgres_port}),
        }
    )
    system.check_ports_free({**services, "operations page": dashboard_port})
    with console.status("starting Kafka and PostgreSQL"):
        infra = system.start_infrastructure(
            kafka_nodes=kafka_nodes,
            kafka_port=kafka_port,
            postgres_port=postgres_port,
            kafka_sasl=kafka_sasl,
            named=named,
        )
    # Its own broker's nodes; on a cluster the settings name, what `caravan prepare` asks for:
    # three copies of each record, or every broker of a smaller cluster.
    rf = min(kafka_nodes, 3) if infra.local_kafka else None
    procs = system.ServiceProcesses(
        system.service_env(infra, settings.http_port), checkout.CACHE / "logs", processes
    )
    page = system.OperationsPage(procs.env, dashboard_port, procs.log_dir / "dashboard.log")
    watched: list[system.Watched] = []
    try:  # from here on, whatever ends it stops what it started (the brokers at least)
        os.environ.update(infra.kafka_env)  # this process (prepare, demo) acts as the admin
        get_settings.cache_clear()
        system.write_up_env(infra, settings.http_host, settings.http_port)
        kafka_path = (f"({infra.kafka_path})", "dim")
        console.print(Text.assemble(f"Kafka: {infra.kafka_bootstrap} ", kafka_path))
        # Unquoted for reading: the local cluster's URL holds its socket folder in the query.
        shown = unquote(make_url(infra.database_url).render_as_string(hide_password=True))
        console.print(Text.assemble(f"PostgreSQL: {shown} ", (f"({infra.postgres_path})", "dim")))
        with console.status("creating topics and migrating schemas"):
            prepared = asyncio.run(system.prepare(infra.kafka_bootstrap, infra.database_url, rf=rf))
        for schema, did in prepared.migrated.items():  # silent on schemas at their head
            if did.ran:
                console.print(f"migrated schema {schema}: {did} in {did.seconds:.1f}s")
        _say_kept(prepared.topics, settings, infra.kafka_bootstrap)
        token, new = tokens_cli.dev_token(infra.database_url)
        if new:
            console.print(
                f"development token (every scope), saved in {DEV_TOKEN_FILE} (mode 0600), "
                "used by the caravan commands and the operations page:"
            )
            print(token)
        procs.env.setdefault("CARAVAN_TOKEN_FILE", str(DEV_TOKEN_FILE))
        with console.status("starting services"):
            procs.start()
            system.record_processes(pid_file, procs.procs)
            base = served_at(settings.http_host, settings.http_port)
            system.wait_ready(procs)
        page.start()
        # as the adapter it started has its settings: on the port after the others
        adapter = settings.model_copy(update={"platform_http_port": services["platform"]})
        recorded = {**procs.procs, **page.procs()}
        system.record_processes(pid_file, recorded)
        console.print(
            Text.assemble(
                ("ready", "green"),
                f" in {time.monotonic() - started:.1f}s: HTTP API on {base}, "
                f"operations page on {served_at(settings.http_host, dashboard_port)} (sign in "
                f"with the token in {DEV_TOKEN_FILE}), {ready_note(adapter)}, "
                f"{texts_go.ready_note(settings)}, "
                f"service logs in {procs.log_dir}",
            )
        )
        if seed is not None:
            _load(infra.database_url, seed)
            asyncio.run(run_demo(infra.kafka_bootstrap, seed, count=orders, console=console))
        console.print("Press Ctrl-C to stop.")
        watched = [*infra.watched(procs.backoff), page.watched(procs.backoff)]
        while True:
            now = time.monotonic()
            said = [line for process in watched for line in process.supervise(now)]
            for line in [*said, *procs.supervise(checkout.paused(), now)]:
                console.print(output.stamped(line))
            running = {**procs.procs, **page.procs()}
            if running != recorded:  # stopped, started again (after a while), resumed
                system.record_processes(pid_file, running)
                recorded = running
            time.sleep(0.5)
    except KeyboardInterrupt:
        console.print("stopping")
    finally:
        system.ignore_stop_signals()
        settled = time.monotonic() + 5.0  # a start under way, to stop what it starts
        for process in watched:
            process.settle(settled)
        page.stop()
        procs.stop()
        pid_file.unlink(missing_ok=True)
        checkout.UP_ENV.unlink(missing_ok=True)
        infra.stop()
        console.print("stopped")


ServiceArg = Annotated[str, typer.Argument(help=f"one of {', '.join(SERVICES)}")]


def _wait_for_up(service: str, running: bool, timeout: float = 30.0) -> list[str]:
    """Wait until the running ``caravan up`` has (``running``) or has not started ``service``;
    the keys of the processes hosting it then."""
    deadline = time.monotonic() + timeout
    while True:
        keys = checkout.recorded_processes(checkout.UP_PIDS)
        hosting = [key for key in keys if service in key.split("+")]
        if bool(hosting) == running:
            return hosting
        if time.monotonic() > deadline:
            raise OperatorError(
                f"caravan up did not {'start' if running else 'stop'} {service} within "
                f"{timeout:.0f}s; see {checkout.CACHE / 'logs'}"
            )
        time.sleep(0.2)


def _service(name: str) -> str:
    if name not in SERVICES:
        raise typer.BadParameter(f"{name!r} is none of {', '.join(SERVICES)}")
    if not checkout.running_up():
        raise OperatorError("no `caravan up` runs from this checkout")
    return name


@app.command()
def pause(service: ServiceArg) -> None:
    """Stop one service of the running `caravan up` until `caravan resume` (to replay its
    consumer group, which is refused while it has members); the others go on, and what it
    would have handled waits in Kafka. A service sharing a process (--processes) stops with
    the others there."""
    if _service(service) in checkout.paused():
        console.print(f"{service} is paused already; `caravan resume {service}` starts it again")
        return
    checkout.PAUSED.mkdir(parents=True, exist_ok=True)
    (checkout.PAUSED / service).touch()
    hosting = [k for k in checkout.recorded_processes(checkout.UP_PIDS) if service in k.split("+")]
    _wait_for_up(service, running=False)
    shared = _in_its_process(service, hosting)
    console.print(f"paused {service}{shared}; `caravan resume {service}` starts it again")


@app.command()
def resume(service: ServiceArg) -> None:
    """Start again a service that `caravan pause` stopped; it goes on from its group's
    committed offsets (where `caravan replay` may have moved them)."""
    if _service(service) not in checkout.paused():
        console.print(f"{service} is not paused, nothing changed")
        return
    (checkout.PAUSED / service).unlink(missing_ok=True)  # a resume at the same time
    hosting = _wait_for_up(service, running=True)
    _wait_serving(service, hosting)
    console.print(f"resumed {service}{_in_its_process(service, hosting)}")


def _in_its_process(service: str, hosting: list[str]) -> str:
    """The services sharing the process of ``service`` (``hosting``: its keys), said after
    its name by ``pause`` and ``resume``."""
    also = sorted({n for key in hosting for n in key.split("+")} - {service})
    return f" (and {', '.join(also)}, in its process)" if also else ""


def _wait_serving(service: str, hosting: list[str], timeout: float = 60.0) -> None:
    """Wait until ``service``, started again in the processes ``hosting``, answers
    ``/healthz``, as ``caravan up`` waits for its services at start."""
    from caravan.admin_api import http_port
    from caravan.infra.ports import answers

    port = http_port(service, Settings())
    deadline = time.monotonic() + timeout
    while not answers(port):
        if time.monotonic() > deadline:
            logs = ", ".join(str(checkout.CACHE / "logs" / f"{key}.log") for key in hosting)
            raise OperatorError(
                f"{service} started again, and did not answer /healthz within {timeout:.0f}s;"
                f" see {logs}"
            )
        time.sleep(0.2)


@app.command()
def prepare() -> None:
    """Create the topics and migrate every schema on the Kafka and PostgreSQL that the
    environment names (for deployments; ``caravan up`` does this itself)."""
    from caravan import system

    settings = Settings()
    bootstrap = _bootstrap(settings)
    prepared = asyncio.run(system.prepare(bootstrap, _database_url()))
    _say_kept(prepared.topics, settings, bootstrap)
    rf = prepared.topics.replication_factor
    console.print(f"topics ready (new ones kept on {rf} broker(s)); schemas migrated:")
    for schema, did in prepared.migrated.items():
        console.print(f"  {schema} {did}")


SCHEMAS = (*SERVICES, "auth", "ops")


@app.command()
def downgrade(
    schema: Annotated[str, typer.Argument(help=f"one of {', '.join(SCHEMAS)}")],
    revision: Annotated[str, typer.Argument(help="the older version's newest revision of it")],
) -> None:
    """Take one schema back to an older version's revision with this version's migrations, to
    go back to that version (docs/running.md, Going back): every service stopped (under
    `caravan up`, each paused), one transaction, refused whole where it would lose data,
    naming every migration on the way that would and what clears each."""
    from alembic.util import CommandError

    from caravan import db_roles
    from shared.db.migrate import DowngradeRefused, SchemaAhead, downgrade, migrations_folder

    if schema not in SCHEMAS:
        raise typer.BadParameter(f"{schema!r} is none of {', '.join(SCHEMAS)}")
    database_url = _database_url()
    if running := sorted(checkout.running_on(database_url)):
        raise OperatorError(
            f"caravan up runs {', '.join(running)} from this checkout on this database: pause"
            " each first (caravan pause SERVICE)",
            exit_code=2,
        )
    url = db_roles.asyncpg_url(database_url)
    try:
        did = downgrade(migrations_folder(schema), url, revision, db_roles.OWNER)
    except (DowngradeRefused, SchemaAhead) as exc:
        raise OperatorError(f"schema {schema}: {exc}", exit_code=2) from exc
    except CommandError as exc:  # a revision it does not know, or one after the schema's
        raise OperatorError(f"schema {schema}: {exc}", exit_code=2) from exc
    if did.ran:
        console.print(f"schema {schema}: {did} in {did.seconds:.1f}s, taken back")
    else:
        console.print(f"schema {schema} is at {revision} already, nothing taken back")


def _say_kept(topics: "Topics", settings: Settings, bootstrap: str) -> None:
    """A warning for each topic that was there with a partition count other than the
    settings' (CARAVAN_TOPIC_PARTITIONS), and for each dead-letter topic that keeps letters
    another time than they say (CARAVAN_DLQ_RETENTION_HOURS), with the command that sets it
    on the cluster at ``bootstrap``: prepare leaves them as they are."""
    from shared.messaging.admin import dlq_retention_ms

    for topic, count in topics.other_partitions.items():
        console.print(
            f"{topic} keeps its {count} partition(s), not the {settings.topic_partitions} of "
            "CARAVAN_TOPIC_PARTITIONS: Kafka can only add partitions, and adding them moves "
            "keys (an order's events) to other partitions, so that is left to operations",
            style="yellow",
        )
    wanted = dlq_retention_ms(settings.dlq_retention_hours)
    for topic, ms in topics.other_retention.items():
        console.print(
            f"{topic} keeps dead letters {_kept(ms)}, not {_kept(wanted)} as "
            "CARAVAN_DLQ_RETENTION_HOURS says: prepare leaves a topic's retention as it is "
            f"(kafka-configs.sh --bootstrap-server {bootstrap} --alter --entity-type topics "
            f"--entity-name {topic} --add-config retention.ms={wanted})",
            style="yellow",
        )


def _kept(retention_ms: int) -> str:
    from shared.messaging import kafka_admin

    return "for ever" if retention_ms < 0 else f"{retention_ms / kafka_admin.HOUR_MS:g} h"


@app.command()
def seed(file: Annotated[Path, typer.Argument(help="a seed file, as in CONTRACT.md")]) -> None:
    """Load sellers, products, harvest lots and credit lines; loading twice changes nothing."""
    from caravan.seeding import summary, will_not_sell
    from shared.seed import named

    data = _seed_file(file)
    loaded = _load(_database_url(), data)
    today = days.today()
    console.print(f"seeded {file}:", *summary(data, loaded, today), sep="\n")
    for why, lots in will_not_sell(data, loaded, today).items():
        console.print(f"warning: {named(why, lots)}", style="yellow")
    lots, lines = loaded.kept.get("lots", []), loaded.kept.get("buyers", [])
    for said in lots + lines:
        console.print(said, style="yellow")
    if lots:
        console.print("(a lot's counts change with `caravan inventory adjust`, not by seeding)")
    if lines:
        console.print("(a credit limit changes with `caravan payments credit-set`, not by seeding)")


@app.command()
def demo(
    seed_file: Annotated[
        Path | None,
        typer.Option(
            "--seed", help="seed file the orders are made from (default: shawan-demo.json)"
        ),
    ] = None,
    orders: Annotated[int, typer.Option(min=0, help="storefront orders to drive")] = 20,
    platform_orders: Annotated[
        int, typer.Option(min=0, help="also push this many orders from the platform simulator")
    ] = 0,
    platform_app: Annotated[
        str | None,
        typer.Option(
            help="the app of CARAVAN_PLATFORM_APPS (or _FILE) to simulate; its secret is given"
            " to the simulator in its environment, never on a command line (which ps shows)"
        ),
    ] = None,
) -> None:
    """Seed demo data and drive storefront orders (and, with ``--platform-orders``,
    marketplace-platform orders) through the running system."""
    from caravan.demo import run_demo, run_platform_demo

    data = _demo_seed(seed_file)
    settings = Settings()
    app_name = platform_app or next(iter(settings.platform_apps), None)
    if platform_orders and app_name not in settings.platform_apps:
        raise typer.BadParameter(
            "--platform-orders needs an app in CARAVAN_PLATFORM_APPS (see "
            "docs/platform-adapter.md), the same the running services were started with"
        )
    bootstrap = _bootstrap(settings)
    _load(_database_url(), data)
    from caravan import system

    system.stop_on_signals()  # SIGTERM too says what was sent (run_demo), as Ctrl-C does
    outcomes = asyncio.run(run_demo(bootstrap, data, count=orders, console=console))
    if platform_orders and app_name is not None:
        outcomes += asyncio.run(
            run_platform_demo(settings, data, app_name, platform_orders, console=console)
        )
    if any(o.status == "pending" for o in outcomes):
        raise typer.Exit(1)


def _bootstrap(settings: Settings | None = None) -> str:
    """The Kafka a command reaches (:func:`_named_kafka`), refused as a service refuses it
    (:meth:`Settings.kafka_refusal`: in production, none named): one line, exit 2."""
    settings = settings or Settings()
    if (refused := settings.kafka_refusal()) is not None:
        raise OperatorError(f"settings refused: {refused}", exit_code=2)
    return _named_kafka(settings)


def _named_kafka(settings: Settings) -> str:
    """The brokers KAFKA_BOOTSTRAP_SERVERS names (or the running ``caravan up`` does, through
    :func:`checkout.use_running_system`), else ``caravan up``'s own on the port
    CARAVAN_UP_LOCAL_PORTS gives it (:func:`checkout.local_kafka`): it may have been killed,
    leaving its broker running, as a replay or a redrive looks for its PostgreSQL."""
    return settings.named_kafka() or checkout.local_kafka()


@app.command()
def replay(
    topic: Annotated[str, typer.Option(help="the topic to re-read")],
    group: Annotated[str, typer.Option(help="the consumer group to rewind, e.g. caravan-orders")],
    from_timestamp: Annotated[
        datetime | None,
        time_opt("first record time to re-read"),
    ] = None,
    from_offset: Annotated[
        int | None, typer.Option(min=0, help="offset to restart from, per partition")
    ] = None,
    earliest: Annotated[
        bool, typer.Option("--earliest", help="restart from the earliest offset")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="show what would be re-read, change nothing")
    ] = False,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="apply for a group with no committed offset on the topic (Kafka expired them)",
        ),
    ] = False,
    allow_skip: Annotated[
        bool,
        typer.Option(
            "--allow-skip", help="allow moving forward, past records the group has not read yet"
        ),
    ] = False,
) -> None:
    """Rewind a consumer group so that its service reads a topic again. What it handled
    before is dropped as a duplicate (its inbox has each event's id): a replay redoes
    nothing done, and sends no event or text again; only records it skipped then (a type it
    handles since an upgrade) or dead-lettered (after a fix) are tried again."""
    from caravan.ops import replay as ops_replay

    try:
        result = asyncio.run(
            ops_replay.replay(
                _bootstrap(),
                _named_database_url(),
                topic,
                group,
                earliest=earliest,
                from_offset=from_offset,
                from_timestamp=from_timestamp,
                dry_run=dry_run,
                force=force,
                allow_skip=allow_skip,
            )
        )
    except (ValueError, LookupError) as exc:
        raise typer.BadParameter(str(exc)) from exc
    headers = (
        "partition",
        "current offset",
        "new offset",
        "end offset",
        "records re-read",
        "records skipped",
    )
    table = output.table(
        *headers,
        title=f"{'dry run: ' if dry_run else ''}replay of {topic} for {group}",
        right=headers,
    )
    for p in result.plan:
        current = "-" if p.current is None else str(p.current)
        table.add_row(
            str(p.partition), current, str(p.new), str(p.end), str(p.reread), str(p.skipped)
        )
    output.show(table)
    if from_timestamp is not None:
        console.print(_replayed_from(from_timestamp))
    if any(p.current is None for p in result.plan):
        console.print(
            "current offset -: none committed, its service would start at the first record"
        )
    known = result.members is not None
    console.print(
        f"group {group}: "
        + (f"{result.group_state}, {result.members} member(s)" if known else "members unknown")
        + f"; {result.total} record(s) to re-read"
        + (f", {result.skipped} to skip" if result.skipped else "")
    )
    if result.refused:
        said = "a run would be refused" if dry_run else "refused"
        if len(result.refused) == 1:
            console.print(Text.assemble((f"{said}:", "red"), f" {result.refused[0]}"))
        else:
            console.print(Text(f"{said}, for {len(result.refused)} reasons:", "red"))
            for reason in result.refused:
                console.print(Text(f"- {reason}"))
        if not dry_run:
            raise typer.Exit(2)
    console.print(_replayed(result))
    if result.unrecorded and not result.applied:  # a dry run: it reads only Kafka
        _unrecorded_dry_run(result.unrecorded)
    elif result.unrecorded:
        console.print(f"not in the audit trail (PostgreSQL): {result.unrecorded}", style="yellow")
        raise typer.Exit(1)
    if result.refused:  # a dry run's: it exits as the run would, so that a script can check
        raise typer.Exit(2)


def _replayed_from(when: datetime) -> str:
    """The instant ``--from-timestamp`` was read as, in UTC and in the market's zone, for
    the operator to check it against the bad deploy's time before a run: a time without a
    zone is UTC, and one meant in the market's (Shawan's 09:00) would rewind to 8 hours
    later, the records between never read again."""
    zone = days.market_zone()
    return (
        f"from {output.at(when.astimezone(UTC))}, {output.at(when.astimezone(zone))} in the"
        f" market's zone ({zone.key}; a time given without a zone is read as UTC): each"
        " partition from its first record at or after it, or from its end where none is"
    )


REPLAYED = (
    "those its service handled before are dropped as duplicates (its inbox has their ids),"
    " so nothing done is done again; only those it skipped or dead-lettered then are tried"
    ' again (caravan_records_consumed_total{outcome="duplicate"} counts those dropped)'
)
"""What the records a replay re-reads do: what ``caravan replay``'s last line says of them."""


def _replayed(result: "ReplayResult") -> str:
    """A replay's last line: applied or not, and of records to re-read, how many and what
    they do (:data:`REPLAYED`); none, that nothing is rewound (it said "applied" alone), and
    how many records it skips, if any."""
    done = "applied" if result.applied else "nothing changed (dry run)"
    reread = f"{result.total} record(s)"
    if result.refused:
        return done
    if not result.total:
        held = f"the range chosen holds no record {result.group} has read"
        if result.skipped:
            are = "are" if result.applied else "would be"
            held += f"; {result.skipped} record(s) it has not read yet {are} skipped, never handled"
        if result.applied:
            return f"{done}: nothing rewound: {held}"
        return f"{done}; a run would rewind nothing: {held}"
    if result.applied:
        return f"{done}: {result.group} re-reads {reread} once its service runs; {REPLAYED}"
    return f"{done}; a run would have {result.group} re-read {reread}: {REPLAYED}"


PLACED_AFTER = (
    "if it is placed now, its source sees order.placed and then the order's outcome for that"
    " order_ref after the rejection"
)
"""What a redrive of a request rejected for its data brings its source, if placed now."""


def _rejected_requests(letters: "list[DeadLetter]") -> dict[str, str]:
    """Of ``letters``, those of a request answered ``order.rejected`` for its data (not for an
    order_ref naming another order, which stands): letter -> ``SOURCE/ORDER_REF``."""
    from caravan.ops.dlq import rejected_request

    return {
        d.ref: request
        for d in letters
        if d.error != "order_ref_reused" and (request := rejected_request(d)) is not None
    }


def _placed_since(requests: dict[str, str]) -> dict[str, str]:
    """Of letters' requests answered ``order.rejected`` (letter -> ``SOURCE/ORDER_REF``), those
    whose source has placed the order since (sent again, mended), as the orders API says
    (``GET /orders?source=&order_ref=``): letter -> ``order ID, STATUS``. A drill's operator
    met 200 letters of a storefront's bad deploy, which the storefront had sent again
    mended, and nothing said which were placed: a redrive's warning said "if it is placed
    now". Where the API cannot be asked, a warning, and none is said placed."""
    import httpx

    from caravan.admin_api import base_url, call

    placed: dict[str, str] = {}
    if not requests:
        return placed
    try:
        base = base_url(None, "orders")
        with httpx.Client() as client:
            for item, request in requests.items():
                source, _, order_ref = request.rpartition("/")
                query = {"source": source, "order_ref": order_ref}
                found = call(base, "orders", "GET", "/orders", params=query, client=client)
                for o in found["items"]:
                    placed[item] = f"order {o['order_id']}, {o['status']}"
    except OperatorError as exc:
        console.print(
            f"warning: the orders API could not say which requests were placed since: {exc}",
            style="yellow",
        )
    return placed


def _reused_request(mended: bool) -> str:
    """What a redrive of a request whose order_ref names another order brings: that order
    stands, so the request is never placed under its order_ref."""
    said = "its order_ref names another order, which stands: it is never placed under it"
    if mended:
        return (
            f"{said}; the value sent is placed only if it names another order_ref (its source"
            " then sees order.placed and the order's outcome for that one), else it is"
            " dead-lettered again and answered order.rejected again, unless it holds what"
            " that order was placed with (a copy of its request: nothing placed, published or"
            " dead-lettered)"
        )
    return (
        f"{said}: sent as it is, it is dead-lettered again (order_ref_reused) and the same"
        " order.rejected published again (--value-file with another order_ref places it"
        " under that one)"
    )


def _unrecorded_dry_run(why: str, *more: str) -> None:
    """Say that a dry run went on without the audit trail, why, and what else it lacked."""
    said = "; ".join((why, *more))
    console.print(f"not in the audit trail (a dry run goes on without it): {said}", style="yellow")


@app.command()
def stuck(
    older_than: Annotated[
        float | None,
        typer.Option(
            min=0, help="seconds pending [default: 300, or half the saga deadline if shorter]"
        ),
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=500, help="the oldest this many")] = 100,
) -> None:
    """List orders pending longer than a threshold, with the step each one waits for."""
    from caravan.admin_api import base_url, call, paused_note

    found = call(
        base_url(None, "orders"),
        "orders",
        "GET",
        "/ops/stuck-orders",
        params={"limit": limit}
        | ({} if older_than is None else {"older_than_seconds": older_than}),
    )
    shown, total = len(found["orders"]), found.get("total", len(found["orders"]))
    over = f"pending over {found['older_than_seconds']:.0f}s"
    table = output.table(
        "order",
        "ref",
        "source",
        "placed",
        "stock",
        "payment",
        title=(f"the oldest {shown} of " if shown < total else "") + f"{total} order(s) {over}",
        whole=("order", "ref", "placed"),
    )
    for o in found["orders"]:
        table.add_row(
            o["order_id"],
            o["order_ref"],
            o["source"],
            output.at(o["placed_at"]),
            o["stock"],
            o["payment"],
        )
    output.show(table, empty=f"no order stuck: none {over}")
    for step, service in (("stock", "inventory"), ("payment", "payments")):
        paused = paused_note(service)
        if paused and any(o[step] == "pending" for o in found["orders"]):
            console.print(f"{step} pending: {paused}")


QUEUED, TEMPLATE, STATE = "queued\nsent", "template\nlanguage", "status\nattempts"
"""Two lines each: when a text was queued above when it went (``-``: not sent), its status
above how many times the gateway was tried, beside its template, language and number."""


def _sent(text: dict[str, Any]) -> str:
    """When a text went: delivered, or accepted by the gateway; ``-`` for one not sent."""
    return output.at(text["sent_at"]) if text["sent_at"] else "-"


def _why(text: dict[str, Any]) -> str:
    """What a text's row says beside its status: a failed one's time and reason, a pending
    one's next try and the error that put it off, one held by quiet hours until when (a
    reminder's ``not_before`` still to come: the hours' end, or moved on by the hours a retry
    was held; no other text's is ever after now)."""
    if text["status"] in ("pending", "sending") and text["next_attempt_at"]:
        put_off = f": {text['last_error']}" if text["last_error"] else ""
        held = text["not_before"] and datetime.fromisoformat(text["not_before"]) > datetime.now(UTC)
        next_try = "held by quiet hours until" if held else "next try"
        return f"{next_try} {output.at(text['next_attempt_at'])}{put_off}"
    if text["status"] == "delivered" and text["delivered_at"]:
        return f"delivered {output.at(text['delivered_at'])}"
    if text["status"] == "suppressed":
        return "not sent: the number opted out, or the reminder was no longer due"
    if text["status"] == "failed" and text["failed_at"]:
        return f"failed {output.at(text['failed_at'])}: {text['last_error'] or 'nothing said'}"
    return text["last_error"] or ""


@app.command()
def texts(
    order_id: Annotated[str | None, typer.Argument(help="the order's id")] = None,
    phone: Annotated[
        str | None,
        typer.Option(
            help="the texts to this number (E.164, or a mainland mobile written nationally:"
            " 139 1234-5678), of every order"
        ),
    ] = None,
    limit: Annotated[int, typer.Option(min=1, help="the newest this many")] = 100,
    as_json: Annotated[
        bool, typer.Option("--json", help="print the texts as the API gives them, as JSON")
    ] = False,
) -> None:
    """The texts of an order, or to a number (--phone), newest first: when each was queued
    and sent, its template and language, its number masked (to a number: above its order),
    its status, the gateway's
    attempts and why it failed or waits (the notifications API's `GET /sms`; the token needs
    the scope ops, or notifications:read): "I never got a text" answered without SQL."""
    from caravan.admin_api import base_url, newest
    from shared.phones import as_e164

    if order_id is None and phone is None:
        raise OperatorError("texts of what: give an ORDER_ID, or --phone", exit_code=2)
    phone = phone and (as_e164(phone) or phone)  # as a buyer says it: 139 1234-5678
    asked = {"order_id": order_id, "phone": phone}
    params = {k: v for k, v in asked.items() if v is not None}
    options = {"order_id": "ORDER_ID", "phone": "--phone"}
    base = base_url(None, "notifications")
    found, more = newest(base, "notifications", "/sms", params, limit, options)
    if as_json:
        output.as_json({"texts": found, "more": more})
        return
    from shared.logs import masked

    whose = " ".join(
        ([f"of order {order_id}"] if order_id else []) + ([f"to {masked(phone)}"] if phone else [])
    )
    title = output.listed_title(len(found), f"text(s) {whose}", more)
    # To a number, texts of many orders: each one's order under its number, the way from a
    # buyer's phone call to `caravan orders show` (it was in --json alone).
    to = "to" if order_id else "to\norder"
    table = output.table(
        QUEUED, TEMPLATE, to, STATE, "why", title=title, whole=(QUEUED, TEMPLATE, to, STATE)
    )
    for t in found:
        table.add_row(
            f"{output.at(t['created_at'])}\n{_sent(t)}",
            f"{t['purpose']}\n{t['locale']}",
            t["to"] if order_id else f"{t['to']}\n{t['order_id'] or '-'}",
            f"{t['status']}\n{t['attempts']}",
            output.Clipped(_why(t)),
        )
    output.show(table, empty=f"no text {whose}")


@app.command()
def check(
    as_json: Annotated[
        bool, typer.Option("--json", help="print what was checked and found as JSON")
    ] = False,
) -> None:
    """Check the books in the database (`DATABASE_URL`, or that of `caravan up`): no order's
    money taken in twice, each ledger transaction balanced, each loan's receivable its
    outstanding principal, the sellers owed each authorised payment and nothing else, each
    seller owed in `caravan payments payables` what its ledger account says, order by order,
    a confirmed order paid and a cancelled one not, no money held for an order the orders
    service never had, and each lot's counters adding up to what it received (never
    oversold). Read in one snapshot (a read-only REPEATABLE READ transaction), every row of
    those tables. Prints what it read and `no violation` (exit 0), or each violation with
    its evidence, grouped by check, with what the check means and the runbook to follow
    (exit 1). It prints no money totals, each check being of one order, lot, loan or ledger
    transaction: a week's for the sellers, each the ledger's, are `caravan payments payables
    --since --until`'s. An order in flight while it reads may be reported (cancelled, its
    payment not voided yet): run it again; a violation that stays is real. It reads no Kafka
    topic: the full check of the reliability runs (tests/reliability, bench/soak.py) also
    checks each request answered, one end per order, each text sent once and the dead
    letters, from every record of every topic since the start, which retention drops and
    where a real dead letter is a violation (docs/commands.md)."""
    from caravan.ops.books import checked

    found = asyncio.run(checked(_database_url()))
    if as_json:
        output.as_json(found.as_json())
    else:
        found.show()
    if found.violations:
        raise typer.Exit(1)


WHO, WHAT = "at\nactor", "action\ntarget"
"""Two lines each: when above who, what above on what, beside what changed."""


def _changed(entry: dict[str, Any]) -> str:
    """What an audit entry says changed: its ``detail`` first, who asked (``by``: a
    cancellation's buyer or operator) and the reason first and a key last (who and why, before
    what: cut to three lines, a cancellation's entry still says whose it was), then each field
    whose value differs between ``before`` and ``after`` (``status: authorized -> voided``; a
    field only one of them has, from or to ``-``), else either whole, all as compact JSON."""
    before, after, detail = entry["before"], entry["after"], entry["detail"] or {}
    first = {"by": 0, "reason": 1, "key": 3}
    ordered = sorted(detail.items(), key=lambda item: first.get(item[0], 2))
    said = [f"{key}: {_compact(value)}" for key, value in ordered]
    if isinstance(before, dict) and isinstance(after, dict):
        for key in [*before, *(k for k in after if k not in before)]:
            was, now = before.get(key, "-"), after.get(key, "-")
            if was != now:
                said.append(f"{key}: {_compact(was)} -> {_compact(now)}")
    elif before is not None or after is not None:
        said.append(f"{_compact(before) if before is not None else '-'} -> {_compact(after)}")
    return "; ".join(said)


def _compact(value: object) -> str:
    import json

    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


@app.command()
def audit(
    action: Annotated[
        str | None, typer.Option(help="only this action (lot.adjust, payment.void, ...)")
    ] = None,
    target: Annotated[
        str | None,
        typer.Option(help="only those on this (an order's or a loan's id, a lot, a token)"),
    ] = None,
    actor: Annotated[
        str | None, typer.Option(help="only this actor's (a token's name, or a login name)")
    ] = None,
    since: Annotated[datetime | None, time_opt("at or after")] = None,
    until: Annotated[datetime | None, time_opt("before")] = None,
    limit: Annotated[int, typer.Option(min=1, help="the newest this many")] = 100,
    as_json: Annotated[
        bool, typer.Option("--json", help="print the entries whole (before, after, detail) as JSON")
    ] = False,
) -> None:
    """The audit trail (auth.audit), newest first: who did what, on what, when, and what it
    changed, narrowed by action, target, actor and time. Read from the database
    (`DATABASE_URL`, or that of `caravan up`) as its admin, as `caravan tokens list` is: no
    service may read it."""
    from shared.auth.audit import entries
    from shared.db.engine import async_engine

    if since is not None and until is not None and until <= since:
        raise OperatorError("Invalid request: --until must be after --since", exit_code=1)

    async def read() -> tuple[list[dict[str, Any]], bool]:
        engine = async_engine(_database_url())
        try:
            async with engine.connect() as conn:
                return await entries(
                    conn,
                    limit,
                    action=action,
                    target=target,
                    actor=actor,
                    since=since,
                    until=until,
                )
        finally:
            await engine.dispose()

    found, more = asyncio.run(read())
    if as_json:
        listed = [e | {"at": e["at"].isoformat()} for e in found]
        output.as_json({"entries": listed, "more": more})
        return
    table = output.table(
        WHO,
        WHAT,
        "changed",
        title=output.listed_title(len(found), "audit entry(ies)", more),
        whole=(WHO,),
    )
    for e in found:
        table.add_row(
            f"{output.at(e['at'])}\n{e['actor']}",
            f"{e['action']}\n{e['target']}",
            output.Clipped(_changed(e), lines=3),
        )
    asked = {"--action": action, "--target": target, "--actor": actor}
    output.show(
        table, empty=output.none_of("audit entry", asked | {"--since": since, "--until": until})
    )


orders_app = typer.Typer(help="Every buyer's orders, as operations read them.")
app.add_typer(orders_app, name="orders")

ORDER, STATUS, BUYER = "order\nplaced", "status\nreason", "buyer\nref\nsource"
"""Three lines each: an order's row fits 80 columns with its id and status whole."""


@orders_app.command("list")
def orders_list(
    status: Annotated[
        OrderStatus | None, typer.Option(help="only the orders of this status")
    ] = None,
    reason: Annotated[
        CancelReason | None, typer.Option(help="only the orders cancelled for this reason")
    ] = None,
    since: Annotated[
        datetime | None,
        time_opt("placed at or after"),
    ] = None,
    until: Annotated[datetime | None, time_opt("placed before")] = None,
    buyer: Annotated[str | None, typer.Option(help="only this buyer's")] = None,
    source: Annotated[
        str | None, typer.Option(help="only this source's (http, storefront/..., platform/APP)")
    ] = None,
    ref: Annotated[
        str | None, typer.Option(help="only the orders of this order_ref (one per source)")
    ] = None,
    sku: Annotated[str | None, typer.Option(help="only the orders with a line of this SKU")] = None,
    seller: Annotated[
        str | None,
        typer.Option(
            help="only the orders holding this seller's goods (its id in the seed file), as"
            " inventory reserved them: none never reserved, nor reserved before 2026-12-07"
        ),
    ] = None,
    limit: Annotated[int, typer.Option(min=1, help="the newest this many")] = 100,
) -> None:
    """List every buyer's orders, newest first: of a status, a cancellation reason, placed
    since or until a time, of a buyer, a source, an order_ref, a product (--sku), a seller's
    goods (--seller) (the orders API's `GET
    /orders`, with a token with the scope ops); order id above when it was placed, status
    above reason, buyer above ref above source, total in fen."""
    from caravan.admin_api import base_url, newest

    asked = {
        "status": status,
        "reason": reason,
        "buyer_id": buyer,
        "source": source,
        "order_ref": ref,
        "sku": sku,
        "seller": seller,
    }
    times = {"since": since, "until": until}
    params = {k: v for k, v in asked.items() if v is not None} | {
        k: v.isoformat() for k, v in times.items() if v is not None
    }
    options = {name: f"--{name}" for name in [*asked, *times]} | {
        "buyer_id": "--buyer",
        "order_ref": "--ref",
    }
    base = base_url(None, "orders")
    found, more = newest(base, "orders", "/orders", params, limit, options)
    table = output.table(
        ORDER,
        STATUS,
        BUYER,
        "fen",
        title=output.listed_title(len(found), "order(s)", more),
        whole=(ORDER, STATUS),
        right=("fen",),
    )
    for o in found:
        table.add_row(
            f"{o['order_id']}\n{output.at(o['placed_at'])}",
            f"{o['status']}\n{o['reason'] or ''}",
            f"{o['buyer_id']}\n{o['order_ref']}\n{o['source']}",
            "" if o["total_fen"] is None else str(o["total_fen"]),
        )
    given = {options[name]: value for name, value in (asked | times).items()}
    output.show(table, empty=output.none_of("order", given))


def _show_order(order: dict[str, Any]) -> None:
    """An order as the orders API answers it (``GET /orders/{id}``): one line, a line of what
    was ordered, then its timeline, oldest first, each step with what it names (a refund's
    amount and reference)."""
    from services.orders.entrypoints.schemas import step_said

    reason = f" ({order['reason']})" if order["reason"] else ""
    total = "" if order["total_fen"] is None else f", total {order['total_fen']} fen"
    console.print(
        f"order {order['order_id']}: {order['status']}{reason}; buyer {order['buyer_id']},"
        f" ref {order['order_ref']}, source {order['source']}{total}"
    )
    if lines := order.get("lines"):
        console.print("lines: " + ", ".join(f"{ln['quantity']} x {ln['sku']}" for ln in lines))
    if sellers := order.get("sellers"):  # ids alone: orders keeps no seller's name
        console.print(f"sellers: {_named_sellers(sellers)}")
    table = output.table("time", "event", whole=("time", "event"))
    for step in order["timeline"]:
        table.add_row(output.at(step["time"]), step_said(step))
    output.show(table)


def _named_sellers(sellers: list[str]) -> str:
    """``sellers`` (ids) each with its name, read from the inventory API (the orders service
    keeps none): ``s-1 (Walnut coop), s-2 (...)``; where inventory did not answer, the ids and
    why the names are left out."""
    from caravan.inventory_cli import seller_names

    names: dict[str, str] = {}
    for seller in sellers:  # an order's few: each asked alone
        found, left_out = seller_names(seller)
        if left_out is not None:
            return f"{', '.join(sellers)} ({left_out})"
        names.update(found)
    return ", ".join(f"{s} ({names[s]})" if s in names else s for s in sellers)


@orders_app.command("show")
def orders_show(order_id: str) -> None:
    """Show an order: status, reason, buyer, ref, source, total and its timeline (the orders
    API's `GET /orders/{id}`; the token needs the scope orders:read)."""
    from caravan.admin_api import base_url, call

    _show_order(call(base_url(None, "orders"), "orders", "GET", "/orders/{}", order_id))


@orders_app.command("cancel")
def orders_cancel(
    order_id: str,
    by: Annotated[
        Canceller,
        typer.Option(
            help="who asks for it: operator (operations, of their own accord:"
            " cancelled_by_operator, the buyer texted that staff cancelled it) or buyer (the"
            " buyer asked, you or a platform: cancelled_by_buyer, texted as at their request;"
            " sent as the API's default, so an orders service of before operators' own"
            " cancellations takes it too)"
        ),
    ] = "operator",
    reason: Annotated[
        str | None,
        typer.Option(
            help="why, as the buyer or you said it (kept in the audit trail: caravan audit)"
        ),
    ] = None,
) -> None:
    """Cancel a pending order (`cancelled_by_operator`; `--by buyer`: at its buyer's word,
    `cancelled_by_buyer`): the stock it holds and a loan lent for it are given back (the
    orders API's `POST /orders/{id}/cancel`; the token needs the scope orders:write), and the
    audit trail names who asked and, with --reason, why. A confirmed order is refused (exit
    1); one already cancelled is shown as it is, below a line saying it was cancelled before,
    when and why (exit 0: nothing changed). An orders service older than this command, which
    does not know an operator's cancellation, refuses one in a line saying so (exit 1)."""
    from caravan.admin_api import ProblemAnswer, base_url, call

    base = base_url(None, "orders")
    said = {"reason": reason} if reason is not None else {}
    if by != "buyer":  # the buyer's is the API's default: an orders service of before "by" takes it
        said["by"] = by
    try:
        order = call(base, "orders", "POST", "/orders/{}/cancel", order_id, json=said or None)
    except ProblemAnswer as exc:
        if exc.unknown_field("by"):
            raise OperatorError(
                f"order {order_id} not cancelled: the orders service is older than this command"
                " and does not know an operator's cancellation (it refused the field by):"
                " upgrade it, or cancel with --by buyer (cancelled_by_buyer, the buyer texted"
                " as at their request)",
                exit_code=1,
            ) from None
        if exc.status == 409 and str(exc).startswith(ORDER_CONFIRMED):
            raise OperatorError(
                f"{exc}: Caravan undoes no confirmed order; its goods are settled by hand, and"
                f" its payment, once its buyer is refunded, voided with `caravan payments"
                f" void-sold {order_id} --reason TEXT`"
            ) from None
        raise
    if order.get("applied") is False:
        when = [s["time"] for s in order["timeline"] if s["type"] == "order.cancelled"]
        at = f", at {output.at(when[-1])}" if when else ""
        console.print(
            f"order {order['order_id']} was cancelled before ({order['reason']}){at};"
            " nothing changed",
            style="yellow",
        )
    _show_order(order)


StuckAfter = Annotated[
    float | None,
    typer.Option(
        min=0,
        help="seconds pending before stuck [default: 300, or half the saga deadline if shorter]",
    ),
]
Instances = Annotated[
    list[str] | None,
    typer.Option(
        envvar="CARAVAN_DASHBOARD_INSTANCES",
        metavar="SERVICE=[HOST:]PORT",
        help="a further instance of a service to read, beside the one on its port setting"
        " (repeatable; docs/running.md, More than one instance of a service)",
    ),
]


@app.command()
def dashboard(
    port: Annotated[
        int,
        typer.Option(min=1, max=65535, envvar=DASHBOARD_PORT_VAR, help="where to serve the page"),
    ] = 8090,
    stuck_after: StuckAfter = None,
    instance: Instances = None,
) -> None:
    """Serve the operations page: live figures of the running system."""
    import uvicorn

    from caravan.ops.dashboard import Dashboard
    from shared.logs import configure_logging

    settings, further = _watching(instance)
    board = Dashboard(settings, stuck_after=stuck_after, further=further)
    # Its lines as a service's: a retried fault once, then once a minute (PostgreSQL away:
    # each request's token taken as read before), in JSON.
    configure_logging("dashboard", settings.log_level)
    uvicorn.run(board.create_app(), host=settings.http_host, port=port, log_config=None)


def _watching(instance: list[str] | None) -> tuple[Settings, dict[str, list[str]]]:
    """What the operations page and ``caravan status`` read: the settings, on the Kafka a
    command reaches (:func:`_bootstrap`), and the further instances ``--instance`` names.
    Refused (exit 2) without a token (every call refused, each counted against the address)
    or an ``--instance`` that is not ``SERVICE=[HOST:]PORT``."""
    from caravan.ops.dashboard import further_instances

    settings = Settings()
    if settings.api_token() is None:
        said = (
            "no API token: set CARAVAN_TOKEN (or CARAVAN_TOKEN_FILE) to a token with the scope ops"
        )
        raise OperatorError(said, exit_code=2)
    try:
        further = further_instances(instance or [], settings.http_host)
    except ValueError as exc:
        raise OperatorError(str(exc), exit_code=2) from None
    kafka = {"kafka_bootstrap_servers": _bootstrap(settings)}
    return settings.model_copy(update=kafka), further


@app.command()
def status(
    stuck_after: StuckAfter = None,
    instance: Instances = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the status as JSON")] = False,
) -> None:
    """The state of the running system in one look, as the operations page samples it: each
    service (and each instance, and under `caravan up` each process) up, degraded, unhealthy,
    frozen, down or paused, with what its `/healthz` says; Kafka and PostgreSQL; the consumer
    lag of each group; the outbox rows waiting; the dead letters waiting; the orders pending
    past the stuck threshold. Exit 0 when all is well, 1 when something is wrong (each said
    in a line at the end)."""
    from caravan.ops import status as ops_status

    settings, further = _watching(instance)
    database_url = _named_database_url()  # asked where no service's /healthz says
    found = asyncio.run(ops_status.sampled(settings, stuck_after, further, database_url))
    if as_json:
        output.as_json(ops_status.as_json(found))
    else:
        for line in ops_status.lines(found):
            console.print(line, highlight=False, markup=False)
    if found.wrong:
        raise typer.Exit(1)


app.add_typer(
    payments_cli.app,
    name="payments",
    help="Credit lines, loans and repayments; the payments (listed, voided, refunded by hand, a"
    " charge the gateway lost) and what the sellers are owed (payables).",
)
app.add_typer(inventory_cli.app, name="inventory", help="Stock, harvest lots and spoilage.")
app.add_typer(
    platform_cli.app,
    name="platform",
    help="Marketplace platforms: mappings, problems, status callbacks.",
)
app.add_typer(tokens_cli.app, name="tokens", help="API tokens: issue, revoke, list.")

buyers_app = typer.Typer(help="A buyer's personal data: erase it on request (PIPL).")
app.add_typer(buyers_app, name="buyers")


@buyers_app.command("erase")
def buyers_erase(
    buyer_id: Annotated[str, typer.Argument(help="the buyer's id")],
    phone: Annotated[
        str, typer.Option(help="the buyer's number (E.164, or a mainland mobile: 139 1234-5678)")
    ],
    force: Annotated[
        bool, typer.Option("--force", help="erase while an order is pending or a loan active")
    ] = False,
) -> None:
    """Erase a buyer's personal data everywhere it is kept (docs/personal-data.md, Erasing a
    buyer): their orders' delivery and digests, their texts and recipients, their platform
    mappings and the platform's id of them in problems, their number in the audit trail. One
    transaction in the database (`DATABASE_URL`, or that of `caravan up`) as its admin,
    audited once (`buyer.erase`: the buyer id and the counts, never the number). Prints
    what it erased in each place; run again, it says nothing is left. Refused (exit 1) while
    the buyer has an order pending or a loan not repaid, unless --force: a reminder or an
    outcome could text them again."""
    from caravan.ops.erase import PLACES, InFlight, erase
    from shared.logs import masked
    from shared.phones import as_e164

    number = as_e164(phone)
    if number is None:
        raise typer.BadParameter(f"{phone!r} is not a phone number (E.164: +8613912345678)")
    try:
        erased = asyncio.run(erase(_database_url(), buyer_id, number, force=force))
    except InFlight as exc:
        raise OperatorError(
            f"buyer {buyer_id} not erased: {exc}; erase once settled, or --force", exit_code=1
        ) from exc
    whose = f"buyer {buyer_id} ({masked(number)})"
    if not erased.anything:
        console.print(f"nothing left of {whose} to erase")
    else:
        table = output.table("place", "erased", title=f"erased {whose}", right=("erased",))
        for key, place in PLACES.items():
            table.add_row(place, str(erased.counts[key]))
        output.show(table)
    if erased.unsent:
        console.print(
            f"{erased.unsent} text(s) to {masked(number)} still to be sent, kept:"
            " run it again once they are sent"
        )


dlq_app = typer.Typer(
    help="Inspect dead letters, send chosen ones back to their topic, or discard them."
)
app.add_typer(dlq_app, name="dlq")


def _letters(
    topic: str | None,
    error: str | None,
    source: str | None,
    since: datetime | None,
    refs: list[str] | None = None,
) -> list["DeadLetter"]:
    from caravan.ops import dlq as ops_dlq
    from shared.messaging import kafka_admin

    bootstrap = _bootstrap()
    try:
        letters = asyncio.run(ops_dlq.read(bootstrap))
    except kafka_admin.NoSuchTopic as exc:  # a dead-letter topic: Kafka was never prepared
        raise OperatorError(f"{exc} on Kafka at {bootstrap}: {PREPARE_FIRST}", 2) from exc
    return ops_dlq.select(letters, topic=topic, error=error, source=source, since=since, refs=refs)


def _origin_topic(name: str | None) -> str | None:
    from caravan.ops import dlq as ops_dlq

    try:
        return None if name is None else ops_dlq.origin_topic(name)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc


TopicOpt = Annotated[
    str | None,
    typer.Option(
        callback=_origin_topic,
        help="original topic or its dead-letter topic, e.g. orders.requests.v1(.dlq)",
    ),
]
ErrorOpt = Annotated[
    PoisonCode | None, typer.Option(help="the error they were dead-lettered for (dlq.error)")
]
SourceOpt = Annotated[
    str | None,
    typer.Option(
        help="the source their record names (its envelope's), e.g. storefront/shawan-center"
    ),
]
SinceOpt = Annotated[
    datetime | None,
    time_opt("dead-lettered at or after"),
]


LETTER, ERROR = "id\nfrom\ntime", "error\ngroup\nsource"
"""Three lines each: ``caravan dlq list`` fits 80 columns with room for the reason."""
SOURCE_SHOWN = 64
"""The most of a letter's source ``dlq list`` shows (a sender's is far shorter; junk's may
run to the envelope's 256): cut with "…" beyond it, ``dlq show`` printing it whole."""
REDRIVEN_UNKNOWN = "which letters were redriven or discarded before is not known"
"""What ``dlq list`` and a ``dlq redrive`` or ``discard --dry-run`` say while the audit trail
cannot tell."""


@dlq_app.command("list")
def dlq_list(
    topic: TopicOpt = None,
    error: ErrorOpt = None,
    source: SourceOpt = None,
    since: SinceOpt = None,
    waiting: Annotated[
        bool,
        typer.Option("--waiting", help="only those still waiting: not redriven nor discarded"),
    ] = False,
) -> None:
    """List dead letters, three lines each: id above original coordinates above time, error
    above consumer group above the source its record names (`-`: none, or not JSON), and
    the reason cut at a word to the room left (`caravan dlq show` prints it whole); below,
    for a letter of a redriven record, the letter it was sent back from, and for a letter
    redriven or discarded before, when and by whom (from the audit trail), a discard's
    reason beside it. The title says how many still wait."""
    from caravan.ops import dlq as ops_dlq

    letters = _letters(topic, error, source, since)
    before: dict[str, ops_dlq.Closed] = {}
    unknown = None
    if letters:
        before, why = asyncio.run(ops_dlq.closed(_named_database_url(), letters))
        unknown = None if why is None else str(why)
    still = [d for d in letters if d.ref not in before]
    given = {"--topic": topic, "--error": error, "--source": source, "--since": since}
    empty = output.none_of("dead letter", given)
    if unknown is not None:  # which wait is not known: all listed, said below
        title = f"{len(letters)} dead letter(s)"
    elif waiting:
        title = f"{len(still)} dead letter(s) waiting, of {len(letters)}"
        shut = f" ({len(letters)} redriven or discarded)" if letters else ""
        empty = output.none_of("dead letter waiting", given) + shut
        letters = still
    else:
        title = f"{len(letters)} dead letter(s), {len(still)} waiting"
    table = output.table(LETTER, ERROR, "message", title=title, whole=(LETTER, ERROR))
    for d in letters:
        origin = f"{d.origin}:{d.headers.get('dlq.partition')}:{d.headers.get('dlq.offset')}"
        more = [(d.redrive_of, "sent back as this")] if d.redrive_of else []
        closed = before.get(d.ref)
        if closed is not None:
            more.append((closed.said, f"by {closed.by}"))
        said = None if closed is None or closed.discarded is None else f"why: {closed.discarded}"
        message = output.Clipped(d.headers.get("dlq.error.message", ""), 3 + len(more), said)
        table.add_row(
            "\n".join([d.ref, origin, output.at(d.time), *(left for left, _ in more)]),
            "\n".join([d.error, d.headers.get("dlq.group", ""), _source_said(d)])
            + "".join(f"\n{right}" for _, right in more),
            message,
        )
    output.show(table, empty=empty)
    if unknown is not None:
        console.print(f"{REDRIVEN_UNKNOWN}: {unknown}", style="yellow")


def _source_said(letter: "DeadLetter") -> str:
    """A letter's source as ``dlq list`` shows it on one line: ``-`` for none, what no
    terminal prints as ``?``, cut beyond :data:`SOURCE_SHOWN`."""
    if letter.source is None:
        return "-"
    printable = "".join(c if c.isprintable() else "?" for c in letter.source)
    return output.shortened(printable, SOURCE_SHOWN)


@dlq_app.command("show")
def dlq_show(
    ref: Annotated[str, typer.Argument(help="a dead letter id from `caravan dlq list`")],
) -> None:
    """Show one dead letter whole: headers, key and value."""
    found = _letters(None, None, None, None, [ref])
    if not found:
        raise typer.BadParameter(f"no dead letter {ref}")
    d = found[0]
    for name, value in sorted(d.headers.items()):
        console.print(Text.assemble((name, "bold"), f": {value}"))
    key = "(none)" if d.key is None else d.key.decode("utf-8", "replace")
    console.print(Text.assemble(("key", "bold"), f": {key}"))
    console.print(Text("value", "bold"), ":", sep="")
    console.print(d.value.decode("utf-8", "replace"))


RefsArg = Annotated[
    list[str] | None, typer.Argument(help="dead letter ids (default: all matching)")
]
AllOpt = Annotated[
    bool,
    typer.Option(
        "--all",
        help="every dead letter, when no id, --topic, --error, --source or --since chooses",
    ),
]


def _chosen(
    to: str,
    refs: list[str] | None,
    topic: str | None,
    error: str | None,
    source: str | None,
    since: datetime | None,
    all_letters: bool,
    dry_run: bool,
) -> list["DeadLetter"]:
    """The dead letters a ``dlq redrive`` or ``discard`` chose (:func:`_choose`), saying what
    ``to`` do with them."""
    return _choose(
        ("dead letter", f"to {to}", "dlq list", "--topic, --error, --source or --since"),
        refs,
        {"--topic": topic, "--error": error, "--source": source, "--since": since},
        all_letters or dry_run,
        lambda: _letters(topic, error, source, since, refs or None),
    )


class _Named(Protocol):
    @property
    def ref(self) -> str: ...


Chosen = TypeVar("Chosen", bound=_Named)


def _choose(
    said: tuple[str, str, str, str],
    refs: list[str] | None,
    filters: Mapping[str, object],
    every: bool,
    found: Callable[[], list[Chosen]],
    missing_said: Callable[[list[str]], str] = lambda missing: "",
) -> list[Chosen]:
    """What a command that closes things (``dlq redrive``, ``dlq discard``, ``parked drop``)
    chose: by id (``refs``), or all those its ``filters`` match (some given: option, value);
    with none of them, every one only if ``every`` (``--all``, or a dry run). An id not found
    is refused (exit 2; ``missing_said`` adds what it can of it). None to choose is said in
    one line, exit 0, as a list of nothing says it (``no parked event``, ``no dead letter
    matches --topic T``): a refusal in a usage box read as a mistake of the operator's.
    ``said``: what they are, what is done to them, the command listing their ids, and the
    filters' names."""
    thing, done, lister, named = said
    if not (refs or any(value is not None for value in filters.values()) or every):
        raise typer.BadParameter(
            f"choose the {thing}s {done} (ids from `caravan {lister}`, {named}), or say"
            " --all for every one (--dry-run shows them)"
        )
    items = found()
    missing = sorted(set(refs or ()) - {item.ref for item in items})
    if missing:
        raise typer.BadParameter(f"no {thing} {', '.join(missing)}{missing_said(missing)}")
    if not items:
        console.print(output.none_of(thing, filters))
        raise typer.Exit(0)
    return items


def _left_out(item: str, closed: "Closed", again: str) -> None:
    """Say that ``item`` was left out, closed before (when, by whom, a discard's reason)."""
    why = "" if closed.discarded is None else f" ({closed.discarded})"
    console.print(f"left out: {item}, {closed.said} by {closed.by}{why}{again}")


@dlq_app.command("redrive")
def dlq_redrive(
    ref: RefsArg = None,
    topic: TopicOpt = None,
    error: ErrorOpt = None,
    source: SourceOpt = None,
    since: SinceOpt = None,
    all_letters: AllOpt = False,
    value_file: Annotated[
        Path | None, typer.Option(help="a fixed value to send instead (one dead letter only)")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="show what would be sent, send nothing")
    ] = False,
    again: Annotated[
        bool,
        typer.Option(
            "--again",
            help="send letters that were redriven or discarded before as well (one redriven"
            " with a fixed value only with --value-file)",
        ),
    ] = False,
) -> None:
    """Send chosen dead letters back to their original topic, with their key, each for the
    consumer group that dead-lettered it. A letter redriven or discarded before is left out
    (--again). With nothing chosen (no id, --topic, --error, --source or --since) it takes
    --all, or --dry-run to see them. Exits 2 when every letter chosen is left out, nothing
    sent."""
    value = _read(value_file) if value_file else None
    letters = _chosen("send back", ref, topic, error, source, since, all_letters, dry_run)
    from caravan.ops import dlq as ops_dlq
    from caravan.ops.record import Unrecordable, refusal

    verb = "would redrive" if dry_run else "redriven"
    placed = _placed_since(_rejected_requests(letters))  # before: a redrive may place them
    try:
        done = asyncio.run(
            ops_dlq.redrive(
                _bootstrap(),
                _named_database_url(),
                letters,
                value=value,
                dry_run=dry_run,
                again=again,
                on_sent=lambda item: console.print(f"{verb}: {item}"),
            )
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    except Unrecordable as exc:
        raise OperatorError(f"nothing redriven: {refusal('redrive', exc.why)}", 2) from exc
    if dry_run:
        for item in done.sent:
            console.print(f"{verb}: {item}")
    again_unless = "dead-lettered again unless its consumer now takes it (--value-file mends it)"
    reused = {d.ref for d in letters if d.error == "order_ref_reused"}  # said with its rejection
    for item, code in done.unmended.items():  # a warning: a consumer may take it now
        if item in reused:
            continue
        said = f"warning: {item} was dead-lettered for its value ({code}) and goes back unmended"
        junk = f"junk nobody can mend is closed with `caravan dlq discard {item} --reason TEXT`"
        console.print(f"{said}: {again_unless}; {junk}", style="yellow")
    for item, request in done.rejected.items():  # allowed: a rejected request made no order
        said = _reused_request(value is not None) if item in reused else PLACED_AFTER
        if item in placed:
            said = (
                f"its source has placed it since ({placed[item]}): a redrive places nothing"
                " more (one order per source and order_ref), and, unmended, has it answered"
                " order.rejected again; `caravan dlq discard` closes the letter"
            )
        console.print(
            f"warning: {item}, the request {request}, was answered order.rejected: {said}",
            style="yellow",
        )
    for item, closed in sorted(done.before.items()):
        again_said = "again" if closed.discarded is None else "all the same"
        with_fix = " with --value-file: it was sent fixed" if closed.fixed else ""
        _left_out(item, closed, f" (--again to send it {again_said}{with_fix})")
    for item, closed in sorted(done.fixed.items()):
        console.print(
            f"left out: {item}, {closed.said} by {closed.by} with a fixed value: --again"
            " sends its own value, which was dead-lettered; give the fixed value again"
            " with --value-file to send it"
        )
    for item in done.dropped:
        console.print(
            f"left out: {item}, its record was too big to keep (see `caravan dlq show {item}`):"
            " send a value with --value-file"
        )
    _done_of_chosen(verb, len(done.sent), len(letters), done.unrecorded)
    if not done.sent:
        nothing = "nothing would be redriven" if dry_run else "nothing redriven"
        _none_of_chosen(nothing, len(letters))


def _done_of_chosen(verb: str, done: int, chosen: int, unrecorded: str | None) -> None:
    """Say how many of the ``chosen`` letters a redrive or discard sent or closed where it
    left some out; a dry run the audit trail could not tell which were closed before
    exits 2, as the run, refused meanwhile, would: a script checks the dry run."""
    if done and done < chosen:
        letters = f"the {chosen} dead letters chosen"
        console.print(f"{verb} {done} of {letters}; {chosen - done} left out (said above)")
    if unrecorded:
        _unrecorded_dry_run(unrecorded, f"{REDRIVEN_UNKNOWN}, none is left out for it")
        raise typer.Exit(2)


def _none_of_chosen(nothing: str, chosen: int, what: str = "dead letter") -> None:
    """Exit 2 where a redrive, discard or drop left out every letter (parked event) chosen,
    whatever left each out: a script naming them sees that none was sent or closed."""
    every = f"each of the {chosen} {what}s chosen" if chosen > 1 else f"the {what} chosen"
    raise OperatorError(f"{nothing}: {every} was left out (said above)", 2)


@dlq_app.command("discard")
def dlq_discard(
    reason: Annotated[
        str, typer.Option(help="why they should never go back (kept in the audit trail)")
    ],
    ref: RefsArg = None,
    topic: TopicOpt = None,
    error: ErrorOpt = None,
    source: SourceOpt = None,
    since: SinceOpt = None,
    all_letters: AllOpt = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="show what would be discarded, discard nothing")
    ] = False,
) -> None:
    """Close chosen dead letters that should never go back (junk nobody can mend): recorded in
    the audit trail with the reason, they no longer wait: `caravan dlq list` says them
    discarded, the operations page no longer counts them waiting, and a redrive leaves them
    out unless --again. Nothing is sent or deleted: Kafka keeps them until the topic's
    retention. A letter redriven or discarded before is left out. Chosen as `dlq redrive`
    chooses. Exits 2 when every letter chosen is left out, nothing discarded."""
    letters = _chosen("discard", ref, topic, error, source, since, all_letters, dry_run)
    from caravan.ops import dlq as ops_dlq
    from caravan.ops.record import Unrecordable, refusal

    try:
        done = asyncio.run(
            ops_dlq.discard(_named_database_url(), letters, reason=reason, dry_run=dry_run)
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    except Unrecordable as exc:
        raise OperatorError(f"nothing discarded: {refusal('discard', exc.why)}", 2) from exc
    verb = "would discard" if dry_run else "discarded"
    for item in done.discarded:
        console.print(f"{verb}: {item}")
    requests = _rejected_requests([d for d in letters if d.ref in done.discarded])
    placed = _placed_since(requests)
    for item, request in requests.items():
        if item not in placed:
            console.print(
                f"warning: {item}, the request {request}, was answered order.rejected and its"
                " source has not placed it since: discarded, it is never placed unless its"
                " source sends it again",
                style="yellow",
            )
    for item, closed in sorted(done.before.items()):
        _left_out(item, closed, "")
    _done_of_chosen(verb, len(done.discarded), len(letters), done.unrecorded)
    if not done.discarded:
        _none_of_chosen(
            "nothing would be discarded" if dry_run else "nothing discarded", len(letters)
        )


parked_app = typer.Typer(
    help="Events parked until their order's order.placed: list them, drop chosen ones."
)
app.add_typer(parked_app, name="parked")


def _parking_service(name: str | None) -> str | None:
    from caravan.ops.parked import TABLES

    if name is not None and name not in TABLES:
        raise typer.BadParameter(f"{name!r} parks no events: name one of {', '.join(TABLES)}")
    return name


ParkerOpt = Annotated[
    str | None,
    typer.Option(
        "--service", callback=_parking_service, help="notifications or platform (default: both)"
    ),
]
OrderOpt = Annotated[str | None, typer.Option("--order", help="those parked for this order id")]
OlderOpt = Annotated[
    float | None, typer.Option("--older-than", min=0, help="those parked over this many seconds")
]


def _parked(
    service: str | None, order: str | None, older_than: float | None, refs: list[str] | None = None
) -> list["Parked"]:
    """The parked events matching every filter given, the oldest first."""
    from caravan.ops import parked as ops_parked

    events = asyncio.run(
        ops_parked.read(_database_url(), [service] if service else tuple(ops_parked.TABLES))
    )
    now = datetime.now(UTC)
    return [
        e
        for e in events
        if (order is None or e.order_id == order)
        and (older_than is None or (now - e.parked_at).total_seconds() > older_than)
        and (refs is None or e.ref in refs)
    ]


@parked_app.command("list")
def parked_list(
    service: ParkerOpt = None, order: OrderOpt = None, older_than: OlderOpt = None
) -> None:
    """List the events each service parked until their order's order.placed, the oldest
    first, two lines each: id (service:event id) above type, the order above when it was
    parked; and why it waits, for how long: orders never placed that order (none will come),
    or placed it and its order.placed has not been handled yet."""
    events = _parked(service, order, older_than)
    now = datetime.now(UTC)
    table = output.table(
        "id\ntype",
        "order\nparked",
        "why",
        title=f"{len(events)} parked event(s)",
        whole=("id\ntype", "order\nparked"),
    )
    for e in events:
        table.add_row(f"{e.ref}\n{e.type}", f"{e.order_id}\n{output.at(e.parked_at)}", e.why(now))
    given = {"--service": service, "--order": order, "--older-than": older_than}
    output.show(table, empty=output.none_of("parked event", given))


def _not_parked(refs: list[str]) -> str:
    """What ``parked drop`` says of ids it found no event for: that an id is
    ``SERVICE:EVENT_ID`` where one has no service before it, and which a drop deleted before
    (it said only "no parked event ..." of both)."""
    from caravan.ops import parked as ops_parked

    bare = [r for r in refs if r.partition(":")[0] not in ops_parked.TABLES]
    said = []
    if bare:
        said.append(
            f"an id is SERVICE:EVENT_ID, as `caravan parked list` prints it"
            f" ({' or '.join(f'{s}:{bare[0]}' for s in ops_parked.TABLES)})"
        )
    named = [r for r in refs if r not in bare]
    dropped = asyncio.run(ops_parked.dropped_before(_database_url(), named)) if named else {}
    said += [
        f"{r} was dropped {output.at(d.at)} by {d.by} ({d.reason})"
        for r, d in sorted(dropped.items())
    ]
    return "".join(f"; {line}" for line in said)


@parked_app.command("drop")
def parked_drop(
    reason: Annotated[
        str, typer.Option(help="why they should never be acted on (kept in the audit trail)")
    ],
    ref: Annotated[
        list[str] | None, typer.Argument(help="ids from `caravan parked list` (service:event id)")
    ] = None,
    service: ParkerOpt = None,
    order: OrderOpt = None,
    older_than: OlderOpt = None,
    all_events: Annotated[
        bool,
        typer.Option(
            "--all", help="every parked event, when no id, --service, --order or --older-than"
        ),
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="show what would be dropped, drop nothing")
    ] = False,
) -> None:
    """Drop chosen parked events, never to be acted on (their order.placed will not come: a
    forged or mistaken event, an order lost upstream), recorded in the audit trail with the
    reason and the events. Chosen by id, or all those matching --service/--order/--older-than;
    with none of them, every one only with --all (--dry-run shows them)."""
    events = _choose(
        ("parked event", "to drop", "parked list", "--service, --order or --older-than"),
        ref,
        {"--service": service, "--order": order, "--older-than": older_than},
        all_events or dry_run,
        lambda: _parked(service, order, older_than, ref or None),
        _not_parked,
    )
    from caravan.ops import parked as ops_parked

    # Chosen by a filter, an event whose order orders placed waits for a service behind: it
    # is acted on once that service reads the order.placed. Only its id drops it.
    placed = [] if ref else [e for e in events if e.order is not None]
    events = [e for e in events if e not in placed]
    for e in placed:
        console.print(
            f"left out: {e.ref}, orders placed order {e.order_id}: it is acted on once"
            f" {e.service} reads its order.placed (name it by id to drop it all the same)"
        )
    if placed and not events:
        _none_of_chosen("nothing dropped", len(placed), "parked event")
    try:
        dropped = asyncio.run(
            ops_parked.drop(_database_url(), events, reason=reason, dry_run=dry_run)
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    verb = "would drop" if dry_run else "dropped"
    for e in dropped:
        console.print(f"{verb}: {e.ref} ({e.type} of order {e.order_id})")
    for item in sorted({e.ref for e in events} - {e.ref for e in dropped}):
        console.print(f"left out: {item}, acted on meanwhile (its order.placed came)")
