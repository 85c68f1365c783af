"""``caravan audit``: the audit trail read from the command line, where operators answering a
buyer's call ("who changed my credit?", "who wrote off that lot?") queried auth.audit by hand."""

import asyncio
import json
import uuid
from datetime import datetime, timedelta

from tests.e2e.test_http import BODY
from tests.e2e.test_ops import cli
from tests.harness import System, forwarder, free_port, ref


async def test_the_audit_trail_is_read_by_action_target_actor_and_time_newest_first(
    caravan: System,
) -> None:
    """Entries of a token of the test's own, two adjustments of a lot and a credit line's
    adjustment, are listed newest first with who, what, on what and what changed; narrowed
    by action, target, actor and time; cut at --limit, saying so; --json gives them whole;
    none says so in a line; an --until not after --since is refused."""
    tag = uuid.uuid4().hex[:8]
    clerk = f"clerk-{tag}"
    token = await caravan.issue_token(clerk, "inventory:write", "credit:write")
    lot, buyer = "T-PEP-1", "t-rich"
    async with caravan.api("inventory", token=token) as inventory:
        for delta in (5, -2):
            done = await inventory.post(
                f"/lots/{lot}/adjustments", json={"delta": delta, "reason": f"count {tag}"}
            )
            assert done.status_code in (200, 201), done.text
    async with caravan.api("payments", token=token) as payments:
        adjusted = await payments.post(
            f"/credit-lines/{buyer}/adjustments",
            json={"delta_fen": 100},
            headers={"Idempotency-Key": f"audit-{tag}"},
        )
        assert adjusted.status_code in (200, 201), adjusted.text

    mine = await cli(caravan, "audit", "--actor", clerk)
    assert mine.returncode == 0, mine.stderr
    lines = mine.stdout.splitlines()
    assert lines[0].strip() == "3 audit entry(ies)", mine.stdout
    rows = [line.split("│") for line in lines if line.startswith("│")]
    # Two lines each: when above who, what above on what.
    actions = [r[2].strip() for r in rows[0::2]]
    assert actions == ["credit.adjust", "lot.adjust", "lot.adjust"], mine.stdout
    assert [r[2].strip() for r in rows[1::2]] == [buyer, lot, lot], mine.stdout
    assert {r[1].strip() for r in rows[1::2]} == {clerk}, mine.stdout
    assert rows[2][3].strip().startswith(f"reason: count {tag}; delta: -2;"), mine.stdout

    of_lot = await cli(caravan, "audit", "--action", "lot.adjust", "--target", lot, "--json")
    found = json.loads(of_lot.stdout)
    ours = [e for e in found["entries"] if e["actor"] == clerk]
    assert [e["after"]["received"] - e["before"]["received"] for e in ours] == [-2, 5], ours
    ats = [e["at"] for e in found["entries"]]
    assert ats == sorted(ats, reverse=True), ats

    cut = await cli(caravan, "audit", "--actor", clerk, "--limit", "1")
    assert cut.stdout.splitlines()[0].strip() == (
        "the newest 1 audit entry(ies): more with a higher --limit"
    ), cut.stdout
    first = datetime.fromisoformat(ours[-1]["at"])
    later = await cli(
        caravan,
        "audit",
        "--actor",
        clerk,
        "--since",
        (first + timedelta(microseconds=1)).isoformat(),
    )
    assert later.stdout.splitlines()[0].strip() == "2 audit entry(ies)", later.stdout
    before = await cli(caravan, "audit", "--actor", clerk, "--until", first.isoformat())
    assert (before.returncode, before.stdout) == (
        0,
        f"no audit entry matches --actor {clerk} --until {first.isoformat()}\n",
    ), before.stdout
    backwards = await cli(caravan, "audit", "--since", "2026-12-02", "--until", "2026-12-01")
    assert backwards.returncode == 1, backwards.stdout
    assert backwards.stderr.strip() == "Invalid request: --until must be after --since"


async def test_a_cancellation_is_audited_under_the_tokens_name_once(no_payments: System) -> None:
    """An operator's token cancels a pending order at its buyer's word (payments stopped: it
    stays pending until then) with ``caravan orders cancel --by buyer --reason``: its timeline
    says ``cancelled_by_buyer``, the audit trail who it was, why, who they said asked and the
    reason the order ended with (the entry said the status alone: an operator's own
    cancellation read as one made for a buyer who phoned), the status before and after; a
    second cancellation, which changes nothing, adds nothing. Through the API, a body with a
    field misspelt, or a ``by`` of no one it knows, is refused, and no body at all cancels as
    before, the buyer's, no reason recorded; the operator's own, ``caravan orders cancel``'s
    default, is said as theirs. With the next, last of the module: ``no_payments`` holds to its
    end."""
    caravan, tag = no_payments, uuid.uuid4().hex[:8]
    operator = f"operator-{tag}"
    token = await caravan.issue_token(operator, "orders:read", "orders:write")
    placed = await caravan.client.post(
        "/orders", json=BODY, headers={"Idempotency-Key": ref("AUDIT")}
    )
    assert placed.status_code == 202, placed.text
    order_id = placed.json()["order_id"]
    why = f"ordered twice by mistake {tag}"
    for said in (why, "asked again"):
        cancelled = await cli(
            caravan,
            "orders",
            "cancel",
            order_id,
            "--by",
            "buyer",
            "--reason",
            said,
            CARAVAN_TOKEN=token,
        )
        assert cancelled.returncode == 0, cancelled.stderr
    assert "cancelled_by_buyer" in (await cli(caravan, "orders", "show", order_id)).stdout

    shown = await cli(caravan, "audit", "--target", order_id)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0].strip() == "1 audit entry(ies)", shown.stdout
    rows = [line.split("│") for line in lines if line.startswith("│")]
    # When above who, the action above its target, beside what changed.
    assert (rows[0][2].strip(), rows[1][1].strip(), rows[1][2].strip()) == (
        "order.cancel",
        operator,
        order_id,
    ), shown.stdout
    changed = " ".join(cell for r in rows if (cell := r[3].strip()))
    assert changed == (
        f"by: buyer; reason: {why}; reason_code: cancelled_by_buyer; status: pending -> cancelled"
    ), shown.stdout
    found = json.loads((await cli(caravan, "audit", "--target", order_id, "--json")).stdout)
    buyers = {"by": "buyer", "reason_code": "cancelled_by_buyer"}
    assert [
        (e["actor"], e["action"], e["before"], e["after"], e["detail"]) for e in found["entries"]
    ] == [
        (
            operator,
            "order.cancel",
            {"status": "pending"},
            {"status": "cancelled"},
            {"reason": why} | buyers,
        )
    ], found

    other = await caravan.client.post(
        "/orders", json=BODY, headers={"Idempotency-Key": ref("AUDIT")}
    )
    other_id = other.json()["order_id"]
    async with caravan.api("orders", token=token) as orders:
        misspelt = await orders.post(f"/orders/{other_id}/cancel", json={"reasn": why})
        assert misspelt.status_code == 422, misspelt.text
        nobody = await orders.post(f"/orders/{other_id}/cancel", json={"by": "staff"})
        assert nobody.status_code == 422, nobody.text
        bare = await orders.post(f"/orders/{other_id}/cancel")
        assert (bare.status_code, bare.json()["applied"]) == (200, True), bare.text
        assert bare.json()["reason"] == "cancelled_by_buyer", bare.text
    found = json.loads((await cli(caravan, "audit", "--target", other_id, "--json")).stdout)
    assert [(e["actor"], e["detail"]) for e in found["entries"]] == [(operator, buyers)], found

    own = await caravan.client.post("/orders", json=BODY, headers={"Idempotency-Key": ref("AUDIT")})
    own_id, spoiled = own.json()["order_id"], f"the lot spoiled in the rain {tag}"
    theirs = await cli(
        caravan, "orders", "cancel", own_id, "--reason", spoiled, CARAVAN_TOKEN=token
    )
    assert theirs.returncode == 0, theirs.stderr
    found = json.loads((await cli(caravan, "audit", "--target", own_id, "--json")).stdout)
    operators = {"by": "operator", "reason_code": "cancelled_by_operator"}
    assert [(e["actor"], e["detail"]) for e in found["entries"]] == [
        (operator, {"reason": spoiled} | operators)
    ], found
    # Who asked comes first: on a terminal of 80 columns, cut to three lines, it is said.
    narrow = await cli(caravan, "audit", "--target", own_id, COLUMNS="80")
    cells = [
        cut[3].strip() for line in narrow.stdout.splitlines() if len(cut := line.split("│")) > 3
    ]
    assert cells[0] == "by: operator; reason:", narrow.stdout


async def test_a_cancellation_at_its_buyers_word_sends_what_an_older_orders_service_takes(
    no_payments: System,
) -> None:
    """``caravan orders cancel --by buyer`` sent ``{"by": "buyer"}``, which an orders service
    of before operators' own cancellations refuses (422: a field it does not know), in a
    rolling upgrade or on a host not upgraded yet: it now sends the API's default, no body
    (with ``--reason``, the reason alone), as the commands of before did; the operator's own
    sends ``by``. Each request seen on its way to the orders API, through a forwarder, and
    each order cancelled as asked."""
    caravan = no_payments
    seen: list[bytes] = []

    def heard(data: bytes) -> bool:  # every byte the command sends, none held
        seen.append(data)
        return False

    passing = asyncio.Event()
    passing.set()
    orders_port = int(caravan.procs.env["CARAVAN_HTTP_PORT"])
    to_orders = forwarder("127.0.0.1", orders_port, passing, heard)
    port = free_port()
    asked = {
        ("--by", "buyer"): (None, "cancelled_by_buyer"),
        ("--by", "buyer", "--reason", "phoned"): ({"reason": "phoned"}, "cancelled_by_buyer"),
        (): ({"by": "operator"}, "cancelled_by_operator"),
    }
    async with await asyncio.start_server(to_orders, "127.0.0.1", port):
        for options, (body, reason) in asked.items():
            placed = await caravan.client.post(
                "/orders", json=BODY, headers={"Idempotency-Key": ref("AUDIT")}
            )
            order_id = placed.json()["order_id"]
            seen.clear()
            done = await cli(
                caravan, "orders", "cancel", order_id, *options, CARAVAN_HTTP_PORT=str(port)
            )
            assert done.returncode == 0, done.stderr
            head, _, sent = b"".join(seen).partition(b"\r\n\r\n")
            line = head.split(b"\r\n")[0]  # not the headers: they hold the token
            assert line.startswith(f"POST /orders/{order_id}/cancel ".encode()), line
            assert (json.loads(sent) if sent else None) == body, (options, line, sent)
            view = await caravan.client.get(f"/orders/{order_id}")
            assert view.json()["reason"] == reason, view.text
