"""Security settings: secrets from the environment or files, never printed, development
defaults refused in production; Kafka client security from one helper; the ACL table;
each service's credentials (pure logic, no broker, no database)."""

import json
import os
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import pytest
from faststream.security import SASLScram256
from pydantic import ValidationError

from caravan import db_roles, kafka_acls, system
from caravan.kafka_acls import Operation, Resource
from caravan.output import OperatorError
from services import SERVICES
from shared.kafka_security import broker_security, client_kwargs
from shared.settings import NO_DATABASE_URL, Settings, service_settings

REAL_DB = "postgresql://caravan:Xy7-long-real-secret@db.internal:5432/caravan"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CARAVAN_ENVIRONMENT", "DATABASE_URL", "DATABASE_URL_FILE"):
        monkeypatch.delenv(name, raising=False)
    for name in ("SECURITY_PROTOCOL", "USERNAME", "PASSWORD", "PASSWORD_FILE", "SASL_MECHANISM"):
        monkeypatch.delenv(f"CARAVAN_KAFKA_{name}", raising=False)


def test_the_contracts_connection_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    """CONTRACT.md's local defaults: Kafka at 127.0.0.1:9092, the orders API at
    http://127.0.0.1:8080, each under its contract name."""
    for name in ("KAFKA_BOOTSTRAP_SERVERS", "CARAVAN_HTTP_PORT", "CARAVAN_HTTP_HOST"):
        monkeypatch.delenv(name, raising=False)
    local = Settings()
    assert (local.kafka_bootstrap_servers, local.http_host, local.http_port) == (
        "127.0.0.1:9092",
        "127.0.0.1",
        8080,
    )
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "kafka-1:9092,kafka-2:9092")
    monkeypatch.setenv("CARAVAN_HTTP_PORT", "9090")
    named = Settings()
    assert (named.kafka_bootstrap_servers, named.http_port) == ("kafka-1:9092,kafka-2:9092", 9090)


def test_production_refuses_development_secrets_and_names_them_without_their_values(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CARAVAN_ENVIRONMENT", "production")
    monkeypatch.setenv("DATABASE_URL", "postgresql://caravan:caravan@127.0.0.1:5432/caravan")
    monkeypatch.setenv("CARAVAN_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("CARAVAN_KAFKA_USERNAME", "caravan-orders")
    monkeypatch.setenv("CARAVAN_KAFKA_PASSWORD", "caravan-dev-caravan-orders")
    with pytest.raises(ValidationError) as refused:
        Settings()
    message = str(refused.value)
    assert "DATABASE_URL" in message and "CARAVAN_KAFKA_PASSWORD" in message
    assert "caravan-dev-caravan-orders" not in message and ":caravan@" not in message
    # The same settings outside production are the local defaults, allowed.
    monkeypatch.setenv("CARAVAN_ENVIRONMENT", "development")
    assert Settings().kafka_username == "caravan-orders"


def test_production_starts_with_real_secrets_read_from_files(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "db").write_text(REAL_DB + "\n")
    (tmp_path / "kafka").write_text("k4fka-real-secret\n")
    monkeypatch.setenv("CARAVAN_ENVIRONMENT", "production")
    monkeypatch.setenv("DATABASE_URL_FILE", str(tmp_path / "db"))
    monkeypatch.setenv("CARAVAN_KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("CARAVAN_KAFKA_USERNAME", "caravan-orders")
    monkeypatch.setenv("CARAVAN_KAFKA_PASSWORD_FILE", str(tmp_path / "kafka"))
    settings = Settings()
    assert settings.database_url is not None
    assert settings.database_url.get_secret_value() == REAL_DB
    assert settings.kafka_password is not None
    assert settings.kafka_password.get_secret_value() == "k4fka-real-secret"
    assert "k4fka-real-secret" not in repr(settings) and "k4fka-real-secret" not in str(settings)


def test_no_secret_is_shown_by_the_settings_and_each_may_come_from_a_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The settings a service logs or shows (repr, str) hold none of its secrets, and each
    secret is read from the file its ``_FILE`` variable names (Docker and Kubernetes
    secrets): the database URL, the Infobip key, the receipts secret, the platform apps
    (JSON, their secrets inside), the CLI's token."""
    secrets = {
        "DATABASE_URL": REAL_DB,
        "CARAVAN_NOTIFICATIONS_GATEWAY_API_KEY": "inf0bip-real-api-key",
        "CARAVAN_NOTIFICATIONS_RECEIPTS_SECRET": "r3ceipts-real-secret",
        "CARAVAN_PLATFORM_APPS": '{"mall": {"secret": "pl4tform-real-secret", "api_url": "x"}}',
        "CARAVAN_TOKEN": "cvn_" + "t0ken" * 8,
    }
    shown = ("Xy7-long-real-secret", "inf0bip", "r3ceipts", "pl4tform", "t0ken")
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    assert settings.api_token() == secrets["CARAVAN_TOKEN"]
    assert not [s for s in shown if s in repr(settings) or s in str(settings)]
    for name, value in secrets.items():
        if name != "CARAVAN_TOKEN":  # the token's file is CARAVAN_TOKEN_FILE, read when used
            monkeypatch.delenv(name)
            (tmp_path / name).write_text(value + "\n")
            monkeypatch.setenv(f"{name}_FILE", str(tmp_path / name))
    from_files = Settings()
    assert from_files.model_dump() == settings.model_dump()
    assert from_files.platform_apps["mall"].secret.get_secret_value() == "pl4tform-real-secret"


def test_sasl_without_credentials_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARAVAN_KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    with pytest.raises(ValidationError, match="CARAVAN_KAFKA_USERNAME"):
        Settings()


def test_client_security_from_settings() -> None:
    assert client_kwargs(Settings()) == {"security_protocol": "PLAINTEXT"}
    assert broker_security(Settings()) is None
    sasl_ssl = Settings(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-256",
        kafka_username="caravan-payments",
        kafka_password="pw-1",
    )
    kwargs = client_kwargs(sasl_ssl)
    assert kwargs["security_protocol"] == "SASL_SSL"
    assert kwargs["sasl_mechanism"] == "SCRAM-SHA-256"
    assert (kwargs["sasl_plain_username"], kwargs["sasl_plain_password"]) == (
        "caravan-payments",
        "pw-1",
    )
    assert kwargs["ssl_context"].verify_mode.name == "CERT_REQUIRED"
    security = broker_security(sasl_ssl)
    assert isinstance(security, SASLScram256)
    assert security.use_ssl and security.username == "caravan-payments"


def test_each_service_principal_gets_exactly_its_documented_acls() -> None:
    rows = {
        (a.resource, a.name, a.operation) for a in kafka_acls.acls("orders")
    }  # docs/security.md, "Kafka principals and ACLs"
    assert rows == {
        (Resource.GROUP, "caravan-orders", Operation.READ),
        (Resource.TOPIC, "orders.requests.v1", Operation.READ),
        (Resource.TOPIC, "inventory.events.v1", Operation.READ),
        (Resource.TOPIC, "payments.events.v1", Operation.READ),
        (Resource.TOPIC, "platform.events.v1", Operation.READ),
        (Resource.TOPIC, "orders.requests.v1", Operation.DESCRIBE_CONFIGS),
        (Resource.TOPIC, "inventory.events.v1", Operation.DESCRIBE_CONFIGS),
        (Resource.TOPIC, "payments.events.v1", Operation.DESCRIBE_CONFIGS),
        (Resource.TOPIC, "platform.events.v1", Operation.DESCRIBE_CONFIGS),
        (Resource.TOPIC, "orders.requests.v1.dlq", Operation.DESCRIBE_CONFIGS),
        (Resource.TOPIC, "inventory.events.v1.dlq", Operation.DESCRIBE_CONFIGS),
        (Resource.TOPIC, "payments.events.v1.dlq", Operation.DESCRIBE_CONFIGS),
        (Resource.TOPIC, "platform.events.v1.dlq", Operation.DESCRIBE_CONFIGS),
        (Resource.TOPIC, "orders.events.v1", Operation.WRITE),
        (Resource.TOPIC, "orders.requests.v1.dlq", Operation.WRITE),
        (Resource.TOPIC, "inventory.events.v1.dlq", Operation.WRITE),
        (Resource.TOPIC, "payments.events.v1.dlq", Operation.WRITE),
        (Resource.TOPIC, "platform.events.v1.dlq", Operation.WRITE),
        (Resource.CLUSTER, "kafka-cluster", Operation.IDEMPOTENT_WRITE),
    }
    # The platform adapter places its orders on its own topic, and cannot write the one
    # anyone may publish orders on (where a platform's source is refused).
    writes = {a.name for a in kafka_acls.acls("platform") if a.operation == Operation.WRITE}
    assert writes == {"platform.events.v1", "orders.events.v1.dlq"}
    assert {a.principal for a in kafka_acls.acls("orders")} == {"User:caravan-orders"}
    assert set(kafka_acls.access()) == set(SERVICES)
    assert kafka_acls.acls("no-such-service") == []


def test_each_service_gets_its_own_credentials_and_nobody_elses() -> None:
    launcher = {
        "DATABASE_URL": "postgresql://caravan:caravan@127.0.0.1:15432/caravan",
        "CARAVAN_DATABASE_URL_PAYMENTS": "postgresql://pay:pay-real-1@db:5432/caravan",
        "CARAVAN_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "CARAVAN_KAFKA_USERNAME": "caravan-admin",
        "CARAVAN_KAFKA_PASSWORD": "admin-secret",
        "CARAVAN_KAFKA_PASSWORD_PAYMENTS": "kafka-pay-real-1",
    }
    payments = system.service_credentials(("payments",), launcher)
    assert payments["DATABASE_URL"] == "postgresql://pay:pay-real-1@db:5432/caravan"
    assert payments["CARAVAN_KAFKA_USERNAME"] == "caravan-payments"
    assert payments["CARAVAN_KAFKA_PASSWORD"] == "kafka-pay-real-1"
    orders = system.service_credentials(("orders",), launcher)
    assert orders["DATABASE_URL"] == db_roles.service_database_url(
        launcher["DATABASE_URL"], "orders"
    )
    assert orders["DATABASE_URL"].startswith("postgresql://caravan_orders:caravan-dev-orders@")
    assert orders["CARAVAN_KAFKA_PASSWORD"] == "caravan-dev-caravan-orders"
    for env in (payments, orders):
        assert "admin-secret" not in env.values()
        assert not [k for k in env if k.startswith("CARAVAN_DATABASE_URL_")]
        assert not [k for k in env if k.startswith("CARAVAN_KAFKA_PASSWORD_")]


def test_a_process_hosting_several_services_gets_theirs_and_nobody_elses(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    launcher = {
        "DATABASE_URL": "postgresql://caravan:caravan@127.0.0.1:15432/caravan",
        "CARAVAN_DATABASE_URL_PAYMENTS": "postgresql://pay:pay-real-1@db:5432/caravan",
        "CARAVAN_DATABASE_URL_ORDERS": "postgresql://ord:ord-real-1@db:5432/caravan",
        "CARAVAN_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "CARAVAN_KAFKA_USERNAME": "caravan-admin",
        "CARAVAN_KAFKA_PASSWORD": "admin-secret",
        "CARAVAN_KAFKA_PASSWORD_PAYMENTS": "kafka-pay-real-1",
        "CARAVAN_KAFKA_PASSWORD_ORDERS": "kafka-ord-real-1",
    }
    host = system.service_credentials(("payments", "notifications"), launcher)
    assert {k: v for k, v in host.items() if k not in launcher or launcher[k] != v} == {
        "CARAVAN_DATABASE_URL_NOTIFICATIONS": db_roles.service_database_url(
            launcher["DATABASE_URL"], "notifications"
        ),
        "CARAVAN_KAFKA_PASSWORD_NOTIFICATIONS": "caravan-dev-caravan-notifications",
    }
    # no admin login, no database URL of its own, nothing of orders'
    assert set(launcher) - set(host) == {
        "DATABASE_URL",
        "CARAVAN_KAFKA_USERNAME",
        "CARAVAN_KAFKA_PASSWORD",
        "CARAVAN_DATABASE_URL_ORDERS",
        "CARAVAN_KAFKA_PASSWORD_ORDERS",
    }
    # each hosted service's settings, as services/__main__.py builds them
    for key in [k for k in os.environ if k.startswith(("CARAVAN_", "DATABASE_URL"))]:
        monkeypatch.delenv(key)
    for key, value in host.items():
        monkeypatch.setenv(key, value)
    payments, notifications = service_settings("payments"), service_settings("notifications")
    assert payments.async_database_url() == "postgresql+asyncpg://pay:pay-real-1@db:5432/caravan"
    assert payments.kafka_username == "caravan-payments"
    assert payments.kafka_password is not None
    assert payments.kafka_password.get_secret_value() == "kafka-pay-real-1"
    assert notifications.database_url is not None
    assert (
        notifications.database_url.get_secret_value() == host["CARAVAN_DATABASE_URL_NOTIFICATIONS"]
    )
    assert notifications.kafka_username == "caravan-notifications"
    with pytest.raises(ValidationError, match="needs CARAVAN_KAFKA_USERNAME"):
        Settings()  # the process itself logs in as nobody


def test_process_groups_split_the_services_in_saga_order() -> None:
    assert system.process_groups(SERVICES, 5) == [(s,) for s in SERVICES]
    assert system.process_groups(SERVICES, 2) == [
        ("orders", "inventory"),
        ("payments", "notifications", "platform"),
    ]
    assert system.process_groups(SERVICES, 3) == [
        ("orders",),
        ("inventory", "payments"),
        ("notifications", "platform"),
    ]
    assert system.process_groups(SERVICES, 1) == [SERVICES]
    assert system.process_groups(("inventory",), 2) == [("inventory",)]


async def test_prepare_refuses_development_role_passwords_in_production(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = Settings(environment="production", DATABASE_URL=REAL_DB)
    with pytest.raises(OperatorError, match="orders, inventory, payments, notifications"):
        await system.prepare("127.0.0.1:1", REAL_DB, settings=settings)  # before connecting
    for name in SERVICES:
        url = f"postgresql://caravan_{name}:{name}-real-secret@db.internal:5432/caravan"
        monkeypatch.setenv(f"CARAVAN_DATABASE_URL_{name.upper()}", url)
    monkeypatch.setenv("CARAVAN_DATABASE_URL_PAYMENTS", REAL_DB.replace("Xy7", "caravan-dev-x"))
    with pytest.raises(OperatorError, match="for: payments "):
        await system.prepare("127.0.0.1:1", REAL_DB, settings=settings)


async def test_each_service_broker_gets_every_bootstrap_host() -> None:
    """A comma-separated bootstrap list reaches FastStream as a list of hosts (given as one
    string, FastStream took it for a single host and no service could start on the soak's
    three-node cluster)."""
    from services.orders.bootstrap import bootstrap

    settings = Settings(
        kafka_bootstrap_servers="127.0.0.1:25092,127.0.0.1:25093",
        database_url="postgresql://caravan:caravan@127.0.0.1:15432/caravan",
    )
    service = bootstrap(settings)
    hosts = service.broker._connection_kwargs["bootstrap_servers"]
    assert list(hosts) == ["127.0.0.1:25092", "127.0.0.1:25093"]


def test_production_refuses_to_run_without_a_payment_or_an_sms_gateway(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Locally, prepaid orders are approved with no gateway and texts go to a log: in
    production that would confirm orders charging nothing and report texts never sent."""
    from services.notifications.bootstrap import make_gateway
    from services.payments.adapters.gateway import build_gateway

    monkeypatch.setenv("CARAVAN_ENVIRONMENT", "production")
    monkeypatch.setenv("DATABASE_URL", REAL_DB)
    settings = Settings(notifications_receipts_secret="r3ceipts-real-secret")
    with pytest.raises(ValueError, match="CARAVAN_PAYMENTS_GATEWAY_URL is required"):
        build_gateway(settings)
    with pytest.raises(ValueError, match="no SMS gateway in production"):
        make_gateway(settings)
    chosen = settings.model_copy(update={"notifications_gateway": "sink"})
    assert type(make_gateway(chosen)).__name__ == "SinkGateway"  # on purpose: allowed
    local = Settings(environment="development")
    assert type(build_gateway(local)).__name__ == "AlwaysApprove"
    assert type(make_gateway(local)).__name__ == "SinkGateway"


def test_a_platform_app_s_secret_is_refused_when_short_without_being_shown(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An empty secret (a template's unset variable) let anyone sign pushes."""
    for short in ("", "abc-short-secret"[:15]):
        apps = f'{{"mall": {{"secret": "{short}", "api_url": "http://mall.test"}}}}'
        monkeypatch.setenv("CARAVAN_PLATFORM_APPS", apps)
        with pytest.raises(ValidationError) as refused:
            Settings()
        message = str(refused.value)
        assert "platform_apps.mall.secret" in message and "shorter than 16 characters" in message
        assert short == "" or short not in message
    monkeypatch.setenv(
        "CARAVAN_PLATFORM_APPS", '{"mall": {"secret": "a-long-real-secret", "api_url": "x"}}'
    )
    assert Settings().platform_apps["mall"].secret.get_secret_value() == "a-long-real-secret"


def test_two_platform_apps_of_one_api_url_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """One platform under two app names had each of its orders placed twice (an order's
    source names its app): the settings refuse it, saying which apps, a "/" at the end or
    not, without their secrets."""
    app = '{"secret": "a-long-real-secret", "api_url": "http://mall.test/api"}'
    again = '{"secret": "another-real-secret", "api_url": "http://mall.test/api/"}'
    monkeypatch.setenv("CARAVAN_PLATFORM_APPS", f'{{"mall": {app}, "mall-2": {again}}}')
    with pytest.raises(ValidationError) as refused:
        Settings()
    message = str(refused.value)
    assert "apps 'mall' and 'mall-2' have the same api_url 'http://mall.test/api'" in message
    assert "real-secret" not in message
    other = again.replace("/api/", "/other-api")
    monkeypatch.setenv("CARAVAN_PLATFORM_APPS", f'{{"mall": {app}, "mall-2": {other}}}')
    assert list(Settings().platform_apps) == ["mall", "mall-2"]


@pytest.mark.parametrize(
    ("first", "second", "same"),
    [
        ("http://HOST:80/x/", "http://host/x", "http://host/x"),
        ("HTTPS://Mall.test:443/", "https://mall.test", "https://mall.test"),
        ("http://[::1]:80/api", "http://[::1]/api/", "http://[::1]/api"),
        ("http://mall.test:8080/x", "http://mall.test/x", None),  # another port
        ("https://mall.test/x", "http://mall.test/x", None),  # another scheme
        ("http://mall.test/X", "http://mall.test/x", None),  # a path's case is the server's
        ("http://localhost:8094", "http://127.0.0.1:8094", None),  # two names: not caught
    ],
)
def test_two_platform_apps_are_one_platform_by_their_normalised_api_url(
    monkeypatch: pytest.MonkeyPatch, first: str, second: str, same: str | None
) -> None:
    """The api_urls were compared as text: http://HOST:80/x/ and http://host/x passed as two
    platforms, and each of that platform's orders would be placed twice."""
    apps = {
        "mall": {"secret": "a-long-real-secret", "api_url": first},
        "mall-2": {"secret": "another-real-secret", "api_url": second},
    }
    monkeypatch.setenv("CARAVAN_PLATFORM_APPS", json.dumps(apps))
    if same is None:
        assert list(Settings().platform_apps) == ["mall", "mall-2"]
        return
    with pytest.raises(ValidationError) as refused:
        Settings()
    assert f"apps 'mall' and 'mall-2' have the same api_url {same!r}" in str(refused.value)


def test_a_platform_app_s_name_longer_than_its_columns_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The settings took a name of any length, and every push of an app named in more than
    64 characters was then refused 422 (the pushes' app column holds 64)."""
    app = '{"secret": "a-long-real-secret", "api_url": "http://mall.test"}'
    monkeypatch.setenv("CARAVAN_PLATFORM_APPS", f'{{"{"m" * 65}": {app}}}')
    with pytest.raises(ValidationError) as refused:
        Settings()
    assert "at most 64 characters" in str(refused.value)
    monkeypatch.setenv("CARAVAN_PLATFORM_APPS", f'{{"{"m" * 64}": {app}}}')
    assert list(Settings().platform_apps) == ["m" * 64]


def test_a_platform_app_s_name_that_no_event_source_may_hold_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An app named with '|' had every order's events (source platform/<app>) refused by the
    consumers as not_cloudevent, so dead-lettered; one with NUL (JSON's \\u0000) the same:
    the settings refuse both, by the envelope's own rule."""
    app = '{"secret": "a-long-real-secret", "api_url": "http://mall.test"}'
    for name, said in (("mall|2", "'|'"), ("mall\\u00002", "NUL")):
        monkeypatch.setenv("CARAVAN_PLATFORM_APPS", f'{{"{name}": {app}}}')
        with pytest.raises(ValidationError) as refused:
            Settings()
        message = str(refused.value)
        assert "cannot be used: the events of its orders have the source platform/" in message
        assert f"a source may not contain {said}" in message and "dead-lettered" in message
    monkeypatch.setenv("CARAVAN_PLATFORM_APPS", f'{{"mall-2.cn_x:y": {app}}}')
    assert list(Settings().platform_apps) == ["mall-2.cn_x:y"]


def test_a_platform_app_s_name_no_push_could_reach_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An app named with '/' was taken, and every push to /platform/<app>/push answered 404
    (its path has a segment more than the route's): the settings refuse it."""
    app = '{"secret": "a-long-real-secret", "api_url": "http://mall.test"}'
    monkeypatch.setenv("CARAVAN_PLATFORM_APPS", f'{{"mall/2": {app}}}')
    with pytest.raises(ValidationError) as refused:
        Settings()
    assert "one segment of the push's path /platform/<app>/push" in str(refused.value)


def test_a_process_hosting_several_services_composes_none_when_one_refuses(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Orders' settings accepted, payments' refused (no gateway in production): orders was
    composed first, its engine and producer made and never closed, then the process stopped
    on payments' refusal. Every service's settings are checked before any is composed."""
    from services.orders import bootstrap as orders
    from services.payments import bootstrap as payments
    from shared import main

    composed: list[Settings] = []

    def spied(composition: main.Composition) -> main.Composition:
        spy = SimpleNamespace(checks=composition.checks, bootstrap=composed.append)
        return cast(main.Composition, spy)

    monkeypatch.setenv("CARAVAN_ENVIRONMENT", "production")
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    monkeypatch.setenv("DATABASE_URL", "postgresql://p:real-1@127.0.0.1:1/caravan")
    # The session's logging kept: a service's handler left on the root logger said every
    # later test's lines again, and its retried faults' filter held them as its own.
    monkeypatch.setattr(main, "configure_logging", lambda *_, **__: None)
    with pytest.raises(SystemExit) as exited:
        main.run({"orders": spied(orders), "payments": spied(payments)})
    assert exited.value.code == 2 and composed == []
    settings, refused = main.refused_settings({"orders": orders, "payments": payments})
    assert set(settings) == {"orders", "payments"}
    assert refused.startswith("CARAVAN_PAYMENTS_GATEWAY_URL is required in production"), refused
    assert refused.endswith("(payments)"), refused


def test_a_process_hosting_several_services_names_each_one_s_database_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``python -m services orders inventory`` with no database: it said "DATABASE_URL is not
    set (orders, inventory)", while each hosted service reads CARAVAN_DATABASE_URL_<SERVICE>
    (DATABASE_URL only in its stead). Alone, a service names DATABASE_URL as before."""
    from services.inventory import bootstrap as inventory
    from services.orders import bootstrap as orders
    from shared import main

    for name in ("DATABASE_URL", "CARAVAN_DATABASE_URL_ORDERS", "CARAVAN_DATABASE_URL_INVENTORY"):
        monkeypatch.delenv(name, raising=False)
    _, refused = main.refused_settings({"orders": orders, "inventory": inventory})
    assert refused == (
        "CARAVAN_DATABASE_URL_ORDERS is not set (nor DATABASE_URL): set it (or"
        " CARAVAN_DATABASE_URL_ORDERS_FILE) to the PostgreSQL orders uses (orders); "
        "CARAVAN_DATABASE_URL_INVENTORY is not set (nor DATABASE_URL): set it (or"
        " CARAVAN_DATABASE_URL_INVENTORY_FILE) to the PostgreSQL inventory uses (inventory)"
    ), refused
    monkeypatch.setenv("CARAVAN_DATABASE_URL_ORDERS", "postgresql://o:real-1@db/caravan")
    _, refused = main.refused_settings({"orders": orders, "inventory": inventory})
    assert refused.startswith("CARAVAN_DATABASE_URL_INVENTORY is not set"), refused
    assert refused.endswith("(inventory)") and "ORDERS" not in refused, refused
    _, refused = main.refused_settings({"inventory": inventory})
    assert refused == NO_DATABASE_URL, refused


def test_a_hosted_service_s_development_secret_is_named_by_its_own_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A development password in CARAVAN_DATABASE_URL_ORDERS (or a development Kafka
    password in CARAVAN_KAFKA_PASSWORD_ORDERS) was refused as one in DATABASE_URL, a variable
    the process hosting several services does not read: the refusal names the variable that
    holds it, never its value."""
    monkeypatch.setenv("CARAVAN_ENVIRONMENT", "production")
    monkeypatch.setenv("DATABASE_URL", REAL_DB)
    monkeypatch.setenv("CARAVAN_DATABASE_URL_ORDERS", "postgresql://o:caravan-dev-o@db/caravan")
    monkeypatch.setenv("CARAVAN_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("CARAVAN_KAFKA_PASSWORD_ORDERS", "caravan-dev-caravan-orders")
    with pytest.raises(ValidationError) as refused:
        service_settings("orders")
    message = str(refused.value)
    said = "secrets in: CARAVAN_DATABASE_URL_ORDERS, CARAVAN_KAFKA_PASSWORD_ORDERS"
    assert f"{said} [" in message, message
    assert "caravan-dev-" not in message
    monkeypatch.delenv("CARAVAN_DATABASE_URL_ORDERS")
    monkeypatch.delenv("CARAVAN_KAFKA_PASSWORD_ORDERS")
    monkeypatch.delenv("CARAVAN_KAFKA_SECURITY_PROTOCOL")
    monkeypatch.setenv("DATABASE_URL", "postgresql://caravan:caravan@db/caravan")
    with pytest.raises(ValidationError, match=r"secrets in: DATABASE_URL \["):
        service_settings("orders")
