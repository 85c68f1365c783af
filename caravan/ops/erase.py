"""``caravan buyers erase``: a buyer's personal data erased from every schema that keeps it
(docs/personal-data.md, Erasing a buyer), in one transaction of the database's admin login,
and audited once.

One transaction rather than a call to each service's API: the audit trail's entries are
rewritten (the services may only append to it), a platform order is found by its order's
buyer (the orders schema), and a refusal (an order in flight, a loan not repaid) is read in
the same transaction as the erasure, which is all or nothing."""

from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import ColumnElement, delete, func, literal, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql import Executable

from caravan.ops.record import actor
from services.notifications.adapters.tables import recipients, sms
from services.orders.adapters.tables import orders
from services.orders.handlers import REQUEST_ERASED
from services.payments.adapters.tables import loans
from services.platform.adapters.tables import mappings, platform_orders, problems
from services.platform.domain.orders import ERASED_BUYER, unmapped_buyer
from shared.auth import audit
from shared.auth.tables import audit as audit_table
from shared.db.engine import async_engine

ERASED = "erased"
ACTION = "buyer.erase"
MAPPING_ACTIONS = "platform.mapping.%"
UNSENT = ("pending", "sending")

PLACES = {
    "delivery": "orders.orders delivery",
    "request_hash": "orders.orders request_hash",
    "placed": "platform.platform_orders placed",
    "sms": "notifications.sms",
    "recipients": "notifications.recipients",
    "mappings": "platform.mappings",
    "problems": "platform.problems detail",
    "opt_audit": "auth.audit sms.opt_out/opt_in",
    "mapping_audit": "auth.audit platform.mapping.*",
}
"""Each place erased, by its key in :attr:`Erased.counts`, as the command names it."""


class InFlight(Exception):
    """The buyer has an order pending or a loan not repaid: a reminder or an outcome could
    queue a text again, the number found again from the event."""

    def __init__(self, pending: int, active: int) -> None:
        said = []
        if pending:
            said.append(f"{pending} order(s) in flight (pending)")
        if active:
            said.append(f"{active} loan(s) not repaid")
        super().__init__(" and ".join(said))


@dataclass(frozen=True)
class Erased:
    """What an erasure erased, rows by place (:data:`PLACES`), and the texts it kept, still
    to be sent (a later run erases them)."""

    counts: dict[str, int] = field(default_factory=dict)
    unsent: int = 0

    @property
    def anything(self) -> bool:
        return any(self.counts.values())


async def erase(database_url: str, buyer: str, phone: str, *, force: bool = False) -> Erased:
    """Erase ``buyer`` (their id) and ``phone`` (E.164) everywhere docs/personal-data.md says,
    in one transaction, and audit it once (the buyer id and the counts, never the number); a
    run that finds nothing left changes nothing and audits nothing. Raises :class:`InFlight`
    (nothing changed) while the buyer has an order pending or a loan active, unless
    ``force``."""
    engine = async_engine(database_url)
    try:
        async with engine.begin() as conn:
            if not force:
                await _refuse_in_flight(conn, buyer)
            erased = await _erase(conn, buyer, phone)
            if erased.anything:
                detail = {"counts": erased.counts, "forced": force, "unsent_kept": erased.unsent}
                await audit.record(conn, actor(), ACTION, buyer, detail=detail)
    finally:
        await engine.dispose()
    return erased


async def _refuse_in_flight(conn: AsyncConnection, buyer: str) -> None:
    pending = await conn.scalar(
        select(func.count())
        .select_from(orders)
        .where(orders.c.buyer_id == buyer, orders.c.status == "pending")
    )
    active = await conn.scalar(
        select(func.count())
        .select_from(loans)
        .where(loans.c.buyer_id == buyer, loans.c.status == "active")
    )
    if pending or active:
        raise InFlight(pending or 0, active or 0)


async def _erase(conn: AsyncConnection, buyer: str, phone: str) -> Erased:
    counts: dict[str, int] = {}
    theirs = orders.c.buyer_id == buyer
    platform_buyers = await _platform_buyers(conn, buyer, phone)

    async def count(key: str, statement: Executable) -> None:
        counts[key] = len((await conn.execute(statement)).all())

    await count(
        "delivery",
        update(orders)
        .where(theirs, func.jsonb_typeof(orders.c.delivery) == "object")
        .values(delivery=None, delivery_erased_at=func.now())
        .returning(orders.c.order_id),
    )
    await count(
        "request_hash",
        update(orders)
        .where(theirs, orders.c.request_hash != REQUEST_ERASED)
        .values(request_hash=REQUEST_ERASED)
        .returning(orders.c.order_id),
    )
    digests = platform_orders.c.placed
    await count(
        "placed",
        update(platform_orders)
        .where(
            platform_orders.c.order_id.in_(select(orders.c.order_id).where(theirs)),
            or_(digests.has_key("buyer"), digests.has_key("delivery")),
        )
        .values(placed=digests.op("-")("buyer").op("-")("delivery"))
        .returning(platform_orders.c.app),
    )
    await count(
        "sms",
        delete(sms).where(sms.c.to == phone, sms.c.status.not_in(UNSENT)).returning(sms.c.sms_id),
    )
    unsent = await conn.scalar(
        select(func.count()).select_from(sms).where(sms.c.to == phone, sms.c.status.in_(UNSENT))
    )
    await count(
        "recipients",
        delete(recipients).where(recipients.c.phone == phone).returning(recipients.c.order_id),
    )
    await count(
        "mappings",
        delete(mappings).where(_buyer_mapping(buyer, phone)).returning(mappings.c.app),
    )
    counts["problems"] = 0
    for app, platform_buyer in sorted(platform_buyers):
        await _erase_problems(conn, app, platform_buyer, counts)
    await count(
        "opt_audit",
        update(audit_table)
        .where(
            audit_table.c.action.in_(("sms.opt_out", "sms.opt_in")), audit_table.c.target == phone
        )
        .values(target=ERASED)
        .returning(audit_table.c.id),
    )
    its_app = func.split_part(audit_table.c.target, "/", 1)
    await count(
        "mapping_audit",
        update(audit_table)
        .where(_mapping_entry(buyer, phone))
        .values(target=its_app + literal(f"/buyer/{ERASED}"), before=None, after=None)
        .returning(audit_table.c.id),
    )
    return Erased(counts, unsent or 0)


async def _erase_problems(
    conn: AsyncConnection, app: str, platform_buyer: str, counts: dict[str, int]
) -> None:
    found = await conn.execute(
        update(problems)
        .where(
            problems.c.app == app,
            problems.c.kind == "unmapped_buyer",
            problems.c.detail == unmapped_buyer(platform_buyer),
        )
        .values(detail=ERASED_BUYER)
        .returning(problems.c.platform_order_id)
    )
    counts["problems"] += len(found.all())


def _buyer_mapping(buyer: str, phone: str) -> ColumnElement[bool]:
    return (mappings.c.kind == "buyer") & or_(
        mappings.c.value["phone"].astext == phone, mappings.c.value["buyer_id"].astext == buyer
    )


def _mapping_entry(buyer: str, phone: str) -> ColumnElement[bool]:
    """An audit entry of a buyer mapping of ``buyer`` or ``phone``, put or deleted."""
    named = [
        side[key].astext == value
        for side in (audit_table.c.before, audit_table.c.after)
        for key, value in (("phone", phone), ("buyer_id", buyer))
    ]
    return audit_table.c.action.like(MAPPING_ACTIONS) & or_(*named)


async def _platform_buyers(conn: AsyncConnection, buyer: str, phone: str) -> set[tuple[str, str]]:
    """The platform's ids of the buyer, by app: those of their mappings, and those the audit
    trail's entries of their mappings name (a mapping deleted since), read before either is
    erased: an ``unmapped_buyer`` problem names the buyer by it alone."""
    mapped = await conn.execute(
        select(mappings.c.app, mappings.c.external_id).where(_buyer_mapping(buyer, phone))
    )
    found = {(app, external_id) for app, external_id in mapped}
    entries = await conn.execute(select(audit_table.c.target).where(_mapping_entry(buyer, phone)))
    for (target,) in entries:
        app, kind, external_id = _parts(target)
        if kind == "buyer" and external_id not in ("", ERASED):
            found.add((app, external_id))
    return found


def _parts(target: str) -> Sequence[str]:
    """``<app>/<kind>/<external id>`` (the id may hold slashes)."""
    app, _, rest = target.partition("/")
    kind, _, external_id = rest.partition("/")
    return app, kind, external_id
