"""What ``caravan parked list`` says of an event parked until its order's ``order.placed``:
how long it has waited, and why, as orders knows the order."""

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from typer.testing import CliRunner

from caravan import cli
from caravan.ops import parked as ops_parked
from caravan.ops.parked import Parked, Placed, age
from caravan.output import OperatorError

AT = datetime(2026, 12, 6, 9, 0, 0, tzinfo=UTC)


def parked(order: Placed | None) -> Parked:
    return Parked("platform", "caravan/orders|e-1", "e-1", "order.cancelled", "o-1", "t", AT, order)


def test_an_event_of_an_order_orders_never_placed_waits_for_nothing() -> None:
    said = parked(None).why(AT + timedelta(days=3, hours=4, minutes=5))
    assert said == (
        "waits 3d 4h for the order.placed of o-1: orders has no such order, so none will come"
        " (a forged or mistaken event, or an order lost before orders placed it)"
    )


def test_an_event_of_an_order_orders_placed_waits_for_its_order_placed_on_the_way() -> None:
    """One a replay skipped the ``order.placed`` of (``--allow-skip``) waits until the inbox's
    retention prunes it, 38 days, the alert firing, as nothing reads it again by itself: the
    list said only "before a replay's start", and the runbook to leave it. It names the
    replay from the order's placing that has it read (a drill of 2026-12-07)."""
    placed = AT - timedelta(seconds=30, milliseconds=812)
    said = parked(Placed("pending", placed)).why(AT + timedelta(minutes=12))
    assert said == (
        "waits 12m 0s for the order.placed of o-1: orders placed it 2026-12-06T08:59:29+00:00"
        " (pending), its order.placed not handled by platform yet: dead-lettered (caravan dlq"
        " list --topic orders.events.v1), set aside by orders' outbox, on a partition added"
        " and not read yet, or skipped by a replay that started after it (caravan pause"
        " platform, caravan replay --topic orders.events.v1 --group caravan-platform"
        " --from-timestamp 2026-12-06T08:59:29+00:00, caravan resume platform: its"
        " order.placed is read again, and this event acted on)"
    )


def test_a_wait_is_said_in_its_two_largest_units() -> None:
    waits = [timedelta(seconds=40), timedelta(minutes=7, seconds=12), timedelta(hours=2, minutes=5)]
    assert [age(w) for w in waits] == ["40s", "7m 12s", "2h 5m"]


def faked(monkeypatch: pytest.MonkeyPatch, listed: list[Parked]) -> list[list[str]]:
    """``listed`` parked; the ids of each drop asked, as it is asked."""
    given: list[list[str]] = []

    async def read(*_: object) -> list[Parked]:
        return listed

    async def drop(_: str, events: list[Parked], **__: object) -> list[Parked]:
        given.append([e.ref for e in events])
        return list(events)

    monkeypatch.setattr(ops_parked, "read", read)
    monkeypatch.setattr(ops_parked, "drop", drop)
    monkeypatch.setenv("DATABASE_URL", "postgresql://caravan@127.0.0.1:1/caravan")
    return given


def test_a_drop_by_filter_leaves_out_events_whose_order_orders_placed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``caravan parked drop --older-than S`` dropped an event whose order orders had placed
    (its order.placed still to come) as readily as a forged one (a verification drill): it
    would never have been acted on. Chosen by a filter, it is left out and said so; by its
    id it is dropped all the same."""
    forged = parked(None)
    waiting = replace(forged, key="caravan/orders|e-2", event_id="e-2", order=Placed("pending", AT))
    given = faked(monkeypatch, [forged, waiting])
    by_filter = CliRunner().invoke(
        cli.app, ["parked", "drop", "--older-than", "0", "--reason", "forged"]
    )
    assert by_filter.exit_code == 0, by_filter.output
    assert given == [[forged.ref]]
    left = f"left out: {waiting.ref}, orders placed order o-1: it is acted on once platform"
    assert left in " ".join(by_filter.output.split()), by_filter.output
    by_id = CliRunner().invoke(cli.app, ["parked", "drop", waiting.ref, "--reason", "stuck"])
    assert by_id.exit_code == 0, by_id.output
    assert given[-1] == [waiting.ref]


def test_a_drop_that_leaves_out_every_event_chosen_exits_2_dropping_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``caravan parked drop --all`` of an event whose order orders placed (a drill of
    2026-12-07: the platform adapter's, a replay having skipped its order.placed) said it left
    out, exited 0, and recorded in the audit trail a drop of no event, as a dry run did: a
    script saw it done. Every one chosen left out, it exits 2 saying nothing was dropped, and
    records nothing, as ``caravan dlq discard`` does of letters all left out."""
    waiting = [
        replace(parked(Placed("pending", AT)), key=f"caravan/orders|e-{n}", event_id=f"e-{n}")
        for n in (1, 2)
    ]
    given = faked(monkeypatch, waiting)
    for dry in ([], ["--dry-run"]):
        done = CliRunner().invoke(cli.app, ["parked", "drop", "--all", "--reason", "x", *dry])
        said = " ".join(done.output.split())
        assert f"left out: {waiting[1].ref}, orders placed order o-1" in said, said
        refused = done.exception
        assert isinstance(refused, OperatorError) and refused.exit_code == 2, said  # main()'s
        assert str(refused) == (
            "nothing dropped: each of the 2 parked events chosen was left out (said above)"
        )
    assert given == [], given
