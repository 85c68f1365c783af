"""Settings, read from the environment (and a ``.env`` file) with pydantic-settings."""

import json
import os
import socket
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextvars import ContextVar
from datetime import time
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, Literal, Self
from urllib.parse import urlsplit, urlunsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from shared.api import field_errors
from shared.events.envelope import check_source
from shared.events.orders import PLATFORM_SOURCE_PREFIX
from shared.topics import principal

MAX_MONTHLY_INTEREST_BP = 10_000

# Secrets that a field may also take from a file: the variable's name with ``_FILE`` appended
# names the file (Docker and Kubernetes secrets). Keys are as the settings sources give them.
# (The CLI's token has its own: CARAVAN_TOKEN_FILE, ``token_file``.)
FILE_SECRETS: dict[str, str] = {
    "DATABASE_URL": "DATABASE_URL_FILE",
    "kafka_password": "CARAVAN_KAFKA_PASSWORD_FILE",
    "kafka_ssl_key_password": "CARAVAN_KAFKA_SSL_KEY_PASSWORD_FILE",
    "notifications_gateway_api_key": "CARAVAN_NOTIFICATIONS_GATEWAY_API_KEY_FILE",
    "notifications_receipts_secret": "CARAVAN_NOTIFICATIONS_RECEIPTS_SECRET_FILE",
    "platform_apps": "CARAVAN_PLATFORM_APPS_FILE",  # JSON, as CARAVAN_PLATFORM_APPS
}
DEV_SECRET_PREFIX = "caravan-dev-"
EXAMPLE_SECRET_PREFIX = "change-me"  # the docs' example secrets (docs/platform.md): public


def is_dev_secret(value: str | None) -> bool:
    """Whether ``value`` is one of the project's development defaults (refused in production):
    the local cluster's ``caravan`` password, any ``caravan-dev-...`` one, or a secret the docs
    publish as an example (``change-me-...``), with which anyone could sign a platform's
    pushes."""
    return value is not None and (
        value == "caravan" or value.startswith((DEV_SECRET_PREFIX, EXAMPLE_SECRET_PREFIX))
    )


def secret_from_env(name: str, environ: dict[str, str] | None = None) -> str | None:
    """The value of variable ``name``, else the content of the file ``<name>_FILE`` names."""
    env = os.environ if environ is None else environ
    if env.get(name):
        return env[name]
    path = env.get(f"{name}_FILE")
    return read_secret_file(f"{name}_FILE", path) if path else None


class UnreadableSecret(ValueError):
    """A ``*_FILE`` variable names a file that cannot be read."""


def read_secret_file(variable: str, path: str) -> str:
    """The secret in the file ``variable`` names, or :class:`UnreadableSecret` saying which
    variable names a file that cannot be read (a setting refused, not a traceback)."""
    try:
        return Path(path).read_text().strip()
    except OSError as exc:
        said = f"{variable} names {path}, which cannot be read: {exc.strerror}"
        raise UnreadableSecret(said) from exc


# The variable each secret given to Settings() came from, where not its own (a hosted
# service's CARAVAN_DATABASE_URL_<SERVICE>: service_settings), so that a refusal names the
# variable to change.
_SECRET_SOURCES: ContextVar[Mapping[str, str]] = ContextVar(
    "secret_sources", default=MappingProxyType({})
)

MIN_SECRET_LENGTH = 16
RELAY_KAFKA_WAIT_SECONDS = 30.0
"""How long the outbox relay waits for Kafka's answers to a batch, its batch transaction open
meanwhile (:class:`shared.messaging.relay.OutboxRelay`: then Kafka away, the rows left unsent),
and its producer's request timeout (:func:`shared.messaging.relay.make_producer`): the longest a
service's transaction waits between two statements."""
IDLE_MARGIN_SECONDS = 10.0
"""What ``db_idle_in_transaction_timeout_seconds`` must exceed :data:`RELAY_KAFKA_WAIT_SECONDS`
by: the relay's own work around that wait (its rows queued to the producer, the answers read
back, an event loop slowed on a busy host), so that a relay batch waiting on a slow Kafka is
not ended by the server, and then sent again and again, each try ended the same way."""
STUCK_AFTER_SECONDS = 300.0  # at most (Settings.stuck_after_seconds)


def _long_enough(secret: SecretStr) -> SecretStr:
    """A secret of :data:`MIN_SECRET_LENGTH` characters or more (said in characters, where
    pydantic's own ``min_length`` on a SecretStr speaks of "items")."""
    if len(secret.get_secret_value()) < MIN_SECRET_LENGTH:
        raise ValueError(f"shorter than {MIN_SECRET_LENGTH} characters, the least a secret has")
    return secret


LongSecret = Annotated[SecretStr, AfterValidator(_long_enough)]


class PlatformApp(BaseModel):
    """One marketplace app the platform adapter accepts pushes from and calls back. Its
    secret is at least 16 characters: an empty one (a template's unset variable) let anyone
    sign pushes."""

    model_config = ConfigDict(hide_input_in_errors=True)

    secret: LongSecret
    sign_method: Literal["hmac-sha256", "md5"] = "hmac-sha256"
    api_url: str


def _app_name(name: str) -> str:
    """An app's name is in the ``source`` of every event of its orders (``platform/<app>``),
    which consumers refuse unless :func:`~shared.events.envelope.check_source` takes it:
    each of its orders would be dead-lettered. It is also one segment of the push's path
    (``/platform/<app>/push``), which a ``/`` would split (``%2F`` too: the path is matched
    decoded): no push could reach the app."""
    if "/" in name:
        raise ValueError(
            f"platform app name {name!r} cannot be used: it is one segment of the push's path"
            " /platform/<app>/push, which '/' would split: no push could reach it"
        )
    try:
        check_source(f"{PLATFORM_SOURCE_PREFIX}{name}")
    except ValueError as exc:
        raise ValueError(
            f"platform app name {name!r} cannot be used: the events of its orders have the"
            f" source {PLATFORM_SOURCE_PREFIX}<app>, and {exc}; every order of it would be"
            " dead-lettered"
        ) from None
    return name


DEFAULT_PORTS = {"http": 80, "https": 443}


def platform_url(api_url: str) -> str:
    """``api_url`` as two apps' are compared: the scheme and the host in lower case, the
    scheme's default port dropped, no ``/`` at the end (``http://HOST:80/x/`` is
    ``http://host/x``). Two names of one server (``localhost``, ``127.0.0.1``) stay two."""
    parts = urlsplit(api_url.strip())
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:  # not a port: compared as written
        netloc = parts.netloc.lower()
    else:
        host = parts.hostname or ""
        host = f"[{host}]" if ":" in host else host  # an IPv6 address
        netloc = host if port in (None, DEFAULT_PORTS.get(scheme)) else f"{host}:{port}"
    return urlunsplit((scheme, netloc, parts.path.rstrip("/"), parts.query, ""))


def _one_app_per_platform(apps: dict[str, PlatformApp]) -> dict[str, PlatformApp]:
    """Two apps of one ``api_url`` (:func:`platform_url`) are one platform under two names:
    each of its orders would be placed twice (once per app, its ``source`` naming the app)."""
    named: dict[str, str] = {}
    for name, app in apps.items():
        url = platform_url(app.api_url)
        if url in named:
            raise ValueError(
                f"apps {named[url]!r} and {name!r} have the same api_url {url!r}: one platform"
                " is one app (under two names each of its orders would be placed twice)"
            )
        named[url] = name
    return apps


# Where ``caravan up`` keeps the development token it issues on a machine's first run.
DEV_TOKEN_FILE = Path(__file__).resolve().parents[1] / ".cache" / "dev-token"


def _clock(value: str) -> str:
    """``HH:MM``, a time of day: ``24:00`` or ``07:60`` would stop the service at its start."""
    try:
        time.fromisoformat(value)
    except ValueError as exc:
        raise ValueError("not a time of day (HH:MM, 00:00 to 23:59)") from exc
    return value


def _json_text(value: Any) -> Any:
    """The text of a JSON setting parsed here (pydantic-settings' own parse says only that
    it failed, naming the field and its source): refused in words, quoting nothing of it."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError as exc:
        raise ValueError(f"not JSON: {exc}") from None


def _zone_name(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError("not an IANA time zone (such as Asia/Shanghai)") from exc
    return name


class InstanceSettings(BaseSettings):
    """Which instance of a service a process is, alone: what its log lines say even when the
    rest of its settings are refused (:func:`shared.main.run`)."""

    model_config = SettingsConfigDict(
        env_prefix="CARAVAN_", env_file=".env", extra="ignore", hide_input_in_errors=True
    )

    # Which instance of a service this is (log lines' "instance", Kafka client ids): the
    # host's name unless given (a pod's name in Kubernetes, a container's id in compose), so
    # that replicas deployed without an id of their own are told apart; `caravan up` gives the
    # one instance of each service it starts 1, the tests' second instances 2.
    instance_id: str = Field(default_factory=socket.gethostname)


class CalendarSettings(BaseSettings):
    """The marketplace's calendar alone (``shared/days.py`` reads it in any process: one
    hosting several services has no plain credentials, which :class:`Settings` checks)."""

    model_config = SettingsConfigDict(
        env_prefix="CARAVAN_", env_file=".env", extra="ignore", hide_input_in_errors=True
    )

    # An IANA zone: the day an order is on, for lots in season, and the days instalments
    # fall due.
    market_timezone: Annotated[str, AfterValidator(_zone_name)] = "Asia/Shanghai"


class Settings(CalendarSettings, InstanceSettings):
    """Everything a service or the CLI may be configured with.

    The contract's names (``KAFKA_BOOTSTRAP_SERVERS``, ``DATABASE_URL``, ``CARAVAN_HTTP_PORT``)
    are read as they are; the project's own settings carry the ``CARAVAN_`` prefix.
    """

    environment: Literal["development", "test", "production"] = "development"
    kafka_bootstrap_servers: str = Field(
        "127.0.0.1:9092", validation_alias=AliasChoices("KAFKA_BOOTSTRAP_SERVERS")
    )
    database_url: SecretStr | None = Field(None, validation_alias=AliasChoices("DATABASE_URL"))
    http_port: int = Field(8080, validation_alias=AliasChoices("CARAVAN_HTTP_PORT"))
    http_host: str = "127.0.0.1"
    # The least severe of a service's own log lines written (Kafka's, HTTP's: WARNING at least).
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # Admin APIs of the other services (0 picks a free port, for extra instances).
    inventory_http_port: int = 8081
    payments_http_port: int = 8082
    notifications_http_port: int = 8083
    topic_partitions: int = Field(3, ge=1)
    # Who acts from the command line, in the audit trail (auth.audit.actor holds 128
    # characters); the login name when unset or empty (shared.auth.audit.os_actor).
    actor: str | None = Field(None, max_length=128)
    # How long each dead-letter topic (<topic>.dlq) that `caravan prepare` creates keeps a
    # letter (its retention.ms; 0: for ever): long enough for someone to look into them after
    # a holiday, not for ever (a letter may carry a buyer's phone number, and the services keep
    # inbox rows as long: shared/messaging/retention.py).
    dlq_retention_hours: float = Field(720.0, ge=0)
    saga_deadline_seconds: float = 900.0  # stuck_after_seconds() follows it
    expiry_sweep_seconds: float = 1.0
    # How long an order that ended (confirmed or cancelled) keeps its delivery address, from
    # its last change (0: for ever): long enough for the goods to be sent and a dispute
    # answered, and no longer (PIPL). Kept at least as long as the inbox rows.
    orders_delivery_retention_days: float = Field(180.0, ge=0)
    outbox_batch_size: int = 500
    outbox_idle_poll_seconds: float = 0.5
    # How long published outbox rows and inbox rows are kept (shared/messaging/retention.py:
    # the inbox must outlive the records in Kafka, topic retention.ms + segment.ms, dead
    # letters' included: 30 + 7 days and a day by default), and how often each service deletes
    # older ones; 0 keeps a table's rows for ever.
    outbox_retention_hours: float = Field(24.0, ge=0)
    inbox_retention_hours: float = Field(912.0, ge=0)
    messaging_prune_interval_seconds: float = Field(3600.0, gt=0)
    db_pool_size: int = 10
    # How long a connection to PostgreSQL may wait for the server's answer before it fails as
    # "cannot reach PostgreSQL" (asyncpg's own wait is a minute): a hung server, a half-open
    # firewall, a load balancer whose backend is gone (shared.db.engine.async_engine).
    db_connect_timeout_seconds: float = Field(10.0, gt=0)
    # How long a service's transaction may sit idle (the server waiting for its next
    # statement) before PostgreSQL ends it and its session (idle_in_transaction_session_timeout,
    # 0: never): a process frozen, paused or cut off mid-transaction then holds its locks (a
    # credit line's, a lot's, the outbox relay's) from the other instances this long, not until
    # it thaws. Longer than any transaction of a service waits between two statements: the
    # relay's, which waits for Kafka's answers (its producer's request timeout, 30 s), is the
    # longest (shared.db.engine.Database): a service refuses a shorter one
    # (:meth:`idle_timeout_refusal`).
    db_idle_in_transaction_timeout_seconds: float = Field(60.0, ge=0)
    # How long a statement of a service's waits for PostgreSQL's answer (asyncpg's
    # command_timeout, 0: for ever) before its connection is given up as lost, PostgreSQL
    # away, and the work retried: a server gone with no reset (a failover, a NAT entry
    # dropped) held the task until the kernel gave up, about 15 minutes. Longer than any
    # legitimate wait: a lock held by another transaction, ended by the idle timeout at worst
    # (:meth:`answer_timeout_refusal`); unset, twice the idle timeout
    # (:meth:`answer_timeout_seconds`). Migrations run apart, with none.
    db_answer_timeout_seconds: float | None = Field(None, ge=0)
    # How long an HTTP request of any service's API may wait for PostgreSQL (its token's check,
    # a connection taken from the pool or made, its statements, its commit; 0: as long as the
    # two bounds above let it) before it is answered 503 "the database did not answer within
    # 8 s; retry" (shared.http.Deadline): a client waits that, not the consumers' two minutes
    # for a server frozen; under the caravan commands' 10 s wait for an answer. The time the
    # client takes to send its body is not counted.
    http_db_timeout_seconds: float = Field(8.0, ge=0)
    handler_max_attempts: int = 3
    # Notifications: the SMS gateway ("auto": the HTTP simulator when a URL is given, else a
    # local sink; "infobip": the real provider, needs the key), the URL its delivery receipts
    # go to (default: this service's /sms/receipts), delivery retries and quiet hours.
    notifications_gateway: Literal["auto", "sink", "simulator", "infobip"] = "auto"
    notifications_gateway_url: str | None = None
    notifications_gateway_api_key: SecretStr | None = None
    notifications_gateway_sender: str = "Caravan"
    notifications_gateway_timeout_seconds: float = 5.0
    notifications_receipts_url: str | None = None
    notifications_max_attempts: int = Field(6, ge=1)
    notifications_retry_base_seconds: float = 1.0
    notifications_retry_cap_seconds: float = 300.0
    # A text is given up (sms.failed, retries_exhausted) once tried max_attempts times AND
    # this long after it was queued: an outage or a burst of 429s loses nothing shorter.
    notifications_give_up_after_seconds: float = Field(6 * 3600.0, ge=0)
    notifications_lease_seconds: float = 30.0
    # How long a text that will not change any more (sent, delivered, failed, suppressed) is
    # kept, its number and words with it, from when it was queued (0: for ever): long enough
    # for a centre to answer a buyer's dispute, and no longer (PIPL: personal information
    # kept no longer than needed). Kept at least as long as the inbox rows whatever this says
    # (shared.messaging.retention).
    notifications_sms_retention_days: float = Field(180.0, ge=0)
    # How long the buyer of an order (number, locale) is kept once nothing can text them about
    # it any more (the order ended with no loan, or its loan was repaid or voided, and no text
    # of it still to be sent), 0: for ever. Kept at least as long as the inbox rows.
    notifications_recipient_retention_days: float = Field(180.0, ge=0)
    notifications_quiet_start: Annotated[str, AfterValidator(_clock)] = Field(
        "21:00", pattern=r"^\d{2}:\d{2}$"
    )
    notifications_quiet_end: Annotated[str, AfterValidator(_clock)] = Field(
        "08:00", pattern=r"^\d{2}:\d{2}$"
    )
    # Inventory: a hold not settled within this time is reported ``stock.expired`` (once);
    # longer than the saga deadline, so it is the safety net behind it.
    inventory_hold_seconds: float = 1200.0
    # Payments: the prepaid gateway (no URL: a local adapter approves every charge), the
    # flat monthly interest rate of microloans, and instalment reminders.
    payments_gateway_url: str | None = None
    payments_gateway_timeout_seconds: float = 2.0
    payments_gateway_retry_seconds: float = 0.5
    payments_gateway_lease_seconds: float = 10.0
    # At most 100 % a month: the bound on prices (shared.seed) counts on it.
    payments_monthly_interest_bp: int = Field(0, ge=0, le=MAX_MONTHLY_INTEREST_BP)
    payments_reminder_upcoming_days: int = Field(3, ge=0)
    payments_reminder_interval_seconds: float = 5.0
    # Platform adapter: the marketplace apps (CARAVAN_PLATFORM_APPS, JSON: {app: {secret,
    # sign_method, api_url}}), how old a push's timestamp may be, the platform API's timeout
    # (of each read, and of a whole fetch of an order)
    # and the retries of status callbacks (exponential backoff, ``retry_base`` to ``cap``).
    platform_http_port: int = 8084
    # An app's name is stored with its pushes and callbacks (64 characters at most), and is
    # in its orders' source (no '|' nor NUL: :func:`_app_name`).
    # One app per api_url (:func:`_one_app_per_platform`).
    platform_apps: Annotated[
        dict[
            Annotated[str, Field(min_length=1, max_length=64), AfterValidator(_app_name)],
            PlatformApp,
        ],
        NoDecode,
        BeforeValidator(_json_text),
        AfterValidator(_one_app_per_platform),
    ] = Field(default_factory=dict)
    platform_timestamp_window_seconds: float = Field(300.0, gt=0)
    platform_api_timeout_seconds: float = 5.0
    # The most a push waits for the order it names, in all (httpx's timeout is per read: a
    # platform trickling its answer held the push for ever).
    platform_api_deadline_seconds: float = Field(10.0, gt=0)
    platform_callback_max_attempts: int = Field(30, ge=1)
    platform_callback_retry_base_seconds: float = 1.0
    platform_callback_retry_cap_seconds: float = 300.0
    platform_callback_lease_seconds: float = 30.0
    # How many pushes the adapter takes at once, the others waiting their turn (the push gate:
    # services.platform.entrypoints.http.Gate); unset, as many as its pool has connections.
    platform_pushes_at_once: int | None = Field(None, ge=1)

    # Security. Secrets come only from the environment or from files (FILE_SECRETS), are held
    # as SecretStr so that they are never printed, and development defaults are refused when
    # the environment is production. Kafka clients get these through shared.kafka_security.
    kafka_security_protocol: Literal["PLAINTEXT", "SASL_PLAINTEXT", "SSL", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["SCRAM-SHA-256", "SCRAM-SHA-512"] = "SCRAM-SHA-512"
    kafka_username: str | None = None
    kafka_password: SecretStr | None = None
    kafka_ssl_cafile: str | None = None  # CA bundle that signed the brokers' certificates
    kafka_ssl_certfile: str | None = None  # client certificate, for brokers that ask for one
    kafka_ssl_keyfile: str | None = None
    kafka_ssl_key_password: SecretStr | None = None

    @model_validator(mode="before")
    @classmethod
    def _read_secret_files(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key, variable in FILE_SECRETS.items():
                if data.get(key) is None and os.environ.get(variable):
                    data[key] = read_secret_file(variable, os.environ[variable])
                    if key == "platform_apps":  # JSON, which the environment's source parses
                        data[key] = _json_object(variable, data[key])
        return data

    @model_validator(mode="after")
    def _check_security(self) -> Self:
        if self.kafka_security_protocol.startswith("SASL") and not (
            self.kafka_username and self.kafka_password
        ):
            raise ValueError(
                f"CARAVAN_KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol} needs "
                "CARAVAN_KAFKA_USERNAME and CARAVAN_KAFKA_PASSWORD (or _FILE)"
            )
        if self.environment == "production":
            sources = _SECRET_SOURCES.get()
            defaults = [
                name
                for name, value in (
                    (
                        sources.get("DATABASE_URL", "DATABASE_URL"),
                        urlsplit(_plain(self.database_url) or "").password,
                    ),
                    (
                        sources.get("kafka_password", "CARAVAN_KAFKA_PASSWORD"),
                        _plain(self.kafka_password),
                    ),
                    ("CARAVAN_KAFKA_SSL_KEY_PASSWORD", _plain(self.kafka_ssl_key_password)),
                    *(
                        (f"CARAVAN_PLATFORM_APPS ({name}.secret)", _plain(app.secret))
                        for name, app in self.platform_apps.items()
                    ),
                )
                if is_dev_secret(value)
            ]
            if defaults:
                raise ValueError(
                    "refusing to start in production with development default secrets in: "
                    + ", ".join(defaults)
                )
        return self

    # Auth (docs/security.md). A verified token is trusted for ``auth_cache_seconds`` (so a
    # revocation takes effect within that time); ``auth_max_failures`` failed attempts from one
    # client address within the window block it (429) for the window. Every HTTP app refuses
    # bodies over ``http_max_body_bytes`` (413). The SMS gateway's delivery receipts carry
    # ``notifications_receipts_secret`` in their URL. The CLI sends ``CARAVAN_TOKEN`` (or the
    # token in the file ``CARAVAN_TOKEN_FILE``, by default the development token of ``caravan up``).
    auth_cache_seconds: float = Field(2.0, ge=0, le=10)
    auth_max_failures: int = Field(10, ge=1)
    auth_failure_window_seconds: float = Field(60.0, gt=0)
    http_max_body_bytes: int = Field(1024 * 1024, ge=1024)
    notifications_receipts_secret: LongSecret | None = None
    token: SecretStr | None = None
    token_file: Path | None = None

    def api_token(self) -> str | None:
        """The token the CLI and the operations page call the APIs with (None: none found)."""
        if token := _plain(self.token):
            return token.strip()
        path = self.token_file or DEV_TOKEN_FILE
        if path.is_file():
            return path.read_text().strip() or None
        return None

    # Performance: how many records a subscriber takes at once and handles in one transaction
    # (1: one record per transaction), and how long it waits for records when there are none
    # before it asks again (it takes them as soon as they come, whatever this is).
    consumer_batch_size: int = Field(100, ge=1, le=10_000)
    consumer_batch_timeout_ms: int = Field(500, ge=1)
    # How much a subscriber's fetch asks the broker to gather before it answers, and how long
    # the broker may hold the fetch for it. Kafka's own defaults (1 byte: answer as soon as a
    # record is there; hold an empty fetch 500 ms). Fuller fetches (8 KiB and 10 ms) make no
    # fuller batches under load, where a consumer's fetches follow its batches, and the
    # services then fetch 100 times a second each when idle (bench/README.md).
    consumer_fetch_min_bytes: int = Field(1, ge=1)
    consumer_fetch_max_wait_ms: int = Field(500, ge=0, le=500)
    # How long after handling a record a subscriber commits its offsets (with all handled by
    # then): a crash delivers up to this much again, which the inbox drops.
    consumer_commit_interval_ms: int = Field(1000, ge=10, le=60_000)
    # How long the group waits for a consumer that stopped heartbeating (a process killed or
    # frozen) before it hands its partitions to the others: Kafka's own 10 s. The broker
    # refuses less than its group.min.session.timeout.ms (6 s by default).
    consumer_session_timeout_ms: int = Field(10_000, ge=1000)

    # Operations: how long records may wait on a partition with none handled, and the oldest
    # outbox row stay unpublished with none published, before /healthz names the consumer or
    # the relay stalled (shared/stall.py; sampled every metrics_sample_seconds, so a stall is
    # seen up to that late). A backlog that moves is not stalled, however long it is.
    consumer_stall_seconds: float = Field(60.0, gt=0)
    outbox_stall_seconds: float = Field(60.0, gt=0)
    # How often a service samples its figures (shared/observe.py): the consumer lag, which
    # tells /healthz that Kafka answers (silent after 30 s), and the outbox, stalls and tables.
    metrics_sample_seconds: float = Field(5.0, gt=0, le=10)

    def stuck_after_seconds(self) -> float:
        """How long an order may be pending before the stuck list (``GET /ops/stuck-orders``,
        ``caravan stuck``, the operations page) shows it, unless asked otherwise: 5 minutes,
        or half ``saga_deadline_seconds`` where that is shorter (an order pending past the
        deadline is expired, so a longer threshold would never show one)."""
        return min(STUCK_AFTER_SECONDS, self.saga_deadline_seconds / 2)

    def async_database_url(self) -> str:
        """The database URL with the asyncpg driver, whatever scheme it was given in."""
        if self.database_url is None:
            raise RuntimeError(NO_DATABASE_URL)
        return asyncpg_url(self.database_url.get_secret_value())

    def service_refusals(self) -> list[str]:
        """What a service cannot run with, whatever the service: no database, and in
        production no brokers named (the default is ``caravan up``'s development broker, which
        a service would wait for for ever)."""
        refusals = [] if self.database_url is not None else [NO_DATABASE_URL]
        if (kafka := self.kafka_refusal()) is not None:
            refusals.append(kafka)
        if (idle := self.idle_timeout_refusal()) is not None:
            refusals.append(idle)
        if (answer := self.answer_timeout_refusal()) is not None:
            refusals.append(answer)
        return refusals

    def answer_timeout_seconds(self) -> float:
        """How long a service's statement waits for PostgreSQL's answer (0: for ever):
        ``db_answer_timeout_seconds``, else twice the idle timeout (120 s by default; for
        ever with none, a lock's holder then free to hold it so)."""
        if self.db_answer_timeout_seconds is not None:
            return self.db_answer_timeout_seconds
        return 2 * self.db_idle_in_transaction_timeout_seconds

    def answer_timeout_refusal(self) -> str | None:
        """Why ``db_answer_timeout_seconds`` may not be a service's, or None: 0 (for ever), or
        over the idle timeout and :data:`IDLE_MARGIN_SECONDS`. A statement may wait on a lock
        (a lot's row, a credit line's) whose holder sits idle in its transaction until the
        server ends it after the idle timeout: a shorter bound would give up that wait, and
        the work after it, as PostgreSQL away. With no idle timeout (0), any bound is taken;
        unset, twice the idle timeout is past it (:meth:`idle_timeout_refusal` says the rest)."""
        answer, idle = self.db_answer_timeout_seconds, self.db_idle_in_transaction_timeout_seconds
        if not answer or idle == 0 or answer > idle + IDLE_MARGIN_SECONDS:  # unset: past it
            return None
        return (
            f"CARAVAN_DB_ANSWER_TIMEOUT_SECONDS ({answer:g} s) must be 0 (for ever) or over"
            f" {idle + IDLE_MARGIN_SECONDS:g} s: a statement may wait on a lock whose holder sits"
            f" idle until CARAVAN_DB_IDLE_IN_TRANSACTION_TIMEOUT_SECONDS ({idle:g} s) ends it"
        )

    def idle_timeout_refusal(self) -> str | None:
        """Why ``db_idle_in_transaction_timeout_seconds`` may not be a service's, or None: a
        timeout, not 0 (never), no longer than the outbox relay's wait for Kafka's answers
        plus :data:`IDLE_MARGIN_SECONDS` would end every relay batch waiting on a slow Kafka,
        sent again and again (every service runs a relay; the commands run none)."""
        idle, least = self.db_idle_in_transaction_timeout_seconds, RELAY_KAFKA_WAIT_SECONDS
        if idle == 0 or idle > least + IDLE_MARGIN_SECONDS:
            return None
        return (
            f"CARAVAN_DB_IDLE_IN_TRANSACTION_TIMEOUT_SECONDS ({idle:g} s) must be 0 (never) or"
            f" over {least + IDLE_MARGIN_SECONDS:g} s: the outbox relay's transaction waits up to"
            f" its producer's request timeout ({least:g} s) for Kafka's answers, and one ended"
            " so is sent again and again"
        )

    def named_kafka(self) -> str | None:
        """The brokers KAFKA_BOOTSTRAP_SERVERS names (the environment, else ``.env``); None
        where it names none, unset or empty (the default is ``caravan up``'s development
        broker)."""
        named = "kafka_bootstrap_servers" in self.model_fields_set
        return (self.kafka_bootstrap_servers or None) if named else None

    def kafka_refusal(self) -> str | None:
        """Why these settings may not reach Kafka, or None: in production, no brokers named
        (the default is ``caravan up``'s development broker, which a service would wait for
        for ever and a command would reach in the production brokers' stead). A service
        refuses it so (:meth:`service_refusals`), and so does every command reaching Kafka."""
        if self.environment == "production" and self.named_kafka() is None:
            return (
                "KAFKA_BOOTSTRAP_SERVERS is required in production: set it to your brokers"
                " (unset, 127.0.0.1:9092 is caravan up's development broker)"
            )
        return None


NO_DATABASE_URL = "DATABASE_URL is not set: set it (or DATABASE_URL_FILE) to the PostgreSQL to use"


def no_database_url(service: str) -> str:
    """:data:`NO_DATABASE_URL` as a process hosting several services says it of ``service``:
    each reads its own variable (:func:`service_settings`), DATABASE_URL only in its stead."""
    own = f"CARAVAN_DATABASE_URL_{service.upper()}"
    return (
        f"{own} is not set (nor DATABASE_URL): set it (or {own}_FILE) to the PostgreSQL"
        f" {service} uses"
    )


class SettingsRefused(ValueError):
    """Settings a service refuses to start with, every one of them at once (each says what to
    set), found before anything is started: its process logs them in one line and exits 2."""

    def __init__(self, refusals: Sequence[str]) -> None:
        super().__init__("; ".join(refusals))
        self.refusals = list(refusals)


def named_faults(exc: ValidationError) -> list[str]:
    """Why :class:`Settings` (or :class:`CalendarSettings`) refused what it was given, each
    fault named by the variable that sets it (never its value: it may be a secret); what the
    ``caravan`` command and a service starting say alike."""
    faults = []
    for error in field_errors(exc, whole=""):
        name, _, inner = error["field"].partition(".")
        if name and not name.isupper():  # a field, not an alias such as DATABASE_URL
            name = f"{Settings.model_config.get('env_prefix', '')}{name}".upper()
        where = f"{name} ({inner}): " if inner else f"{name}: " if name else ""
        faults.append(where + error["message"])
    return faults


def check_settings(settings: Settings, checks: Iterable[Callable[[], object]] = ()) -> None:
    """Raise :class:`SettingsRefused` naming everything :meth:`Settings.service_refusals` and
    the service's own ``checks`` refuse (each a call raising ValueError on a bad setting)."""
    refusals = settings.service_refusals()
    for check in checks:
        try:
            check()
        except ValueError as exc:
            if str(exc) not in refusals:  # two checks may find the same
                refusals.append(str(exc))
    if refusals:
        raise SettingsRefused(refusals)


def claim_lease(settings: Settings, lease: str, timeout: str) -> float:
    """The setting ``lease`` (how long an instance holds a row it claimed to make a call to
    another system), refused unless longer than the setting ``timeout`` (how long that call
    may wait): a row whose lease ran out during its call would be claimed by another instance
    and the call made a second time while the first still ran. A service's bootstrap asks
    for its lease so, and so refuses to start (the others and the CLI are not stopped)."""
    seconds, call = float(getattr(settings, lease)), float(getattr(settings, timeout))
    if seconds <= call:
        prefix = Settings.model_config.get("env_prefix", "")
        raise ValueError(
            f"{prefix}{lease.upper()} ({seconds:g} s) must be longer than"
            f" {prefix}{timeout.upper()} ({call:g} s): a call still in flight when its lease"
            " runs out is made again by another instance"
        )
    return seconds


def asyncpg_url(url: str) -> str:
    """A PostgreSQL URL with the asyncpg driver, whatever scheme it was given in; the one
    place that knows the schemes DATABASE_URL may have (whoever connects by a URL)."""
    for prefix in ("postgresql+asyncpg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    raise ValueError(f"DATABASE_URL must be a postgresql:// URL, got {url.split(':', 1)[0]}")


def _json_object(variable: str, content: str) -> Any:
    try:
        return json.loads(content)
    except ValueError as exc:
        raise ValueError(f"{variable} names a file that is not JSON: {exc}") from None


def _plain(secret: SecretStr | None) -> str | None:
    return secret.get_secret_value() if secret is not None else None


@lru_cache
def get_settings() -> Settings:
    return Settings()


def service_settings(service: str) -> Settings:
    """The settings ``service`` runs with: the process's environment, except for its
    database URL and Kafka login when ``CARAVAN_DATABASE_URL_<SERVICE>`` and
    ``CARAVAN_KAFKA_PASSWORD_<SERVICE>`` (or their ``_FILE``) name them. A process hosting
    several services (``python -m services orders inventory``) has no ``DATABASE_URL`` or Kafka
    login of its own: its launcher gives it each hosted service's under those names."""
    own: dict[str, Any] = {}
    sources: dict[str, str] = {}
    if url := secret_from_env(variable := f"CARAVAN_DATABASE_URL_{service.upper()}"):
        own["DATABASE_URL"], sources["DATABASE_URL"] = url, variable
    if password := secret_from_env(variable := f"CARAVAN_KAFKA_PASSWORD_{service.upper()}"):
        own["kafka_username"] = principal(service)
        own["kafka_password"], sources["kafka_password"] = password, variable
    named = _SECRET_SOURCES.set(sources)
    try:
        return Settings(**own)
    finally:
        _SECRET_SOURCES.reset(named)
