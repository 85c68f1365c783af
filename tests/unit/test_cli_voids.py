"""What ``caravan payments void-sold`` (and ``void-unplaced``, the same call) prints once payments
answered: the orders and payments APIs faked."""

from typing import Any

import pytest
from typer.testing import CliRunner

from caravan import cli, payments_cli

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
