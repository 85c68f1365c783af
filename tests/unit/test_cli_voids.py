"""What ``caravan payments void-sold`` (and ``void-unplaced``, the same call) prints once payments
answered: the orders and payments APIs faked."""

from typing import Any

import pytest
from typer.testing import CliRunner

from caravan import cli, payments_cli
from caravan.output import OperatorError
from tests.unit.conftest import uncoloured

ORDER = "0193a1b2-7c3d-7e4f-8a9b-0c1d2e3f4a50"
PREPAID = {"order_id": ORDER, "method": "prepaid", "amount_fen": 3500, "collected_by": None}


def answered(monkeypatch: pytest.MonkeyPatch, status: str) -> str:
    """``void-sold`` of a confirmed order's prepaid payment, payments answering its void with
    the payment ``status``: what it printed."""

    def found(base: str, service: str, path: str, *ids: str) -> dict[str, Any]:
        if service == "orders":
            return {"order_id": ORDER, "status": "confirmed"}
        return {
            **PREPAID,
            "status": "authorized",
            "unplaced_at": None,
            "voided_after_sale_at": None,
        }

    def call(base: str, service: str, method: str, path: str, *ids: str, **kw: Any) -> Any:
        return {**PREPAID, "status": status, "applied": True}

    monkeypatch.setattr(payments_cli, "found", found)
    monkeypatch.setattr(payments_cli, "call", call)
    monkeypatch.setenv("COLUMNS", "400")  # one line, as read
    done = CliRunner().invoke(cli.app, ["payments", "void-sold", ORDER, "--reason", "spoiled"])
    assert done.exit_code == 0, done.output
    return " ".join(done.output.split())


def test_a_prepaid_void_the_gateway_has_not_answered_says_it_is_asked_and_what_comes_next(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Walked on a running ``caravan up``: it printed "voided: order ...: the prepaid charge
    of 3500 fen, voided at the gateway (payment voiding)" while the void was only asked, the
    gateway yet to answer, and to refuse it maybe (settled: owed back by hand)."""
    assert answered(monkeypatch, "voiding") == (
        f"void asked: order {ORDER}: the prepaid charge of 3500 fen, its void asked of the"
        " gateway, not answered yet (payment voiding); once it answers, the payment is voided"
        " (`caravan payments list --status voided`), or void_refused if the gateway refuses"
        " (settled already: the 3500 fen owed back to the buyer by hand, `caravan payments list"
        " --status void_refused`)"
    )


def test_a_void_done_at_once_says_voided(monkeypatch: pytest.MonkeyPatch) -> None:
    """A void payments made whole in its answer (a loan's, a platform's collection; here a
    prepaid one the gateway loop already answered) says voided, as before."""
    assert answered(monkeypatch, "voided") == (
        f"voided: order {ORDER}: the prepaid charge of 3500 fen, voided at the gateway"
        " (payment voided)"
    )


def test_a_dry_run_of_a_prepaid_void_says_its_void_would_be_asked_of_the_gateway(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """It said "would void: order ...: the prepaid charge of 3500 fen, voided at the gateway",
    what a void does not do: it asks the gateway, which may refuse (owed back by hand)."""

    def found(base: str, service: str, path: str, *ids: str) -> dict[str, Any]:
        if service == "orders":
            return {"order_id": ORDER, "status": "confirmed"}
        return {**PREPAID, "status": "authorized", "unplaced_at": None}

    def call(*args: Any, **kw: Any) -> Any:
        raise AssertionError(f"a dry run asks nothing of payments: {args}")

    monkeypatch.setattr(payments_cli, "found", found)
    monkeypatch.setattr(payments_cli, "call", call)
    monkeypatch.setenv("COLUMNS", "400")
    asked = ["payments", "void-sold", ORDER, "--reason", "spoiled", "--dry-run"]
    done = CliRunner().invoke(cli.app, asked)
    assert done.exit_code == 0, done.output
    assert " ".join(done.output.split()) == (
        f"would void: order {ORDER}: the prepaid charge of 3500 fen, its void to be asked of"
        " the gateway (payment voiding until it answers: then voided, or void_refused if it"
        " refuses, the 3500 fen owed back to the buyer by hand)"
    )


VOIDED = {"status": "voided", "voided_after_sale_at": None, "unplaced_at": None}
BEFORE = {"at": "2026-12-07T10:00:00+00:00", "by": "ops-anna", "reason": "forged stock.reserved"}


@pytest.mark.parametrize(
    ("command", "order", "kept", "refused"),
    [
        (
            "void-sold",
            None,
            "unplaced",
            f"not voided: order {ORDER}: the orders service has no such order; its payment voided"
            " before, at 2026-12-07T10:00:00+00:00 by ops-anna (forged stock.reserved); nothing"
            " changed (payment voided)",
        ),
        (
            "void-unplaced",
            {"order_id": ORDER, "status": "confirmed"},
            "voided_after_sale",
            f"not voided: the orders service has order {ORDER} (confirmed): its payment voided"
            " after the sale before, at 2026-12-07T10:00:00+00:00 by ops-anna (forged"
            " stock.reserved); nothing changed (payment voided)",
        ),
    ],
)
def test_a_void_refused_for_the_order_says_the_other_command_voided_it_already(
    monkeypatch: pytest.MonkeyPatch, command: str, order: Any, kept: str, refused: str
) -> None:
    """Walked on a running ``caravan up``: ``void-sold`` of an order ``void-unplaced`` had
    voided said "the orders service has no such order (`caravan payments void-unplaced` it)",
    sending the operator to a void done already; and ``void-unplaced`` of a confirmed order
    voided after the sale said to ``void-sold`` it. Each now says it is voided already, by
    whom, when and why (as the route's 409 of the other word does), and voids nothing."""

    def found(base: str, service: str, path: str, *ids: str) -> Any:
        if service == "orders":
            return order
        return {**PREPAID, **VOIDED, **{f"{kept}_{k}": v for k, v in BEFORE.items()}}

    def call(*args: Any, **kw: Any) -> Any:
        raise AssertionError(f"nothing is asked of payments: {args}")

    monkeypatch.setattr(payments_cli, "found", found)
    monkeypatch.setattr(payments_cli, "call", call)
    done = CliRunner().invoke(cli.app, ["payments", command, ORDER, "--reason", "refunded"])
    assert isinstance(done.exception, OperatorError), done.output  # main() says it in one line
    assert (done.exception.exit_code, str(done.exception)) == (1, refused)


@pytest.mark.parametrize("command", ["void-sold", "void-unplaced"])
def test_the_help_says_a_prepaid_void_is_asked_of_the_gateway_and_answered_later(
    command: str,
) -> None:
    """Their help said "the charge voided at the gateway" (void-unplaced: "the charge
    voided"), where the command only asks the gateway loop to void it, the gateway answering
    later (voided, or void_refused: owed back by hand); and a platform's collection, reversed
    in the ledger, goes to no gateway."""
    done = CliRunner().invoke(
        cli.app, ["payments", command, "--help"], env={"COLUMNS": "400"}, prog_name="caravan"
    )
    assert done.exit_code == 0, done.output
    said = " ".join(uncoloured(done.output).split())
    assert "voided at the gateway" not in said and "the charge voided" not in said, said
    assert (
        "a prepaid charge's void asked of the gateway, which answers later (the payment voiding"
        " until then: voided, or void_refused if it refuses, owed back by hand, caravan"
        " payments refunded); or a platform's collection reversed (no gateway: the platform"
        " refunds its buyer)"
    ) in said, said
