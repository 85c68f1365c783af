"""``caravan payments ...``: credit lines, loans and repayments, refunds made by hand,
through the payments service's admin API (``CARAVAN_PAYMENTS_HTTP_PORT``, or ``--url``)."""

import uuid
from typing import Annotated, Any

import typer

from caravan import output
from caravan.admin_api import base_url, call, newest
from caravan.arguments import NegativeNumbers
from caravan.output import console
from services.payments.domain.status import Status

app = typer.Typer(
    help="Payments: credit lines, microloans and repayments; refunds made by hand.",
    no_args_is_help=True,
)

Url = Annotated[
    str | None, typer.Option("--url", help="payments admin API (default: from the settings)")
]


def _base(url: str | None) -> str:
    return base_url(url, "payments")


def _call(url: str | None, method: str, path: str, *ids: str, **kwargs: Any) -> dict[str, Any]:
    return call(_base(url), "payments", method, path, *ids, **kwargs)


def _show_line(body: dict[str, Any]) -> None:
    console.print(
        f"{body['buyer_id']}: limit {body['credit_limit_fen']} fen, "
        f"outstanding {body['outstanding_fen']} fen, available {body['available_fen']} fen"
    )


@app.command("credit-show")
def credit_show(buyer_id: str, url: Url = None) -> None:
    """Show a buyer's credit line: limit, outstanding principal, available credit."""
    _show_line(_call(url, "GET", "/credit-lines/{}", buyer_id))


@app.command("credit-set", cls=NegativeNumbers)
def credit_set(
    buyer_id: str, limit_fen: Annotated[int, typer.Argument(min=0)], url: Url = None
) -> None:
    """Create a buyer's credit line or set its limit (fen)."""
    limit = {"credit_limit_fen": limit_fen}
    _show_line(_call(url, "PUT", "/credit-lines/{}", buyer_id, json=limit))


@app.command("credit-adjust", cls=NegativeNumbers)
def credit_adjust(
    buyer_id: str,
    delta_fen: Annotated[int, typer.Argument(help="fen to add (negative to lower)")],
    key: Annotated[
        str | None, typer.Option(help="idempotency key (repeat it to retry safely)")
    ] = None,
    url: Url = None,
) -> None:
    """Raise or lower a buyer's credit limit (once per key)."""
    body = _call(
        url,
        "POST",
        "/credit-lines/{}/adjustments",
        buyer_id,
        json={"delta_fen": delta_fen},
        headers={"Idempotency-Key": key or uuid.uuid4().hex},
    )
    if not body["applied"]:
        console.print("already applied under this key, nothing changed")
    _show_line(body)


def _show_loan(loan: dict[str, Any]) -> None:
    owed = loan.get("refund_owed_fen")  # repaid on a voided loan (older servers: absent)
    console.print(
        f"loan {loan['loan_id']} ({loan['status']}), order {loan['order_id']}: principal "
        f"{loan['principal_fen']} + interest {loan['interest_fen']} fen; outstanding principal "
        f"{loan['outstanding_fen']}, left to pay {loan['remaining_fen']}, "
        f"overdue {loan['overdue_fen']}" + (f"; owed back to the buyer {owed} fen" if owed else "")
    )
    table = output.table(
        "#", "due", "amount_fen", "interest_fen", "paid_fen", "overdue", whole=("due",)
    )
    for i in loan["schedule"]:
        table.add_row(
            str(i["number"]),
            i["due"],
            str(i["amount_fen"]),
            str(i["interest_fen"]),
            str(i["paid_fen"]),
            "yes" if i["overdue"] else "",
        )
    output.show(table)


@app.command("loan")
def loan(loan_id: str, url: Url = None) -> None:
    """Show a loan, its schedule and what is outstanding."""
    _show_loan(_call(url, "GET", "/loans/{}", loan_id))


@app.command("repay")
def repay(
    loan_id: str,
    amount_fen: Annotated[
        int | None, typer.Option("--amount", help="fen repaid (omit to repay in full)")
    ] = None,
    key: Annotated[
        str | None, typer.Option(help="idempotency key (repeat it to retry safely)")
    ] = None,
    url: Url = None,
) -> None:
    """Record a repayment (partial, early or, without --amount, in full)."""
    key = key or uuid.uuid4().hex
    body = _call(
        url,
        "POST",
        "/loans/{}/repayments",
        loan_id,
        json={} if amount_fen is None else {"amount_fen": amount_fen},
        headers={"Idempotency-Key": key},
    )
    console.print(
        f"repayment {key}: {body['amount_fen']} fen ({body['principal_fen']} principal, "
        f"{body['interest_fen']} interest)"
        + ("" if body["created"] else "; already recorded under this key, nothing changed")
    )
    _show_loan(body["loan"])


@app.command("refunded")
def refunded(
    order_id: str,
    reference: Annotated[str, typer.Option(help="the bank's or gateway's transfer reference")],
    reason: Annotated[str, typer.Option(help="why, for the audit trail")],
    url: Url = None,
) -> None:
    """Record that the buyer of a void_refused payment, or of a voided loan what they had
    repaid, was refunded by hand (audited; the same reference and reason again change
    nothing, another reason is refused)."""
    body = {"reference": reference, "reason": reason}
    done = _call(url, "POST", "/orders/{}/payment/refund", order_id, json=body)
    console.print(
        f"order {order_id}: {done['refund_owed_fen']} fen refunded to the buyer under reference "
        f"{done['refund_reference']} (recorded {done['refunded_at']})"
    )


PAYMENT, FIGURES = "order\nbuyer\nchanged", "method\nfen\ncalls"


@app.command("list")
def list_payments(
    status: Annotated[
        Status, typer.Option(help="void_refused: owed a refund by hand; refunded; authorized; ...")
    ],
    limit: Annotated[int, typer.Option(min=1, help="the last changed this many")] = 100,
    url: Url = None,
) -> None:
    """List the payments of a status, the last changed first (`GET /payments`, with a token
    with the scope ops), three lines or more each to fit 80 columns: order id, buyer and
    when the payment last changed (a charge due: the time it is made by, its hold's; a
    refund made by hand: its reference); method, fen and its gateway calls (how many never
    reached the gateway; what is owed back by hand); and why the gateway refused its void
    (``void refused: ...``), then the last error the calls met (kept once the gateway
    answers: the orders an outage held up)."""
    found, more = newest(_base(url), "payments", "/payments", {"status": status}, limit)
    table = output.table(
        PAYMENT,
        FIGURES,
        "last error",
        title=f"the last changed {len(found)} {status} payment(s): more with a higher --limit"
        if more
        else f"{len(found)} {status} payment(s)",
        whole=(PAYMENT, FIGURES),
    )
    for p in found:
        left = [p["order_id"], p["buyer_id"] or "", output.at(p["updated_at"])]
        if p["status"] == "charging" and p["held_until"]:
            left.append(f"charge by {output.at(p['held_until'])}")
        if p["refund_reference"]:
            left.append(f"refunded {p['refund_reference']}")
        right = [p["method"] or "", "" if p["amount_fen"] is None else f"{p['amount_fen']} fen"]
        right.append(f"{p['attempts']} call(s)")
        if p["unreached"]:
            right.append(f"{p['unreached']} unreached")
        if p["status"] == "void_refused":  # refunded: its reference says it was paid back
            right.append(f"owed {p['refund_owed_fen']}")
        lines = max(len(left), len(right))
        refused = p["gateway_refusal"] and f"void refused: {p['gateway_refusal']}"
        errors = "\n".join(e for e in (refused, p["last_error"]) if e)
        table.add_row("\n".join(left), "\n".join(right), output.Clipped(errors, lines=lines))
    output.show(table)
