"""``caravan payments ...``: credit lines, loans and repayments, refunds made by hand, the
payment of an order the orders service never had, or of a confirmed order after its sale,
voided, what the sellers are owed, through the payments service's admin API
(``CARAVAN_PAYMENTS_HTTP_PORT``, or ``--url``)."""

import dataclasses
import uuid
from datetime import datetime
from typing import Annotated, Any, Literal
from urllib.parse import quote

import typer

from caravan import output
from caravan.admin_api import base_url, call, found, newest
from caravan.arguments import NegativeNumbers, month_end, month_option, time_opt
from caravan.inventory_cli import seller_names
from caravan.output import OperatorError, console
from services.payments.domain.status import Status

app = typer.Typer(
    help="Payments: credit lines, microloans and repayments; refunds made by hand; what the"
    " sellers are owed.",
    no_args_is_help=True,
)

Url = Annotated[
    str | None, typer.Option("--url", help="payments admin API (default: from the settings)")
]
AsCsv = Annotated[
    bool,
    typer.Option(
        "--csv",
        help="print the list as CSV for a spreadsheet, a row each: UTF-8 after a byte-order"
        " mark, as Excel needs to read Chinese (not with --json)",
    ),
]


def _fields(line: type) -> list[str]:
    """The fields of ``line``, a listing's item as the payments API gives it (the dataclass
    it answers with): the columns of a list's ``--csv``, in the API's order."""
    return [field.name for field in dataclasses.fields(line)]


def _base(url: str | None) -> str:
    return base_url(url, "payments")


def _call(url: str | None, method: str, path: str, *ids: str, **kwargs: Any) -> dict[str, Any]:
    return call(_base(url), "payments", method, path, *ids, **kwargs)


def _show_line(body: dict[str, Any]) -> None:
    """A credit line; one whose buyer owes more than its limit (lowered below what they owe)
    says by how much, where "available 0" alone read as a buyer at their limit."""
    over = body["outstanding_fen"] - body["credit_limit_fen"]
    console.print(
        f"{body['buyer_id']}: limit {body['credit_limit_fen']} fen, "
        f"outstanding {body['outstanding_fen']} fen, available {body['available_fen']} fen"
        + (f" ({over} fen over the limit: no new loan until repaid below it)" if over > 0 else "")
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
    options = {"credit_limit_fen": "LIMIT_FEN"}  # the body's name of the argument
    _show_line(_call(url, "PUT", "/credit-lines/{}", buyer_id, json=limit, options=options))


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
        f"loan {loan['loan_id']} ({loan['status']}), buyer {loan['buyer_id']}, order"
        f" {loan['order_id']}: principal "
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
        int | None,
        typer.Option("--amount", min=1, help="fen repaid (omit to repay in full)"),
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
    nothing, and say when and by whom it was recorded; another reason is refused)."""
    body = {"reference": reference, "reason": reason}
    done = _call(url, "POST", "/orders/{}/payment/refund", order_id, json=body)
    said = (
        f"order {order_id}: {done['refund_owed_fen']} fen refunded to the buyer under reference "
        f"{done['refund_reference']}"
    )
    if done.get("applied", True):  # older servers: absent
        console.print(f"{said} (recorded {output.at(done['refunded_at'])})")
        return
    by = done.get("refunded_by") or "a token the audit trail names (not kept before 0023)"
    console.print(
        f"{said}: recorded before, at {output.at(done['refunded_at'])} by {by}; nothing changed"
    )


def _held(url: str | None, payment: dict[str, Any]) -> str:
    """What voiding ``payment`` undoes, in words."""
    fen = payment["amount_fen"]
    if payment["collected_by"] is not None:
        return f"the {fen} fen platform {payment['collected_by']} collected, reversed"
    if payment["method"] == "prepaid":
        return f"the prepaid charge of {fen} fen, voided at the gateway"
    if payment["loan_id"] is None:
        return "nothing lent (an order of 0 fen)"
    loan = _call(url, "GET", "/loans/{}", payment["loan_id"])
    repaid = sum(i["paid_fen"] for i in loan["schedule"])
    back = f", the {repaid} fen the buyer repaid owed back to them" if repaid else ""
    return (
        f"loan {loan['loan_id']} ({loan['status']}) of {loan['principal_fen']} fen, voided:"
        f" {loan['outstanding_fen']} fen of credit given back, no instalment due{back}"
    )


@app.command("charge-lost")
def charge_lost(
    order_id: str,
    reason: Annotated[str, typer.Option(help="why, for the audit trail")],
    url: Url = None,
) -> None:
    """Say the gateway lost the charge of a voiding payment (it approved it, and answers its
    void 404, no such charge, made again and again), the base URL being right: at its next
    such answer the void is refused for good, void_refused, owed back to the buyer by hand
    (`caravan payments refunded`). Audited; scope ops. Again: nothing changed."""
    done = _call(url, "POST", "/orders/{}/payment/charge-lost", order_id, json={"reason": reason})
    said = "said before; nothing changed" if not done["applied"] else "said"
    console.print(
        f"order {order_id}: the gateway lost its charge of {done['amount_fen']} fen, {said}"
        f" (payment {done['status']}): at the gateway's next 404 to its void it is"
        " void_refused, owed back by hand (`caravan payments refunded`)"
    )


DryRun = Annotated[bool, typer.Option("--dry-run", help="say what would be voided, void nothing")]
OrdersUrl = Annotated[
    str | None,
    typer.Option("--orders-url", help="orders API asked first (default: from the settings)"),
]


@app.command("void-unplaced")
def void_unplaced(
    order_id: str,
    reason: Annotated[str, typer.Option(help="why, for the audit trail")],
    dry_run: DryRun = False,
    orders_url: OrdersUrl = None,
    url: Url = None,
) -> None:
    """Void the payment of an order the orders service never had (a forged stock.reserved,
    a copy of a platform's order under another id), as its cancellation would: the loan
    voided and its credit given back; or a prepaid charge's void asked of the gateway, which
    answers later (the payment voiding until then: voided, or void_refused if it refuses,
    owed back by hand, `caravan payments refunded`); or a platform's collection reversed (no
    gateway: the platform refunds its buyer); the sellers no longer owed (audited; scope
    ops, and orders:read to ask orders first). An order orders has is refused: `caravan
    orders cancel` it. Again: nothing voided twice."""
    orders = base_url(orders_url, "orders")
    order = found(orders, "orders", "/orders/{}", order_id)
    if order is not None:
        status = order["status"]
        done = _voided_already(url, order_id) if status == "confirmed" else None
        if done is not None:
            settle = f"its payment {done}"
        elif status == "confirmed":
            settle = (
                "if its buyer was refunded after the sale, void it with `caravan payments"
                " void-sold`"
            )
        else:
            settle = (
                "cancel it with `caravan orders cancel`, which keeps the order and its payment"
                " together"
            )
        raise OperatorError(
            f"not voided: the orders service has order {order_id} ({status}): {settle}",
            exit_code=1,
        )
    _void(
        url, order_id, {"reason": reason, "orders_answered": 404, "orders_asked": orders}, dry_run
    )


@app.command("void-sold")
def void_sold(
    order_id: str,
    reason: Annotated[str, typer.Option(help="why, for the audit trail")],
    dry_run: DryRun = False,
    orders_url: OrdersUrl = None,
    url: Url = None,
) -> None:
    """Void the payment of a confirmed order whose buyer was refunded after the sale (a
    platform's refund after delivery, spoiled produce refunded), as a cancellation would:
    the loan voided, its credit given back and no reminder sent, what the buyer repaid owed
    back; or a prepaid charge's void asked of the gateway, which answers later (the payment
    voiding until then: voided, or void_refused if it refuses, owed back by hand, `caravan
    payments refunded`); or a platform's collection reversed (no gateway: the platform
    refunds its buyer); the sellers no longer owed. The order
    stays confirmed, its stock sold (audited; scope ops, and orders:read to ask orders
    first). A pending order is refused (`caravan orders cancel` it), a cancelled one too (its
    payment voided already). Again: nothing voided twice."""
    orders = base_url(orders_url, "orders")
    order = found(orders, "orders", "/orders/{}", order_id)
    if order is None or order["status"] != "confirmed":
        why = {
            None: "the orders service has no such order (`caravan payments void-unplaced` it)",
            "pending": "it is pending: cancel it with `caravan orders cancel`",
            "cancelled": "it is cancelled: its payment was voided with it",
        }
        status = None if order is None else order["status"]
        done = _voided_already(url, order_id) if order is None else None
        if done is not None:
            why[None] = f"the orders service has no such order; its payment {done}"
        raise OperatorError(
            f"not voided: order {order_id}: "
            + why.get(status, f"it is {status}, not confirmed: no payment was taken"),
            exit_code=1,
        )
    _void(
        url,
        order_id,
        {"reason": reason, "orders_answered": "confirmed", "orders_asked": orders},
        dry_run,
    )


def _void(url: str | None, order_id: str, asked: dict[str, Any], dry_run: bool) -> None:
    """Void the payment of ``order_id`` once orders answered as ``asked`` says (or say what
    would be voided): the one call both void commands make. One an operator voided before on
    the same word of orders is said so (exit 0); on the other word (voided as never placed,
    asked as confirmed, or the other way round), the route's 409 says how and when (exit 1)."""
    payment = found(_base(url), "payments", "/orders/{}/payment", order_id)
    if payment is None:
        raise OperatorError(f"not voided: payments has no payment for order {order_id}", 1)
    kept = _voided_by_operator(payment)
    if kept == ("voided_after_sale" if asked["orders_answered"] == "confirmed" else "unplaced"):
        console.print(_voided_before(order_id, payment))
        return
    if kept and dry_run:  # voided the other way: the route would refuse it (409)
        raise OperatorError(f"would not void: {_voided_before(order_id, payment)}", 1)
    if dry_run:
        if payment["status"] not in HOLDING:
            raise OperatorError(
                f"nothing to void: the payment of order {order_id} is {payment['status']}", 1
            )
        console.print(f"would void: order {order_id}: {_would_void(url, payment)}")
        return
    held = _held(url, payment) if payment["status"] in HOLDING else ""
    done = _call(url, "POST", "/orders/{}/payment/void", order_id, json=asked)
    if not done["applied"]:  # voided meanwhile, by another call
        console.print(_voided_before(order_id, done))
        return
    if done["status"] == "voiding":  # the gateway answers later: it has not voided it yet
        console.print(_void_asked(order_id, done))
        return
    console.print(f"voided: order {order_id}: {held} (payment {done['status']})")


def _void_asked(order_id: str, payment: dict[str, Any]) -> str:
    """A prepaid charge's void asked of the gateway, not answered yet (``voiding``), and what
    its answer will show: it said "voided at the gateway" before the gateway had answered."""
    fen = payment["amount_fen"]
    return (
        f"void asked: order {order_id}: the prepaid charge of {fen} fen, its void asked of the"
        " gateway, not answered yet (payment voiding); once it answers, the payment is voided"
        " (`caravan payments list --status voided`), or void_refused if the gateway refuses"
        f" (settled already: the {fen} fen owed back to the buyer by hand, `caravan payments"
        " list --status void_refused`)"
    )


def _would_void(url: str | None, payment: dict[str, Any]) -> str:
    """What voiding ``payment`` would do, in words (a dry run): a prepaid charge's void is
    only asked of the gateway, which may refuse it (it said "voided at the gateway")."""
    fen = payment["amount_fen"]
    if payment["collected_by"] is None and payment["method"] == "prepaid":
        return (
            f"the prepaid charge of {fen} fen, its void to be asked of the gateway (payment"
            " voiding until it answers: then voided, or void_refused if it refuses, the"
            f" {fen} fen owed back to the buyer by hand)"
        )
    return _held(url, payment)


HOLDING = ("authorized", "charging", "awaiting")
"""The statuses of a payment that holds money to void (others are refused)."""


def _voided_already(url: str | None, order_id: str) -> str | None:
    """How an operator voided the payment of ``order_id`` before (:func:`_voided_before`), or
    None: asked where a void command refuses an order for what orders says of it and would
    name the other command, which voided it already (a walk met "`caravan payments
    void-unplaced` it" of a payment void-unplaced had voided)."""
    payment = found(_base(url), "payments", "/orders/{}/payment", order_id)
    if payment is None or _voided_by_operator(payment) is None:
        return None
    return _voided_before(order_id, payment).removeprefix(f"order {order_id}: ")


def _voided_by_operator(payment: dict[str, Any]) -> str | None:
    """The prefix of the fields an operator's void of ``payment`` is kept under; None: none
    (``voided_after_sale_*``: older servers, absent)."""
    for kept in ("unplaced", "voided_after_sale"):
        if payment.get(f"{kept}_at") is not None:
            return kept
    return None


def _voided_before(order_id: str, payment: dict[str, Any]) -> str:
    kept = _voided_by_operator(payment)
    sold = " after the sale" if kept == "voided_after_sale" else ""
    return (
        f"order {order_id}: voided{sold} before, at {output.at(payment[f'{kept}_at'])} by"
        f" {payment[f'{kept}_by']} ({payment[f'{kept}_reason']}); nothing changed"
        f" (payment {payment['status']})"
    )


PAYMENT, FIGURES = "order\nbuyer\nchanged", "method\nfen\ncalls"


def _period(since: datetime | None, until: datetime | None) -> dict[str, str]:
    """The query parameters of a listing's time (``since``, ``until``), those given."""
    return {name: t.isoformat() for name, t in (("since", since), ("until", until)) if t}


@app.command("list")
def list_payments(
    status: Annotated[
        Status,
        typer.Option(
            help="void_refused: owed a refund by hand; voided (a loan's: 'owed' if repaid);"
            " refunded; authorized; ..."
        ),
    ],
    since: Annotated[datetime | None, time_opt("last changed at or after")] = None,
    until: Annotated[datetime | None, time_opt("last changed before")] = None,
    limit: Annotated[int, typer.Option(min=1, help="the last changed this many")] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="print the payments as JSON")] = False,
    as_csv: AsCsv = False,
    url: Url = None,
) -> None:
    """List the payments of a status, the last changed first (`GET /payments`, with a token
    with the scope ops), those last changed in a time (a week's refunds: --status voided
    --since 2026-11-30 --until 2026-12-07) or every one, three lines or more each to fit 80
    columns: order id, buyer and when the payment last changed (a charge due: the time it is
    made by, its hold's; a refund made by hand: its reference; voided after the sale, or as
    of an order never placed, saying so); method, fen and its gateway calls (a loan's ``no
    call (lent)``: lent from the credit line, never a gateway's; a platform's order's ``no
    call (platform)``: the platform collected it; how many never reached it; what is owed
    back by hand, a voided loan's repayments too, or was paid back); and why the gateway
    refused its void (``void refused: ...``), then the last error the calls met
    (kept once the gateway answers: the orders an outage held up)."""
    output.one_output(as_json, as_csv)
    options = {"status": "--status", "since": "--since", "until": "--until"}
    asked = {"status": status, **_period(since, until)}
    found, more = newest(_base(url), "payments", "/payments", asked, limit, options)
    title = output.listed_title(len(found), f"{status} payment(s)", more, "the last changed")
    if as_json:
        output.as_json({"payments": found, "more": more})
        return
    if as_csv:
        from services.payments.prepaid import LISTED  # here: SQLAlchemy, for --csv alone

        output.as_csv([column.name for column in LISTED], found, title if more else None)
        return
    table = output.table(PAYMENT, FIGURES, "last error", title=title, whole=(PAYMENT, FIGURES))
    for p in found:
        left = [p["order_id"], p["buyer_id"] or "", output.at(p["updated_at"])]
        if p["status"] == "charging" and p["held_until"]:
            left.append(f"charge by {output.at(p['held_until'])}")
        if p["refund_reference"]:
            left.append(f"refunded {p['refund_reference']}")
        # A refund after the sale (void-sold), or an order never placed (void-unplaced): not
        # an order cancelled before it was paid, which nothing was refunded for.
        if p["voided_after_sale_at"]:
            left.append("voided after the sale")
        elif p["unplaced_at"]:
            left.append("order never placed")
        right = [p["method"] or "", "" if p["amount_fen"] is None else f"{p['amount_fen']} fen"]
        # A loan is lent from the buyer's credit line, a platform's order paid to the platform
        # (``collected_by`` its app): the gateway is never called for either.
        calls = f"{p['attempts']} call(s)"
        if not p["attempts"] and p["method"] == "microloan":
            calls = "no call (lent)"
        elif not p["attempts"] and p["collected_by"]:
            calls = "no call (platform)"
        right.append(calls)
        if p["unreached"]:
            right.append(f"{p['unreached']} unreached")
        if p["status"] == "refunded":  # what was paid back, not what was charged or lent
            right.append(f"paid back {p['refund_owed_fen']}")
        elif p["refund_owed_fen"]:  # void_refused, or a voided loan's repayments
            right.append(f"owed {p['refund_owed_fen']}")
        lines = max(len(left), len(right))
        # voiding: an operator's word that the gateway lost the charge (charge-lost)
        said = "lost" if p["status"] == "voiding" else "void refused"
        refused = p["gateway_refusal"] and f"{said}: {p['gateway_refusal']}"
        errors = "\n".join(e for e in (refused, p["last_error"]) if e)
        table.add_row("\n".join(left), "\n".join(right), output.Clipped(errors, lines=lines))
    filters = {"--since": since, "--until": until}
    output.show(table, empty=output.none_of(f"{status} payment", filters))


LOAN, LOAN_FIGURES = "loan\nbuyer\norder", "fen"


@app.command("loans")
def list_loans(
    buyer: Annotated[str | None, typer.Option(help="only this buyer's loans")] = None,
    status: Annotated[
        Literal["active", "repaid", "voided"] | None,
        typer.Option(help="only the loans of this status (active: still owed)"),
    ] = None,
    overdue: Annotated[
        bool, typer.Option("--overdue", help="only the active loans with an instalment overdue")
    ] = False,
    limit: Annotated[
        int, typer.Option(min=1, help="the first this many (the newest; the longest overdue)")
    ] = 100,
    as_json: Annotated[
        bool, typer.Option("--json", help="print the loans and their totals as JSON")
    ] = False,
    as_csv: AsCsv = False,
    url: Url = None,
) -> None:
    """The loan book, the newest loan first (`GET /loans`): a buyer's loans, those of a
    status, or only those overdue, the longest overdue first (the officer's calls); for each,
    its id, buyer and order, its status and the day its next instalment falls due, what was
    lent, the principal still owed (what counts against the credit line), what is left to pay
    (interest too) and what is overdue today, for how many days and since when; then the
    totals of the loans listed."""
    output.one_output(as_json, as_csv)
    params = {
        name: value
        for name, value in (("buyer_id", buyer), ("status", status))
        if value is not None
    }
    if overdue:
        params["overdue"] = "true"
    found, more = newest(_base(url), "payments", "/loans", params, limit)
    title = output.listed_title(
        len(found), "loan(s)", more, "the longest overdue" if overdue else "the newest"
    )
    if as_csv:
        from services.payments.lending import LoanLine  # here: SQLAlchemy, for --csv alone

        output.as_csv(_fields(LoanLine), found, title if more else None)
        return
    voided = [loan for loan in found if loan["status"] == "voided"]
    summed = ("outstanding_fen", "remaining_fen", "overdue_fen")
    totals = {
        # A voided loan's credit was given back, whatever voided it: said apart from "lent".
        "lent_fen": sum(loan["principal_fen"] for loan in found if loan not in voided),
        **{figure: sum(loan[figure] for loan in found) for figure in summed},
        "voided_loans": len(voided),
        "voided_fen": sum(loan["principal_fen"] for loan in voided),
    }
    if as_json:
        output.as_json({"loans": found, "more": more, "totals": totals})
        return
    table = output.table(
        LOAN, "status\nnext due", LOAN_FIGURES, title=title, whole=(LOAN, LOAN_FIGURES)
    )
    for loan in found:
        figures = _voided(loan) if loan["status"] == "voided" else _lent(loan)
        table.add_row(
            "\n".join((loan["loan_id"], loan["buyer_id"], loan["order_id"])),
            "\n".join((loan["status"], loan["next_due"] or "")),
            "\n".join(figures),
        )
    filters = {"--buyer": buyer, "--status": status, "--overdue": overdue or None}
    output.show(table, empty=output.none_of("loan", {k: v for k, v in filters.items() if v}))
    if found:
        late = sum(1 for loan in found if loan["overdue_fen"])
        # Voided as its order was cancelled, or by an operator (the order refunded after the
        # sale, void-sold, staying confirmed; or never placed): its credit given back either way.
        apart = (
            "; voided (the order cancelled, refunded after the sale or never placed), its credit"
            f" given back: {totals['voided_fen']} fen ({len(voided)} loan(s))"
        )
        console.print(
            f"{'listed' if more else 'in all'}: lent {totals['lent_fen']} fen, principal"
            f" owed {totals['outstanding_fen']} fen, left to pay {totals['remaining_fen']} fen,"
            f" overdue {totals['overdue_fen']} fen ({late} loan(s) overdue)"
            + (apart if voided else "")
        )


def _lent(loan: dict[str, Any]) -> list[str]:
    """A loan's figures in the loan book, active or repaid: what was lent, what is owed and
    left to pay, and what is overdue and since when."""
    figures = [
        f"lent {loan['principal_fen']}",
        f"owes {loan['outstanding_fen']}",
        f"to pay {loan['remaining_fen']}",
    ]
    if loan["overdue_fen"]:
        figures.append(f"overdue {loan['overdue_fen']}")
    if loan.get("overdue_since"):  # older servers: absent
        figures.append(f"{loan['days_overdue']} day(s) late, since {loan['overdue_since']}")
    return figures


def _voided(loan: dict[str, Any]) -> list[str]:
    """A voided loan's figures in the loan book: what was lent, its credit given back (it
    said "lent N", "owes 0", "to pay 0", as of a loan lent and repaid), and what its buyer
    had repaid on it before the void, owed back to them or paid back by hand."""
    figures = [f"voided: lent {loan['principal_fen']},", "its credit given back"]
    repaid = loan.get("repaid_fen")  # older servers: absent
    if repaid:
        back = "owed back to the buyer" if loan["refund_owed_fen"] else "paid back to the buyer"
        figures += [f"repaid {repaid} before the void:", back]
    elif repaid == 0:
        figures.append("nothing repaid before the void")
    return figures


REPAID, REPAID_FIGURES = "when\nloan\nbuyer", "fen"
BACK = "loan voided: owed or paid back"
"""Said of a repayment on a loan voided since (its order cancelled, or refunded after the
sale): the buyer is owed it back (`owed` in `payments list --status voided`), or was paid it
back (`--status refunded`), so it is no money the centre keeps."""


@app.command("repayments")
def list_repayments(
    since: Annotated[
        datetime | None,
        time_opt("recorded at or after"),
    ] = None,
    until: Annotated[datetime | None, time_opt("recorded before")] = None,
    buyer: Annotated[str | None, typer.Option(help="only those of this buyer's loans")] = None,
    limit: Annotated[int, typer.Option(min=1, help="the newest this many")] = 100,
    as_json: Annotated[
        bool, typer.Option("--json", help="print the repayments and their totals as JSON")
    ] = False,
    as_csv: AsCsv = False,
    url: Url = None,
) -> None:
    """The repayments recorded in a time (a month's: --since 2026-12-01 --until 2027-01-01),
    the newest first (`GET /repayments`), of a buyer's loans or every one: when, the loan,
    the buyer; what was repaid, of it principal and interest, and its key, and whether its
    loan was voided since (what was repaid owed back to the buyer, or paid back); then the
    totals of every repayment in the time, those beyond --limit too."""
    output.one_output(as_json, as_csv)
    asked = {"buyer_id": buyer} if buyer is not None else {}
    times = _period(since, until)
    options = {"buyer_id": "--buyer", "since": "--since", "until": "--until"}
    found, more = newest(_base(url), "payments", "/repayments", asked | times, limit, options)
    title = output.listed_title(len(found), "repayment(s)", more)
    if as_csv:
        from services.payments.lending import RepaymentLine  # as above

        output.as_csv(_fields(RepaymentLine), found, title if more else None)
        return
    first = {**asked, **times, "limit": "1"}  # the totals of every page, said on each
    totals = _call(url, "GET", "/repayments", params=first)["totals"]
    if as_json:
        output.as_json({"repayments": found, "more": more, "totals": totals})
        return
    table = output.table(REPAID, REPAID_FIGURES, title=title, whole=(REPAID, REPAID_FIGURES))
    for r in found:
        figures = [
            f"{r['amount_fen']} repaid",
            f"{r['principal_fen']} principal",
            f"{r['interest_fen']} interest",
            f"key {r['repayment_id']}",
        ]
        if r["loan_status"] == "voided":  # its order cancelled or refunded: the money goes back
            figures.append(BACK)
        table.add_row(
            "\n".join((output.at(r["created_at"]), r["loan_id"], r["buyer_id"])),
            "\n".join(figures),
        )
    filters = {"--since": since, "--until": until, "--buyer": buyer}
    output.show(table, empty=output.none_of("repayment", {k: v for k, v in filters.items() if v}))
    if found:
        back = [r for r in found if r["loan_status"] == "voided"]
        console.print(
            f"in all: {totals['repayments']} repayment(s) of {totals['amount_fen']} fen,"
            f" {totals['principal_fen']} fen principal and {totals['interest_fen']} fen interest"
            + (
                f"; {len(back)} of {'those listed' if more else 'them'},"
                f" {sum(r['amount_fen'] for r in back)} fen"
                f" ({sum(r['interest_fen'] for r in back)} fen interest), on loans voided since:"
                " owed back to their buyers, or paid back"
                if back
                else ""
            )
        )


SELLER_FIGURES = ("orders", "owed\norders", "owed\nfen", "cancelled\norders", "cancelled\nfen")
SELLER_FIELDS = (
    "seller_id",
    "orders",
    "owed_orders",
    "owed_fen",
    "cancelled_orders",
    "cancelled_fen",
)
"""A seller's fields as ``GET /payables`` gives them: its table's columns, and (with
``seller_name`` last, read from the inventory API) those of ``payables --csv``."""
PAYABLE_FIELDS = ("seller_id", "order_id", "amount_fen", "status", "owed_at", "cancelled_at")
"""A seller's order as ``GET /payables/{seller}/orders`` gives it: the columns of ``payables
--seller S --csv``."""
OWED_ORDER, CANCELLED = "order\nowed at", "status\ncancelled at"


def _named(seller: dict[str, Any]) -> str:
    """A seller as staff know it: its id, and its name beside it where inventory said it."""
    name: str | None = seller["seller_name"]
    return f"{seller['seller_id']}" + (f" ({name})" if name is not None else "")


@app.command("payables")
def payables(
    since: Annotated[
        datetime | None,
        time_opt("owed (payment authorised) at or after"),
    ] = None,
    until: Annotated[datetime | None, time_opt("owed before")] = None,
    month: Annotated[
        datetime | None,
        typer.Option(
            parser=month_option,
            metavar="YYYY-MM",
            help="a calendar month of the market's (2026-12): --since its first day, --until"
            " the next month's",
        ),
    ] = None,
    seller: Annotated[
        str | None, typer.Option(help="only this seller's, with its orders, the last owed first")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, help="a seller's last owed this many orders")] = 100,
    as_json: Annotated[
        bool, typer.Option("--json", help="print what was found as JSON (for the bank)")
    ] = False,
    as_csv: AsCsv = False,
    url: Url = None,
) -> None:
    """What each seller is owed for the orders whose payment was authorised in the period
    (`GET /payables`, with a token with the scope ops), one line a seller (its name beside
    its id, read from inventory's `GET /sellers` where it answers): its orders, those
    still owed and those cancelled since (a refund after the sale, `caravan payments
    void-sold`; an order cancelled after its payment was taken), in count and fen, and the
    totals; with --seller, that seller's and its orders: order id above when it was owed,
    fen, status above when it was cancelled; --month 2026-12 for a month's. Reads only:
    nothing is marked paid."""
    output.one_output(as_json, as_csv)
    if month is not None:
        if since is not None or until is not None:
            raise OperatorError("--month, or --since and --until: not both", exit_code=2)
        since, until = month, month_end(month)
    period = _period(since, until)
    options = {"since": "--since", "until": "--until", "seller_id": "--seller"}
    asked = {**period, **({"seller_id": seller} if seller is not None else {})}
    summary = call(_base(url), "payments", "GET", "/payables", params=asked, options=options)
    orders: list[dict[str, Any]] = []
    more = False
    if seller is not None:
        path = f"/payables/{quote(seller, safe='')}/orders"
        orders, more = newest(_base(url), "payments", path, period, limit, options)
    listed_title = output.listed_title(len(orders), "order(s)", more, "the last owed")
    if as_csv and seller is not None:
        output.as_csv(PAYABLE_FIELDS, orders, listed_title if more else None)
        return
    # The names after the figures, which never wait on inventory: one call for them all.
    names, why = seller_names(seller) if summary["sellers"] else ({}, None)
    if why is not None and (as_csv or as_json):
        output.err_console.print(why)
    for s in summary["sellers"]:
        s["seller_name"] = names.get(s["seller_id"])
    if as_csv:
        output.as_csv((*SELLER_FIELDS, "seller_name"), summary["sellers"])
        return
    if as_json:
        shown = {"since": period.get("since"), "until": period.get("until"), **summary}
        output.as_json(shown if seller is None else {**shown, "payables": orders, "more": more})
        return
    period_said: dict[str, object] = {"--since": since, "--until": until}
    if month is not None:
        period_said = {"--month": month.strftime("%Y-%m")}
    given = {**period_said, "--seller": seller}
    if not summary["sellers"]:
        console.print(output.none_of("payable", given))
        return
    table = output.table(
        "seller",
        *SELLER_FIGURES,
        title=f"{len(summary['sellers'])} seller(s): {summary['owed_fen']} fen owed,"
        f" {summary['cancelled_fen']} fen cancelled, of {summary['orders']} order(s)",
        right=SELLER_FIGURES,
    )
    for s in summary["sellers"]:
        table.add_row(_named(s), *(str(s[field]) for field in SELLER_FIELDS[1:]))
    output.show(table)
    if why is not None:  # below the table: its title stays the first line, as scripts read it
        console.print(why)
    if seller is None:
        return
    listed = output.table(
        OWED_ORDER,
        "fen",
        CANCELLED,
        title=f"seller {_named(summary['sellers'][0])}: {listed_title}",
        whole=(OWED_ORDER, CANCELLED),
        right=("fen",),
    )
    for o in orders:
        cancelled = output.at(o["cancelled_at"]) if o["cancelled_at"] else ""
        listed.add_row(
            f"{o['order_id']}\n{output.at(o['owed_at'])}",
            str(o["amount_fen"]),
            f"{o['status']}\n{cancelled}",
        )
    output.show(listed)
