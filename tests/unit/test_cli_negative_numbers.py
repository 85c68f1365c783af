"""A negative number given as an argument is that number, as the help says ("negative to
lower"), not the unknown options ``-5``, ``-0``, ...: where a number may not be negative it is
refused as the bad value it is; an option the command does not have is still refused as one.
The admin API is faked."""

import re
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from caravan import cli, inventory_cli, payments_cli
from caravan.arguments import NegativeNumbers
from tests.unit.conftest import uncoloured

LINE = {"buyer_id": "buyer-0100", "credit_limit_fen": 5000, "outstanding_fen": 0}
ADD_LOT = ("inventory", "add-lot", "LOT-1", "SKU-1")
DATES = ("--from", "2026-11-01", "--best-before", "2027-03-01")
LOT = {
    "lot_id": "LOT-1",
    "sku": "SKU-1",
    **dict.fromkeys(inventory_cli.COUNTERS, 0),
    "expired": False,
    "in_season": True,
    "on_sale": True,
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
    monkeypatch.setattr(inventory_cli, "answer", lambda *a, **kw: (201, call(*a, **kw)["lot"]))
    return bodies


def caravan(*args: str) -> tuple[int, str]:
    done = CliRunner().invoke(cli.app, [*args, "--url", "http://api"], env={"COLUMNS": "200"})
    return done.exit_code, uncoloured(done.output)


def test_a_negative_adjustment_is_a_number(sent: list[dict[str, Any]]) -> None:
    code, said = caravan("payments", "credit-adjust", "buyer-0100", "-5000", "--key", "ca-3")
    assert code == 0, said
    code, said = caravan("inventory", "adjust", "LOT-1", "--delta", "-3", "--reason", "rot")
    assert code == 0, said
    assert sent == [{"delta_fen": -5000}, {"delta": -3, "reason": "rot", "spoiled": False}]


@pytest.mark.parametrize(
    ("args", "refused"),
    [
        (("payments", "credit-set", "buyer-0100", "-5"), "'LIMIT_FEN': must be 0 or more"),
        ((*ADD_LOT, "-3", *DATES), "'QUANTITY': must be 0 or more"),
    ],
)
def test_a_negative_number_where_none_is_meant_is_refused_as_a_bad_value(
    sent: list[dict[str, Any]], args: tuple[str, ...], refused: str
) -> None:
    """Not "No such option: -5": the limit or the quantity is wrong, and nothing is sent."""
    code, said = caravan(*args)
    assert code == 2 and f"Invalid value for {refused}" in said, said
    assert "option" not in said
    assert sent == []


@pytest.mark.parametrize("amount", ["0", "-5"])
def test_a_repayment_of_nothing_is_refused_by_its_option_not_the_apis_field(
    sent: list[dict[str, Any]], amount: str
) -> None:
    """``repay --amount 0`` was sent, and the payments API's 422 said it in its own words,
    ``amount_fen: must be more than 0``, a field the command has not: it is refused as the
    option's bad value, as ``credit-set``'s negative limit is, and nothing is sent."""
    code, said = caravan("payments", "repay", "L-1", "--amount", amount)
    assert code == 2 and "Invalid value for '--amount': must be 1 or more" in said, said
    assert sent == []


def test_a_limit_and_a_quantity_of_0_are_taken(sent: list[dict[str, Any]]) -> None:
    assert caravan("payments", "credit-set", "buyer-0100", "0")[0] == 0
    assert caravan(*ADD_LOT, "0", *DATES)[0] == 0
    assert [b.get("credit_limit_fen", b.get("quantity")) for b in sent] == [0, 0]


@pytest.mark.parametrize(
    "args",
    [
        ("credit-adjust", "buyer-0100", "-5000", "--kye", "ca-3"),  # after the arguments
        ("credit-adjust", "--kye", "-5000"),  # in the place of the buyer
        ("credit-adjust", "buyer-0100", "--kye", "ca-3"),  # in the place of the number
        ("credit-set", "buyer-0100", "--kye", "5"),
        ("credit-set", "buyer-0100", "5", "--kye", "5"),
    ],
)
def test_an_option_the_command_does_not_have_is_still_refused(
    sent: list[dict[str, Any]], args: tuple[str, ...]
) -> None:
    code, said = caravan("payments", *args)
    assert code == 2 and "No such option: --kye" in said, said
    assert sent == []


def test_a_mistyped_option_of_add_lot_is_refused_with_the_right_one(
    sent: list[dict[str, Any]],
) -> None:
    code, said = caravan(*ADD_LOT, "3", "--form", "2026-11-01", "--best-before", "2027-03-01")
    assert code == 2 and "No such option: --form (Possible options: --from)" in said, said
    assert sent == []


def test_every_command_taking_a_number_as_an_argument_reads_a_negative_one() -> None:
    """What a new command taking a number as an argument is made with (options are not
    concerned: ``--delta -3`` is the value of ``--delta``)."""

    def commands(group: Any, path: str) -> Any:
        for name, command in group.commands.items():
            if hasattr(command, "commands"):
                yield from commands(command, f"{path} {name}")
            else:
                yield f"{path} {name}", command

    taking = {
        path: isinstance(command, NegativeNumbers)
        for path, command in commands(typer.main.get_command(cli.app), "caravan")
        if any(
            p.param_type_name == "argument" and p.bare_type() in ("int", "float")
            for p in command.params
        )
    }
    assert taking == {
        "caravan payments credit-set": True,
        "caravan payments credit-adjust": True,
        "caravan inventory add-lot": True,
    }


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


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (("up", "--orders", "-5"), "--orders"),
        (("up", "--kafka-nodes", "-1"), "--kafka-nodes"),  # was a traceback (ValueError)
        (("up", "--dashboard-port", "-1"), "--dashboard-port"),
        (("demo", "--orders", "-5"), "--orders"),
        (("demo", "--platform-orders", "-5"), "--platform-orders"),
        (("replay", "--topic", "t", "--group", "g", "--from-offset", "-5"), "--from-offset"),
        (("stuck", "--older-than", "-5"), "--older-than"),
        (("dashboard", "--port", "-1"), "--port"),
        (("dashboard", "--stuck-after", "-5"), "--stuck-after"),
    ],
)
def test_a_negative_count_port_or_time_given_to_an_option_is_refused_before_anything_runs(
    args: tuple[str, ...], option: str
) -> None:
    """Options take ``-5`` as their value (never "No such option"), which went on: ``up
    --orders -5`` started the whole system. Only parsed here (``make_context`` never runs
    the command), so that the test cannot start one either."""
    command = typer.main.get_command(cli.app).commands[args[0]]  # type: ignore[attr-defined]
    with pytest.raises(typer.BadParameter) as refused:
        command.make_context(args[0], list(args[1:]))
    assert refused.value.exit_code == 2
    said = refused.value.format_message()
    # An option read from the environment too says so: "'--port' (env var: '...'): ..."
    assert re.match(
        rf"Invalid value for '{option}'( \(env var: '\w+'\))?: Input should be greater than", said
    ), said
