"""Each service's migrations build exactly the schema its tables declare, and undo cleanly;
a service refuses to start on a schema behind its code, and a downgrade to lose data."""

import asyncio
import logging
import os
import subprocess
import sys
from datetime import UTC, date, datetime
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import CheckConstraint, MetaData, make_url, select, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.sql import ClauseElement

from caravan import system
from caravan.checkout import REPO_ROOT
from services import SERVICES
from services.inventory.adapters.queries import stock_totals
from services.inventory.adapters.repository import _LOTS, _SEASONS
from services.inventory.adapters.tables import metadata as inventory
from services.inventory.bootstrap import bootstrap as bootstrap_inventory
from services.notifications.adapters.tables import metadata as notifications
from services.notifications.dispatch import _DUE
from services.orders.adapters.tables import metadata as orders
from services.orders.entrypoints.queries import listed, order_view, reach
from services.payments.adapters.tables import metadata as payments
from services.payments.handlers import OWED
from services.payments.prepaid import due_calls
from services.payments.reminders import due_instalments
from services.platform.adapters.tables import callbacks, problems
from services.platform.adapters.tables import metadata as platform
from services.platform.entrypoints.http import CALLBACKS_ORDER, PROBLEMS_ORDER
from services.platform.handlers import OPEN_BY_KIND, OUR_OUTCOME, PLATFORM_ORDERS
from shared import days
from shared.auth import tokens
from shared.auth.tables import metadata as auth
from shared.auth.tokens import Principal
from shared.db.driver import _compiled, driver
from shared.db.migrate import (
    DowngradeRefused,
    SchemaBehind,
    alembic_config,
    migrations_folder,
    upgrade,
)
from shared.messaging.tables import UNSENT
from shared.pagination import newest_first
from shared.settings import Settings
from tests.harness import Heard, System, forwarder, free_port, scratch_database

METADATA = {
    "orders": orders,
    "inventory": inventory,
    "payments": payments,
    "notifications": notifications,
    "platform": platform,
    "auth": auth,
}


def _diff(conn: Connection, metadata: MetaData) -> list[object]:
    ctx = MigrationContext.configure(
        conn,
        opts={
            "include_schemas": True,
            "include_name": lambda name, kind, _p: kind != "schema" or name == metadata.schema,
        },
    )
    return [d for d in compare_metadata(ctx, metadata) if "alembic_version" not in str(d)]


def _normal(check: str) -> str:
    """A CHECK's expression as PostgreSQL or a table module writes it, compared without
    parentheses, spaces or case: ``CHECK ((a >= 0))`` is ``a >= 0``."""
    return "".join(c for c in check.removeprefix("CHECK").lower() if c not in "() ")


def _declared_checks(metadata: MetaData) -> set[tuple[str, str]]:
    """(table, expression) of every CHECK the tables declare, on a column or on the table."""
    found = set()
    for table in metadata.tables.values():
        on_columns = [c for column in table.columns for c in column.constraints]
        for check in [*table.constraints, *on_columns]:
            if isinstance(check, CheckConstraint):
                found.add((table.name, _normal(str(check.sqltext))))
    return found


async def test_migrations_match_the_tables_and_downgrade(
    infrastructure: system.Infrastructure,
) -> None:
    async with scratch_database(infrastructure.database_url, "caravan_migrations") as url:
        for name, metadata in METADATA.items():
            cfg = alembic_config(migrations_folder(name), url)
            await asyncio.to_thread(command.upgrade, cfg, "head")
            engine = create_async_engine(url)
            async with engine.connect() as conn:
                assert await conn.run_sync(_diff, metadata) == [], name
                # Alembic's comparison leaves CHECK constraints out: two that a table module
                # declared (and the ledger counted on) were never made.
                rows = await conn.execute(
                    text(
                        "select c.relname, pg_get_constraintdef(k.oid) from pg_constraint k"
                        " join pg_class c on c.oid = k.conrelid"
                        " where k.contype = 'c' and k.connamespace = cast(:s as regnamespace)"
                    ),
                    {"s": name},
                )
                made = {(table, _normal(check)) for table, check in rows}
                assert _declared_checks(metadata) - made == set(), name
            await asyncio.to_thread(command.downgrade, cfg, "base")
            async with engine.connect() as conn:
                left = await conn.scalar(
                    text(
                        "select count(*) from information_schema.tables where table_schema = :s"
                        " and table_name <> 'alembic_version'"
                    ),
                    {"s": name},
                )
            await engine.dispose()
            assert left == 0, name


async def _version(url: str, schema: str) -> str | None:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            query = text(f"select version_num from {schema}.alembic_version")
            version: str | None = await conn.scalar(query)
            return version
    finally:
        await engine.dispose()


async def _execute(url: str, sql: str) -> None:
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text(sql))
    finally:
        await engine.dispose()


async def _migrated(url: str, schema: str, revision: str, *rows: str) -> Config:
    """``schema`` migrated to ``revision`` in ``url``'s database, then ``rows`` (inserts) run
    in order, each in a transaction of its own: its Alembic config."""
    cfg = alembic_config(migrations_folder(schema), url)
    await asyncio.to_thread(command.upgrade, cfg, revision)
    for row in rows:
        await _execute(url, row)
    return cfg


async def test_a_downgrade_that_would_lose_data_refuses_and_without_such_rows_runs(
    infrastructure: system.Infrastructure,
) -> None:
    """Down past orders' outbox refusals (0005), an outbox row set aside would be unsent
    again, for the older relay to stall on it; down past notifications' 0005, the events
    parked until their order.placed would be dropped. Each refuses, saying what it would lose
    and what to do, and the schema stays where it was (one transaction); once those rows are
    gone, both downgrade to base (an empty database: the round trip above)."""
    async with scratch_database(infrastructure.database_url, "caravan_losing") as url:
        orders_cfg, said = await _downgrade_refused(
            url,
            "orders",
            "insert into orders.outbox (topic, value, refused_at, refusal)"
            " values ('orders.events.v1', 'x', now(), 'MessageSizeTooLargeError')",
            "0004",
        )
        assert "1 in orders.outbox where refused_at IS NOT NULL" in said, said
        assert "DELETE FROM orders.outbox WHERE refused_at IS NOT NULL" in said, said
        notifications_cfg, said = await _downgrade_refused(
            url,
            "notifications",
            "insert into notifications.parked (key, order_id, topic, envelope)"
            " values ('k', 'o-1', 'orders.events.v1', '{}')",
            "base",
        )
        assert "1 in notifications.parked" in said, said
        # Down past inventory's 0007, the record of lots corrected would be dropped.
        inventory_cfg, said = await _downgrade_refused(
            url,
            "inventory",
            "with s as (insert into inventory.sellers values ('s', 'S', 'Shawan', '+8613000')),"
            " p as (insert into inventory.products values ('p', 's', 100, '{}')),"
            " l as (insert into inventory.lots (lot_id, sku, received, available,"
            " available_from, best_before) values ('l', 'p', 1, 1, '2026-09-01', '2027-08-31'))"
            " insert into inventory.lot_corrections (correction_id, lot_id, actor, reason,"
            " before, after) values ('c', 'l', 'clerk', 'typo', '{}', '{}')",
            "0006",
        )
        assert "1 in inventory.lot_corrections" in said, said

        await _execute(url, "delete from orders.outbox")
        await _execute(url, "delete from notifications.parked")
        await _execute(url, "delete from inventory.lot_corrections")
        for cfg in (orders_cfg, notifications_cfg, inventory_cfg):
            await asyncio.to_thread(command.downgrade, cfg, "base")
        for schema in ("orders", "notifications", "inventory"):
            assert await _version(url, schema) is None


# (schema, the revision a downgrade past its outbox refusals stops at, what it says), where
# test_a_downgrade_that_would_lose_data_refuses_and_without_such_rows_runs takes orders'.
OUTBOX_REFUSALS = {
    "inventory": ("0003", "1 in inventory.outbox where refused_at IS NOT NULL"),
    "notifications": ("0005", "1 in notifications.outbox where refused_at IS NOT NULL"),
    "payments": ("0010", "1 in payments.outbox where refused_at IS NOT NULL"),
    "platform": ("0002", "1 in platform.outbox where refused_at IS NOT NULL"),
}


@pytest.mark.parametrize("schema", OUTBOX_REFUSALS)
async def test_every_schema_s_outbox_rows_set_aside_hold_its_downgrade_back(
    infrastructure: system.Infrastructure, schema: str
) -> None:
    """Each service's downgrade past its outbox refusals (shared.db.messaging_migration)
    refuses while Kafka's refusals are set aside, as orders' does, and runs once they are
    gone; the platform adapter's past its parked events (0002) too, as notifications'."""
    to, refused = OUTBOX_REFUSALS[schema]
    async with scratch_database(infrastructure.database_url, "caravan_outbox") as url:
        cfg, said = await _downgrade_refused(
            url,
            schema,
            f"insert into {schema}.outbox (topic, value, refused_at, refusal)"
            " values ('t.v1', 'x', now(), 'MessageSizeTooLargeError')",
            to,
        )
        assert refused in said, said
        await _execute(url, f"delete from {schema}.outbox")
        if schema == "platform":
            await _execute(
                url,
                "insert into platform.parked (key, order_id, topic, envelope)"
                " values ('k', 'o-1', 'orders.events.v1', '{}')",
            )
            with pytest.raises(DowngradeRefused) as parked:
                await asyncio.to_thread(command.downgrade, cfg, "0001")
            assert "1 in platform.parked." in str(parked.value), parked.value
            await _execute(url, "delete from platform.parked")
            to = "0001"
        await asyncio.to_thread(command.downgrade, cfg, to)
        assert await _version(url, schema) == to


async def test_orders_without_an_address_or_with_it_erased_do_not_hold_a_downgrade_back(
    infrastructure: system.Infrastructure,
) -> None:
    """Down past orders' 0004 (the delivery column), an order holding an address refuses the
    downgrade; one placed without one (JSON null, as the orders service writes it) or whose
    address was erased (SQL null, orders_delivery_retention_days) loses nothing: once the
    address is erased too, it runs."""
    orders = ", ".join(
        f"('{order_id}', 's', '{order_id}', 'h', 'b', '[]', 'prepaid', 'confirmed', 'done',"
        f" 'done', now(), now(), {delivery})"
        for order_id, delivery in (
            ("held", """'{"county": "Shawan", "address": "Village 3"}'"""),
            ("never", "'null'"),
            ("erased", "NULL"),
        )
    )
    async with scratch_database(infrastructure.database_url, "caravan_erased") as url:
        cfg, said = await _downgrade_refused(
            url,
            "orders",
            "insert into orders.orders (order_id, source, order_ref, request_hash, buyer_id,"
            " lines, payment_method, status, stock, payment, placed_at, deadline_at, delivery)"
            f" values {orders}",
            "0003",
        )
        assert "1 in orders.orders where jsonb_typeof(delivery) = 'object'" in said, said
        await _execute(url, "update orders.orders set delivery = null where order_id = 'held'")
        await asyncio.to_thread(command.downgrade, cfg, "0003")
        assert await _version(url, "orders") == "0003"


async def test_orders_and_tokens_from_before_bound_tokens_are_kept_and_reach_as_before(
    infrastructure: system.Infrastructure,
) -> None:
    """Upgraded from the heads before tokens could be bound (orders 0008, auth 0001) with an
    HTTP order and a token in the database: the token is unbound (it reaches every order, as
    it did), and the order, whose placer was not kept, is no bound token's own."""
    token = tokens.new_token()
    async with scratch_database(infrastructure.database_url, "caravan_reach") as url:
        for schema, before in (("orders", "0008"), ("auth", "0001")):
            cfg = alembic_config(migrations_folder(schema), url)
            await asyncio.to_thread(command.upgrade, cfg, before)
        await _execute(
            url,
            "insert into orders.orders (order_id, source, order_ref, request_hash, buyer_id,"
            " lines, payment_method, status, stock, payment, placed_at, deadline_at) values"
            " ('o-1', 'http', 'SWN-1', 'h', 'b', '[]', 'prepaid', 'pending', 'held', 'none',"
            " now(), now())",
        )
        await _execute(
            url,
            "insert into auth.tokens (name, hash, scopes) values"
            f" ('shop', '{tokens.digest(token)}', '{{orders:read}}')",
        )
        for schema in ("orders", "auth"):
            await asyncio.to_thread(upgrade, migrations_folder(schema), url)
        engine = create_async_engine(url)
        try:
            async with engine.connect() as conn:
                found = (await tokens.lookup(conn, token)).principal
                assert found == Principal("shop", frozenset({"orders:read"}), None)
                view = await order_view(conn, "o-1", reach(found))
                assert view is not None and view.order_ref == "SWN-1"
                bound = Principal("shop", found.scopes, frozenset({"storefront/b"}))
                assert await order_view(conn, "o-1", reach(bound)) is None
        finally:
            await engine.dispose()


async def test_loans_voided_before_payments_0022_say_on_their_payment_what_is_owed_back(
    infrastructure: system.Infrastructure,
) -> None:
    """Upgraded from payments 0021, a loan voided before whose buyer had repaid says on its
    payment what the ledger owes them back (``buyer_refund_payable``); one repaid nothing,
    or refunded since (what was paid back), or a void_refused charge: as they were."""
    ledger = ", ".join(  # each transaction balanced, as the ledger's trigger checks
        f"('{txn}', 'k', '{account}', {fen * sign}, '{loan}')"
        for txn, fen, loan in (
            ("void:o-owes", -1000, "l-owes"),
            ("void:o-refunded", -500, "l-refunded"),
            ("refund:o-refunded", 500, "l-refunded"),
        )
        for account, sign in (("buyer_refund_payable", 1), ("repayments_cash", -1))
    )
    async with scratch_database(infrastructure.database_url, "caravan_owed") as url:
        cfg = await _migrated(
            url,
            "payments",
            "0021",
            "insert into payments.payments (order_id, status, loan_id, refund_owed_fen) values"
            " ('o-owes', 'voided', 'l-owes', NULL), ('o-none', 'voided', 'l-none', NULL),"
            " ('o-refunded', 'refunded', 'l-refunded', 500),"
            " ('o-charge', 'void_refused', NULL, 700), ('o-paid', 'voided', NULL, NULL)",
            "insert into payments.ledger_entries (txn_id, kind, account, amount_fen, loan_id)"
            f" values {ledger}",
        )
        await asyncio.to_thread(command.upgrade, cfg, "0022")
        engine = create_async_engine(url)
        try:
            async with engine.connect() as conn:
                found = await conn.execute(
                    text(
                        "select order_id, refund_owed_fen from payments.payments order by order_id"
                    )
                )
                assert [tuple(r) for r in found] == [
                    ("o-charge", 700),
                    ("o-none", None),
                    ("o-owes", 1000),
                    ("o-paid", None),
                    ("o-refunded", 500),
                ]
        finally:
            await engine.dispose()


async def test_the_instalments_of_loans_voided_before_payments_0029_are_marked_voided(
    infrastructure: system.Infrastructure,
) -> None:
    """Upgraded from payments 0028, the instalments of a loan voided before (its unpaid ones
    marked ``reminders_done`` by its void, as a live loan's announced overdue are) are marked
    ``voided`` and left out of the index of those left unpaid, which the loan book's overdue
    loans read; a live or repaid loan's are as they were. Taken back to 0028, the mark is
    dropped without refusing (the loan says it is voided) and the index holds them again, as
    0028's code reads it."""
    loans = "insert into payments.loans (loan_id, order_id, buyer_id, principal_fen,"
    loans += " outstanding_fen, term_months, status) values " + ", ".join(
        f"('{loan}', 'o-{loan}', 'b', 1000, 0, 2, '{status}')"
        for loan, status in (("l-voided", "voided"), ("l-live", "active"), ("l-repaid", "repaid"))
    )
    instalments = "insert into payments.instalments (loan_id, number, due, amount_fen, paid_fen,"
    instalments += " reminders_done) values " + ", ".join(  # all due a month ago
        f"('{loan}', {number}, current_date - 30, 500, {paid}, {done})"
        for loan, number, paid, done in (
            ("l-voided", 1, 200, "true"),
            ("l-voided", 2, 0, "true"),
            ("l-live", 1, 0, "true"),  # announced overdue
            ("l-live", 2, 0, "false"),
            ("l-repaid", 1, 500, "false"),
            ("l-repaid", 2, 500, "false"),
        )
    )
    left_unpaid = (  # and {}: tables.LEFT_UNPAID, as of each revision
        "select loan_id, number from payments.instalments"
        " where paid_fen < amount_fen and reminders_done{} order by 1, 2"
    )
    async with scratch_database(infrastructure.database_url, "caravan_voided") as url:
        cfg = await _migrated(url, "payments", "0028", loans, instalments)
        engine = create_async_engine(url)

        async def read(query: str) -> list[tuple[Any, ...]]:
            async with engine.connect() as conn:
                return [tuple(r) for r in await conn.execute(text(query))]

        index = (
            "select indexdef from pg_indexes where schemaname = 'payments'"
            " and indexname = 'instalments_left_unpaid'"
        )
        try:
            await asyncio.to_thread(command.upgrade, cfg, "0029")
            marked = await read(
                "select loan_id, number, voided, reminders_done from payments.instalments"
                " order by 1, 2"
            )
            assert marked == [
                ("l-live", 1, False, True),
                ("l-live", 2, False, False),
                ("l-repaid", 1, False, False),
                ("l-repaid", 2, False, False),
                ("l-voided", 1, True, True),
                ("l-voided", 2, True, True),
            ]
            [(made,)] = await read(index)
            assert made.endswith(
                "WHERE ((paid_fen < amount_fen) AND reminders_done AND (NOT voided))"
            )
            assert await read(left_unpaid.format(" and not voided")) == [("l-live", 1)]

            await asyncio.to_thread(command.downgrade, cfg, "0028")
            assert await _version(url, "payments") == "0028"
            [(made,)] = await read(index)
            assert made.endswith("WHERE ((paid_fen < amount_fen) AND reminders_done)"), made
            columns = await read(
                "select column_name from information_schema.columns where table_schema ="
                " 'payments' and table_name = 'instalments' and column_name = 'voided'"
            )
            assert columns == []
            # In 0028's index again, and out of the sweep's still (reminders_done kept).
            held = [("l-live", 1), ("l-voided", 1), ("l-voided", 2)]
            assert await read(left_unpaid.format("")) == held
        finally:
            await engine.dispose()


async def _downgrade_refused(url: str, schema: str, row: str, to: str) -> tuple[Config, str]:
    """With ``schema`` at its head and ``row`` (an insert) added, a downgrade ``to`` refuses
    and leaves it at its head: its Alembic config, and what the refusal said."""
    cfg = await _migrated(url, schema, "head", row)
    with pytest.raises(DowngradeRefused) as refused:
        await asyncio.to_thread(command.downgrade, cfg, to)
    assert await _version(url, schema) == ScriptDirectory.from_config(cfg).get_current_head()
    return cfg, str(refused.value)


def _texts(*rows: tuple[str, str, str, str, str]) -> str:
    """An insert of texts: (sms_id, status, created_at, not_before, provider_id), in SQL."""
    values = ", ".join(
        f"('{i}', '{i}', 'instalment_due', '+8613000000000', 'zh-CN', 't', 'GSM-7', 1, '{status}',"
        f" {created_at}, {not_before}, {provider})"
        for i, status, created_at, not_before, provider in rows
    )
    return (
        'insert into notifications.sms (sms_id, dedup_key, purpose, "to", locale, text, encoding,'
        f" segments, status, created_at, not_before, provider_id) values {values}"
    )


ALLOCATED = """'[{"number": 1, "amount_fen": 300, "interest_fen": 0, "principal_fen": 300}]'"""

# Inventory's lot 'l' of SKU 'k', in SQL: what an insert of a lot's history starts with.
A_LOT = (
    "with s as (insert into inventory.sellers (seller_id, name, county, phone) values"
    " ('s', 'n', 'c', '+8613000000001')), p as (insert into inventory.products (sku,"
    " seller_id, unit_price_fen, name) values ('k', 's', 1, '{}')), l as (insert into"
    " inventory.lots (lot_id, sku, received, available, available_from, best_before)"
    " values ('l', 'k', 4, 4, '2026-01-01', '2026-12-31'))"
)

# (schema, rows, the revision a downgrade stops at, the rows it names, what it says to run)
LOSING = {
    # A text held through quiet hours counts its give-up clock from their end; dropped, the
    # older version counts it from when it was queued. Queued and due at once, or sent: none.
    "notifications 0007 not_before": (
        "notifications",
        _texts(
            ("held", "pending", "now()", "now() + interval '9 hours'", "NULL"),
            ("due", "pending", "now()", "now()", "NULL"),
            ("sent", "sent", "now() - interval '9 hours'", "now()", "'g-1'"),
        ),
        "0006",
        "1 in notifications.sms where status IN ('pending', 'sending') AND not_before >"
        " created_at + interval '1 minute'",
        "UPDATE notifications.sms SET not_before = NULL WHERE status IN ('pending', 'sending')"
        " AND not_before > created_at + interval '1 minute'",
    ),
    # The gateway's id of a text, which its receipts name, longer than the older column.
    "notifications 0008 provider_id": (
        "notifications",
        _texts(
            ("long", "sent", "now()", "now()", "repeat('g', 129)"),
            ("short", "sent", "now()", "now()", "repeat('g', 128)"),
        ),
        "0007",
        "1 in notifications.sms where length(provider_id) > 128",
        "UPDATE notifications.sms SET provider_id = NULL WHERE length(provider_id) > 128",
    ),
    # When nothing could text an order's buyer any more, from which their number is deleted
    # (notifications_recipient_retention_days): upgraded again, it never would be. A buyer
    # who may still be texted (a loan being repaid): not refused.
    "notifications 0010 done_at": (
        "notifications",
        "insert into notifications.recipients (order_id, order_ref, phone, locale, done_at)"
        " values ('done', 'r1', '+8613000000001', 'zh-CN', now()),"
        " ('repaying', 'r2', '+8613000000002', 'zh-CN', NULL)",
        "0009",
        "1 in notifications.recipients where done_at IS NOT NULL",
        "UPDATE notifications.recipients SET done_at = NULL WHERE done_at IS NOT NULL",
    ),
    # When a text failed, which GET /sms and caravan texts say beside why (one failed before
    # notifications 0013, or one not failed: not refused).
    "notifications 0013 failed_at": (
        "notifications",
        'insert into notifications.sms (sms_id, dedup_key, purpose, "to", locale, text,'
        " encoding, segments, status, last_error, failed_at) values"
        " ('f', 'f', 'instalment_due', '+8613000000000', 'zh-CN', 't', 'GSM-7', 1, 'failed',"
        " 'gateway refused: blocked', now()), ('b', 'b', 'instalment_due', '+8613000000000',"
        " 'zh-CN', 't', 'GSM-7', 1, 'failed', 'gateway refused: blocked', NULL)",
        "0012",
        "1 in notifications.sms where failed_at IS NOT NULL",
        "UPDATE notifications.sms SET failed_at = NULL WHERE failed_at IS NOT NULL",
    ),
    # An adjustment of a buyer's credit made with an idempotency key: upgraded again, a retry
    # of the key would be applied again.
    "payments 0007 credit_adjustments": (
        "payments",
        "insert into payments.credit_adjustments (buyer_id, idempotency_key, delta_fen) values"
        " ('b', 'k-1', 5000)",
        "0006",
        "1 in payments.credit_adjustments.",
        "DELETE FROM payments.credit_adjustments",
    ),
    # How a repayment was split over the instalments (none kept before 0008: not refused).
    "payments 0008 allocations": (
        "payments",
        "with l as (insert into payments.loans (loan_id, order_id, buyer_id, principal_fen,"
        " outstanding_fen, term_months, status) values ('l', 'o', 'b', 300, 0, 3, 'repaid'))"
        " insert into payments.repayments (loan_id, idempotency_key, amount_fen, principal_fen,"
        f" interest_fen, allocations) values ('l', 'k', 300, 300, 0, {ALLOCATED}),"
        " ('l', 'before-0008', 1, 1, 0, NULL)",
        "0007",
        "1 in payments.repayments where allocations IS NOT NULL",
        "UPDATE payments.repayments SET allocations = NULL WHERE allocations IS NOT NULL",
    ),
    # What the gateway said of a text (its id, which receipts name; delivered; why it failed:
    # here, a number it would not text), kept nowhere else. A text not yet sent: not refused.
    "notifications 0002 delivery": (
        "notifications",
        'insert into notifications.sms (sms_id, dedup_key, purpose, "to", locale, text,'
        " encoding, segments, status, last_error) values ('f', 'f', 'instalment_due',"
        " '+8613000000000', 'zh-CN', 't', 'GSM-7', 1, 'failed', 'not a mobile number'),"
        " ('q', 'q', 'instalment_due', '+8613000000000', 'zh-CN', 't', 'GSM-7', 1, 'pending',"
        " NULL)",
        "0001",
        "1 in notifications.sms where provider_id IS NOT NULL OR delivered_at IS NOT NULL OR"
        " last_error IS NOT NULL",
        "UPDATE notifications.sms SET provider_id = NULL, delivered_at = NULL, last_error = NULL"
        " WHERE provider_id IS NOT NULL OR delivered_at IS NOT NULL OR last_error IS NOT NULL",
    ),
    # Who opted out of texts (the older version has no opt-outs: it would text them).
    "notifications 0002 opt_outs": (
        "notifications",
        "insert into notifications.opt_outs (phone) values ('+8613000000009')",
        "0001",
        "1 in notifications.opt_outs.",
        "DELETE FROM notifications.opt_outs",
    ),
    # What each seller is owed (a cancelled payable owes nothing: not refused).
    "payments 0002 payables": (
        "payments",
        "insert into payments.payables (order_id, seller_id, amount_fen, status) values"
        " ('o1', 's', 100, 'owed'), ('o2', 's', 100, 'cancelled')",
        "0001",
        "1 in payments.payables where status IN ('pending', 'owed').",
        "DELETE FROM payments.payables",
    ),
    # The repayments made on loans, and their keys: upgraded again, a retry of a key would
    # be taken as a new repayment.
    "payments 0002 repayments": (
        "payments",
        "with l as (insert into payments.loans (loan_id, order_id, buyer_id, principal_fen,"
        " outstanding_fen, term_months, status) values ('l', 'o', 'b', 300, 299, 3, 'active'))"
        " insert into payments.repayments (loan_id, idempotency_key, amount_fen, principal_fen,"
        " interest_fen) values ('l', 'k', 1, 1, 0)",
        "0001",
        "1 in payments.repayments.",
        "DELETE FROM payments.repayments",
    ),
    # What a push was answered, answered again to the same push sent again: the older
    # version answers it duplicate, as if placed (one answered accepted: not refused).
    "platform 0012 push answer": (
        "platform",
        "insert into platform.pushes (app, push_id, answer) values ('a', 'p1',"
        ' \'{"status": "problem", "problems": ["unmapped_sku"]}\'), (\'a\', \'p2\','
        ' \'{"status": "accepted"}\')',
        "0011",
        "1 in platform.pushes where answer->>'status' NOT IN ('accepted', 'duplicate')",
        "UPDATE platform.pushes SET answer = NULL"
        " WHERE answer->>'status' NOT IN ('accepted', 'duplicate')",
    ),
    # The orders a platform was said paid for, and which platform collected a payment (a
    # storefront's payment, neither: not refused).
    "payments 0009 platform_paid": (
        "payments",
        "insert into payments.platform_paid (app, order_ref) values ('douyin', 'DY-1')",
        "0008",
        "1 in payments.platform_paid.",
        "DELETE FROM payments.platform_paid",
    ),
    "payments 0009 collected_by": (
        "payments",
        "insert into payments.payments (order_id, status, collected_by, order_ref) values"
        " ('p', 'awaiting', 'douyin', 'DY-1'), ('s', 'authorized', NULL, NULL)",
        "0008",
        "1 in payments.payments where collected_by IS NOT NULL OR order_ref IS NOT NULL",
        "UPDATE payments.payments SET collected_by = NULL, order_ref = NULL"
        " WHERE collected_by IS NOT NULL OR order_ref IS NOT NULL",
    ),
    # The ledger, append-only: every charge, loan, repayment and payable posted.
    "payments 0002 ledger": (
        "payments",
        "insert into payments.ledger_entries (txn_id, kind, account, amount_fen) values"
        " ('t', 'charge', 'buyer', 100), ('t', 'charge', 'seller', -100)",
        "0001",
        "2 in payments.ledger_entries.",
        "TRUNCATE payments.ledger_entries",
    ),
    # Why a lot's count changed (counted again, written off).
    "inventory 0002 lot_adjustments": (
        "inventory",
        f"{A_LOT} insert into"
        " inventory.lot_adjustments (adjustment_id, lot_id, delta, reason) values"
        " ('a', 'l', -1, 'counted again')",
        "0001",
        "1 in inventory.lot_adjustments.",
        "DELETE FROM inventory.lot_adjustments",
    ),
    # Which adjustments wrote off spoiled units (received unchanged): the older version
    # reads every adjustment as a change of what the lot received. A count's: not refused.
    "inventory 0008 spoiled": (
        "inventory",
        f"{A_LOT} insert into"
        " inventory.lot_adjustments (adjustment_id, lot_id, delta, reason, spoiled) values"
        " ('a', 'l', -1, 'mould', true), ('b', 'l', -1, 'counted again', false)",
        "0007",
        "1 in inventory.lot_adjustments where spoiled",
        "UPDATE inventory.lot_adjustments SET spoiled = false WHERE spoiled",
    ),
    # Which lots are stopped selling: the older version would sell them (one on sale: not
    # refused), and the record of each stop and restart.
    "inventory 0009 on_sale": (
        "inventory",
        "with s as (insert into inventory.sellers (seller_id, name, county, phone) values"
        " ('s', 'n', 'c', '+8613000000001')), p as (insert into inventory.products (sku,"
        " seller_id, unit_price_fen, name) values ('k', 's', 1, '{}')) insert into"
        " inventory.lots (lot_id, sku, received, available, available_from, best_before,"
        " on_sale) values ('l', 'k', 4, 4, '2026-01-01', '2026-12-31', false),"
        " ('m', 'k', 4, 4, '2026-01-01', '2026-12-31', true)",
        "0008",
        "1 in inventory.lots where NOT on_sale",
        "UPDATE inventory.lots SET on_sale = true WHERE NOT on_sale",
    ),
    # The sellers whose goods each order holds (GET /orders?seller=), kept nowhere else.
    "orders 0015 order_sellers": (
        "orders",
        "with o as (insert into orders.orders (order_id, source, order_ref, request_hash,"
        " buyer_id, lines, payment_method, status, stock, payment, placed_at, deadline_at)"
        " values ('o', 's', 'o', 'h', 'b', '[]', 'prepaid', 'confirmed', 'done', 'done', now(),"
        " now())) insert into orders.order_sellers (seller_id, order_id) values ('seller-1', 'o')",
        "0014",
        "1 in orders.order_sellers.",
        "DELETE FROM orders.order_sellers",
    ),
    "inventory 0009 lot_selling": (
        "inventory",
        f"{A_LOT} insert into"
        " inventory.lot_selling (change_id, lot_id, on_sale, actor, reason) values"
        " ('c', 'l', true, 'clerk', 'restarted')",
        "0008",
        "1 in inventory.lot_selling.",
        "DELETE FROM inventory.lot_selling",
    ),
    # The gateway's charge id of a payment, longer than the older column.
    "payments 0013 gateway_ref": (
        "payments",
        "insert into payments.payments (order_id, status, gateway_ref) values"
        " ('long', 'authorized', repeat('r', 65)), ('short', 'authorized', repeat('r', 64))",
        "0012",
        "1 in payments.payments where length(gateway_ref) > 64",
        "UPDATE payments.payments SET gateway_ref = NULL WHERE length(gateway_ref) > 64",
    ),
    # When an order's address was erased (orders_delivery_retention_days): upgraded again,
    # the API would show it as never given. An order whose address stands: not refused here.
    "orders 0007 delivery_erased_at": (
        "orders",
        "insert into orders.orders (order_id, source, order_ref, request_hash, buyer_id, lines,"
        " payment_method, status, stock, payment, placed_at, deadline_at, delivery,"
        " delivery_erased_at) values ('e', 'storefront/b', 'r', 'x', 'b', '[]', 'prepaid',"
        " 'confirmed', 'done', 'done', now(), now(), NULL, now()), ('k', 'storefront/b', 's',"
        " 'x', 'b', '[]', 'prepaid', 'confirmed', 'done', 'done', now(), now(), 'null', NULL)",
        "0006",
        "1 in orders.orders where delivery_erased_at IS NOT NULL",
        "UPDATE orders.orders SET delivery_erased_at = NULL WHERE delivery_erased_at IS NOT NULL",
    ),
    # Which token placed an HTTP order (a Kafka order's: none, not refused): upgraded again,
    # a bound token would no longer reach its own orders.
    "orders 0009 placed_by": (
        "orders",
        "insert into orders.orders (order_id, source, order_ref, request_hash, buyer_id, lines,"
        " payment_method, status, stock, payment, placed_at, deadline_at, placed_by) values"
        " ('h', 'http', 'r', 'x', 'b', '[]', 'prepaid', 'pending', 'held', 'none', now(),"
        " now(), 'shop'), ('k', 'storefront/b', 'r', 'x', 'b', '[]', 'prepaid', 'pending',"
        " 'held', 'none', now(), now(), NULL)",
        "0008",
        "1 in orders.orders where placed_by IS NOT NULL",
        "UPDATE orders.orders SET placed_by = NULL WHERE placed_by IS NOT NULL",
    ),
    # A refund's amount and reference on its order's timeline (a step naming none: not
    # refused).
    "orders 0012 timeline refund": (
        "orders",
        "insert into orders.timeline (order_id, type, amount_fen, reference) values"
        " ('o', 'payment.refunded', 3500, 'BANK-1'), ('o', 'payment.voided', NULL, NULL)",
        "0011",
        "1 in orders.timeline where amount_fen IS NOT NULL OR reference IS NOT NULL",
        "UPDATE orders.timeline SET amount_fen = NULL, reference = NULL"
        " WHERE amount_fen IS NOT NULL OR reference IS NOT NULL",
    ),
    # The products a cancelled order was cancelled for (an order naming none: not refused).
    "orders 0013 skus": (
        "orders",
        "insert into orders.orders (order_id, source, order_ref, request_hash, buyer_id, lines,"
        " payment_method, status, stock, payment, placed_at, deadline_at, reason, skus) values"
        " ('c', 'storefront/b', 'r', 'x', 'b', '[]', 'prepaid', 'cancelled', 'failed', 'none',"
        " now(), now(), 'out_of_season', '[\"HTN-WALNUT-1KG\"]'), ('d', 'storefront/b', 's', 'x',"
        " 'b', '[]', 'prepaid', 'cancelled', 'pending', 'none', now(), now(), 'expired', NULL)",
        "0012",
        "1 in orders.orders where skus IS NOT NULL",
        "UPDATE orders.orders SET skus = NULL WHERE skus IS NOT NULL",
    ),
    # A token bound to its own orders: the older version would let it reach every order, so
    # what it says to run revokes it too. An unbound one: not refused.
    "auth 0002 sources": (
        "auth",
        "insert into auth.tokens (name, hash, scopes, sources) values"
        " ('shop', 'h1', '{orders:read}', '{}'), ('desk', 'h2', '{ops}', NULL)",
        "0001",
        "1 in auth.tokens where sources IS NOT NULL",
        "UPDATE auth.tokens SET sources = NULL, revoked_at = coalesce(revoked_at, now())"
        " WHERE sources IS NOT NULL",
    ),
    # A charge the gateway refused to void (owed back by hand), and one being voided that an
    # operator said the gateway lost (caravan payments charge-lost): what is named clears both.
    # A voided loan's refund owed back (payments 0022; the ledger says it) and a void with no
    # word: not refused.
    "payments 0014 void_refused": (
        "payments",
        "insert into payments.payments (order_id, status, loan_id, refund_owed_fen,"
        " gateway_refusal, next_attempt_at) values"
        " ('v', 'void_refused', NULL, 100, 'void refused: settled', NULL),"
        " ('w', 'voiding', NULL, NULL, 'the gateway lost the charge, said desk: gone', now()),"
        " ('l', 'voided', 'loan-l', 300, NULL, NULL), ('x', 'voiding', NULL, NULL, NULL, now())",
        "0013",
        "2 in payments.payments where status = 'void_refused' OR gateway_refusal IS NOT NULL",
        "UPDATE payments.payments SET status = 'voiding', next_attempt_at = CASE WHEN status ="
        " 'voiding' THEN next_attempt_at END, refund_owed_fen = NULL, gateway_refusal = NULL"
        " WHERE status = 'void_refused' OR (status = 'voiding' AND gateway_refusal IS NOT NULL)",
    ),
    # A refund made by hand, recorded: the older version knows no such status (a payment
    # still owed back to its buyer, void_refused: not refused); a voided loan's refund goes
    # back to voided.
    "payments 0015 refunded": (
        "payments",
        "insert into payments.payments (order_id, status, loan_id, refund_owed_fen,"
        " refund_reference, refunded_at) values ('r', 'refunded', NULL, 100, 'BANK-1', now()),"
        " ('l', 'refunded', 'loan-l', 100, 'BANK-2', now()),"
        " ('v', 'void_refused', NULL, 100, NULL, NULL)",
        "0014",
        "2 in payments.payments where refund_reference IS NOT NULL OR status = 'refunded'",
        "UPDATE payments.payments SET status = CASE WHEN loan_id IS NULL THEN 'void_refused'"
        " ELSE 'voided' END, refund_owed_fen = CASE WHEN loan_id IS NULL THEN refund_owed_fen"
        " END, refund_reference = NULL, refunded_at = NULL WHERE status = 'refunded'",
    ),
    # Why a refund was recorded by hand, against which the same reference given again is
    # checked: upgraded again, another reason would be answered as the refund recorded. One
    # recorded before 0017 (no reason): not refused.
    "payments 0017 refund_reason": (
        "payments",
        "insert into payments.payments (order_id, status, refund_owed_fen, refund_reference,"
        " refunded_at, refund_reason) values ('r', 'refunded', 100, 'BANK-1', now(),"
        " 'paid back at the counter'), ('s', 'refunded', 100, 'BANK-2', now(), NULL)",
        "0016",
        "1 in payments.payments where refund_reason IS NOT NULL",
        "UPDATE payments.payments SET refund_reason = NULL WHERE refund_reason IS NOT NULL",
    ),
    # A payment an operator voided for an order the orders service never had (caravan
    # payments void-unplaced): upgraded again, void-unplaced again would be refused, not
    # answered as voided before, and nothing would say why it is voided. A payment voided by
    # its order's cancellation: not refused.
    "payments 0021 unplaced": (
        "payments",
        "insert into payments.payments (order_id, status, unplaced_at, unplaced_by,"
        " unplaced_reason) values ('u', 'voided', now(), 'desk', 'forged stock.reserved'),"
        " ('c', 'voided', NULL, NULL, NULL)",
        "0020",
        "1 in payments.payments where unplaced_at IS NOT NULL",
        "UPDATE payments.payments SET unplaced_at = NULL, unplaced_by = NULL,"
        " unplaced_reason = NULL WHERE unplaced_at IS NOT NULL",
    ),
    # A confirmed order's payment an operator voided after the sale (caravan payments
    # void-sold): upgraded again, caravan check would say each such order confirmed without
    # a payment (confirmed_has_payment), and void-sold again would be refused, not answered
    # as voided before. A payment voided by its order's cancellation: not refused.
    "payments 0024 voided_after_sale": (
        "payments",
        "insert into payments.payments (order_id, status, voided_after_sale_at,"
        " voided_after_sale_by, voided_after_sale_reason) values ('s', 'voided', now(),"
        " 'desk', 'spoiled on arrival'), ('c', 'voided', NULL, NULL, NULL)",
        "0023",
        "1 in payments.payments where voided_after_sale_at IS NOT NULL",
        "UPDATE payments.payments SET voided_after_sale_at = NULL, voided_after_sale_by = NULL,"
        " voided_after_sale_reason = NULL WHERE voided_after_sale_at IS NOT NULL",
    ),
}


@pytest.mark.parametrize("case", LOSING)
async def test_a_downgrade_refuses_to_drop_or_cut_what_the_older_version_would_lose(
    infrastructure: system.Infrastructure, case: str
) -> None:
    """Each refuses through :func:`shared.db.migrate.refuse_losing`, naming the rows it would
    lose and what to run (not PostgreSQL's "value too long", nor nothing at all); rows that
    lose nothing do not hold it back, and once the named statement has run it goes on. The
    ``UPDATE`` it names changes the rows refused alone: one naming no ``WHERE`` rewrote every
    order (orders 0009, 0013), each of their writers held as long, at a million orders."""
    schema, rows, to, refused, clear = LOSING[case]
    async with scratch_database(infrastructure.database_url, "caravan_losing") as url:
        cfg, said = await _downgrade_refused(url, schema, rows, to)
        # what to run ends the message, to be pasted as it is
        assert refused in said and said.endswith(f"first run: {clear}"), said
        engine = create_async_engine(url)
        try:
            async with engine.begin() as conn:
                changed = (await conn.execute(text(clear))).rowcount
        finally:
            await engine.dispose()
        if clear.startswith("UPDATE"):  # a table dropped by the downgrade is emptied whole
            assert changed == int(refused.split()[0]), f"{clear} changed {changed} row(s)"
        await asyncio.to_thread(command.downgrade, cfg, to)
        assert await _version(url, schema) == to


async def test_an_upgrade_says_what_it_migrated(infrastructure: system.Infrastructure) -> None:
    """What ``caravan prepare`` prints per schema: the same line whether it migrated or not
    left an operator guessing whether an upgrade's migrations ran."""
    async with scratch_database(infrastructure.database_url, "caravan_said") as url:
        folder = migrations_folder("inventory")
        did = await asyncio.to_thread(upgrade, folder, url)
        assert (str(did), did.ran) == ("none -> 0011", True)
        await asyncio.to_thread(command.downgrade, alembic_config(folder, url), "-2")
        did = await asyncio.to_thread(upgrade, folder, url)
        assert (str(did), did.ran) == ("0009 -> 0011", True)
        did = await asyncio.to_thread(upgrade, folder, url)
        assert (str(did), did.ran) == ("at 0011, nothing new", False)


async def _caravan(
    infrastructure: system.Infrastructure, url: str, *args: str
) -> subprocess.CompletedProcess[str]:
    """``caravan ARGS`` (through ``main()``, where failures are said) on the database at
    ``url`` and the session's Kafka, as a deployment runs it."""
    env = {**os.environ, "DATABASE_URL": url, "COLUMNS": "200"}
    env["KAFKA_BOOTSTRAP_SERVERS"] = infrastructure.kafka_bootstrap
    command = [sys.executable, "-m", "caravan", *args]
    run = subprocess.run
    return await asyncio.to_thread(
        run, command, env=env, capture_output=True, text=True, cwd=REPO_ROOT
    )


async def test_an_older_version_s_prepare_refuses_a_schema_a_newer_one_migrated_in_one_line(
    infrastructure: system.Infrastructure,
) -> None:
    """Going back to an older version: its ``caravan prepare`` (and ``caravan up``, which
    prepares first) met a schema a newer version had migrated with Alembic's traceback of
    400 lines ending "Can't locate revision identified by '0013'" (a drill going back from
    orders 0013 to a release of 0008). It is said in one line, exit 2, nothing migrated."""
    async with scratch_database(infrastructure.database_url, "caravan_ahead") as url:
        done = await _caravan(infrastructure, url, "prepare")
        assert done.returncode == 0, done.stdout + done.stderr
        head = ScriptDirectory(str(migrations_folder("orders"))).get_current_head()
        # What a newer version's migration would leave: a revision this version lacks.
        await _execute(url, "UPDATE orders.alembic_version SET version_num = '9001'")
        refused = await _caravan(infrastructure, url, "prepare")
        said = " ".join(refused.stderr.split())
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert "Traceback" not in refused.stderr, refused.stderr
        assert (
            f"schema orders is at 9001, which this version does not know (its newest is {head}):"
            " a newer version migrated it, and this one cannot run on it; run the newer"
            " version, or go back as docs/running.md says (Going back)"
        ) in said, said
        assert await _version(url, "orders") == "9001"


async def test_caravan_downgrade_takes_a_schema_back_or_refuses_in_one_line(
    infrastructure: system.Infrastructure,
) -> None:
    """Going back to an older version needed Alembic's downgrade run by hand from Python
    (no command): ``caravan downgrade SCHEMA REVISION`` takes one schema back, in one
    transaction, and says what it did; what it refuses (data it would lose, a revision it does
    not know or not before the schema's) is one line, exit 2, the schema as it was."""
    async with scratch_database(infrastructure.database_url, "caravan_back") as url:
        done = await _caravan(infrastructure, url, "prepare")
        assert done.returncode == 0, done.stdout + done.stderr
        head = ScriptDirectory(str(migrations_folder("orders"))).get_current_head()
        assert head is not None
        _, rows, to, lost, clear = LOSING["orders 0013 skus"]
        await _execute(url, rows)

        refused = await _caravan(infrastructure, url, "downgrade", "orders", to)
        said = " ".join(refused.stderr.split())
        assert refused.returncode == 2 and "Traceback" not in refused.stderr, said
        assert said.startswith("schema orders: downgrade refused: it would lose"), said
        assert lost in said and clear in said, said
        assert await _version(url, "orders") == head

        await _execute(url, clear)
        done = await _caravan(infrastructure, url, "downgrade", "orders", to)
        assert done.returncode == 0, done.stdout + done.stderr
        assert done.stdout.startswith(f"schema orders: {head} -> {to} in "), done.stdout
        assert done.stdout.rstrip().endswith("s, taken back"), done.stdout
        assert await _version(url, "orders") == to
        again = await _caravan(infrastructure, url, "downgrade", "orders", to)
        assert again.stdout.strip() == f"schema orders is at {to} already, nothing taken back"

        for revision in ("0099", head):  # unknown; after the schema's
            refused = await _caravan(infrastructure, url, "downgrade", "orders", revision)
            said = " ".join(refused.stderr.split())
            assert refused.returncode == 2 and "Traceback" not in refused.stderr, said
            assert said.startswith("schema orders: "), said
        assert await _version(url, "orders") == to
        done = await _caravan(infrastructure, url, "prepare")  # and forward again
        assert f"  orders {to} -> {head}" in done.stdout, done.stdout


async def test_caravan_downgrade_names_every_migration_on_the_way_that_refuses(
    infrastructure: system.Infrastructure,
) -> None:
    """A downgrade stopped at the first migration that would lose data and named it alone:
    an operator cleared it and ran it again to meet the next (the drill of 2026-12-06: orders
    0012's refunds, then 0009's tokens). One run names each, its revision and the statement
    that clears it, nothing taken back; all cleared, it runs."""
    async with scratch_database(infrastructure.database_url, "caravan_every") as url:
        done = await _caravan(infrastructure, url, "prepare")
        assert done.returncode == 0, done.stdout + done.stderr
        head = ScriptDirectory(str(migrations_folder("orders"))).get_current_head()
        await _execute(
            url,
            "insert into orders.orders (order_id, source, order_ref, request_hash, buyer_id,"
            " lines, payment_method, status, stock, payment, placed_at, deadline_at, reason,"
            " skus, placed_by) values ('c', 'http', 'r', 'x', 'b', '[]', 'prepaid', 'cancelled',"
            " 'failed', 'none', now(), now(), 'out_of_season', '[\"HTN-WALNUT-1KG\"]', 'shop')",
        )
        await _execute(url, LOSING["orders 0012 timeline refund"][1])
        clears = {
            rev: LOSING[case][4]
            for rev, case in (
                ("0013", "orders 0013 skus"),
                ("0012", "orders 0012 timeline refund"),
                ("0009", "orders 0009 placed_by"),
            )
        }
        refused = await _caravan(infrastructure, url, "downgrade", "orders", "0008")
        assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr
        said = " ".join(refused.stderr.split())  # as wrapped to the terminal's width
        assert said.startswith(
            "schema orders: downgrade refused: 3 of its migrations would lose data, nothing"
            " taken back."
        ), said
        at = [said.index(f" {rev}: it would lose ") for rev in clears]
        assert at == sorted(at), said  # newest first, as they run
        for clear in clears.values():
            assert f"; first run: {clear}" in said, said
        assert await _version(url, "orders") == head
        for clear in clears.values():
            await _execute(url, clear)
        done = await _caravan(infrastructure, url, "downgrade", "orders", "0008")
        assert done.returncode == 0, done.stdout + done.stderr
        assert await _version(url, "orders") == "0008"


async def test_a_downgrade_that_cannot_go_on_past_a_refusal_names_it_and_what_was_not_checked(
    infrastructure: system.Infrastructure,
) -> None:
    """Past notifications 0008's refusal its column cannot be narrowed (PostgreSQL: value too
    long): that refusal is named, and the older migrations said not checked."""
    async with scratch_database(infrastructure.database_url, "caravan_cut") as url:
        done = await _caravan(infrastructure, url, "prepare")
        assert done.returncode == 0, done.stdout + done.stderr
        _, rows, _, lost, clear = LOSING["notifications 0008 provider_id"]
        await _execute(url, rows)
        refused = await _caravan(infrastructure, url, "downgrade", "notifications", "0006")
        assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr
        said = " ".join(refused.stderr.split())
        assert said.startswith(
            "schema notifications: downgrade refused: 1 of its migrations would lose data"
        ), said
        assert " 0008: it would lose " in said, said
        assert lost in said and f"; first run: {clear}" in said, said
        assert said.endswith(
            "and the migrations before 0008 were not checked: run it again once that is cleared"
        ), said


async def _start_service(service: str, url: str) -> asyncio.subprocess.Process:
    """``python -m services.<service>`` on the database ``url`` (as the admin), its HTTP API on
    a port of its own, and a Kafka that nobody answers: it never joins the session's consumer
    group, and without a schema check it would wait for Kafka, never exiting."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARAVAN_DATABASE_URL_")}
    env |= {
        "DATABASE_URL": url,
        "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
        system.HTTP_PORT_VARS[SERVICES.index(service)]: str(free_port()),
        "PYTHONUNBUFFERED": "1",
    }
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        f"services.{service}",
        env=env,
        cwd=REPO_ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )


# How long a service started here may take to say something or exit: it imports, reads its
# settings and asks PostgreSQL for its schema in a second or two alone, but a minute ran out
# once on a machine shared with other test runs (as test_ops gives a command two minutes).
SAYS_WITHIN = 120.0


async def _logged(proc: asyncio.subprocess.Process, said: bytes) -> bytes:
    """The next line of the service's output that has ``said`` in it (within
    :data:`SAYS_WITHIN`); it fails if the service exits first."""
    assert proc.stdout is not None
    while True:
        line = await asyncio.wait_for(proc.stdout.readline(), SAYS_WITHIN)
        assert line, f"the service exited before it logged {said!r}"
        if said in line:
            return line


async def _refused(service: str, url: str) -> str:
    """What the service logged, once it exited non-zero (within :data:`SAYS_WITHIN`)."""
    proc = await _start_service(service, url)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), SAYS_WITHIN)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 2, out.decode()
    return out.decode()


async def test_a_service_refuses_to_start_on_a_schema_behind_its_code(
    infrastructure: system.Infrastructure,
) -> None:
    """``caravan prepare`` failed part way, or a supervisor started the new version before it:
    inventory at 0005 while its code wrote ``trace_headers`` (0006) failed every
    ``order.placed`` with UndefinedColumn, dead-lettered it after 3 tries, and every order
    expired. It now exits 2 at once, one line naming ``caravan prepare``; on a schema a newer
    version migrated (an old process during an upgrade) it runs on, with a warning."""
    async with scratch_database(infrastructure.database_url, "caravan_behind") as url:
        never = await _refused("inventory", url)  # no alembic_version table at all
        assert "schema inventory was never migrated, this version needs 0011" in never, never
        assert "run caravan prepare" in never and "Traceback" not in never, never

        cfg = alembic_config(migrations_folder("inventory"), url)
        await asyncio.to_thread(command.upgrade, cfg, "head")
        await asyncio.to_thread(command.downgrade, cfg, "-1")
        behind = await _refused("inventory", url)
        said = "schema inventory is at 0010, this version needs 0011: run caravan prepare"
        assert said in behind and "Traceback" not in behind, behind

        await asyncio.to_thread(command.upgrade, cfg, "head")
        engine = create_async_engine(url)
        async with engine.begin() as conn:
            await conn.execute(text("update inventory.alembic_version set version_num = '0012'"))
        await engine.dispose()
        proc = await _start_service("inventory", url)
        try:
            line = await _logged(proc, b"does not know")
            assert b"schema inventory is at 0012" in line, line
            await _logged(proc, b"waiting for Kafka")  # running on, past its schema check
            assert proc.returncode is None
        finally:
            proc.terminate()
            await proc.wait()


async def test_a_service_started_while_postgresql_is_away_checks_its_schema_once_it_answers(
    infrastructure: system.Infrastructure,
) -> None:
    """It starts as it did (its HTTP API answering 503, ``tests/unit/
    test_service_waits_for_kafka.py``), and its schema behind refuses once PostgreSQL answers,
    while Kafka is still away: checked beside the wait for Kafka, not after it. PostgreSQL
    "comes up" as a forwarder to the session's opening on the address the service was given."""
    async with scratch_database(infrastructure.database_url, "caravan_away") as url:
        cfg = alembic_config(migrations_folder("inventory"), url)
        await asyncio.to_thread(command.upgrade, cfg, "head")
        await asyncio.to_thread(command.downgrade, cfg, "-1")
        target, port = make_url(url), free_port()
        via = target.set(host="127.0.0.1", port=port, query={})
        settings = Settings(
            kafka_bootstrap_servers=f"127.0.0.1:{free_port()}",
            database_url=via.render_as_string(hide_password=False),
        )
        service = bootstrap_inventory(settings)
        service.http_port = None  # not what is tested, and no port to share
        unread, runtime = Heard("revision unread"), logging.getLogger("shared.runtime")
        runtime.addHandler(unread)
        serving = asyncio.create_task(service.serve(asyncio.Event()))
        try:
            await asyncio.wait_for(unread.said.wait(), 10)
            assert not serving.done()
            pg = forwarder(target.host or "127.0.0.1", target.port or 5432)
            async with await asyncio.start_server(pg, "127.0.0.1", port):
                with pytest.raises(SchemaBehind, match="inventory is at 0010, this version needs"):
                    await asyncio.wait_for(serving, 30)
        finally:
            runtime.removeHandler(unread)
            serving.cancel()
            await asyncio.gather(serving, return_exceptions=True)


async def test_the_sweeps_for_due_payments_and_instalments_find_them_through_an_index(
    caravan: System,
) -> None:
    """The gateway loop and the reminder sweep run every few seconds: without an index each
    would read every payment or instalment ever made (as they did before migration 0004)."""
    plans = await _plans(caravan, due_calls(20), due_instalments(days.today(), 3, 500))
    for plan, table in zip(plans, ("payments", "instalments"), strict=True):
        assert f"Seq Scan on {table}" not in plan, plan


async def _plans(
    caravan: System, *queries: ClauseElement | str, rows: str = "", seqscan: bool = False
) -> list[str]:
    """The plan of each of ``queries`` (a statement, compiled with its values written in, or
    SQL), EXPLAINed in one transaction, rolled back after: ``rows`` (SQL statements, each
    ending a line with ``;``) added first for the planner to weigh, and no sequential scan
    where an index serves (whatever the tables' sizes) unless ``seqscan``."""
    engine = create_async_engine(caravan.infra.database_url)
    plans: list[str] = []
    try:
        async with engine.connect() as conn, conn.begin() as rolled_back:
            for statement in filter(str.strip, rows.split(";\n")):
                await conn.execute(text(statement))
            if not seqscan:
                await conn.execute(text("SET LOCAL enable_seqscan = off"))
            for query in queries:
                sql = (
                    query
                    if isinstance(query, str)
                    else query.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True})
                )
                plans.append("\n".join((await conn.scalars(text(f"EXPLAIN {sql}"))).all()))
            await rolled_back.rollback()
    finally:
        await engine.dispose()
    return plans


async def _generic_plan(
    caravan: System, statement: ClauseElement, rows: str = "", **given: str
) -> str:
    """The generic plan that ``statement`` settles on, run prepared on the driver as
    :func:`shared.db.driver.fetch` runs it, with ``given`` (SQL literals) for its parameters,
    and no sequential scan where an index serves (whatever the tables' sizes); after
    ``rows`` (SQL statements) added rows for the planner to weigh, rolled back after."""
    sql, names, fixed = _compiled(statement)
    values = {**{n: repr(v) for n, v in fixed.items()}, **given}  # given: a JSON one, say
    args = f"({', '.join(values[n] for n in names)})" if names else ""
    engine = create_async_engine(caravan.infra.database_url)
    try:
        async with engine.connect() as conn:
            await conn.begin()
            raw = await driver(conn)
            if rows:
                await raw.execute(rows)
            await raw.execute("SET LOCAL enable_seqscan = off")
            await raw.execute("SET LOCAL plan_cache_mode = force_generic_plan")
            await raw.execute(f"PREPARE planned AS {sql}")
            plan = await raw.fetch(f"EXPLAIN EXECUTE planned{args}")
            await raw.execute("DEALLOCATE planned")
            await conn.rollback()
    finally:
        await engine.dispose()
    return "\n".join(row[0] for row in plan)


async def test_the_credit_check_sums_the_active_loans_through_their_index(caravan: System) -> None:
    """Every microloan decision sums what the buyer's active loans still owe (``OWED``, run
    prepared on the driver). The generic plan that a prepared statement settles on reads them
    through the partial index of active loans, not through every loan the buyer ever had: it
    could not if the status were a bound parameter (migration 0005)."""
    plan = await _generic_plan(caravan, OWED, keys="'{bench-buyer-0001}'")
    assert "loans_active_by_buyer" in plan, plan


async def test_the_texts_due_are_claimed_through_their_index_in_the_order_due(
    caravan: System,
) -> None:
    """Every dispatch claims the texts due (``pending``, or ``sending`` whose claim lapsed;
    run prepared on the driver): through ``sms_due``, whose predicate the statuses written
    into the statement prove, in the order of their due time (no sort of them all), not
    through every text kept."""
    plan = await _generic_plan(caravan, _DUE, batch="50")
    assert "sms_due" in plan and "Seq Scan" not in plan and "Sort" not in plan, plan


async def test_the_platform_adapter_finds_which_outcomes_are_its_orders_through_an_index(
    caravan: System,
) -> None:
    """The adapter reads every order's outcome and looks up, in one statement, whether it is
    one of its orders, or has the ref of one not placed yet (an outcome come before its
    ``order.placed``): through the index of their order ids (NULL for those not placed)."""
    plan = await _generic_plan(caravan, PLATFORM_ORDERS, keys="'{o-1}'", refs="'{P-1}'")
    assert "platform_orders_order_id" in plan and "Seq Scan" not in plan, plan


async def test_the_platform_adapter_reads_its_callbacks_and_open_problems_through_an_index(
    caravan: System,
) -> None:
    """A push of an order cancelled on the platform asks whether we cancelled it (inside the
    push's request), and the problems gauge counts the open problems every 5 s: both tables
    keep a row for every platform order ever pushed or told (migration 0004)."""
    cancelled = await _generic_plan(
        caravan, OUR_OUTCOME, app="'t-market'", platform_order_id="'P-1'"
    )
    assert "callbacks_platform_order" in cancelled, cancelled
    open_by_kind = await _generic_plan(caravan, OPEN_BY_KIND)
    assert "problems_open" in open_by_kind, open_by_kind


async def test_the_relay_and_its_gauges_read_the_outbox_through_its_partial_indexes(
    caravan: System,
) -> None:
    """The relay's next rows (after every commit) through ``outbox_unsent``, which leaves out
    the rows set aside: they are kept until operations act, and every batch walked past them
    while the index held them too. Those rows are counted through ``outbox_refused``."""
    plans = await _plans(
        caravan,
        f"SELECT id FROM orders.outbox WHERE {UNSENT} ORDER BY id LIMIT 500",
        "SELECT count(*) FROM orders.outbox WHERE refused_at IS NOT NULL",
    )
    for plan, index in zip(plans, ("unsent", "refused"), strict=True):
        assert f"outbox_{index}" in plan and "Filter" not in plan, plan


async def test_an_operator_s_orders_of_one_order_ref_are_read_through_its_index(
    caravan: System,
) -> None:
    """``GET /orders?order_ref=`` without ``source`` (``caravan orders list --ref``, scope
    ops) reads the orders of that ref through ``orders_ref`` (migration 0010): through the
    idempotency key, whose first column is the source, it read the whole index, 0.7 s at a
    season's million orders."""
    [plan] = await _plans(caravan, listed(None, None, 100, order_ref="SWN-000123"))
    assert "orders_ref" in plan and "orders_idempotency_key" not in plan, plan


async def test_an_operator_s_orders_of_one_source_are_read_through_its_index(
    caravan: System,
) -> None:
    """``GET /orders?source=`` (``caravan orders list --source``, scope ops) reads each
    status's orders of that source newest first through ``orders_source_status_placed``
    (migration 0011): along ``orders_status_placed`` it visited every newer order's row for
    its source, 0.7-1.4 s at 182,000 orders for a source whose orders were older than the
    others'."""
    # A season of its own, analysed (rolled back with it): with only the other tests' rows
    # and none of this source, the planner once read a status along another index with a
    # Filter, a near-tie broken either way (CI6).
    queries = [
        listed(None, None, 100, source="storefront/plan", status=s) for s in (None, "confirmed")
    ]
    for plan in await _plans(caravan, *queries, rows=ORDERS_SEASON):
        assert "orders_source_status_placed" in plan and "Filter" not in plan, plan


async def test_an_operator_s_orders_of_one_product_or_seller_are_read_through_indexes(
    caravan: System,
) -> None:
    """``GET /orders?sku=`` reads the orders with a line of that product through the GIN
    index of the lines (``orders_lines``), ``?seller=`` those holding a seller's goods through
    ``order_sellers`` (migration 0015), each found then sorted: without them, every order of
    every season was read for its lines (no seller was kept at all)."""
    rows = ORDERS_SEASON.replace(
        "'[]'",
        """jsonb_build_array(jsonb_build_object(
        'sku', 'PLAN-SKU-' || g % 500, 'quantity', 1))""",
    ).replace(
        "ANALYZE orders.orders",
        """INSERT INTO orders.order_sellers (seller_id, order_id)
SELECT 'plan-seller-' || g % 100, 'plan-' || g FROM generate_series(1, 5000) g;
ANALYZE orders.orders;
ANALYZE orders.order_sellers""",
    )
    by_sku = await _generic_plan(
        caravan,
        listed(None, None, 20, sku="PLAN-SKU-7"),
        rows,
        lines_1="""'[{"sku": "PLAN-SKU-7"}]'""",
    )
    assert "orders_lines" in by_sku, by_sku
    by_seller = await _generic_plan(
        caravan, listed(None, None, 20, seller="plan-seller-7"), rows, seller_id_1="'plan-seller-7'"
    )
    assert "order_sellers_pkey" in by_seller and "Seq Scan" not in by_seller, by_seller


ORDERS_SEASON = """
INSERT INTO orders.orders (order_id, source, order_ref, request_hash, buyer_id, lines,
    payment_method, status, stock, payment, placed_at, deadline_at)
SELECT 'plan-' || g, CASE WHEN g % 50 = 0 THEN 'storefront/plan' ELSE 'storefront/o' || g % 7 END,
       'PLAN-' || g, 'h', 'plan-buyer-' || g % 100, '[]', 'prepaid',
       (ARRAY['pending', 'confirmed', 'cancelled'])[1 + g % 3], 'reserved', 'authorized',
       now() - g * interval '1 minute', now() + interval '1 day'
FROM generate_series(1, 5000) g;
ANALYZE orders.orders
"""


# 40 SKUs with a lot received every day since June, each on sale for a week; those left with
# stock are the last few days'. Analysed (in the transaction, rolled back with it): the
# planner otherwise weighs the table by what autovacuum last saw of the other tests' rows,
# and once chose a whole scan of lots_pkey.
SEASONS = """
INSERT INTO inventory.sellers VALUES ('plan-seller', 'Plan', 'Shawan', '+8613000000000');
INSERT INTO inventory.products (sku, seller_id, unit_price_fen, name)
SELECT 'PLAN-' || s, 'plan-seller', 100, '{}' FROM generate_series(1, 40) s;
INSERT INTO inventory.lots (lot_id, sku, received, available, sold, available_from, best_before)
SELECT 'PLAN-' || s || '-' || d, 'PLAN-' || s, 10, 10 * (d / 190), 10 * (1 - d / 190),
       date '2026-06-01' + d, date '2026-06-01' + d + 7
FROM generate_series(1, 40) s, generate_series(1, 200) d;
ANALYZE inventory.lots;
"""


# A province's catalogue: 10,000 sellers of 5 products each, analysed (rolled back).
PROVINCE = """
INSERT INTO inventory.sellers SELECT 'prov-' || s, 'Coop ' || s, 'Ili', '+8613000000000'
FROM generate_series(1, 10000) s;
INSERT INTO inventory.products (sku, seller_id, unit_price_fen, name)
SELECT 'PROV-' || s || '-' || k, 'prov-' || s, 100, '{}'
FROM generate_series(1, 10000) s, generate_series(1, 5) k;
ANALYZE inventory.products;
"""


async def test_a_seller_s_stock_reads_its_products_through_the_index_of_seller_and_sku(
    caravan: System,
) -> None:
    """``GET /stock?seller=`` (``caravan inventory stock --seller``) reads the seller's own
    products through ``ix_inventory_products_seller_sku`` (inventory migration 0011), where it
    scanned every product for its seller: 49,995 thrown away for a seller's 5 of a
    province's 50,000."""
    statement = stock_totals(date(2026, 12, 7), seller="prov-7", limit=101)
    [plan] = await _plans(caravan, statement, rows=PROVINCE, seqscan=True)
    assert "ix_inventory_products_seller_sku" in plan and "Seq Scan on products" not in plan, plan


async def test_an_order_s_lots_are_found_through_the_index_of_sku_and_best_before(
    caravan: System,
) -> None:
    """Every batch of orders locks the lots that can serve it, and a refused order asks which
    lots are in season: through the index on (sku, best_before), which walks past a SKU's
    expired lots, most of them after a season (migration 0005). ``available > 0`` is read
    from the row: an index on it would make every reservation's update write the indexes."""
    day = "'2026-12-10'"
    plan = await _generic_plan(
        caravan, _LOTS, SEASONS, skus="'{PLAN-1}'", first_day=day, last_day=day, lot_ids="'{L}'"
    )
    assert "ix_inventory_lots_sku_best_before" in plan and "Seq Scan" not in plan, plan
    conditions = [line for line in plan.splitlines() if "Index Cond" in line]
    assert any("best_before >= $2" in line for line in conditions), plan  # not a filter
    plan = await _generic_plan(caravan, _SEASONS, SEASONS, keys="'{PLAN-1}'", day=day)
    assert "ix_inventory_lots_sku_best_before" in plan and "Seq Scan" not in plan, plan


async def test_the_platform_listings_read_a_page_through_an_index_not_a_sort(
    caravan: System,
) -> None:
    """``GET /platform/callbacks`` and ``/platform/problems?all=true`` read each page from
    its cursor on in the order of an index (migration 0005): by a sort, every page read every
    callback or problem ever kept (neither table is pruned), and a walk through the pages all
    of them once a page."""
    now = datetime.now(UTC)
    listings = (
        (select(callbacks).where(callbacks.c.status == "failed"), CALLBACKS_ORDER, (now, "e")),
        (select(problems), PROBLEMS_ORDER, (now, *"apk")),  # ?all=true (open: problems_open)
    )
    pages = [newest_first(query, key, start, 100) for query, key, start in listings]
    for plan in await _plans(caravan, *pages, rows=_MANY_CALLBACKS_AND_PROBLEMS, seqscan=True):
        assert "_newest" in plan and "Sort" not in plan, plan


_MANY_CALLBACKS_AND_PROBLEMS = """
INSERT INTO platform.callbacks (event_id, app, platform_order_id, order_id, outcome, status,
    created_at)
SELECT 'plan-' || i, 'plan', 'P' || i, 'o' || i, 'confirmed', 'failed',
    now() - i * interval '1 second'
FROM generate_series(1, 20000) i;
INSERT INTO platform.problems (app, platform_order_id, kind, detail, first_seen_at, resolved_at)
SELECT 'plan', 'P' || i, 'unmapped_sku', 'x', now() - i * interval '1 second', now()
FROM generate_series(1, 20000) i;
ANALYZE platform.callbacks;
ANALYZE platform.problems;
"""
