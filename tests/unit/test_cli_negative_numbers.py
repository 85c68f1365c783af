"""A negative number given as an argument is that number, as the help says ("negative to
lower"), not the unknown options ``-5``, ``-0``, ...; an option the command does not have is
still refused. The admin API is faked."""

from typing import Any

import pytest
from typer.testing import CliRunner

from caravan import cli, inventory_cli, payments_cli
from tests.unit.conftest import uncoloured

LINE = {"buyer_id": "buyer-0100", "credit_limit_fen": 5000, "outstanding_fen": 0}
LOT = {
    "lot_id": "LOT-1",
    "sku": "SKU-1",
    **dict.fromkeys(inventory_cli.COUNTERS, 0),
    "expired": False,
    "in_season": True,
    "available_from": "2026-11-01",
    "best_before": "2027-03-01",
}


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """The bodies the commands send to the admin APIs."""
    bodies: list[dict[str, Any]] = []

    def call(base: str, service: str, method: str, path: str, *ids: str, **kw: Any) -> Any:
        bodies.append(kw["json"])
        line = {**LINE, "available_fen": 5000, "applied": True}
        return line if service == "payments" else {"applied": True, "lot": LOT}

    monkeypatch.setattr(payments_cli, "call", call)
    monkeypatch.setattr(inventory_cli, "call", call)
    return bodies


def caravan(*args: str) -> tuple[int, str]:
    done = CliRunner().invoke(cli.app, [*args, "--url", "http://api"], env={"COLUMNS": "200"})
    return done.exit_code, uncoloured(done.output)


def test_a_negative_adjustment_is_a_number(sent: list[dict[str, Any]]) -> None:
    code, said = caravan("payments", "credit-adjust", "buyer-0100", "-5000", "--key", "ca-3")
    assert code == 0, said
    code, said = caravan("inventory", "adjust", "LOT-1", "--delta", "-3", "--reason", "rot")
    assert code == 0, said
    assert sent == [{"delta_fen": -5000}, {"delta": -3, "reason": "rot"}]


@pytest.mark.parametrize(
    "args",
    [
        ("buyer-0100", "-5000", "--kye", "ca-3"),  # after the arguments
        ("--kye", "-5000"),  # in the place of the buyer
        ("buyer-0100", "--kye", "ca-3"),  # in the place of the number
    ],
)
def test_an_option_the_command_does_not_have_is_still_refused(
    sent: list[dict[str, Any]], args: tuple[str, ...]
) -> None:
    code, said = caravan("payments", "credit-adjust", *args)
    assert code == 2 and ("--kye" in said or "valid integer" in said), said
    assert sent == []


def test_a_buyer_id_beginning_with_a_dash_is_given_after_double_dash(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A buyer's id may be any text (``-abc`` too): after ``--`` it is the buyer, as before
    negative numbers were read (the check for mistyped options refused it)."""
    called: list[tuple[str, ...]] = []

    def call(base: str, service: str, method: str, path: str, *ids: str, **kw: Any) -> Any:
        called.append(ids)
        return {**LINE, "buyer_id": ids[0], "available_fen": 5000, "applied": True}

    monkeypatch.setattr(payments_cli, "call", call)
    args = ["payments", "credit-adjust", "--url", "http://api", "--", "-abc", "-5"]
    done = CliRunner().invoke(cli.app, args, env={"COLUMNS": "200"})
    assert done.exit_code == 0, uncoloured(done.output)
    assert called == [("-abc",)]
