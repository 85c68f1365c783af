"""``caravan seed`` on the running system: a file loads once (again changes nothing, and
says which lots it left as they were), and a file that is not a seed file, or names sellers
or SKUs nobody has, is refused whole, every error named, nothing written."""

import asyncio
import json
import random
import re
import uuid
from functools import partial
from pathlib import Path

from sqlalchemy import text

from caravan.seeding import EXPIRED
from shared.events.envelope import CloudEvent
from shared.events.orders import OrderRequested
from shared.topics import Topic
from tests.e2e.test_ops import cli
from tests.harness import System, backend_pid, ref


def write(tmp_path: Path, body: object) -> str:
    path = tmp_path / f"seed-{uuid.uuid4().hex[:6]}.json"
    path.write_text(body if isinstance(body, str) else json.dumps(body))
    return str(path)


def seller(sid: str) -> dict[str, str]:
    return {
        "id": sid,
        "name": "Sandaohezi cooperative",
        "county": "Shawan",
        "phone": "+8613000000001",
    }


def product(sku: str, sid: str) -> dict[str, object]:
    return {"sku": sku, "seller_id": sid, "unit_price_fen": 3500, "name": {"en": sku}}


def lot(lot_id: str, sku: str) -> dict[str, object]:
    return {
        "lot_id": lot_id,
        "sku": sku,
        "quantity": 50,
        "available_from": "2026-09-01",
        "best_before": "2027-08-31",
    }


def told(stdout: str) -> list[tuple[int, int | None, int]]:
    """The summary ``caravan seed`` printed: (new, updated, unchanged) per section, in the
    contract's order (updated None where a section's rows are never updated)."""
    found = re.findall(
        r"^  (sellers|products|lots|buyers): (\d+) new, (?:(\d+) updated, )?(\d+) unchanged",
        stdout,
        re.MULTILINE,
    )
    assert [f[0] for f in found] == ["sellers", "products", "lots", "buyers"], stdout
    return [(int(new), None if up == "" else int(up), int(same)) for _, new, up, same in found]


async def counts(caravan: System, tag: str) -> tuple[int, int, int]:
    like = f"%{tag}%"
    return (
        await caravan.scalar(
            "select count(*) from inventory.sellers where seller_id like :t", t=like
        ),
        await caravan.scalar("select count(*) from inventory.products where sku like :t", t=like),
        await caravan.scalar("select count(*) from inventory.lots where lot_id like :t", t=like),
    )


async def test_a_seed_file_loads_once_and_a_second_file_may_name_what_the_first_loaded(
    caravan: System, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:8]
    first = write(
        tmp_path,
        {
            "sellers": [seller(f"S-{tag}")],
            "products": [product(f"P-{tag}", f"S-{tag}")],
            "lots": [lot(f"L1-{tag}", f"P-{tag}")],
        },
    )
    done = await cli(caravan, "seed", first)
    assert done.returncode == 0, done.stderr
    assert told(done.stdout) == [(1, 0, 0), (1, 0, 0), (1, None, 0), (0, None, 0)], done.stdout
    assert "left as it is" not in done.stdout
    assert await counts(caravan, tag) == (1, 1, 1)
    # Again: nothing changes, the summary says so, and the lot it held already is named.
    done = await cli(caravan, "seed", first)
    assert done.returncode == 0, done.stderr
    assert told(done.stdout) == [(0, 0, 1), (0, 0, 1), (0, None, 1), (0, None, 0)], done.stdout
    assert f"lots loaded before, left as they are: L1-{tag}\n" in done.stdout
    assert await counts(caravan, tag) == (1, 1, 1)
    # Its stock written down since: the same file is still the lot loaded before (its
    # quantity is what the lot received, not what is left), not a lot with other terms.
    url = f"http://127.0.0.1:{caravan.port('inventory')}"
    down = ("adjust", f"L1-{tag}", "--delta", "-5", "--reason", "mould", "--url", url)
    adjusted = await cli(caravan, "inventory", *down)
    assert adjusted.returncode == 0, adjusted.stderr
    done = await cli(caravan, "seed", first)
    assert done.returncode == 0, done.stderr
    assert f"lots loaded before, left as they are: L1-{tag}\n" in done.stdout
    # A later file with only a lot, of the product loaded before.
    later = write(tmp_path, {"lots": [lot(f"L2-{tag}", f"P-{tag}")]})
    done = await cli(caravan, "seed", later)
    assert done.returncode == 0, done.stderr
    assert await counts(caravan, tag) == (1, 1, 2)


async def test_a_seed_run_again_says_what_it_added_updated_and_left_unchanged(
    caravan: System, tmp_path: Path
) -> None:
    """A file loaded again said "seeded 2 sellers, 1 products, 0 new lots, 1 buyers" whether
    it changed anything or not: the summary tells new, updated and unchanged apart, a seller
    whose locale alone changed (notifications' part) updated too, and a credit line whose
    limit the file changes unchanged (a seed opens lines only), and named."""
    tag = uuid.uuid4().hex[:8]
    buyer = {"id": f"B-{tag}", "phone": "+8613900000009", "credit_limit_fen": 20000}
    body = {
        "sellers": [seller(f"S1-{tag}"), seller(f"S2-{tag}")],
        "products": [product(f"P-{tag}", f"S1-{tag}")],
        "lots": [lot(f"L1-{tag}", f"P-{tag}")],
        "buyers": [buyer],
    }
    path = write(tmp_path, body)
    done = await cli(caravan, "seed", path)
    assert done.returncode == 0, done.stderr
    assert told(done.stdout) == [(2, 0, 0), (1, 0, 0), (1, None, 0), (1, None, 0)], done.stdout
    done = await cli(caravan, "seed", path)
    assert done.returncode == 0, done.stderr
    assert told(done.stdout) == [(0, 0, 2), (0, 0, 1), (0, None, 1), (0, None, 1)], done.stdout
    changed = {
        "sellers": [
            {**seller(f"S1-{tag}"), "name": "Renamed"},
            {**seller(f"S2-{tag}"), "locale": "en"},
        ],
        "products": [{**product(f"P-{tag}", f"S1-{tag}"), "unit_price_fen": 9900}],
        "lots": [lot(f"L1-{tag}", f"P-{tag}"), lot(f"L2-{tag}", f"P-{tag}")],
        "buyers": [{**buyer, "credit_limit_fen": 30000}],
    }
    done = await cli(caravan, "seed", write(tmp_path, changed))
    assert done.returncode == 0, done.stderr
    assert told(done.stdout) == [(0, 2, 0), (0, 1, 0), (1, None, 1), (0, None, 1)], done.stdout
    said = " ".join(done.stdout.split())
    assert f"credit line of B-{tag} was opened before: left as it is, limit 20000 fen" in said
    assert (
        await caravan.scalar(
            "select unit_price_fen from inventory.products where sku = :s", s=f"P-{tag}"
        )
        == 9900
    )


async def test_a_lot_past_its_best_before_loads_with_a_warning_and_is_counted(
    caravan: System, tmp_path: Path
) -> None:
    """A lot whose best_before had passed loaded without a word, though no order can take
    it: it still loads (a county centre may book an expired lot), each run warns, naming it
    and why, and the summary counts it."""
    tag = uuid.uuid4().hex[:8]
    body = {
        "sellers": [seller(f"S-{tag}")],
        "products": [product(f"P-{tag}", f"S-{tag}")],
        "lots": [
            {
                **lot(f"OLD-{tag}", f"P-{tag}"),
                "available_from": "2020-01-01",
                "best_before": "2020-01-31",
            },
            lot(f"L-{tag}", f"P-{tag}"),
        ],
    }
    path = write(tmp_path, body)
    for run in (1, 2):
        done = await cli(caravan, "seed", path)
        assert done.returncode == 0, done.stderr
        said = " ".join(done.stdout.split())
        assert f"warning: {EXPIRED}: OLD-{tag}\n" in done.stdout, done.stdout
        new = 2 if run == 1 else 0
        assert f"lots: {new} new, {2 - new} unchanged, 1 will not sell" in said, said
    assert await counts(caravan, tag) == (1, 1, 2)


async def test_a_seed_opens_a_credit_line_once_and_leaves_an_operators_limit(
    caravan: System, tmp_path: Path
) -> None:
    """A seed opens a buyer's credit line (audited); an operator lowers its limit (a risky
    buyer); the next seed (``caravan up --demo`` seeds every time) leaves the operator's limit
    and says so, where it raised it back to the file's silently."""
    who = f"B-{uuid.uuid4().hex[:8]}"
    buyers = {"buyers": [{"id": who, "phone": "+8613900000009", "credit_limit_fen": 20000}]}
    path = write(tmp_path, buyers)
    for _ in range(2):
        done = await cli(caravan, "seed", path)
        assert done.returncode == 0 and "left as it is" not in done.stdout, done.stdout
    url = f"http://127.0.0.1:{caravan.procs.env['CARAVAN_PAYMENTS_HTTP_PORT']}"
    lowered = await cli(caravan, "payments", "credit-set", "--url", url, who, "0")
    assert lowered.returncode == 0, lowered.stdout + lowered.stderr
    done = await cli(caravan, "seed", path)
    assert done.returncode == 0, done.stderr
    said = " ".join(done.stdout.split())  # as Rich wrapped it
    assert (
        f"credit line of {who} was opened before: left as it is, limit 0 fen (the file says"
        " 20000)" in said
    ), said
    assert "changes with `caravan payments credit-set`" in said, said
    limit = await caravan.sql(
        "select credit_limit_fen from payments.credit_lines where buyer_id = :b", b=who
    )
    assert [r.credit_limit_fen for r in limit] == [0]
    rows = await caravan.sql(
        "select actor, before, after, detail from auth.audit"
        " where action = 'credit.set' and target = :b order by id",
        b=who,
    )
    limits = [
        (r.before and r.before["credit_limit_fen"], r.after["credit_limit_fen"], r.detail.get("by"))
        for r in rows
    ]
    assert limits == [(None, 20000, "caravan seed"), (20000, 0, None)]  # the operator's last
    assert rows[0].actor == "test-operator"  # the seed's: the CLI's operator


async def test_what_a_seed_adds_or_changes_in_inventory_is_in_the_audit_trail(
    caravan: System, tmp_path: Path
) -> None:
    """A seed file changed prices and added stock unseen: only credit lines were audited,
    while the same change through the API (``POST /lots``) is."""
    tag = uuid.uuid4().hex[:8]
    body = {
        "sellers": [seller(f"S-{tag}")],
        "products": [product(f"P-{tag}", f"S-{tag}")],
        "lots": [lot(f"L-{tag}", f"P-{tag}")],
    }
    for _ in range(2):  # again: nothing changed, nothing more recorded
        assert (await cli(caravan, "seed", write(tmp_path, body))).returncode == 0
    body["products"] = [{**product(f"P-{tag}", f"S-{tag}"), "unit_price_fen": 9900}]
    assert (await cli(caravan, "seed", write(tmp_path, body))).returncode == 0
    rows = await caravan.sql(
        "select action, target, before, after, detail, actor from auth.audit"
        " where target like :t order by id",
        t=f"%-{tag}",
    )
    assert [(r.action, r.target) for r in rows] == [
        ("seller.set", f"S-{tag}"),
        ("product.set", f"P-{tag}"),
        ("lot.add", f"L-{tag}"),
        ("product.set", f"P-{tag}"),
    ]
    assert rows[0].before is None and rows[0].after["phone"] == "+8613000000001"
    assert rows[2].after["quantity"] == 50
    assert (rows[3].before["unit_price_fen"], rows[3].after["unit_price_fen"]) == (3500, 9900)
    assert {(r.detail["by"], r.actor) for r in rows} == {("caravan seed", "test-operator")}


async def test_a_seller_seeded_with_a_locale_gets_its_new_order_texts_in_it(
    caravan: System, tmp_path: Path
) -> None:
    """A seller's locale could not be set (the seed wrote its phone only): a Uyghur
    cooperative got its new-order texts in Chinese. A seller may say ``locale``; a later file
    that does not say it leaves it as it is, and a locale not supported is refused."""
    tag = uuid.uuid4().hex[:8]
    phone = f"+86136{random.randrange(10**8):08d}"
    names = {"zh-CN": "葡萄干", "ug-CN": "ئۈزۈم قېقى", "en": "Raisins"}
    coop = {**seller(f"S-{tag}"), "phone": phone}
    body = {
        "sellers": [{**coop, "locale": "ug-CN"}],
        "products": [{**product(f"P-{tag}", f"S-{tag}"), "name": names}],
        "lots": [lot(f"L-{tag}", f"P-{tag}")],
    }
    for seed in (body, {"sellers": [coop]}):  # the second, saying no locale, keeps it
        done = await cli(caravan, "seed", write(tmp_path, seed))
        assert done.returncode == 0, done.stderr
    req = OrderRequested.model_validate(
        {
            "order_ref": ref("UG"),
            "buyer": {"id": "t-rich", "phone": f"+86137{random.randrange(10**8):08d}"},
            "lines": [{"sku": f"P-{tag}", "quantity": 2}],
            "payment": {"method": "prepaid"},
        }
    )
    await caravan.request(req)
    order_id = await caravan.placed(req.order_ref)
    sent = await caravan.wait_for(
        lambda: caravan.log.events(
            Topic.NOTIFICATION_EVENTS, type="sms.sent", order_id=order_id, to=phone
        )
    )
    text = sent[0].data["text"]
    assert (sent[0].data["purpose"], sent[0].data["locale"]) == ("new_order", "ug-CN"), text
    assert text.startswith("【Caravan】يېڭى بۇيرۇتما ") and "ئۈزۈم قېقى x2" in text, text
    bad = {"sellers": [{**coop, "locale": "ug"}]}
    done = await cli(caravan, "seed", write(tmp_path, bad))
    said = " ".join(done.stderr.split())
    assert done.returncode == 2 and "sellers.0.locale: " in said, said
    assert (
        await caravan.scalar(
            "select locale from notifications.sellers where seller_id = :s", s=f"S-{tag}"
        )
        == "ug-CN"
    )


def texted(caravan: System, order_id: str, phone: str) -> list[CloudEvent]:
    """The texts sent so far to ``phone`` about ``order_id``."""
    return caravan.log.events(
        Topic.NOTIFICATION_EVENTS, type="sms.sent", order_id=order_id, to=phone
    )


async def test_a_buyer_seeded_with_a_locale_gets_texts_in_it_where_an_order_leaves_it_out(
    caravan: System, tmp_path: Path
) -> None:
    """A seed file's buyer's locale was kept nowhere: a buyer seeded ug-CN was texted in
    Chinese for an order that left ``buyer.locale`` out. It is their texts' language then; a
    later file that does not say it leaves it as it is; an order's own locale comes first."""
    tag = uuid.uuid4().hex[:8]
    phone = f"+86135{random.randrange(10**8):08d}"
    names = {"zh-CN": "葡萄干", "ug-CN": "ئۈزۈم قېقى", "en": "Raisins"}
    buyer = {"id": f"B-{tag}", "phone": phone, "credit_limit_fen": 100000}
    body = {
        "sellers": [seller(f"S-{tag}")],
        "products": [{**product(f"P-{tag}", f"S-{tag}"), "name": names}],
        "lots": [lot(f"L-{tag}", f"P-{tag}")],
        "buyers": [{**buyer, "locale": "ug-CN"}],
    }
    for seed in (body, {"buyers": [buyer]}):  # the second, saying no locale, keeps it
        done = await cli(caravan, "seed", write(tmp_path, seed))
        assert done.returncode == 0, done.stderr
    said = {}
    for locale in (None, "en"):
        req = OrderRequested.model_validate(
            {
                "order_ref": ref("BL"),
                "buyer": {"id": f"B-{tag}", "phone": phone, "locale": locale},
                "lines": [{"sku": f"P-{tag}", "quantity": 2}],
                "payment": {"method": "prepaid"},
            }
        )
        await caravan.request(req)
        order_id = await caravan.placed(req.order_ref)
        sent = await caravan.wait_for(partial(texted, caravan, order_id, phone))
        said[locale] = (sent[0].data["locale"], sent[0].data["text"])
    assert said[None][0] == "ug-CN" and "ئۈزۈم قېقى x2" in said[None][1], said
    assert said["en"][0] == "en" and "Raisins x2" in said["en"][1], said


async def test_a_file_that_is_not_a_seed_file_is_refused_with_every_error(
    caravan: System, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:8]
    bad = {"sellers": [{"id": f"S-{tag}"}], "lots": [{**lot(f"L-{tag}", "X"), "quantity": -1}]}
    done = await cli(caravan, "seed", write(tmp_path, bad))
    assert done.returncode == 2, done.stdout
    assert "Traceback" not in done.stderr, done.stderr
    said = " ".join(done.stderr.split())
    assert "is not a seed file as CONTRACT.md describes (4 error(s))" in said, said
    for field in ("sellers.0.name", "sellers.0.county", "sellers.0.phone", "lots.0.quantity"):
        assert f"{field}: " in said, said
    done = await cli(caravan, "seed", write(tmp_path, '{"sellers": ['))
    assert done.returncode == 2 and "file: not JSON: " in done.stderr, done.stderr
    # Numbers beyond PostgreSQL's columns are format errors too: a credit limit of 2^63 fen
    # failed in payments' loader after inventory's part was written (a seed half loaded).
    big = {"buyers": [{"id": f"B-{tag}", "phone": "+8613900000009", "credit_limit_fen": 2**63}]}
    done = await cli(caravan, "seed", write(tmp_path, big))
    assert done.returncode == 2 and "buyers.0.credit_limit_fen: " in done.stderr, done.stderr
    assert await counts(caravan, tag) == (0, 0, 0)
    # So is a price an order's total could not hold (50 lines of 10,000 units beyond bigint):
    # one near 10^15 fen loaded, and every order of it was dead-lettered, never answered; and
    # a price of 0, whose orders of 0 fen no payment was made for.
    dear = {
        "sellers": [seller(f"S-{tag}")],
        "products": [
            {**product(f"P-{tag}", f"S-{tag}"), "unit_price_fen": 10**15},
            {**product(f"F-{tag}", f"S-{tag}"), "unit_price_fen": 0},
        ],
    }
    done = await cli(caravan, "seed", write(tmp_path, dear))
    said = " ".join(done.stderr.split())
    assert done.returncode == 2, said
    assert "products.0.unit_price_fen: a unit price is at most 10000000000 fen" in said
    assert "products.1.unit_price_fen: a unit price is at least 1 fen" in said
    assert await counts(caravan, tag) == (0, 0, 0)
    # So is a NUL in a text (PostgreSQL refused it in payments' part, a traceback after
    # inventory's part was written): the seller below was loaded.
    nul = {
        "sellers": [seller(f"S-{tag}")],
        "buyers": [{"id": f"B-{tag}\u0000", "phone": "+8613900000009", "credit_limit_fen": 1}],
    }
    done = await cli(caravan, "seed", write(tmp_path, nul))
    said = " ".join(done.stderr.split())
    assert done.returncode == 2 and "buyers.0: " in said and "NUL" in said, said
    assert await counts(caravan, tag) == (0, 0, 0)


async def test_a_file_naming_sellers_or_skus_nobody_has_loads_nothing(
    caravan: System, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:8]
    dangling = {
        "sellers": [seller(f"S-{tag}")],
        "products": [product(f"P-{tag}", f"NOBODY-{tag}")],
        "lots": [lot(f"L-{tag}", f"NO-SKU-{tag}")],
    }
    done = await cli(caravan, "seed", write(tmp_path, dangling))
    assert done.returncode == 2, done.stdout
    said = " ".join(done.stderr.split())
    assert f"nothing seeded: product P-{tag}: no seller NOBODY-{tag}" in said, said
    assert f"lot L-{tag}: no product NO-SKU-{tag}" in said, said
    assert await counts(caravan, tag) == (0, 0, 0)  # not even the seller that was fine


async def test_a_file_of_more_products_than_a_statement_may_have_parameters_loads(
    caravan: System, tmp_path: Path
) -> None:
    """33,000 products, each of a seller loaded before, were refused as "cannot reach
    PostgreSQL": the statements that look the file's keys up had one parameter per key, and
    asyncpg takes at most 32,767. The products and sellers are written here first, as the
    file has them but for one price, so that the load itself has little to write."""
    tag = uuid.uuid4().hex[:8]
    n = 33_000
    named = "from generate_series(1, :n) i"
    await caravan.execute(
        f"insert into inventory.sellers select 'S' || i || '-{tag}', 'Co-op', 'Shawan',"
        f" '+8613000000001' {named}",
        n=n,
    )
    await caravan.execute(
        f"insert into inventory.products select 'P' || i || '-{tag}', 'S' || i || '-{tag}',"
        f" 3500, jsonb_build_object('en', 'P' || i || '-{tag}') {named}",
        n=n,
    )
    await caravan.execute(
        f"insert into notifications.products select 'P' || i || '-{tag}',"
        f" jsonb_build_object('en', 'P' || i || '-{tag}') {named}",
        n=n,
    )
    products = [product(f"P{i}-{tag}", f"S{i}-{tag}") for i in range(1, n + 1)]
    products[-1] = {**products[-1], "unit_price_fen": 9900}
    done = await cli(caravan, "seed", write(tmp_path, {"products": products}))
    assert done.returncode == 0, done.stderr[:300]  # the statement follows, 33,000 $n long
    assert told(done.stdout)[1] == (0, 1, n - 1), done.stdout[:300]
    rows = await caravan.sql(
        "select target, before, after from auth.audit where target like :t", t=f"%-{tag}"
    )
    assert [(r.target, r.before["unit_price_fen"], r.after["unit_price_fen"]) for r in rows] == [
        (f"P{n}-{tag}", 3500, 9900)
    ]


async def test_a_file_reusing_a_lot_id_with_other_terms_is_refused_whole(
    caravan: System, tmp_path: Path
) -> None:
    """A new season's file reusing a lot id with another best_before was loaded with that lot
    left out, "loaded before: left as it is", exit 0, and the advice to adjust its count:
    the new harvest booked under the old lot's dates. It is refused, naming the lot and what
    differs, and nothing of the file is written; a lot the very same as stored is still
    "loaded before". Once the lot is corrected (``PATCH /lots``), the file as it was loads
    again (it refused the whole file, the lot's terms no longer the stored ones), the lot
    left as corrected and the correction named; a file of terms the lot never had is refused,
    saying it was corrected and how."""
    tag = uuid.uuid4().hex[:8]
    first = {
        "sellers": [seller(f"S-{tag}")],
        "products": [product(f"P-{tag}", f"S-{tag}")],
        "lots": [lot(f"L1-{tag}", f"P-{tag}")],
    }
    assert (await cli(caravan, "seed", write(tmp_path, first))).returncode == 0
    stored = "select sku, received, available_from, best_before from inventory.lots"
    before = await caravan.sql(f"{stored} where lot_id = :l", l=f"L1-{tag}")
    second = {
        "sellers": [seller(f"S2-{tag}")],
        "products": [product(f"P2-{tag}", f"S-{tag}")],
        "lots": [
            {**lot(f"L1-{tag}", f"P-{tag}"), "best_before": "2027-09-30"},
            lot(f"L2-{tag}", f"P-{tag}"),
        ],
    }
    done = await cli(caravan, "seed", write(tmp_path, second))
    said = " ".join(done.stderr.split())
    assert done.returncode != 0, done.stdout
    differs = "best_before 2027-08-31 stored, 2027-09-30 given"
    assert f"nothing seeded: lot L1-{tag} exists with other terms: {differs}" in said, said
    # What to do, in commands: it said only what differs.
    correct = f"`caravan inventory correct-lot L1-{tag} --best-before 2027-09-30 --reason R`"
    assert "a new harvest takes a new lot id; terms mistyped when it was" in said, said
    assert f" received are set right by {correct}" in said, said
    more = {**first, "lots": [{**lot(f"L1-{tag}", f"P-{tag}"), "quantity": 80}]}
    done = await cli(caravan, "seed", write(tmp_path, more))
    said = " ".join(done.stderr.split())
    assert done.returncode == 2, done.stdout
    assert "quantity 50 stored, 80 given: a new harvest takes a new lot id; its count" in said
    adjust = f"`caravan inventory adjust L1-{tag} --delta 30 --reason R`"
    assert f"changes by {adjust}, its quantity in the file staying 50 (as received)" in said
    assert await caravan.sql(f"{stored} where lot_id = :l", l=f"L1-{tag}") == before
    assert await counts(caravan, tag) == (1, 1, 1)  # no S2, P2 or L2
    done = await cli(caravan, "seed", write(tmp_path, {**second, "lots": first["lots"]}))
    assert done.returncode == 0, done.stderr
    assert f"lots loaded before, left as they are: L1-{tag}\n" in done.stdout
    assert await counts(caravan, tag) == (2, 2, 1)

    fix = {"best_before": "2027-09-30", "reason": "best_before mistyped"}
    async with caravan.api("inventory") as api:
        corrected = await api.patch(f"/lots/L1-{tag}", json=fix)
    assert corrected.status_code == 200, corrected.text
    third = {**first, "sellers": [seller(f"S-{tag}"), seller(f"S3-{tag}")]}
    done = await cli(caravan, "seed", write(tmp_path, third))
    assert done.returncode == 0, done.stderr
    said = " ".join(done.stdout.split())
    assert f"lot L1-{tag} is as the file says before its correction of " in said, said
    assert "(best_before 2027-08-31 -> 2027-09-30): left as corrected" in said, said
    assert await counts(caravan, tag) == (3, 2, 1)
    assert (await caravan.sql(f"{stored} where lot_id = :l", l=f"L1-{tag}"))[
        0
    ].best_before.isoformat() == "2027-09-30"
    never = {**first, "lots": [{**lot(f"L1-{tag}", f"P-{tag}"), "best_before": "2027-10-31"}]}
    done = await cli(caravan, "seed", write(tmp_path, never))
    said = " ".join(done.stderr.split())
    assert done.returncode != 0, done.stdout
    assert (
        "best_before 2027-09-30 stored, 2027-10-31 given (corrected since it was received" in said
    ), said
    assert "(best_before 2027-08-31 -> 2027-09-30): give its terms as corrected" in said, said
    # Its terms as corrected, another count (a stocktake): the adjustment, as for a lot never
    # corrected, where it said to give its terms as corrected, which the file did.
    recounted = {**lot(f"L1-{tag}", f"P-{tag}"), "best_before": "2027-09-30", "quantity": 45}
    done = await cli(caravan, "seed", write(tmp_path, {**first, "lots": [recounted]}))
    said = " ".join(done.stderr.split())
    assert done.returncode == 2, done.stdout
    assert "quantity 50 stored, 45 given: a new harvest takes a new lot id; its count" in said
    adjust = f"`caravan inventory adjust L1-{tag} --delta -5 --reason R`"
    assert f"changes by {adjust}, its quantity in the file staying 50 (as received)" in said


async def test_a_lot_adjusted_since_is_told_the_adjustment_from_its_count_now(
    caravan: System, tmp_path: Path
) -> None:
    """A clerk's stocktake found a lot 12 short (``adjust --delta -12``); the season's file,
    edited to the count after it (38, first received 50), was refused with the advice to
    adjust by -12: the delta from the quantity first received, the adjustment made already,
    so that following it took the 12 off again. The refusal now counts from the lot's count
    now: a file giving the count it has says so, nothing to adjust; another count, the delta
    from it; ``add-lot`` (``POST /lots``) the same. A write-off of spoiled units is no
    change of the count."""
    tag = uuid.uuid4().hex[:8]
    name = f"L-{tag}"
    first = {
        "sellers": [seller(f"S-{tag}")],
        "products": [product(f"P-{tag}", f"S-{tag}")],
        "lots": [lot(name, f"P-{tag}")],
    }
    assert (await cli(caravan, "seed", write(tmp_path, first))).returncode == 0
    async with caravan.api("inventory") as api:
        for change in (
            {"delta": -12, "reason": "stocktake: 12 bags short"},
            {"delta": -5, "reason": "cold store fault", "spoiled": True},
        ):
            adjusted = await api.post(f"/lots/{name}/adjustments", json=change)
            assert adjusted.status_code == 201, adjusted.text
    recounted = {**lot(name, f"P-{tag}"), "quantity": 38}
    done = await cli(caravan, "seed", write(tmp_path, {**first, "lots": [recounted]}))
    said = " ".join(done.stderr.split())
    assert done.returncode == 2, done.stdout
    assert "quantity 50 stored, 38 given: a new harvest takes a new lot id; its count is 38" in said
    assert "already (50 received, adjusted -12 since): nothing to adjust, its quantity" in said
    assert "--delta" not in said, said
    more = {**first, "lots": [{**lot(name, f"P-{tag}"), "quantity": 40}]}
    done = await cli(caravan, "seed", write(tmp_path, more))
    said = " ".join(done.stderr.split())
    assert done.returncode == 2, done.stdout
    adjust = f"`caravan inventory adjust {name} --delta 2 --reason R`"
    assert f"its count, 38 now (50 received, adjusted -12 since), changes by {adjust}" in said
    assert "its quantity in the file staying 50 (as received)" in said, said
    async with caravan.api("inventory") as api:
        again = await api.post("/lots", json=recounted)
    assert again.status_code == 409, again.text
    assert "its count is 38 already (50 received, adjusted -12 since)" in again.text
    row = "select received, available, spoiled from inventory.lots where lot_id = :l"
    assert [tuple(r) for r in await caravan.sql(row, l=name)] == [(38, 33, 5)]


async def test_a_seed_stopped_part_way_completes_when_run_again_nothing_doubled(
    caravan: System, tmp_path: Path
) -> None:
    """A seed loads each service's part in a transaction of its own, inventory's first: its
    database gone between them (here payments' connection ended by the server while it waits
    for a lock) leaves inventory's part loaded and payments' not. The same file again
    completes it: the credit line opened, the lot loaded before left as it is (no second lot,
    no second audit entry)."""
    tag = uuid.uuid4().hex[:8]
    buyer = {"id": f"B-{tag}", "phone": "+8613900000009", "credit_limit_fen": 20000}
    body = {
        "sellers": [seller(f"S-{tag}")],
        "products": [product(f"P-{tag}", f"S-{tag}")],
        "lots": [lot(f"L-{tag}", f"P-{tag}")],
        "buyers": [buyer],
    }
    path = write(tmp_path, body)
    lines = "select count(*) from payments.credit_lines where buyer_id = :b"
    assert caravan.engine is not None
    async with caravan.engine.connect() as holder:
        # The buyer's credit line written, not committed: the seed's payments part, opening
        # it, waits for this transaction, and no other session does (the running payments
        # service knows no such buyer), where a lock of the whole table made its consumer
        # wait too, and a session of its pool was taken for the seed's.
        opened = "insert into payments.credit_lines (buyer_id, credit_limit_fen) values (:b, 1)"
        await holder.execute(text(opened), {"b": buyer["id"]})
        seeding = asyncio.create_task(cli(caravan, "seed", path))
        waits = "the seed's payments part waiting for its buyer's credit line"
        [waiting] = await caravan.lock_waiters(await backend_pid(holder), waits)
        await caravan.execute("select pg_terminate_backend(:p)", p=waiting)
        await holder.rollback()
    done = await seeding
    assert done.returncode != 0, done.stdout
    assert await counts(caravan, tag) == (1, 1, 1)  # inventory's part loaded
    assert await caravan.scalar(lines, b=f"B-{tag}") == 0  # payments' not
    again = await cli(caravan, "seed", path)
    assert again.returncode == 0, again.stderr
    assert told(again.stdout)[2:] == [(0, None, 1), (1, None, 0)], again.stdout
    assert await counts(caravan, tag) == (1, 1, 1)
    assert await caravan.scalar(lines, b=f"B-{tag}") == 1
    audited = await caravan.sql(
        "select action, target from auth.audit where target like :t order by id", t=f"%-{tag}"
    )
    assert [(r.action, r.target) for r in audited] == [
        ("seller.set", f"S-{tag}"),
        ("product.set", f"P-{tag}"),
        ("lot.add", f"L-{tag}"),
        ("credit.set", f"B-{tag}"),
    ]
    phone = "select phone from notifications.sellers where seller_id = :s"
    assert await caravan.scalar(phone, s=f"S-{tag}") == "+8613000000001"  # its last part too
