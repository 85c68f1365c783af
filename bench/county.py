"""A seed file at a real county's size, for sizing runs: 426 sellers (Shawan County's centre
put that many online in a year), 2,130 products, 10,650 harvest lots over five seasons (the
current one in season, the four before it expired) and 50,000 buyers' credit lines.

    .venv/bin/python bench/county.py OUT.json [--sellers 426] [--buyers 50000] [--today DAY]
    caravan seed OUT.json
    .venv/bin/python bench/county.py OUT.json --latency 200
    .venv/bin/python bench/county.py OUT.json --history 24

``--latency N`` (the seed loaded and a ``caravan up`` running) places N orders of the file's
buyers and in-season products one at a time through ``POST /orders`` and times each until
``GET /orders/{id}`` says it ended: a placed order's latency, with nothing else in flight.

``--history C`` makes a season's history out of the orders already in the database (driven
through the system by ``caravan demo --seed OUT.json``, every one of them ended): it copies
each order's rows in every schema (the order and its timeline, reservation, payment, loan,
instalments, ledger entries, payables, texts and recipients) C times, each copy under new
ids (each UUID's time moved back as its rows' times are) and with its times moved back by up
to 4 days per copy (a hash of the order's id spreads them), so C copies of orders made
within minutes spread over the 4 x C days before them. The inboxes get the copies that
``CARAVAN_INBOX_RETENTION_HOURS`` (38 days) keeps, the outboxes none (a published row is
kept a day). Order refs and provider ids get ``.<copy>``; lots count the copies' units as
sold or reserved. Instalments keep their due dates (moved back, those of the first months
would be due unpaid, and the payments service would remind their buyers of all of them at
once). Each table is copied in a transaction of its own (a run interrupted and run again copies
those not copied yet), then the database is vacuumed and analysed.
"""

import argparse
import asyncio
import json
import math
import random
import statistics
import sys
import time
import uuid
from datetime import date, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx

from caravan import checkout
from shared import days
from shared.api import bearer_headers
from shared.seed import SeedFile
from shared.settings import Settings

COUNTIES = ("Shawan", "Yining", "Kashgar", "Hotan", "Turpan", "Aksu")
CROPS = ("PEPPER", "TOMATO", "COTTON", "WALNUT", "APRICOT", "RAISIN", "MELON", "JUJUBE")
PRODUCTS_PER_SELLER = 5
SEASONS = 5  # lots per product: this season's and the four before it
LOCALES = ("zh-CN", "ug-CN", "en")
SCHEMAS = ("orders", "inventory", "payments", "notifications", "platform")


def season_start(today: date) -> date:
    """The 1st of September that began the harvest season ``today`` is in."""
    year = today.year if today.month >= 9 else today.year - 1
    return date(year, 9, 1)


def county(sellers: int, buyers: int, today: date) -> dict[str, list[dict[str, Any]]]:
    rng = random.Random(426)
    start = season_start(today)
    seller_rows, product_rows, lot_rows = [], [], []
    for s in range(1, sellers + 1):
        seller_id = f"seller-{s:04d}"
        seller_rows.append(
            {
                "id": seller_id,
                "name": f"{COUNTIES[s % len(COUNTIES)]} farmers cooperative {s}",
                "county": COUNTIES[s % len(COUNTIES)],
                "phone": f"+86130{s:08d}",
                "locale": LOCALES[s % len(LOCALES)],
            }
        )
        for p in range(PRODUCTS_PER_SELLER):
            crop = CROPS[(s + p) % len(CROPS)]
            sku = f"SWN-{crop}-{s:04d}-{p}"
            product_rows.append(
                {
                    "sku": sku,
                    "seller_id": seller_id,
                    "unit_price_fen": rng.randrange(500, 20000, 50),
                    "name": {"en": f"{crop.title()} {s}-{p} 1 kg", "zh-CN": f"{crop} {s}-{p}"},
                }
            )
            for back in range(SEASONS):
                began = start.replace(year=start.year - back)
                lot_rows.append(
                    {
                        "lot_id": f"LOT-{sku}-{began.year}",
                        "sku": sku,
                        # this season's lots are large enough for every order the bench drives
                        "quantity": 1_000_000 if back == 0 else rng.randrange(100, 5000),
                        "available_from": str(began),
                        "best_before": str(began.replace(year=began.year + 1) - timedelta(1)),
                    }
                )
    buyer_rows = [
        {
            "id": f"buyer-{b:06d}",
            "phone": f"+86139{b:08d}",
            "locale": LOCALES[b % len(LOCALES)],
            "credit_limit_fen": 10**9,
        }
        for b in range(1, buyers + 1)
    ]
    seed: dict[str, list[dict[str, Any]]] = {
        "sellers": seller_rows,
        "products": product_rows,
        "lots": lot_rows,
        "buyers": buyer_rows,
    }
    SeedFile.model_validate(seed)  # what caravan seed would refuse, refused here
    return seed


def latency(seed: dict[str, list[dict[str, Any]]], count: int) -> dict[str, float]:
    """Seconds from ``POST /orders`` to the order ended, for ``count`` orders one at a time."""
    rng = random.Random()
    today = str(days.today())
    skus = [
        lot["sku"] for lot in seed["lots"] if lot["available_from"] <= today <= lot["best_before"]
    ]
    checkout.use_running_system()
    settings = Settings()
    base = f"http://{settings.http_host}:{settings.http_port}"
    token = (checkout.CACHE / "dev-token").read_text().strip()
    took = []
    with httpx.Client(base_url=base, headers=bearer_headers(token), timeout=30) as http:
        for _ in range(count):
            buyer = rng.choice(seed["buyers"])
            ref = f"SIZE-{uuid.uuid4().hex[:12]}"
            body: dict[str, Any] = {
                "order_ref": ref,
                "buyer": {"id": buyer["id"], "phone": buyer["phone"], "locale": buyer["locale"]},
                "lines": [{"sku": rng.choice(skus), "quantity": 1}],
                "payment": {"method": "microloan", "term_months": 3},
            }
            start = time.perf_counter()
            placed = http.post("/orders", json=body, headers={"Idempotency-Key": ref})
            placed.raise_for_status()
            order_id = placed.json()["order_id"]
            while http.get(f"/orders/{order_id}").json()["status"] == "pending":
                time.sleep(0.005)
            took.append(time.perf_counter() - start)
    cuts = statistics.quantiles(took, n=100)
    return {"orders": count, "p50_s": cuts[49], "p95_s": cuts[94], "p99_s": cuts[98]}


PER_ORDER = (
    "orders.orders",
    "orders.timeline",
    "orders.order_sellers",
    "inventory.reservations",
    "inventory.reservation_lines",
    "payments.payments",
    "payments.loans",
    "payments.instalments",
    "payments.ledger_entries",
    "payments.payables",
    "notifications.recipients",
    "notifications.confirmed_orders",
    "notifications.order_sellers",
    "notifications.sms",
    *(f"{schema}.inbox" for schema in SCHEMAS),
)
"""The tables holding rows of each order, parents before children (their foreign keys). The
outboxes are left as they are: a service keeps a published row a day
(``CARAVAN_OUTBOX_RETENTION_HOURS``), and the orders driven through the system left more than
a county's day of them."""

UUID = "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
STEP_SECONDS = 4 * 86400  # how far back each copy goes
INBOX_HOURS = 912  # CARAVAN_INBOX_RETENTION_HOURS: the inboxes get the copies it keeps
SUFFIXED = ("order_ref", "provider_id")  # ids without a UUID: ".<copy>" added
HELPERS = f"""
CREATE FUNCTION pg_temp.back(u text, k int) RETURNS interval IMMUTABLE LANGUAGE sql AS $$
  SELECT make_interval(secs => 3600 + {STEP_SECONDS} * (k - 1
    + ('x' || substr(md5(u), 1, 8))::bit(32)::bigint / 4294967296.0)) $$;
CREATE FUNCTION pg_temp.moved(u text, k int) RETURNS text IMMUTABLE LANGUAGE sql AS $$
  SELECT substr(h, 1, 8) || '-' || substr(h, 9, 4) || substr(u, 14) FROM (SELECT lpad(to_hex(
    ('x' || replace(substr(u, 1, 13), '-', ''))::bit(48)::bigint
    - (extract(epoch FROM pg_temp.back(u, k)) * 1000)::bigint), 12, '0') AS h) AS t $$;
CREATE FUNCTION pg_temp.renamed(v text, k int) RETURNS text IMMUTABLE LANGUAGE sql AS $$
  SELECT CASE WHEN v ~ '{UUID}' THEN
    regexp_replace(v, '{UUID}', pg_temp.moved(substring(v FROM '{UUID}'), k)) ELSE v END $$;
"""
LOTS = """
UPDATE inventory.lots SET reserved = reserved * ($1 + 1), sold = sold * ($1 + 1),
  available = available - $1 * (reserved + sold) WHERE reserved + sold > 0
"""


DONE = "county history: copied"
"""The comment a table gets with its copies (in their transaction): a second run, or one
after an interrupted run, leaves it as it is."""


async def _copy_table(conn: Any, name: str, copies: int) -> None:
    """Insert ``copies`` copies of every row of ``name`` (the module's docstring)."""
    from sqlalchemy import text

    schema, table = name.split(".")
    columns = (
        await conn.execute(
            text(
                "SELECT column_name, data_type, coalesce(column_default, '') LIKE 'nextval%'"
                " FROM information_schema.columns WHERE table_schema = :s AND table_name = :t"
                " ORDER BY ordinal_position"
            ),
            {"s": schema, "t": table},
        )
    ).all()
    names = [c for c, _, serial in columns if not serial]
    texts = [c for c, kind, _ in columns if kind in ("character varying", "text")]
    with_ids = set()
    if texts:  # the text columns naming a UUID: what is renamed in each copy
        sample = ", ".join(f"bool_or(\"{c}\" ~ '{UUID}')" for c in texts)
        row = (await conn.execute(text(f"SELECT {sample} FROM (TABLE {name} LIMIT 1000) t"))).one()
        with_ids = {c for c, has in zip(texts, row, strict=True) if has}
    by = "order_id" if "order_id" in names else columns[0][0]
    exprs = []
    for column, kind, _ in columns:
        quoted = f'"{column}"'
        if column not in names:
            continue
        if kind == "timestamp with time zone":
            exprs.append(f"{quoted} - b.back")
        elif column in SUFFIXED:
            exprs.append(f"{quoted} || '.' || k")
        elif column in with_ids:
            exprs.append(f"pg_temp.renamed({quoted}, k)")
        else:
            exprs.append(quoted)
    listed = ", ".join(f'"{c}"' for c in names)
    # OFFSET 0: each row's shift worked out once, not once per column
    await conn.exec_driver_sql(
        f"INSERT INTO {name} ({listed}) SELECT {', '.join(exprs)}"
        f" FROM {name}, generate_series(1, {copies}) AS k,"
        f' LATERAL (SELECT pg_temp.back({name}."{by}"::text, k) AS back OFFSET 0) AS b'
    )
    await conn.exec_driver_sql(f"COMMENT ON TABLE {name} IS '{DONE}'")


async def _copy_schema(engine: Any, tables: list[str], copies: int) -> None:
    """Copy ``tables`` (of one schema, in their order) each in a transaction of its own."""
    from sqlalchemy import text

    async with engine.connect() as conn:
        for helper in filter(str.strip, HELPERS.split(";\n")):
            await conn.exec_driver_sql(helper)
        await conn.commit()
        for name in tables:
            said = await conn.scalar(text(f"SELECT obj_description('{name}'::regclass)"))
            if said == DONE:
                print(f"  {name}: copied before", flush=True)
                continue
            made = copies
            if name.endswith(".inbox"):
                made = min(copies, math.ceil(INBOX_HOURS * 3600 / STEP_SECONDS))
            started = time.perf_counter()
            await _copy_table(conn, name, made)
            await conn.commit()
            rows = await conn.scalar(text(f"SELECT count(*) FROM {name}"))
            print(f"  {name}: {rows:,} rows ({time.perf_counter() - started:.0f} s)", flush=True)


async def history(database_url: str, copies: int) -> None:
    """Copy every order's rows ``copies`` times (the module's docstring), the schemas side by
    side; then count the copies' stock in the lots, and analyse."""
    from sqlalchemy import text
    from sqlalchemy.pool import NullPool

    from shared.db.engine import async_engine

    engine = async_engine(database_url, poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            pending = await conn.scalar(
                text("SELECT count(*) FROM orders.orders WHERE status = 'pending'")
            )
            if pending:
                raise SystemExit(f"{pending} orders still pending: wait until every one ended")
            lots_done = await conn.scalar(
                text("SELECT obj_description('inventory.lots'::regclass)")
            )
        by_schema: dict[str, list[str]] = {}
        for name in PER_ORDER:
            by_schema.setdefault(name.split(".")[0], []).append(name)
        await asyncio.gather(*(_copy_schema(engine, t, copies) for t in by_schema.values()))
        async with engine.begin() as conn:
            if lots_done != DONE:
                await conn.exec_driver_sql(LOTS.replace("$1", str(copies)))
                await conn.exec_driver_sql(f"COMMENT ON TABLE inventory.lots IS '{DONE}'")
        async with engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.exec_driver_sql("VACUUM ANALYZE")
    finally:
        await engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("output", type=Path)
    parser.add_argument("--sellers", type=int, default=426)
    parser.add_argument("--buyers", type=int, default=50_000)
    parser.add_argument("--today", type=date.fromisoformat, default=None)
    parser.add_argument("--latency", type=int, default=0, metavar="N")
    parser.add_argument("--history", type=int, default=0, metavar="COPIES")
    args = parser.parse_args()
    if args.history:
        checkout.use_running_system()
        asyncio.run(history(Settings().async_database_url(), args.history))
        return
    if args.latency:
        figures = latency(json.loads(args.output.read_text()), args.latency)
        print(
            ", ".join(
                f"{k} {v:.3f}" if k != "orders" else f"{v} orders" for k, v in figures.items()
            )
        )
        return
    seed = county(args.sellers, args.buyers, args.today or days.today())
    args.output.write_text(json.dumps(seed, ensure_ascii=False))
    print(
        f"{args.output}: {', '.join(f'{len(rows):,} {section}' for section, rows in seed.items())}"
    )


if __name__ == "__main__":
    main()
