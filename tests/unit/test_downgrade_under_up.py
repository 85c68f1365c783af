"""``caravan downgrade`` on the database of the running ``caravan up`` is refused while any
of its services runs there (each is to be paused): a service running on a schema older than
its code fails every record it reads. Another database, or no ``caravan up``: not refused."""

import json
from pathlib import Path

import pytest

from caravan import checkout, cli
from caravan.output import OperatorError
from services import SERVICES
from tests.unit.test_dashboard_page import paused_under_up

URL = "postgresql://caravan:caravan@127.0.0.1:15432/caravan"


def under_up(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, *paused: str) -> None:
    """A ``caravan up`` running from the checkout on the database at URL, ``paused``
    paused under it."""
    paused_under_up(monkeypatch, tmp_path, "127.0.0.1:9092", *paused)
    checkout.UP_ENV.write_text(json.dumps({"DATABASE_URL": URL}))


def test_refused_while_a_service_of_caravan_up_runs_on_its_database(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    under_up(monkeypatch, tmp_path, "orders", "inventory", "payments")
    monkeypatch.setenv("DATABASE_URL", URL)
    with pytest.raises(OperatorError) as refused:
        cli.downgrade("orders", "0008")
    assert refused.value.exit_code == 2
    assert str(refused.value) == (
        "caravan up runs notifications, platform from this checkout on this database: pause"
        " each first (caravan pause SERVICE)"
    )
    assert checkout.running_on(URL) == {"notifications", "platform"}


def test_not_refused_with_every_service_paused_on_another_database_or_without_up(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    under_up(monkeypatch, tmp_path, *SERVICES)
    assert checkout.running_on(URL) == set()
    (checkout.PAUSED / "orders").unlink()
    assert checkout.running_on(URL) == {"orders"}
    assert checkout.running_on(URL.replace("15432", "5432")) == set()
    monkeypatch.setattr(checkout, "running_up", lambda: False)  # left by an earlier run
    assert checkout.running_on(URL) == set()
