"""What ``caravan tokens list``, ``caravan inventory stock``, ``caravan platform problems`` and
``callbacks`` and ``caravan dlq list`` print, read at 80 columns: each token's scopes apart,
each SKU's figures under headers that are not broken up, each problem two lines, each callback
four, each dead letter three. The database, the admin API and Kafka are faked."""

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, cast

import pytest
from typer.testing import CliRunner

from caravan import cli, inventory_cli, payments_cli, platform_cli, tokens_cli
from caravan.ops import dlq as ops_dlq
from caravan.ops.dlq import DeadLetter
from shared.auth.tokens import TokenInfo
from tests.unit.conftest import Caravan

SKUS = ["YNG-HONEY-BLACKBEE-500G", "SWN-PEPPER-CAYENNE-1KG"]  # the demo's longest SKUs
FIGURES = ("received", "available", "reserved", "sold", "spoiled", "sellable", "expired_unsold")


def shown(monkeypatch: pytest.MonkeyPatch, *args: str, columns: int = 80) -> str:
    monkeypatch.setenv("COLUMNS", str(columns))  # read by Rich each time; not console.width,
    # whose undo would pin the width it read then on the console for every later test (as
    # output.show does when a table is printed wider than the terminal: keep them narrower)
    done = CliRunner().invoke(cli.app, list(args))
    assert done.exit_code == 0, done.output
    return done.output


def test_a_tokens_scopes_are_listed_apart(monkeypatch: pytest.MonkeyPatch) -> None:
    at = datetime(2026, 12, 3, 9, 12, 28, tzinfo=UTC)
    listed = [
        TokenInfo("desk", ["ops", "orders:read"], at, None),
        TokenInfo("shop", ["orders:read"], at, None, ["storefront/b"]),
    ]

    async def in_tx(database_url: str, work: object) -> list[TokenInfo]:
        return listed

    monkeypatch.setattr(tokens_cli, "_in_tx", in_tx)
    monkeypatch.setattr(tokens_cli, "_database_url", lambda: "postgresql://caravan@db/caravan")
    text = shown(monkeypatch, "tokens", "list")
    # Each token's cells, read across the lines they fold over at 80 columns: its scopes
    # apart, and the orders it reaches (all: unbound; bound, its own and its sources').
    tokens: list[list[str]] = []
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.split("│")[1:-1]]
        if cells and cells[0]:
            tokens.append(cells)
        elif cells:
            tokens[-1] = [
                " ".join(filter(None, pair)) for pair in zip(tokens[-1], cells, strict=True)
            ]
    assert [t[:3] for t in tokens] == [
        ["desk", "ops, orders:read", "all"],
        ["shop", "orders:read", "own, storefront/b"],
    ], text


def test_the_stock_of_every_sku_fits_80_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    def pages(
        base: str, service: str, path: str, params: dict[str, str] | None = None
    ) -> Iterator[dict[str, Any]]:
        yield {"skus": [{"sku": sku, **dict.fromkeys(FIGURES, 1234)} for sku in SKUS]}

    monkeypatch.setattr(inventory_cli, "pages", pages)
    text = shown(monkeypatch, "inventory", "stock", "--url", "http://api")
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 80, text
    heads = [[cell.strip() for cell in line.split("┃")[1:-1]] for line in lines if "sku" in line]
    assert heads == [["sku", "recv", "avail", "resv", "sold", "spoil", "sell", "exp"]], text
    for sku in SKUS:  # one line each, every figure whole on it
        assert [line.count("1234") for line in lines if sku in line] == [len(FIGURES)], text


KINDS = ("unmapped_sku", "cancelled_on_platform", "fulfilled_after_cancelled", "rejected")


def problems_shown(monkeypatch: pytest.MonkeyPatch, *options: str) -> list[list[list[str]]]:
    """``caravan platform problems OPTIONS`` at 80 columns, of ten problems with long details
    (the longest kind among them): each problem's lines, each line's cells."""
    listed = [
        {
            "app": "demo-market",
            "platform_order_id": f"MKT-20261204-{n:04d}",
            "kind": KINDS[n % len(KINDS)],
            "detail": f"problem {n}: platform SKUs "
            + ", ".join(f"'ALI-SKU-{k:03d}'" for k in range(12))
            + " have no mapping",
            "occurrences": n + 1,
            "first_seen_at": f"2026-12-04T09:{n:02d}:28.123456+00:00",
            "resolved_at": None,
        }
        for n in range(10)
    ]

    def pages(
        base: str, service: str, path: str, params: dict[str, str], options: Any
    ) -> Iterator[Any]:
        yield {"problems": listed, "next": None}

    monkeypatch.setattr(platform_cli, "pages", pages)
    text = shown(monkeypatch, "platform", "problems", "--url", "http://api", *options)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 80, text
    rows: list[list[list[str]]] = []
    for line in lines:
        cells = [cell.strip() for cell in line.split("│")[1:-1]]
        if cells and cells[0] == "demo-market":
            rows.append([])
        if cells and rows:
            rows[-1].append(cells)
    assert len(rows) == len(listed), text
    for n, row in enumerate(rows):
        assert row[0][:3] == ["demo-market", KINDS[n % len(KINDS)], str(n + 1)], text
        assert row[1][:2] == [f"MKT-20261204-{n:04d}", f"2026-12-04T09:{n:02d}:28+00:00"], text
    return rows


def test_ten_platform_problems_fit_80_columns_two_lines_each(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The detail folded onto ten lines of eight characters beside the ids; now each problem
    is two lines, the detail cut at a word to the room left."""
    for n, row in enumerate(problems_shown(monkeypatch)):
        assert len(row) == 2, row
        detail = " ".join(cells[3] for cells in row)
        assert detail.startswith(f"problem {n}: platform SKUs") and detail.endswith("…"), row
        assert len(detail) > 30, row  # room left for it


def test_platform_problems_full_shows_each_detail_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    for n, row in enumerate(problems_shown(monkeypatch, "--full")):
        detail = " ".join(cells[3] for cells in row)
        assert detail.startswith(f"problem {n}: ") and detail.endswith(
            "'ALI-SKU-011' have no mapping"
        )


ERRORS = {  # a last error of each length: none yet, short, and one that runs on
    "delivered": None,
    "sending": "503",
    "failed": "409 Conflict: the order MKT-20261204-0002 is already closed on the platform"
    " (status 'cancelled' since 2026-12-04T09:40:00Z), no further status is taken",
}


def test_platform_callbacks_fit_80_columns_four_lines_each(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With two UUIDs in nine columns the table was printed wider than 80 and the outcome
    folded to "conf"/"irmed"; now each callback is four lines, its event id (what ``retry``
    takes) and order id whole, times to the second with their zone (``dlq list``'s), the
    last error cut at a word to the room left."""
    listed: list[dict[str, Any]] = [
        {
            "event_id": f"0193a1b2-7c3d-7e4f-8a9b-0c1d2e3f4a5{n}",
            "app": "demo-market",
            "platform_order_id": f"MKT-20261204-000{n}",
            "order_id": f"0193a1b2-0000-7e4f-8a9b-0c1d2e3f4a5{n}",
            "outcome": "confirmed",
            "status": status,
            "attempts": 30,
            "created_at": f"2026-12-04T09:1{n}:28.123456+00:00",
            "last_error": error,
        }
        for n, (status, error) in enumerate(ERRORS.items())
    ]

    def pages(
        base: str, service: str, path: str, params: dict[str, str], options: Any
    ) -> Iterator[Any]:
        yield {"callbacks": listed, "next": None}

    monkeypatch.setattr(platform_cli, "pages", pages)
    text = shown(monkeypatch, "platform", "callbacks", "--url", "http://api")
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 80, text
    rows: list[list[list[str]]] = []
    for line in lines:
        cells = [cell.strip() for cell in line.split("│")[1:-1]]
        if cells and cells[0].startswith("0193a1b2-7c3d-"):
            rows.append([])
        if cells and rows:
            rows[-1].append(cells)
    assert len(rows) == len(listed), text
    for n, (row, c) in enumerate(zip(rows, listed, strict=True)):
        assert [cells[:2] for cells in row] == [
            [c["event_id"], "demo-market"],
            [c["order_id"], c["platform_order_id"]],
            [f"2026-12-04T09:1{n}:28+00:00", "confirmed"],
            ["", f"{c['status']}, 30"],
        ], row
        said, error = " ".join(cells[2] for cells in row).strip(), c["last_error"] or ""
        assert said == error or (said.endswith("…") and error.startswith(said[:-1])), row
        assert said == error or len(said) >= 40, row  # room left for it
    assert [" ".join(cells[2] for cells in row).strip()[-1:] for row in rows] == ["", "3", "…"]


REASONS = {  # a reason of each length, and the longest topic and consumer group
    ("orders.requests.v1", "caravan-orders"): "the value is not JSON: unquoted text at line 1"
    " column 1 (JSON leaves only true, false and null unquoted)",
    ("notifications.events.v1", "caravan-notifications"): "data.to: String should match"
    " pattern '^\\+[1-9][0-9]{6,14}$'; data.segments: Input should be greater than 0",
    ("orders.events.v1", "caravan-inventory"): "the value is empty (0 bytes)",
}


def letters_shown(
    monkeypatch: pytest.MonkeyPatch,
    *args: str,
    redriven: dict[int, ops_dlq.Closed] | None = None,
    said: list[str] | None = None,
    redrive_of: dict[int, str] | None = None,
    listed: list[int] | None = None,
    values: dict[int, bytes] | None = None,
) -> list[list[list[str]]]:
    """``caravan dlq ARGS`` at 80 columns, of a dead letter for each of :data:`REASONS`
    (the audit trail saying the letters of ``redriven`` were redriven, or cannot tell, if
    None; its value ``{}`` but those ``values`` give): each letter's lines, each line's
    cells (of those ``listed``: all by default); what it printed apart in ``said``."""
    letters = [
        DeadLetter(
            f"{topic}.dlq",
            0,
            12345 + n,
            datetime(2026, 12, 4, 12, n, 5, 123456, tzinfo=UTC),
            b"SWN-1",
            (values or {}).get(n, b"{}"),
            {
                "dlq.error": "invalid_data",
                "dlq.error.message": reason,
                "dlq.group": group,
                "dlq.partition": "2",
                "dlq.offset": str(67890 + n),
                **({"dlq.redriven-from": (redrive_of or {})[n]} if n in (redrive_of or {}) else {}),
            },
        )
        for n, ((topic, group), reason) in enumerate(REASONS.items())
    ]

    async def read(bootstrap: str) -> list[DeadLetter]:
        return letters

    async def audited(
        database_url: str, letters: list[DeadLetter]
    ) -> tuple[dict[str, ops_dlq.Closed], str | None]:
        if redriven is None:
            return {}, "cannot reach PostgreSQL: [Errno 111] Connection refused"
        return {letters[n].ref: sent for n, sent in redriven.items()}, None

    monkeypatch.setattr(ops_dlq, "read", read)
    monkeypatch.setattr(ops_dlq, "closed", audited)
    monkeypatch.setattr(cli, "_named_database_url", lambda: "postgresql://caravan@db/caravan")
    text = shown(monkeypatch, "dlq", *args)
    apart = [line for line in text.splitlines() if not line.startswith(("┏", "┃", "┡", "│", "└"))]
    if said is not None:
        said += apart
    assert max(len(line) for line in text.splitlines() if line not in apart) <= 80, text
    rows: list[list[list[str]]] = []
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.split("│")[1:-1]]
        if cells and cells[1] == "invalid_data":  # a letter's first line
            rows.append([])
        if cells and rows:
            rows[-1].append(cells)
    chosen = range(len(letters)) if listed is None else listed
    assert [row[0][0] for row in rows] == [letters[n].ref for n in chosen], text
    return rows


def test_dead_letters_fit_80_columns_three_lines_each(monkeypatch: pytest.MonkeyPatch) -> None:
    """They wrapped into a table no one could read: six columns, the reason folded beside
    the ids; now each letter is three lines, the reason cut at a word to the room left."""
    rows = letters_shown(monkeypatch, "list")
    for n, (row, ((topic, group), reason)) in enumerate(zip(rows, REASONS.items(), strict=True)):
        assert len(row) == 3, row
        assert [cells[:2] for cells in row] == [
            [f"{topic}.dlq:0:{12345 + n}", "invalid_data"],
            [f"{topic}:2:{67890 + n}", group],
            [f"2026-12-04T12:0{n}:05+00:00", "-"],
        ], row
        said = " ".join(cells[2] for cells in row).strip()
        assert said == reason or (said.endswith("…") and reason.startswith(said[:-1])), row
        assert len(said) >= len("the value is empty (0 bytes)"), row  # room left for it
    assert [" ".join(c[2] for c in row).strip()[-1] for row in rows] == ["…", "…", ")"], rows


SOURCES = {  # the value of each letter of REASONS: not JSON, JSON naming a source, none
    0: b"unquoted text",
    1: b'{"id": "e-1", "source": "storefront/shawan-center", "type": "sms.sent"}',
    2: b"",
}


def test_each_letter_says_the_source_its_record_names_and_source_chooses_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Which storefront sent 200 bad requests took ``dlq show`` one letter at a time: a
    letter's source is its third line under its error and group (``-`` where its value is
    not JSON or names none), and ``--source`` lists only that source's letters."""
    rows = letters_shown(monkeypatch, "list", values=SOURCES)
    assert [row[2][1] for row in rows] == ["-", "storefront/shawan-center", "-"], rows
    said: list[str] = []
    chosen = ("list", "--source", "storefront/shawan-center")
    rows = letters_shown(monkeypatch, *chosen, values=SOURCES, said=said, listed=[1], redriven={})
    assert said[0].strip() == "1 dead letter(s), 1 waiting", said
    assert rows[0][2][1] == "storefront/shawan-center", rows
    # A redrive (and a discard, chosen alike) by --source takes only that source's letters.
    sent: list[list[str]] = []

    async def redrive(*args: object, **kwargs: object) -> ops_dlq.Redrive:
        refs = [d.ref for d in cast(list[DeadLetter], args[2])]
        sent.append(refs)
        return ops_dlq.Redrive(sent=refs, before={})

    monkeypatch.setattr(ops_dlq, "redrive", redrive)
    shown(monkeypatch, "dlq", "redrive", "--source", "storefront/shawan-center", "--dry-run")
    assert sent == [["notifications.events.v1.dlq:0:12346"]], sent
    # Junk's source, as long as an envelope's may be, a newline in it: one line, cut.
    junk = b'{"source": "storefront/\\n' + b"x" * 240 + b'"}'
    letter = DeadLetter("orders.requests.v1.dlq", 0, 1, datetime.now(UTC), None, junk, {})
    assert letter.source == "storefront/\n" + "x" * 240
    assert cli._source_said(letter) == "storefront/?" + "x" * 51 + "…"


def test_stuck_piped_prints_each_value_whole_on_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """``caravan stuck | cat`` (no terminal, no ``COLUMNS``) squeezed the table to 80 columns:
    the source ``storefront/walk`` came out as ``stor/efro/nt/w/alk`` on five lines."""
    from caravan import admin_api

    orders = [
        {
            "order_id": f"0193a1b2-7c3d-7e4f-8a9b-0c1d2e3f4a5{n}",
            "order_ref": f"SHAWAN-20261204-000{n}",
            "source": "storefront/walk",
            "placed_at": f"2026-12-04T09:1{n}:28.123456+00:00",
            "stock": "waiting for inventory",
            "payment": "waiting for payments",
        }
        for n in range(3)
    ]

    def call(base: str, service: str, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        return {"older_than_seconds": 300.0, "orders": orders, "total": len(orders)}

    monkeypatch.setattr(admin_api, "call", call)
    monkeypatch.delenv("COLUMNS", raising=False)
    done = CliRunner().invoke(cli.app, ["stuck"])
    assert done.exit_code == 0, done.output
    lines = done.output.splitlines()
    for o in orders:  # each order on one line, every value of it whole, its time as others
        (line,) = [line for line in lines if o["order_id"] in line]
        shown = {**o, "placed_at": o["placed_at"].replace(".123456", "")}
        assert all(value in line for value in shown.values()), done.output


def test_stuck_with_nothing_stuck_says_so_and_the_threshold_it_looked_with(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``caravan stuck`` with nothing stuck printed the title and the headers of an empty
    table, which read as something that failed to show."""
    from caravan import admin_api

    def call(base: str, service: str, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        return {"older_than_seconds": 120.0, "orders": [], "total": 0}

    monkeypatch.setattr(admin_api, "call", call)
    done = CliRunner().invoke(cli.app, ["stuck", "--older-than", "120"])
    assert (done.exit_code, done.output) == (0, "no order stuck: none pending over 120s\n")


def test_a_letter_redriven_before_says_when_and_by_whom_on_a_fourth_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``dlq list`` did not say which letters were redriven already (``dlq redrive`` leaves
    them out); the audit trail says when and by whom, under the letter's time and group."""
    at = datetime(2026, 12, 4, 13, 0, 7, 654321, tzinfo=UTC)
    said: list[str] = []
    rows = letters_shown(
        monkeypatch, "list", redriven={1: ops_dlq.Closed(at, "test-operator")}, said=said
    )
    assert [len(row) for row in rows] == [3, 4, 3], rows
    assert rows[1][3][:2] == ["redriven 2026-12-04T13:00:07+00:00", "by test-operator"], rows
    assert not any("redriven" in cells[0] for row in (rows[0], rows[2]) for cells in row), rows
    assert not any("not known" in line for line in said), said


def test_dlq_list_says_how_many_wait_and_waiting_lists_only_those(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Its title counted every letter kept, redriven and discarded alike (2 of 4 discarded
    on a drill's topic), and nothing listed only those still waiting for an operator."""
    at = datetime(2026, 12, 4, 13, 0, 7, tzinfo=UTC)
    closed = {
        0: ops_dlq.Closed(at, "test-operator", discarded="junk"),
        2: ops_dlq.Closed(at, "test-operator"),
    }
    said: list[str] = []
    letters_shown(monkeypatch, "list", redriven=closed, said=said)
    assert said[0].strip() == "3 dead letter(s), 1 waiting", said
    said.clear()
    rows = letters_shown(monkeypatch, "list", "--waiting", redriven=closed, said=said, listed=[1])
    assert [line.strip() for line in said] == ["1 dead letter(s) waiting, of 3"], said
    assert [len(row) for row in rows] == [3], rows
    # The audit trail unable to tell which wait: every letter, saying it is not known.
    said.clear()
    letters_shown(monkeypatch, "list", "--waiting", said=said)
    assert said[0].strip() == "3 dead letter(s)" and "is not known" in said[1], said


def test_dlq_show_prints_the_key_decoded(monkeypatch: pytest.MonkeyPatch) -> None:
    """It printed ``key: b'junk1'``, Python's notation of bytes, not the key."""
    letter = DeadLetter(
        "orders.requests.v1.dlq", 0, 7, datetime(2026, 12, 4, tzinfo=UTC), b"junk1", b"{}", {}
    )
    unkeyed = DeadLetter("orders.requests.v1.dlq", 0, 8, letter.time, None, b"{}", {})

    async def read(bootstrap: str) -> list[DeadLetter]:
        return [letter, unkeyed]

    monkeypatch.setattr(ops_dlq, "read", read)
    assert "key: junk1" in shown(monkeypatch, "dlq", "show", letter.ref).splitlines()
    assert "key: (none)" in shown(monkeypatch, "dlq", "show", unkeyed.ref).splitlines()


def test_a_letter_discarded_says_when_by_whom_and_why_on_its_last_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A letter closed by ``dlq discard`` says so where a redriven one says it was sent back,
    the discard's reason beside it (cut to the room left), the letter's own reason above."""
    at = datetime(2026, 12, 4, 13, 0, 7, tzinfo=UTC)
    why = "a third party's junk that nobody can mend, told to them on the phone today"
    closed = {0: ops_dlq.Closed(at, "test-operator", discarded=why)}
    rows = letters_shown(monkeypatch, "list", redriven=closed)
    assert [len(row) for row in rows] == [4, 3, 3], rows
    assert rows[0][3][:2] == ["discarded 2026-12-04T13:00:07+00:00", "by test-operator"], rows
    said = rows[0][3][2]
    assert said.endswith("…") and f"why: {why}".startswith(said.removesuffix("…")), rows
    assert len(said) > len("why: …"), rows
    reason = next(iter(REASONS.values()))
    above = " ".join(cells[2] for cells in rows[0][:3]).strip()
    assert reason.startswith(above.removesuffix("…")), rows


def test_dead_letters_are_listed_as_ever_when_the_audit_trail_cannot_tell_saying_so_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    said: list[str] = []
    rows = letters_shown(monkeypatch, "list", said=said)
    assert [len(row) for row in rows] == [3, 3, 3], rows
    assert said[1:] == [
        "which letters were redriven or discarded before is not known: cannot reach PostgreSQL:"
        " [Errno 111] Connection refused"
    ], said


def test_a_letter_of_a_redriven_record_names_the_letter_it_was_sent_back_from(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A letter dead-lettered again after a redrive was not linked to the one it came from."""
    at = datetime(2026, 12, 4, 13, 0, 7, tzinfo=UTC)
    first = "orders.events.v1.dlq:0:12000"
    rows = letters_shown(
        monkeypatch,
        "list",
        redriven={2: ops_dlq.Closed(at, "test-operator")},
        redrive_of={2: first},
    )
    assert [len(row) for row in rows] == [3, 3, 5], rows
    assert [cells[:2] for cells in rows[2][3:]] == [
        [first, "sent back as this"],
        ["redriven 2026-12-04T13:00:07+00:00", "by test-operator"],
    ], rows


def test_every_buyers_orders_fit_80_columns_ids_and_statuses_whole(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``caravan orders list``: each order's id, time placed, status and reason whole on their
    lines at 80 columns; the newest ``--limit`` of more, the title saying there are more."""
    from caravan import admin_api

    orders: list[dict[str, Any]] = [
        {
            "order_id": f"0193a1b2-7c3d-7e4f-8a9b-0c1d2e3f4a5{n}",
            "order_ref": f"SHAWAN-20261204-000{n}",
            "buyer_id": f"buyer-000{n}",
            "source": "storefront/shawan-center",
            "status": "cancelled",
            "reason": "cancelled_by_buyer",
            "total_fen": 35000,
            "placed_at": f"2026-12-04T09:1{n}:28.123456+00:00",
        }
        for n in range(3)
    ]
    asked: list[dict[str, str]] = []

    def pages(
        base: str, service: str, path: str, params: dict[str, str], options: object = None
    ) -> Iterator[dict[str, Any]]:
        asked.append(params)
        yield {"items": orders[:2], "next_cursor": "c"}
        yield {"items": orders[2:], "next_cursor": None}

    monkeypatch.setattr(admin_api, "pages", pages)
    text = shown(monkeypatch, "orders", "list", "--reason", "cancelled_by_buyer", "--limit", "2")
    assert asked == [{"reason": "cancelled_by_buyer", "limit": "2"}]
    assert text.splitlines()[0] == "the newest 2 order(s): more with a higher --limit"
    assert max(len(line) for line in text.splitlines()) <= 80, text
    for o in orders[:2]:
        for value in (o["order_id"], o["placed_at"][:19], "cancelled_by_buyer"):
            assert value in text, (value, text)
    assert orders[2]["order_id"] not in text


def test_payments_fit_80_columns_their_calls_and_hold_shown(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``caravan payments list`` folded its six columns at 80 to four characters a line (a
    time on seven lines), and did not show what ``GET /payments`` says of a charge due: how
    many calls, how many never reached the gateway, the time it is made by. Now each
    payment is three lines or more: ids and times whole, the figures beside them. A loan,
    lent from the credit line, was shown "0 call(s)", as a charge the gateway was never
    asked for yet: it says "no call (lent)"; a platform's order, paid to the platform
    (``collected_by``), "no call (platform)"."""
    common: dict[str, Any] = {"buyer_id": "buyer-0001", "method": "prepaid", "amount_fen": 3500}
    common |= {"collected_by": None, "voided_after_sale_at": None, "unplaced_at": None}
    charging: dict[str, Any] = {
        **common,
        "order_id": "0193a1b2-7c3d-7e4f-8a9b-0c1d2e3f4a50",
        "status": "charging",
        "updated_at": "2026-12-04T09:12:28.123456+00:00",
        "held_until": "2026-12-04T09:22:28.123456+00:00",
        "attempts": 41,
        "unreached": 40,
        "refund_owed_fen": None,
        "refund_reference": None,
        "gateway_refusal": None,
        "last_error": "/charges/0193a1b2-7c3d-7e4f-8a9b-0c1d2e3f4a50: ConnectError",
    }
    refunded = {
        **charging,
        "order_id": "0193a1b2-7c3d-7e4f-8a9b-0c1d2e3f4a51",
        "status": "refunded",
        "unreached": 0,
        "attempts": 3,
        "refund_owed_fen": 3500,
        "refund_reference": "BANK-LIST-1",
        "gateway_refusal": 'HTTP 422: {"title":"void refused","detail":"settled"}',
        "last_error": None,
    }
    owed = {**refunded, "order_id": charging["order_id"][:-1] + "2", "status": "void_refused"}
    owed |= {"refund_reference": None}
    loan = {**owed, "order_id": charging["order_id"][:-1] + "3", "status": "voided"}
    loan |= {"method": "microloan", "attempts": 0, "refund_owed_fen": 1000}
    loan |= {"gateway_refusal": None, "loan_id": "0193a1b2-7c3d-7e4f-8a9b-0c1d2e3f4a59"}
    collected = {**loan, "order_id": charging["order_id"][:-1] + "4", "status": "authorized"}
    collected |= {"method": "prepaid", "refund_owed_fen": None, "loan_id": None}
    collected |= {"collected_by": "demo-market"}
    listed = [charging, refunded, owed, loan]
    monkeypatch.setattr(payments_cli, "newest", lambda *args: (listed, False))
    text = shown(monkeypatch, "payments", "list", "--status", "charging", "--url", "http://a")
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 80, text
    rows = [[c.strip() for c in line.split("│")[1:-1]] for line in lines if "│" in line]
    assert [row[:2] for row in rows] == [
        [charging["order_id"], "prepaid"],
        ["buyer-0001", "3500 fen"],
        ["2026-12-04T09:12:28+00:00", "41 call(s)"],
        ["charge by 2026-12-04T09:22:28+00:00", "40 unreached"],
        [refunded["order_id"], "prepaid"],
        ["buyer-0001", "3500 fen"],
        ["2026-12-04T09:12:28+00:00", "3 call(s)"],
        ["refunded BANK-LIST-1", "paid back 3500"],
        [owed["order_id"], "prepaid"],
        ["buyer-0001", "3500 fen"],
        ["2026-12-04T09:12:28+00:00", "3 call(s)"],
        ["", "owed 3500"],
        [loan["order_id"], "microloan"],
        ["buyer-0001", "3500 fen"],
        ["2026-12-04T09:12:28+00:00", "no call (lent)"],
        ["", "owed 1000"],
    ], text
    assert "".join(row[2] for row in rows[:4]) == charging["last_error"], text
    # Why the void was refused: the column was empty, none of its calls having failed.
    refused = 'void refused: HTTP 422: {"title":"void refused","detail":"settled"}'
    for row in (rows[4:8], rows[8:]):  # folded at words or within them: spaces aside
        assert "".join(r[2] for r in row).replace(" ", "") == refused.replace(" ", ""), text
    monkeypatch.setattr(payments_cli, "newest", lambda *args: ([collected], False))
    text = shown(monkeypatch, "payments", "list", "--status", "authorized", "--url", "http://a")
    rows = [[c.strip() for c in line.split("│")[1:-1]] for line in text.splitlines()]
    assert [row[:2] for row in rows if row] == [
        [collected["order_id"], "prepaid"],
        ["buyer-0001", "3500 fen"],
        ["2026-12-04T09:12:28+00:00", "no call (platform)"],
    ], text


def test_platform_retry_says_what_it_sent_again_within_80_columns(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``caravan platform retry``'s answer was one line of 101 columns, folded at 80; now it
    fits, counts of three digits each."""
    told = {"requeued": 999, "failed": 500, "pending": 499, "event_ids": []}
    monkeypatch.setattr(platform_cli, "_call", lambda *_, **__: told)
    text = shown(monkeypatch, "platform", "retry", "--app", "demo-market", "--url", "http://api")
    said = "999 callback(s) sent again: 500 failed, afresh; 499 pending, now, attempts kept"
    assert text.splitlines() == [said] and len(said) <= 80, text


def test_a_drop_redrive_or_discard_of_nothing_says_so_in_one_line_as_a_list_does(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``caravan parked drop --all --dry-run`` with nothing parked (and ``dlq redrive``,
    ``discard`` with no dead letter) refused in a usage box, "no parked event matches", exit 2,
    where ``parked list`` says "no parked event", exit 0: none to close is no mistake."""
    from caravan.ops import parked as ops_parked

    async def nothing(*_: object, **__: object) -> list[Any]:
        return []

    monkeypatch.setattr(ops_dlq, "read", nothing)
    monkeypatch.setattr(ops_parked, "read", nothing)
    monkeypatch.setenv("DATABASE_URL", "postgresql://caravan@127.0.0.1:1/caravan")
    why = ("--reason", "never placed")
    said = {
        ("parked", "drop", "--all", "--dry-run", *why): "no parked event",
        ("parked", "drop", "--older-than", "86400", *why): "no parked event matches"
        " --older-than 86400",
        ("dlq", "redrive", "--all"): "no dead letter",
        ("dlq", "discard", "--topic", "orders.requests.v1", *why): "no dead letter matches"
        " --topic orders.requests.v1",
    }
    for args, line in said.items():
        text = shown(monkeypatch, *args)
        assert text == f"{line}\n", (args, text)


def test_a_spoilage_report_of_no_lot_is_one_line_and_of_lots_ends_with_its_totals(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``caravan inventory spoiled --sku S`` of no lot printed "no lot ... matches --sku S"
    and "as of DAY: spoiled 0, expired unsold 0" below it, where a list of nothing says one
    line (docs/commands.md); the totals stay under the lots they add up."""
    lots: list[dict[str, Any]] = []

    def report(*_: object, **__: object) -> Iterator[dict[str, Any]]:
        spoiled = sum(lot["spoiled"] for lot in lots)
        unsold = sum(lot["expired_unsold"] for lot in lots)
        yield {"day": "2026-12-07", "spoiled": spoiled, "expired_unsold": unsold, "lots": lots}

    monkeypatch.setattr(inventory_cli, "pages", report)
    args = ("inventory", "spoiled", "--sku", "S", "--url", "http://api")
    assert shown(monkeypatch, *args) == "no lot spoiled or expired unsold matches --sku S\n"
    lots.append(
        {
            "lot_id": "L-1",
            "sku": "S",
            "best_before": "2026-11-30",
            "spoiled": 3,
            "expired_unsold": 12,
        }
    )
    assert (
        shown(monkeypatch, *args).splitlines()[-1]
        == "as of 2026-12-07: spoiled 3, expired unsold 12"
    )


def test_a_platform_retry_of_nothing_says_so_in_one_line_not_counts_of_0(
    caravan: Caravan, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``caravan platform retry --app demo-market`` with no callback failed or pending said
    "0 callback(s) sent again: 0 failed, afresh; 0 pending, now, attempts kept", and so did a
    retry of an event id mistyped, exit 0: now one line as a list of nothing says it, and
    ids of which none was sent again are refused (exit 2), as a redrive's are."""
    told = {"requeued": 0, "failed": 0, "pending": 0, "event_ids": []}
    monkeypatch.setattr(platform_cli, "_call", lambda *_, **__: told)
    url = ("--url", "http://api")
    text = shown(monkeypatch, "platform", "retry", "--app", "demo-market", *url)
    assert text == "no failed or pending callback of demo-market: nothing sent again\n"
    monkeypatch.setenv("COLUMNS", "300")
    code, _, err = caravan("platform", "retry", "01a25009-0000", *url)
    assert code == 2 and "nothing sent again: no failed or pending callback among the" in err, err


def test_every_list_of_nothing_says_so_in_one_line_naming_its_filters(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``dlq list``, ``parked list``, ``orders list``, ``payments list``, ``tokens list`` and
    the platform's lists printed a table titled "0 parked event(s)" (the platform's, no
    title) above the headers of no rows, which read as something that failed to show, where
    ``caravan stuck`` says "no order stuck: ...". Each says in one line that there is none,
    and of what filters where it was filtered."""
    from caravan import admin_api
    from caravan.ops import parked as ops_parked

    async def nothing(*_: object, **__: object) -> list[Any]:
        return []

    def no_pages(*_: object, **__: object) -> Iterator[dict[str, Any]]:
        yield {"items": [], "next_cursor": None}

    def no_platform_rows(*_: object, **__: object) -> Iterator[dict[str, Any]]:
        yield {"problems": [], "callbacks": [], "mappings": [], "next": None}

    monkeypatch.setattr(ops_dlq, "read", nothing)
    monkeypatch.setattr(ops_parked, "read", nothing)
    monkeypatch.setattr(admin_api, "pages", no_pages)
    monkeypatch.setattr(payments_cli, "newest", lambda *args: ([], False))
    monkeypatch.setattr(tokens_cli, "_in_tx", nothing)
    monkeypatch.setattr(tokens_cli, "_database_url", lambda: "postgresql://caravan@db/caravan")
    monkeypatch.setattr(platform_cli, "pages", no_platform_rows)
    monkeypatch.setenv("DATABASE_URL", "postgresql://caravan@127.0.0.1:1/caravan")
    since = "2026-12-06T08:00:00+00:00"
    url = ("--url", "http://api")
    said = {
        ("dlq", "list"): "no dead letter",
        ("dlq", "list", "--error", "invalid_data", "--since", since): "no dead letter matches"
        f" --error invalid_data --since {since}",
        ("dlq", "list", "--waiting"): "no dead letter waiting",
        ("parked", "list"): "no parked event",
        ("parked", "list", "--service", "platform", "--older-than", "60"): "no parked event"
        " matches --service platform --older-than 60",
        ("orders", "list"): "no order",
        ("orders", "list", "--status", "pending", "--buyer", "b-1"): "no order matches"
        " --status pending --buyer b-1",
        ("payments", "list", "--status", "void_refused", *url): "no void_refused payment",
        ("tokens", "list"): "no token",
        ("platform", "problems", *url): "no open problem",
        ("platform", "problems", "--all", "--app", "t-market", *url): "no problem matches"
        " --app t-market",
        ("platform", "callbacks", "--status", "failed", *url): "no callback matches --status"
        " failed",
        ("platform", "mappings", "t-market", "--kind", "sku", *url): "no mapping of t-market"
        " matches --kind sku",
    }
    for args, line in said.items():
        text = shown(monkeypatch, *args)
        assert text == f"{line}\n", (args, text)
