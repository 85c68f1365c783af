"""A service process deployed as production with settings it cannot run with: it names every
one of them in one log line and exits 2, before it starts anything (no broker, no database
needed to find out)."""

import json
import os
import subprocess
import sys
from pathlib import Path

from caravan.checkout import REPO_ROOT


def _environment(given: dict[str, str]) -> dict[str, str]:
    """Production's, with none of this process's settings but ``given``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("CARAVAN_") and k not in {"DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS"}
    }
    return env | {"CARAVAN_ENVIRONMENT": "production", "PYTHONPATH": str(REPO_ROOT), **given}


def _run(service: str, tmp_path: Path, **given: str) -> tuple[int, list[str]]:
    # in a folder of its own: no .env of the checkout's read
    done = subprocess.run(
        [sys.executable, "-m", f"services.{service}"],
        env=_environment(given),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.returncode, (done.stdout + done.stderr).splitlines()


def test_a_service_names_every_refused_setting_in_one_line_and_exits_2(tmp_path: Path) -> None:
    """Notifications with no brokers, no database, no SMS gateway and no receipts secret:
    it used to wait for ever on 127.0.0.1:9092 (``caravan up``'s broker), or stop with a
    traceback naming one setting at a time."""
    code, lines = _run("notifications", tmp_path)
    assert code == 2, lines
    assert len(lines) == 1 and "Traceback" not in lines[0], lines
    said = json.loads(lines[0])
    assert said["level"] == "error", said
    for setting in (
        "KAFKA_BOOTSTRAP_SERVERS",
        "DATABASE_URL_FILE",
        "no SMS gateway in production",
        "CARAVAN_NOTIFICATIONS_RECEIPTS_SECRET",
    ):
        assert setting in said["message"], said


def test_payments_names_its_gateway_and_the_brokers(tmp_path: Path) -> None:
    code, lines = _run("payments", tmp_path, DATABASE_URL="postgresql://p:real-1@db/caravan")
    assert code == 2, lines
    assert len(lines) == 1, lines
    message = json.loads(lines[0])["message"]
    assert "KAFKA_BOOTSTRAP_SERVERS" in message and "CARAVAN_PAYMENTS_GATEWAY_URL" in message
    assert "DATABASE_URL" not in message.replace("CARAVAN_", ""), message


def test_a_process_hosting_several_services_names_every_refusal_of_each_in_one_line(
    tmp_path: Path,
) -> None:
    """``python -m services orders payments notifications platform`` (``caravan up
    --processes``) named the first refusing service's settings alone, after composing those
    before it (their engines and producers never closed), and the platform's callback lease
    in a traceback after composing it: each refusal is said once, naming the services that
    refuse it, before any service is composed."""
    env = {"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1", "CARAVAN_PLATFORM_CALLBACK_LEASE_SECONDS": "1"}
    env |= {f"CARAVAN_DATABASE_URL_{s.upper()}": "postgresql://p:real-1@db/c" for s in HOSTED}
    done = subprocess.run(
        [sys.executable, "-m", "services", *HOSTED],
        env=_environment(env),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    lines = (done.stdout + done.stderr).splitlines()
    assert done.returncode == 2, lines
    assert len(lines) == 1, lines
    message = json.loads(lines[0])["message"]
    for said in (
        "CARAVAN_PAYMENTS_GATEWAY_URL is required in production",
        "no SMS gateway in production",
        "CARAVAN_NOTIFICATIONS_RECEIPTS_SECRET",
        "CARAVAN_PLATFORM_CALLBACK_LEASE_SECONDS (1 s) must be longer",
    ):
        assert message.count(said) == 1, message
    assert "(payments);" in message and "(notifications);" in message, message
    assert message.endswith("(platform)"), message
    assert "KAFKA_BOOTSTRAP_SERVERS" not in message and "DATABASE_URL" not in message, message


HOSTED = ("orders", "payments", "notifications", "platform")


def test_a_setting_a_service_refuses_is_named_by_its_variable_and_its_value_is_not_said(
    tmp_path: Path,
) -> None:
    """A service started alone logged pydantic's own words (``notifications_quiet_start``,
    "Value error, ...", a link to pydantic's pages, lines of them in one message) where the
    ``caravan`` command names the variable: both say it as
    :func:`shared.settings.named_faults` does."""
    code, lines = _run(
        "notifications",
        tmp_path,
        DATABASE_URL="postgresql://p:real-1@db/caravan",
        KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:1",
        CARAVAN_NOTIFICATIONS_QUIET_START="25:00",
        CARAVAN_NOTIFICATIONS_RECEIPTS_SECRET="Xy7-short-one",
    )
    assert code == 2, lines
    message = json.loads(lines[0])["message"]
    assert message == (
        "settings refused: CARAVAN_NOTIFICATIONS_QUIET_START: not a time of day (HH:MM, 00:00"
        " to 23:59); CARAVAN_NOTIFICATIONS_RECEIPTS_SECRET: shorter than 16 characters, the"
        " least a secret has"
    ), message
    assert "25:00" not in message and "Xy7-short-one" not in message, message


def test_a_service_s_own_database_file_that_cannot_be_read_is_one_line(tmp_path: Path) -> None:
    """CARAVAN_DATABASE_URL_<SERVICE>_FILE naming a file that cannot be read stopped the
    service with a traceback, where DATABASE_URL_FILE's is one line."""
    code, lines = _run(
        "orders",
        tmp_path,
        KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:1",
        CARAVAN_DATABASE_URL_ORDERS_FILE=str(tmp_path / "missing"),
    )
    assert code == 2 and len(lines) == 1, lines
    assert json.loads(lines[0])["message"] == (
        f"settings refused: CARAVAN_DATABASE_URL_ORDERS_FILE names {tmp_path / 'missing'}, which"
        " cannot be read: No such file or directory"
    ), lines


def test_a_platform_app_signing_with_the_docs_example_secret_is_refused(tmp_path: Path) -> None:
    """docs/platform.md publishes ``change-me-0123456789`` as an app's secret: copied into a
    production CARAVAN_PLATFORM_APPS, the adapter took pushes anyone could sign (orders
    placed as paid on the platform). It is refused as a development default, not said."""
    example = {"secret": "change-me-0123456789", "api_url": "http://127.0.0.1:1"}
    code, lines = _run(
        "platform",
        tmp_path,
        DATABASE_URL="postgresql://p:real-1@127.0.0.1:1/caravan",
        KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:1",
        CARAVAN_PLATFORM_APPS=json.dumps({"demo-market": example}),
    )
    assert code == 2 and len(lines) == 1, lines
    message = json.loads(lines[0])["message"]
    assert message == (
        "settings refused: refusing to start in production with development default secrets"
        " in: CARAVAN_PLATFORM_APPS (demo-market.secret)"
    ), message
