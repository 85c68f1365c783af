"""``caravan payments`` subcommands against the running payments admin API."""

import codecs
import csv
import io
import json
import re
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path

from shared import days
from shared.topics import Topic
from tests.e2e.test_ops import cli as caravan_cli
from tests.e2e.test_ops import cli_into
from tests.e2e.test_payments_after_sale import void
from tests.e2e.test_payments_credit import (
    authorised,
    buyer,
    buyers_loan,
    cancel,
    order,
    payments_seed,
    repay,
    run,
)
from tests.harness import System


def sheet(printed: str) -> list[dict[str, str]]:
    """The rows of what a ``--csv`` printed (read as text), as a spreadsheet reads them: after
    the byte-order mark it begins with, a header row and a row each."""
    assert printed.startswith("\ufeff"), printed[:80]
    return list(csv.DictReader(io.StringIO(printed.removeprefix("\ufeff"), newline="")))


async def listed(
    cli: Callable[..., Awaitable[tuple[int, str]]], status: str, order_id: str
) -> list[str]:
    """What ``caravan payments list --status STATUS`` says of ``order_id``'s figures (its
    right column: method, fen, calls, what is owed or was paid back), line by line."""
    code, out = await cli("list", "--status", status, "--limit", "100")
    assert code == 0, out
    rows = [[c.strip() for c in line.split("│")[1:-1]] for line in out.splitlines() if "│" in line]
    first = next(i for i, row in enumerate(rows) if row[0] == order_id)
    return [row[1] for row in rows[first : first + 4]]


async def test_credit_and_repayment_commands(caravan: System) -> None:
    await caravan.seed(payments_seed())
    url = f"http://127.0.0.1:{caravan.procs.env['CARAVAN_PAYMENTS_HTTP_PORT']}"

    async def cli(*args: str) -> tuple[int, str]:
        """``caravan payments ARGS``: its exit code, and what it said (a failure on stderr)."""
        command = [args[0], "--url", url, *args[1:]]  # options before a "--"
        done = await caravan_cli(caravan, "payments", *command)
        return done.returncode, done.stdout + done.stderr

    county = f"county/{buyer('cli')}"  # a buyer id holding "/": its routes answered 404
    code, out = await cli("credit-set", county, "7000")
    assert (code, out) == (0, f"{county}: limit 7000 fen, outstanding 0 fen, available 7000 fen\n")
    code, out = await cli("credit-adjust", county, "--", "-1000")
    assert code == 0 and "limit 6000 fen" in out, out
    who = buyer("cli")
    assert await cli("credit-set", who, "5000") == (
        0,
        f"{who}: limit 5000 fen, outstanding 0 fen, available 5000 fen\n",
    )
    code, out = await cli("credit-adjust", who, "--key", "adj-1", "--", "-1000")
    assert code == 0 and "limit 4000 fen" in out
    # A retry (the answer was lost): applied once. The key with another delta: refused.
    code, out = await cli("credit-adjust", who, "--key", "adj-1", "--", "-1000")
    assert code == 0 and "already applied under this key" in out and "limit 4000 fen" in out
    code, out = await cli("credit-adjust", who, "--key", "adj-1", "--", "-2000")
    assert code == 1 and "was used for an adjustment of -1000 fen" in out
    code, out = await cli("credit-adjust", who, "--", "-5000")
    assert code == 1 and "cannot be lowered by 5000 fen" in out
    # Why, and how far it may go, as a raise past the most says its bound.
    assert (
        "lowered by 5000 fen: a credit limit is at least 0, so lowered by 4000 fen at most" in out
    )
    audited = await caravan.scalar(
        "select count(*) from auth.audit where action = 'credit.adjust' and target = :b", b=who
    )
    assert audited == 1

    done = await run(caravan, order(who, {"PAY-UNIT": 30}, term=2))
    loan_id = done.data["payment"]["loan_id"]
    code, out = await cli("loan", loan_id)
    assert code == 0 and "left to pay 3000" in out
    assert f"loan {loan_id} (active), buyer {who}, order {done.data['order_id']}:" in out, out
    code, out = await cli("repay", loan_id, "--amount", "1000", "--key", "cli-1")
    assert code == 0 and "1000 fen (1000 principal, 0 interest)" in out
    assert "already recorded" not in out
    code, out = await cli("repay", loan_id, "--amount", "1000", "--key", "cli-1")  # a retry
    assert code == 0 and "left to pay 2000" in out
    assert "1000 fen (1000 principal, 0 interest); already recorded under this key" in out
    code, out = await cli("repay", loan_id)
    assert code == 0 and "(repaid)" in out
    code, out = await cli("credit-show", who)
    assert (code, out) == (0, f"{who}: limit 4000 fen, outstanding 0 fen, available 4000 fen\n")
    assert "owed back" not in (await cli("loan", loan_id))[1]
    # A loan voided after it was repaid: what the buyer paid is owed back to them.
    async with caravan.api("payments") as admin:
        _, voided, authorized = await buyers_loan(caravan, admin, "cli-void")
        assert (await repay(admin, authorized.data["loan_id"], "all", None)).status_code == 201
    await cancel(caravan, voided)
    code, out = await cli("loan", authorized.data["loan_id"])
    assert code == 0 and "(voided)" in out and "; owed back to the buyer 3000 fen" in out, out
    # The list of the voided says it too (it said the loan's amount alone), and once refunded
    # by hand, that of the refunded says what was paid back; recorded again, nothing changed.
    assert (await listed(cli, "voided", voided))[3] == "owed 3000"
    made = ("--reference", "BANK-CLI-1", "--reason", "bank transfer")
    code, out = await cli("refunded", voided, *made)
    said = f"order {voided}: 3000 fen refunded to the buyer under reference BANK-CLI-1"
    assert code == 0 and out.startswith(f"{said} (recorded "), out
    # Its time as every command says one (to the second, its zone said), not as the API's.
    assert re.fullmatch(r".* \(recorded \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00\)\n", out), out
    code, out = await cli("refunded", voided, *made)
    assert code == 0 and out.startswith(f"{said}: recorded before, at "), out
    assert " by test-session-" in out and out.endswith("; nothing changed\n"), out
    assert (await listed(cli, "refunded", voided))[3] == "paid back 3000"

    # An id is sent whole: "#", "?" and "/.." are part of it, not the URL's (before, this
    # set the limit of `who` itself, and `loan "x/../<id>"` showed that loan).
    code, out = await cli("credit-set", f"{who}#x", "7777")
    assert (code, out) == (0, f"{who}#x: limit 7777 fen, outstanding 0 fen, available 7777 fen\n")
    code, out = await cli("credit-show", who)
    assert code == 0 and "limit 4000 fen" in out
    code, out = await cli("loan", f"x/../{loan_id}")
    assert code == 1 and "left to pay" not in out
    # A key that cannot be a header is refused before anything is sent (was a traceback).
    code, out = await cli("repay", loan_id, "--amount", "1", "--key", "ключ")
    assert code == 2 and "Idempotency-Key must be ASCII" in out


Cli = Callable[..., Awaitable[tuple[int, str]]]


async def officer(caravan: System, *buyers: str) -> Cli:
    """``caravan payments ARGS`` as a credit officer runs it on the session's payments API
    (the module's reference data loaded; each of ``buyers`` given a limit of 10,000 fen): its
    exit code, and what it said."""
    await caravan.seed(payments_seed())
    url = f"http://127.0.0.1:{caravan.procs.env['CARAVAN_PAYMENTS_HTTP_PORT']}"

    async def cli(*args: str) -> tuple[int, str]:
        done = await caravan_cli(caravan, "payments", args[0], "--url", url, *args[1:])
        return done.returncode, done.stdout + done.stderr

    for who in buyers:
        assert (await cli("credit-set", who, "10000"))[0] == 0
    return cli


async def test_the_loan_book_says_who_owes_what_and_what_is_overdue(caravan: System) -> None:
    """A credit officer at the month's end: each buyer's loans with what they owe and what is
    overdue, the overdue alone, and the same as JSON to export (a loan's id was found only
    through GET /orders/{id}/payment, one order at a time, and what was overdue only loan by
    loan with `caravan payments loan`)."""
    farmer, shop = buyer("book"), buyer("book")
    cli = await officer(caravan, farmer, shop)
    early = (await run(caravan, order(farmer, {"PAY-UNIT": 30}, term=3))).data["payment"]
    late = (await run(caravan, order(farmer, {"PAY-UNIT": 12}, term=2))).data["payment"]
    other = (await run(caravan, order(shop, {"PAY-UNIT": 50}, term=1))).data["payment"]
    assert (await cli("repay", early["loan_id"], "--amount", "1000"))[0] == 0
    # A loan of 500 fen voided (its order cancelled): its credit given back, no money out.
    unsold, lent = await authorised(caravan, farmer, 5)
    await cancel(caravan, unsold)
    # A month and more passes for the second loan: its first instalment, 600 fen, is overdue.
    await caravan.execute(
        "update payments.instalments set due = due - 40 where loan_id = :loan",
        loan=late["loan_id"],
    )

    code, out = await cli("loans", "--buyer", farmer)
    assert code == 0, out
    assert early["loan_id"] in out and late["loan_id"] in out and other["loan_id"] not in out
    assert "overdue 600" in out and "owes 2000" in out and "to pay 2000" in out, out
    said = figures_of(out, lent.data["loan_id"], early["loan_id"], late["loan_id"])
    assert said == ["voided: lent 500,", "its credit given back", "nothing repaid before the void"]
    assert out.rstrip().endswith(
        "in all: lent 4200 fen, principal owed 3200 fen, left to pay 3200 fen, overdue 600"
        " fen (1 loan(s) overdue); voided (the order cancelled, refunded after the sale or never"
        " placed), its credit given back: 500 fen (1 loan(s))"
    ), out
    code, out = await cli("loans", "--buyer", farmer, "--json")
    assert code == 0, out
    assert json.loads(out)["totals"] == {
        "lent_fen": 4200,
        "outstanding_fen": 3200,
        "remaining_fen": 3200,
        "overdue_fen": 600,
        "voided_loans": 1,
        "voided_fen": 500,
    }

    code, out = await cli("loans", "--buyer", farmer, "--overdue", "--json")
    assert code == 0, out
    book = json.loads(out)
    assert [loan["loan_id"] for loan in book["loans"]] == [late["loan_id"]]
    (listed_late,) = book["loans"]
    assert listed_late["buyer_id"] == farmer and listed_late["status"] == "active"
    assert (listed_late["outstanding_fen"], listed_late["overdue_fen"]) == (1200, 600)
    assert book["totals"]["overdue_fen"] == 600 and book["more"] is False

    # Two months and more pass for the first loan: its second instalment, 1000 fen, is
    # overdue, longer than the second loan's. The officer calls the longest overdue first.
    await caravan.execute(
        "update payments.instalments set due = due - 80 where loan_id = :loan",
        loan=early["loan_id"],
    )
    dues = "select due from payments.instalments where loan_id = :loan and number = :n"
    since = {
        loan["loan_id"]: await caravan.scalar(dues, loan=loan["loan_id"], n=n)
        for loan, n in ((early, 2), (late, 1))
    }
    code, out = await cli("loans", "--buyer", farmer, "--overdue", "--json")
    assert code == 0, out
    listed = json.loads(out)["loans"]
    assert [loan["loan_id"] for loan in listed] == list(since), listed
    calls = [
        (loan["loan_id"], loan["overdue_fen"], loan["overdue_since"], loan["days_overdue"])
        for loan in listed
    ]
    today = days.today()
    assert calls == [
        (loan, fen, since[loan].isoformat(), (today - since[loan]).days)
        for loan, fen in ((early["loan_id"], 1000), (late["loan_id"], 600))
    ], calls
    code, out = await cli("loans", "--buyer", farmer, "--overdue")
    assert code == 0, out
    first = f"{(today - since[early['loan_id']]).days} day(s) late, since {since[early['loan_id']]}"
    assert out.index(early["loan_id"]) < out.index(late["loan_id"]) and first in out, out
    assert "+86" not in out, out  # no buyer's number in the list (docs/personal-data.md)
    async with caravan.api("payments") as admin:
        asked = {"buyer_id": farmer, "overdue": "true", "limit": "1"}
        one = (await admin.get("/loans", params=asked)).json()
        two = (await admin.get("/loans", params={**asked, "cursor": one["next_cursor"]})).json()
    assert [i["loan_id"] for i in one["items"] + two["items"]] == list(since), (one, two)
    assert two["next_cursor"] is None, two

    code, out = await cli("loans", "--buyer", shop, "--status", "repaid")
    assert (code, out.strip()) == (0, f"no loan matches --buyer {shop} --status repaid"), out
    async with caravan.api("payments") as admin:
        answer = await admin.get("/loans", params={"buyer_id": shop, "status": "active"})
    assert answer.status_code == 200, answer.text
    assert [loan["loan_id"] for loan in answer.json()["items"]] == [other["loan_id"]]


async def test_a_limit_lowered_below_what_is_owed_says_by_how_much(caravan: System) -> None:
    """An officer lowering a buyer's limit below what they owe (allowed: it stops new loans)
    was told "available 0 fen" alone, as of a buyer exactly at their limit."""
    cli = await officer(caravan)
    who = buyer("over")
    assert (await cli("credit-set", who, "5000"))[0] == 0
    loan = (await run(caravan, order(who, {"PAY-UNIT": 30}, term=3))).data["payment"]
    code, out = await cli("credit-adjust", who, "--", "-4000")
    over = " (2000 fen over the limit: no new loan until repaid below it)"
    assert (code, out) == (
        0,
        f"{who}: limit 1000 fen, outstanding 3000 fen, available 0 fen{over}\n",
    ), out
    assert (await cli("credit-show", who))[1].endswith(f"{over}\n")
    assert (await cli("repay", loan["loan_id"], "--amount", "2000"))[0] == 0
    code, out = await cli("credit-show", who)
    assert (code, out) == (0, f"{who}: limit 1000 fen, outstanding 1000 fen, available 0 fen\n")


async def test_the_repayments_of_a_month_are_listed_with_their_totals(caravan: System) -> None:
    """What was repaid in a month, a buyer's or everyone's, with its totals (principal and
    interest apart), to close a month's books: it was in the audit trail alone (psql)."""
    farmer, shop = buyer("repaid"), buyer("repaid")
    cli = await officer(caravan, farmer, shop)
    mine = (await run(caravan, order(farmer, {"PAY-UNIT": 30}, term=3))).data["payment"]
    theirs = (await run(caravan, order(shop, {"PAY-UNIT": 30}, term=3))).data["payment"]
    for loan, fen, key in ((mine, "1000", "last-month"), (mine, "500", "this-month")):
        assert (await cli("repay", loan["loan_id"], "--amount", fen, "--key", key))[0] == 0
    assert (await cli("repay", theirs["loan_id"], "--amount", "2000"))[0] == 0
    await caravan.execute(  # recorded last month
        "update payments.repayments set created_at = created_at - interval '40 days'"
        " where loan_id = :loan and idempotency_key = 'last-month'",
        loan=mine["loan_id"],
    )

    month = str(days.today().replace(day=1))
    code, out = await cli("repayments", "--buyer", farmer, "--since", month)
    assert code == 0, out
    assert "key this-month" in out and "last-month" not in out, out
    assert out.rstrip().endswith(
        "in all: 1 repayment(s) of 500 fen, 500 fen principal and 0 fen interest"
    ), out
    code, out = await cli("repayments", "--buyer", farmer, "--json")
    assert code == 0, out
    said = json.loads(out)
    assert [r["repayment_id"] for r in said["repayments"]] == ["this-month", "last-month"]
    assert {r["buyer_id"] for r in said["repayments"]} == {farmer}
    assert said["totals"] == {
        "repayments": 2,
        "amount_fen": 1500,
        "principal_fen": 1500,
        "interest_fen": 0,
    }
    async with caravan.api("payments") as admin:
        answer = await admin.get("/repayments", params={"buyer_id": shop, "limit": 1})
    assert answer.status_code == 200, answer.text
    assert [r["amount_fen"] for r in answer.json()["items"]] == [2000]
    # A time that holds nothing (the options swapped, or one day given to both) is refused,
    # as GET /payables and GET /orders refuse it: it answered "no repayment matches".
    code, out = await cli("repayments", "--since", month, "--until", month)
    said = "--until must be after --since"
    assert (code, out.splitlines()) == (1, [f"Invalid request: {said}"])  # said once


async def test_a_repayment_on_a_loan_voided_since_says_it_goes_back_to_the_buyer(
    caravan: System,
) -> None:
    """A repayment on a loan voided since (its order refunded after the sale) is owed back to
    the buyer, or was paid back: the week's repayments listed it as any other, its interest
    in the interest taken in, nothing saying it was not the centre's to keep (a drill of the
    centre's week, 2026-12-07: 6,000 fen repaid, 408 of it interest, on a loan voided after
    the sale, listed as repaid). The totals are unchanged: what was recorded."""
    farmer = buyer("voided")
    cli = await officer(caravan, farmer)
    confirmed = (await run(caravan, order(farmer, {"PAY-UNIT": 30}, term=3))).data
    loan_id = confirmed["payment"]["loan_id"]
    assert (await cli("repay", loan_id, "--amount", "700", "--key", "before-void"))[0] == 0
    await void(caravan, confirmed["order_id"], "refunded after the sale")
    code, out = await cli("repayments", "--buyer", farmer)
    assert code == 0, out
    assert "loan voided: owed or paid back" in out, out
    assert out.rstrip().endswith(
        "in all: 1 repayment(s) of 700 fen, 700 fen principal and 0 fen interest; 1 of them,"
        " 700 fen (0 fen interest), on loans voided since: owed back to their buyers, or paid"
        " back"
    ), out
    code, out = await cli("repayments", "--buyer", farmer, "--json")
    assert code == 0, out
    assert [r["loan_status"] for r in json.loads(out)["repayments"]] == ["voided"]


async def test_the_loan_book_does_not_say_a_loan_voided_after_the_sale_was_not_lent(
    caravan: System,
) -> None:
    """A loan voided after the sale (``caravan payments void-sold``: its order refunded, and
    confirmed still) is said apart from what was lent as any voided loan, in words true of it
    too: the loan book said "voided, not lent", and commands.md "its order was cancelled", of
    a loan lent and repaid on whose order stays confirmed (a drill of the centre's week,
    2026-12-07)."""
    farmer = buyer("sold-book")
    cli = await officer(caravan, farmer)
    confirmed = (await run(caravan, order(farmer, {"PAY-UNIT": 30}, term=3))).data
    assert (await cli("repay", confirmed["payment"]["loan_id"], "--amount", "700"))[0] == 0
    await void(caravan, confirmed["order_id"], "refunded after the sale")
    assert (await caravan.client.get(f"/orders/{confirmed['order_id']}")).json()[
        "status"
    ] == "confirmed"
    code, out = await cli("loans", "--buyer", farmer)
    assert code == 0, out
    assert out.rstrip().endswith(
        "in all: lent 0 fen, principal owed 0 fen, left to pay 0 fen, overdue 0 fen (0 loan(s)"
        " overdue); voided (the order cancelled, refunded after the sale or never placed), its"
        " credit given back: 3000 fen (1 loan(s))"
    ), out
    assert "not lent" not in out, out


def figures_of(out: str, loan_id: str, *others: str) -> list[str]:
    """What ``caravan payments loans`` says of ``loan_id``'s figures (its right column), line
    by line, up to the row of the next loan (one of ``others``) or the table's end."""
    rows = [[c.strip() for c in line.split("│")[1:-1]] for line in out.splitlines() if "│" in line]
    first = next(i for i, row in enumerate(rows) if row[0] == loan_id)
    after = next((i for i, row in enumerate(rows) if i > first and row[0] in others), len(rows))
    return [row[2] for row in rows[first:after] if row[2]]


async def test_a_voided_loan_with_an_instalment_due_is_not_reminded_nor_overdue(
    caravan: System,
) -> None:
    """A loan voided (its order refunded after the sale) with an instalment left unpaid, then
    past its day: no reminder of it is announced (an SMS asking a buyer to repay a loan that no
    longer exists), while the buyer's live loan, as late, is reminded overdue; it is not on the
    overdue page; its instalments are marked voided with the void, out of the index the
    overdue page reads (payments 0029). Its row in the loan book read "lent 3000, owes 0, to
    pay 0", as of a loan lent and repaid: it says it was voided, what was lent, and what the
    buyer had repaid before the void, owed back and then paid back (a loan officer's drill,
    2026-12-07)."""
    farmer = buyer("void-due")
    cli = await officer(caravan, farmer)
    sold = (await run(caravan, order(farmer, {"PAY-UNIT": 30}, term=3))).data
    live = (await run(caravan, order(farmer, {"PAY-UNIT": 12}, term=2))).data
    voided_loan, live_loan = sold["payment"]["loan_id"], live["payment"]["loan_id"]
    assert (await cli("repay", voided_loan, "--amount", "700"))[0] == 0  # 300 left of 1000
    await void(caravan, sold["order_id"], "refunded after the sale")
    marked = "select bool_and(voided) from payments.instalments where loan_id = :loan"
    assert await caravan.scalar(marked, loan=voided_loan) is True
    assert await caravan.scalar(marked, loan=live_loan) is False
    # A month and more passes: each loan's first instalment is 10 days late, the voided one's
    # a day earlier (the sweep reads the earliest first).
    for loan, days_back in ((voided_loan, 41), (live_loan, 40)):
        await caravan.execute(
            "update payments.instalments set due = due - cast(:n as integer) where loan_id = :loan",
            n=days_back,
            loan=loan,
        )

    def overdue(loan_id: str) -> list[str]:
        reminded = caravan.log.events(
            Topic.PAYMENT_EVENTS, type="payment.instalment_due", loan_id=loan_id
        )
        return [e.data["stage"] for e in reminded if e.data["stage"] == "overdue"]

    await caravan.wait_for(lambda: overdue(live_loan))  # a sweep past both
    texted = (
        "select count(*) from notifications.sms where order_id = :o"
        " and purpose = 'instalment_overdue'"
    )
    await caravan.until(lambda: caravan.scalar(texted, o=live["order_id"]), "the live one texted")
    said = [e.type for e in caravan.log.events(Topic.PAYMENT_EVENTS, order_id=sold["order_id"])]
    assert overdue(voided_loan) == [], said
    assert "payment.instalment_due" not in said[said.index("payment.voided") :], said
    assert await caravan.scalar(texted, o=sold["order_id"]) == 0

    code, out = await cli("loans", "--buyer", farmer, "--overdue", "--json")
    assert code == 0, out
    assert [loan["loan_id"] for loan in json.loads(out)["loans"]] == [live_loan], out
    code, out = await cli("loans", "--buyer", farmer, "--json")
    assert code == 0, out
    [shown] = [loan for loan in json.loads(out)["loans"] if loan["loan_id"] == voided_loan]
    assert (shown["status"], shown["repaid_fen"], shown["refund_owed_fen"]) == (
        "voided",
        700,
        700,
    ), shown
    assert (shown["overdue_fen"], shown["remaining_fen"], shown["next_due"]) == (0, 0, None)
    code, out = await cli("loans", "--buyer", farmer)
    assert code == 0, out
    voided_said = ["voided: lent 3000,", "its credit given back", "repaid 700 before the void:"]
    assert figures_of(out, voided_loan, live_loan) == [*voided_said, "owed back to the buyer"], out
    assert figures_of(out, live_loan, voided_loan)[:3] == ["lent 1200", "owes 1200", "to pay 1200"]
    made = ("--reference", "BANK-VOID-DUE", "--reason", "bank transfer")
    assert (await cli("refunded", sold["order_id"], *made))[0] == 0
    code, out = await cli("loans", "--buyer", farmer)
    assert code == 0, out
    assert figures_of(out, voided_loan, live_loan) == [*voided_said, "paid back to the buyer"], out


async def test_the_voided_payments_say_which_were_voided_after_the_sale(caravan: System) -> None:
    """``payments list --status voided`` says a payment voided after the sale (a refund:
    ``caravan payments void-sold``), where it listed it as one voided by its order's
    cancellation: an accountant asking what was refunded this week, and to whom, could not
    tell the refunds from the cancellations (a drill of the centre's week, 2026-12-07)."""
    farmer = buyer("refunded")
    cli = await officer(caravan, farmer)
    confirmed = (await run(caravan, order(farmer, {"PAY-UNIT": 30}, term=3))).data
    await void(caravan, confirmed["order_id"], "spoiled on arrival")
    code, out = await cli("list", "--status", "voided", "--limit", "100")
    assert code == 0, out
    rows = [[c.strip() for c in line.split("│")[1:-1]] for line in out.splitlines() if "│" in line]
    first = next(i for i, row in enumerate(rows) if row[0] == confirmed["order_id"])
    left = [row[0] for row in rows[first : first + 4]]  # order, buyer, changed, and then
    assert (left[1], left[3]) == (farmer, "voided after the sale"), out


async def test_the_weeks_repayments_go_into_a_spreadsheet_as_csv(caravan: System) -> None:
    """An accountant settling the week asked to put its figures into a spreadsheet (a drill of
    the centre's week, 2026-12-07): ``--json`` is nested, nothing a spreadsheet opens.
    ``repayments --csv`` is a header and a row a repayment, the same figures as ``--json``,
    fen as integers, times as the API gives them, a key a spreadsheet would compute (``-2-3``
    is -5 to it) written after a "'"; what ``--limit`` left out said on stderr."""
    farmer = buyer("csv")
    await officer(caravan, farmer)
    loan_id = (await run(caravan, order(farmer, {"PAY-UNIT": 30}, term=3))).data["payment"][
        "loan_id"
    ]
    url = f"http://127.0.0.1:{caravan.procs.env['CARAVAN_PAYMENTS_HTTP_PORT']}"

    async def payments(*args: str) -> tuple[int, str, str]:
        done = await caravan_cli(caravan, "payments", args[0], "--url", url, *args[1:])
        return done.returncode, done.stdout, done.stderr

    for fen, key in (("1000", "week-1"), ("500", "-2-3"), ("250", "week-3")):
        assert (await payments("repay", loan_id, "--amount", fen, "--key", key))[0] == 0
    code, out, err = await payments("repayments", "--buyer", farmer, "--json")
    assert code == 0, err
    said = json.loads(out)["repayments"]
    code, out, err = await payments("repayments", "--buyer", farmer, "--csv")
    assert (code, err) == (0, ""), err
    assert out.startswith('\ufeff"repayment_id","loan_id",'), out  # (CRLF read as "\n" here)
    rows = sheet(out)
    assert list(rows[0]) == list(said[0]), (rows[0], said[0])
    assert [r["repayment_id"] for r in rows] == ["week-3", "'-2-3", "week-1"], out
    assert [r["repayment_id"] for r in said] == ["week-3", "-2-3", "week-1"], said
    for row, item in zip(rows, said, strict=True):
        figures = ("amount_fen", "principal_fen", "interest_fen")
        assert [int(row[f]) for f in figures] == [item[f] for f in figures], (row, item)
        texts = ("loan_id", "order_id", "buyer_id", "created_at", "loan_status")
        assert [row[f] for f in texts] == [item[f] for f in texts], (row, item)
    assert sum(int(r["amount_fen"]) for r in rows) == 1750

    code, out, err = await payments("repayments", "--buyer", farmer, "--csv", "--limit", "2")
    assert code == 0, err
    assert len(sheet(out)) == 2, out
    assert err == "the newest 2 repayment(s): more with a higher --limit\n", err
    code, out, err = await payments("repayments", "--buyer", farmer, "--csv", "--json")
    assert (code, out, err) == (2, "", "--csv or --json, not both\n"), (code, out, err)


async def test_the_payments_of_a_week_are_listed_and_as_json(caravan: System) -> None:
    """``payments list --since --until`` lists the payments of a status last changed in a
    time (a week's refunds after the sale), and ``--json`` and ``--csv`` print them, as
    its sibling lists do (loans, repayments, payables): it listed the last changed of every
    time, as a table alone (a drill of the centre's week, 2026-12-07)."""
    farmer = buyer("week")
    cli = await officer(caravan, farmer)
    refunded = []
    for _ in range(2):
        confirmed = (await run(caravan, order(farmer, {"PAY-UNIT": 10}, term=1))).data
        await void(caravan, confirmed["order_id"], "refunded after the sale")
        refunded.append(confirmed["order_id"])
    last_week, this_week = refunded
    await caravan.execute(  # voided last week
        "update payments.payments set updated_at = updated_at - interval '8 days'"
        " where order_id = :o",
        o=last_week,
    )
    monday = str(days.today() - timedelta(days=3))
    code, out = await cli("list", "--status", "voided", "--since", monday, "--json")
    assert code == 0, out
    said = json.loads(out)
    listed_ids = [p["order_id"] for p in said["payments"]]
    assert this_week in listed_ids and last_week not in listed_ids, said
    assert set(said) == {"payments", "more"}, said
    [mine] = [p for p in said["payments"] if p["order_id"] == this_week]
    assert (mine["buyer_id"], mine["amount_fen"], mine["status"]) == (farmer, 1000, "voided")
    assert mine["voided_after_sale_at"] is not None, mine
    code, out = await cli("list", "--status", "voided", "--since", monday, "--csv")
    assert code == 0, out
    rows = sheet(out)
    assert list(rows[0]) == list(mine), (rows[0], mine)
    assert [r["order_id"] for r in rows] == listed_ids, out
    [row] = [r for r in rows if r["order_id"] == this_week]
    shown = (row["buyer_id"], int(row["amount_fen"]), row["voided_after_sale_at"])
    assert shown == (farmer, 1000, mine["voided_after_sale_at"]), row
    code, out = await cli("list", "--status", "voided", "--until", monday)
    assert code == 0, out
    assert last_week in out and this_week not in out, out
    code, out = await cli(
        "list", "--status", "voided", "--since", "2001-01-01", "--until", "2001-01-08"
    )
    assert code == 0 and out.startswith("no voided payment matches --since 2001-01-01T00:00:00"), (
        out
    )
    assert " --until 2001-01-08T00:00:00" in out, out
    code, out = await cli("list", "--status", "voided", "--since", monday, "--until", monday)
    said_refused = "--until must be after --since"
    assert (code, out.splitlines()) == (1, [f"Invalid request: {said_refused}"]), out


async def test_a_weeks_refunds_open_in_excel_on_a_chinese_pc(
    caravan: System, tmp_path: Path
) -> None:
    """The county centre's accountant opens ``payments list --status voided --csv > week.csv``
    in Excel on a Chinese-locale Windows PC: Excel read the file, UTF-8 without a byte-order
    mark, as GBK, and a buyer's id or a refund's reason in Chinese came out as mojibake. The
    file begins with UTF-8's byte-order mark, and read as Excel then reads it (its bytes as
    UTF-8 after the mark) the buyer and the reason are whole, as ``--json`` says them. A
    reason typed after a full-width minus (what a Chinese input method types for "-"), which
    Excel in an East Asian locale reads as a formula's, is written after a "'"."""
    farmer = f"沙湾农户-{buyer('excel')}"
    cli = await officer(caravan, farmer)
    refused = (await run(caravan, order(farmer, {"PAY-UNIT": 10}, term=1))).data
    await void(caravan, refused["order_id"], "\uff0d买家拒收")
    confirmed = (await run(caravan, order(farmer, {"PAY-UNIT": 10}, term=1))).data
    reason = "到货时辣椒已发霉，全额退款"
    await void(caravan, confirmed["order_id"], reason)
    code, out = await cli("list", "--status", "voided", "--json")
    assert code == 0, out
    [said] = [p for p in json.loads(out)["payments"] if p["order_id"] == confirmed["order_id"]]
    assert (said["buyer_id"], said["voided_after_sale_reason"]) == (farmer, reason), said

    week = tmp_path / "week.csv"
    url = f"http://127.0.0.1:{caravan.procs.env['CARAVAN_PAYMENTS_HTTP_PORT']}"
    asked = ("list", "--url", url, "--status", "voided", "--csv")
    done = await cli_into(week, caravan, "payments", *asked)
    assert (done.returncode, done.stderr) == (0, ""), done.stderr
    printed = week.read_bytes()
    assert printed[:3] == codecs.BOM_UTF8, printed[:80]
    rows = list(csv.DictReader(io.StringIO(printed.decode("utf-8-sig"), newline="")))
    [row] = [r for r in rows if r["order_id"] == confirmed["order_id"]]
    assert list(row) == list(said), (row, said)
    assert (row["buyer_id"], row["voided_after_sale_reason"]) == (farmer, reason), row
    [row] = [r for r in rows if r["order_id"] == refused["order_id"]]
    assert row["voided_after_sale_reason"] == "'\uff0d买家拒收", row
