"""A seed file that cannot make demo orders (no buyers, nothing in season), or a path that is
not a file, is refused in one line before anything starts: ``caravan up --demo`` started
the whole system, loaded the seed, then stopped everything with a traceback. A seed file
listing an id twice is refused as a format error, and so is a section misspelt, which loaded
nothing and said so as "0 buyers"."""

import json
import os
import subprocess
import sys
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from caravan.checkout import REPO_ROOT
from caravan.cli import DEMO_SEED
from caravan.demo import cannot_drive, demo_orders
from shared.seed import MAX_NAME_CHARS, SeedFile

DEMO: dict[str, Any] = json.loads(DEMO_SEED.read_text())


def seed(**changes: Any) -> SeedFile:
    return SeedFile.model_validate({**DEMO, **changes})


def caravan(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "caravan", *args],
        env={**os.environ, "DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"},
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=60,
    )


def test_a_seed_that_cannot_make_demo_orders_says_why() -> None:
    lots = DEMO["lots"]
    latest = max(date.fromisoformat(lot["best_before"]) for lot in lots)
    after = date(latest.year + 1, 1, 1)
    assert cannot_drive(seed(), after) == (
        f"no product of the seed file has a lot in season on {after.isoformat()}"
    )
    assert cannot_drive(seed(buyers=[]), date(2026, 12, 3)) == (
        "the seed file has no buyers to place demo orders"
    )
    first = min(date.fromisoformat(lot["available_from"]) for lot in lots)
    in_season = next(
        d
        for d in (date.fromordinal(first.toordinal() + n) for n in range(400))
        if cannot_drive(seed(), d) is None
    )
    assert len(demo_orders(seed(), 5, "t", in_season)) == 5


def test_the_commands_refuse_such_a_seed_or_a_folder_in_one_line(tmp_path: Path) -> None:
    no_buyers = tmp_path / "no-buyers.json"
    no_buyers.write_text(json.dumps({**DEMO, "buyers": []}))
    for args, said in [
        (("demo", "--seed", str(no_buyers)), "the seed file has no buyers"),
        (("seed", str(tmp_path)), "cannot be read: Is a directory"),
    ]:
        done = caravan(*args)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        flat = " ".join(done.stderr.replace("│", " ").split())  # what the error box wrapped
        assert said in flat and "Traceback" not in done.stderr, args


def test_an_id_listed_twice_in_a_seed_file_is_refused_naming_it() -> None:
    lot = DEMO["lots"][0]
    twice = {**DEMO, "lots": [*DEMO["lots"], {**lot, "quantity": 5}]}
    with pytest.raises(ValidationError, match=f"lots listed more than once: '{lot['lot_id']}'"):
        SeedFile.model_validate(twice)
    buyer = DEMO["buyers"][0]
    twice = {**DEMO, "buyers": [*DEMO["buyers"], {**buyer, "credit_limit_fen": 1}]}
    with pytest.raises(ValidationError, match=f"buyers listed more than once: '{buyer['id']}'"):
        SeedFile.model_validate(twice)


def test_a_seed_file_with_row_errors_and_an_id_listed_twice_is_told_both_in_one_run(
    tmp_path: Path,
) -> None:
    """A drill's file, a lot id listed twice with other quantities among rows with errors:
    the rows' errors were told and the duplicate not, until they were mended (a second
    round of edits). Every error now, in one run: the rows' in the file's order, then the
    whole file's, each naming its rows; nothing written (exit 2, before any database)."""
    lot: dict[str, object] = {"sku": "SWN-PEPPER-CAYENNE-1KG", "quantity": 50}
    lot |= {"available_from": "2026-09-01", "best_before": "2027-08-31"}
    lots = [
        {**lot, "lot_id": "LOT-DRL-A1", "quantity": -5},
        {**lot, "lot_id": "LOT-DRL-A2", "best_before": "2026-08-01"},
        {**lot, "lot_id": "LOT-DRL-A3", "available_from": "2026-02-30"},
        {**lot, "lot_id": "LOT-DRL-A4"},
        {**lot, "lot_id": "LOT-DRL-A4", "quantity": 60},
    ]
    buyer = DEMO["buyers"][0]
    buyers = [buyer, {**buyer, "phone": "0991"}]
    path = tmp_path / "drill.json"
    path.write_text(json.dumps({**DEMO, "lots": lots, "buyers": buyers}))
    done = caravan("seed", str(path))
    assert (done.returncode, done.stderr.splitlines()) == (
        2,
        [
            f"{path} is not a seed file as CONTRACT.md describes (6 error(s)):",
            "  lots.0.quantity: must be 0 or more",
            "  lots.1: lot LOT-DRL-A2: best_before 2026-08-01 is before available_from 2026-09-01",
            "  lots.2.available_from: should be a date that exists, e.g. 2026-11-30",
            "  buyers.1.phone: should be an E.164 phone number, + and 7 to 15 digits: e.g."
            " +8613912345678",
            "  file: lots listed more than once: 'LOT-DRL-A4' (lots.3, lots.4)",
            f"  file: buyers listed more than once: '{buyer['id']}' (buyers.0, buyers.1)",
        ],
    ), done.stdout


def test_the_seed_files_handed_over_load() -> None:
    files = sorted(DEMO_SEED.parent.glob("*.json"))
    assert DEMO_SEED in files
    for path in files:
        assert SeedFile.load(path).sellers, path


def test_a_section_a_seed_file_does_not_have_is_refused_naming_it_and_the_sections(
    tmp_path: Path,
) -> None:
    """A drill's operator met "buyer: Extra inputs are not permitted", pydantic's words, for
    ``buyer`` written for ``buyers``: now the sections there are, and the one it is close to
    (none for a name close to none), with the rows' errors, said in our words ("must be 0 or
    more", shared.api.field_errors's, as a 422 says it). Within a section, fields a later
    version may add are ignored, as in every contract model; only the sections themselves are
    checked."""
    misspelt = {k: v for k, v in DEMO.items() if k != "buyers"} | {"buyer": DEMO["buyers"]}
    lot = {**DEMO["lots"][0], "quantity": -5}
    path = tmp_path / "misspelt.json"
    path.write_text(json.dumps(misspelt | {"lots": [lot], "season": "spring"}))
    done = caravan("seed", str(path))
    sections = "its sections are sellers, products, lots, buyers"
    assert (done.returncode, done.stderr.splitlines()) == (
        2,
        [
            f"{path} is not a seed file as CONTRACT.md describes (3 error(s)):",
            "  lots.0.quantity: must be 0 or more",
            f"  file: no section 'buyer' in a seed file: {sections} (did you mean buyers?)",
            f"  file: no section 'season' in a seed file: {sections}",
        ],
    ), done.stdout
    with pytest.raises(ValidationError, match="no section 'buyer' in a seed file"):
        SeedFile.model_validate(misspelt)
    product = {**DEMO["products"][0], "origin": "Shawan"}
    assert seed(products=[product]).products[0] == seed().products[0]


def test_a_price_or_credit_limit_beyond_its_bound_is_refused_naming_it_and_the_bound(
    tmp_path: Path,
) -> None:
    """A price near 10^15 fen loaded, and the first order of 50 lines of 10,000 of it totalled
    beyond PostgreSQL's bigint: dead-lettered as a handler error, never answered. Refused by
    ``caravan seed`` now (before the database: nothing is loaded), naming item and field."""
    product = DEMO["products"][0]
    buyer = DEMO["buyers"][0]
    at_most = {**DEMO, "products": [{**product, "unit_price_fen": 10**10}]}
    at_most["buyers"] = [{**buyer, "credit_limit_fen": 10**16}]
    assert SeedFile.model_validate(at_most).products[0].unit_price_fen == 10**10
    beyond = {**DEMO, "products": [{**product, "unit_price_fen": 10**15}]}
    beyond["buyers"] = [{**buyer, "credit_limit_fen": 10**16 + 1}]
    path = tmp_path / "beyond.json"
    path.write_text(json.dumps(beyond))
    done = caravan("seed", str(path))
    assert done.returncode == 2, (done.stdout, done.stderr)
    said = " ".join(done.stderr.replace("│", " ").split())
    assert "(2 error(s))" in said, said
    assert (
        "products.0.unit_price_fen: a unit price is at most 10000000000 fen "
        "(100,000,000 CNY), so that an order of 50 lines of 10000 units and its loan fit "
        "PostgreSQL's bigint" in said
    ), said
    assert (
        "buyers.0.credit_limit_fen: a credit limit is at most 10000000000000000 "
        "fen (10^14 CNY)" in said
    ), said


def test_a_product_name_past_its_bound_is_refused_naming_it_and_the_bound(
    tmp_path: Path,
) -> None:
    """A name of 5,000 characters loaded, and an order's text naming it took 76 SMS parts.
    Refused by ``caravan seed`` now, naming the product, the language and the bound."""
    product = DEMO["products"][0]
    at_most = {**product, "name": {**product["name"], "en": "n" * MAX_NAME_CHARS}}
    assert seed(products=[at_most]).products[0].name["en"] == "n" * MAX_NAME_CHARS
    beyond = {**product, "name": {**product["name"], "ug-CN": "ن" * 5000}}
    path = tmp_path / "beyond.json"
    path.write_text(json.dumps({**DEMO, "products": [beyond, *DEMO["products"][1:]]}))
    done = caravan("seed", str(path))
    assert done.returncode == 2, (done.stdout, done.stderr)
    said = " ".join(done.stderr.replace("│", " ").split())
    assert (
        "products.0.name.ug-CN: a product's name is at most 64 characters, this one has 5000:"
        " an order's texts name its products" in said
    ), said


def test_a_name_in_no_locale_caravan_texts_in_or_none_is_refused_with_the_files_errors(
    tmp_path: Path,
) -> None:
    """A drill's file named a product {"zh_CN": .., "ug": .., "EN": ..} and another {}: both
    loaded (exit 0), and their texts named the SKU ("... SD-FIG-500G x1 ...").
    Each is refused now with the file's other errors, in one run, naming the locales taken."""
    product = DEMO["products"][0]
    keys = {"zh_CN": "无花果干 500克", "ug": "ئەنجۈر", "EN": "Dried figs 500 g"}
    products = [
        {**product, "sku": "SD-FIG-500G", "name": keys},
        {**product, "sku": "SD-NONE", "name": {}},
        {**product, "sku": "SD-BLANK", "name": {"en": " "}},
    ]
    buyer = {**DEMO["buyers"][0], "phone": "0991"}
    path = tmp_path / "locales.json"
    path.write_text(
        json.dumps({**DEMO, "products": [*DEMO["products"], *products], "buyers": [buyer]})
    )
    done = caravan("seed", str(path))
    at = len(DEMO["products"])
    taken = "a name's keys are zh-CN, ug-CN, en"
    assert (done.returncode, done.stderr.splitlines()) == (
        2,
        [
            f"{path} is not a seed file as CONTRACT.md describes (6 error(s)):",
            f"  products.{at}.name.zh_CN.[key]: 'zh_CN' is not a language Caravan has texts in:"
            f" {taken}",
            f"  products.{at}.name.ug.[key]: 'ug' is not a language Caravan has texts in: {taken}",
            f"  products.{at}.name.EN.[key]: 'EN' is not a language Caravan has texts in: {taken}",
            f"  products.{at + 1}.name: a product has a name in one of zh-CN, ug-CN, en at least:"
            " its texts name it",
            f"  products.{at + 2}.name.en: a product's name is not blank: an order's texts name"
            " its products",
            "  buyers.0.phone: should be an E.164 phone number, + and 7 to 15 digits: e.g."
            " +8613912345678",
        ],
    ), done.stdout
    named = {**product, "name": {"zh-CN": "无花果干", "ug-CN": "ئەنجۈر", "en": "Dried figs"}}
    assert seed(products=[named]).products[0].name == named["name"]


def test_a_lot_whose_dates_are_backwards_is_refused_naming_it_and_its_dates(
    tmp_path: Path,
) -> None:
    """A lot whose best_before came before its available_from was refused as "lots.0:
    best_before is before available_from": which lot, and what dates, the operator had to find
    in the file."""
    lot = {**DEMO["lots"][0], "lot_id": "LOT-BACKWARDS"}
    lot |= {"available_from": "2026-09-01", "best_before": "2026-08-01"}
    path = tmp_path / "backwards.json"
    path.write_text(json.dumps({**DEMO, "lots": [*DEMO["lots"], lot]}))
    done = caravan("seed", str(path))
    assert done.returncode == 2, (done.stdout, done.stderr)
    said = " ".join(done.stderr.replace("│", " ").split())
    at = f"lots.{len(DEMO['lots'])}: lot {lot['lot_id']}"
    assert f"{at}: best_before 2026-08-01 is before available_from 2026-09-01" in said, said


@pytest.mark.parametrize("price", [0, -1])
def test_a_price_below_1_fen_is_refused_naming_it(tmp_path: Path, price: int) -> None:
    """A product priced 0 loaded, and its orders of 0 fen went through with no credit line
    needed, a prepaid charge of 0 sent to the gateway, and its refund never recorded."""
    free = {**DEMO, "products": [*DEMO["products"], {**DEMO["products"][0], "sku": "FREE"}]}
    free["products"][-1]["unit_price_fen"] = price
    path = tmp_path / "free.json"
    path.write_text(json.dumps(free))
    done = caravan("seed", str(path))
    assert done.returncode == 2, (done.stdout, done.stderr)
    said = " ".join(done.stderr.replace("│", " ").split())
    at = f"products.{len(DEMO['products'])}.unit_price_fen"
    assert f"(1 error(s)): {at}: a unit price is at least 1 fen: goods" in said, said


@pytest.mark.parametrize("buyer_id", ["b1/", "/b1", "a//b"])
def test_a_buyer_id_with_an_empty_segment_is_refused_as_the_http_api_refuses_it(
    tmp_path: Path, buyer_id: str
) -> None:
    """``caravan seed`` opened a credit line ``b1/``, which PUT /credit-lines/{buyer_id}
    refuses (422) and so no call of the API could name; ``a/b`` is still a buyer's id."""
    assert seed(buyers=[{**DEMO["buyers"][0], "id": "a/b"}]).buyers[0].id == "a/b"
    buyers = [*DEMO["buyers"], {**DEMO["buyers"][0], "id": buyer_id}]
    path = tmp_path / "segments.json"
    path.write_text(json.dumps({**DEMO, "buyers": buyers}))
    done = caravan("seed", str(path))
    assert done.returncode == 2, (done.stdout, done.stderr)
    said = " ".join(done.stderr.replace("│", " ").split())
    at = f"buyers.{len(DEMO['buyers'])}.id"
    assert f"(1 error(s)): {at}: must not begin or end with / nor hold //" in said, said


def test_a_lots_day_from_a_spreadsheet_is_refused_saying_yyyy_mm_dd(tmp_path: Path) -> None:
    """A county centre makes its seed from a spreadsheet of sellers and lots, whose date cells
    come out as the sheet shows them (2026/9/1, 2026年9月1日) or as its day number (46266):
    these were said "should be a date that exists" (of a day that does) or in pydantic's
    words ("Datetimes provided to dates should have zero time"), and a blank cell exported
    as 0 loaded a lot on sale since 1970-01-01. Each is now refused saying the format, with
    the day meant where it is plain."""
    lot = {"lot_id": "LOT-XLS-1", "sku": "SWN-PEPPER-CAYENNE-1KG", "quantity": 5}
    days = [("2026/9/1", "2026年9月1日"), (46266, "46266"), (0, "2027-02-30")]
    lots = [
        {**lot, "lot_id": f"LOT-XLS-{n}", "available_from": first, "best_before": last}
        for n, (first, last) in enumerate(days)
    ]
    path = tmp_path / "from-a-sheet.json"
    path.write_text(json.dumps({**DEMO, "lots": lots}, ensure_ascii=False))
    done = caravan("seed", str(path))
    form = "should be a date as YYYY-MM-DD, e.g. 2026-11-30, not"
    number = ": a spreadsheet's day number? Format the column as text, YYYY-MM-DD"
    assert (done.returncode, done.stderr.splitlines()) == (
        2,
        [
            f"{path} is not a seed file as CONTRACT.md describes (6 error(s)):",
            f"  lots.0.available_from: {form} '2026/9/1' (2026-09-01?)",
            f"  lots.0.best_before: {form} '2026年9月1日' (2026-09-01?)",
            f"  lots.1.available_from: {form} 46266{number}",
            f"  lots.1.best_before: {form} '46266'{number}",
            f"  lots.2.available_from: {form} 0{number}",
            "  lots.2.best_before: should be a date that exists, e.g. 2026-11-30",
        ],
    ), done.stdout


def test_a_sellers_phone_as_a_spreadsheet_has_it_is_read_as_e164() -> None:
    """A county centre's sheet of 426 sellers has their mobiles as people write them, without
    +86 (13900000001, 139 0000 0002): every row was refused "should be an E.164 phone number"
    until rewritten by hand. They are read as E.164 now, as ``caravan platform map-buyer``
    reads one; a number that is no mainland mobile nor E.164 (a landline, 0991-1234567) is
    still refused."""
    seller = DEMO["sellers"][0]
    written = ["13900000001", "139 0000 0002", "0086 139-0000-0003"]
    sellers = [{**seller, "id": f"s-{n}", "phone": phone} for n, phone in enumerate(written)]
    buyer = {**DEMO["buyers"][0], "phone": "13900000004"}
    loaded = SeedFile.model_validate({**DEMO, "sellers": sellers, "buyers": [buyer]})
    assert [s.phone for s in loaded.sellers] == [
        "+8613900000001",
        "+8613900000002",
        "+8613900000003",
    ]
    assert loaded.buyers[0].phone == "+8613900000004"
    landline = [{**seller, "phone": "0991-1234567"}]
    with pytest.raises(ValidationError, match=r"sellers\.0\.phone"):
        SeedFile.model_validate({**DEMO, "sellers": landline})


def test_a_price_in_yuan_is_refused_saying_it_in_fen(tmp_path: Path) -> None:
    """A centre's price sheet is in yuan (35.50): copied into ``unit_price_fen`` it was
    refused "must be a whole number", of a number that is one to its clerk (35.00); now with
    what a fen is and the figure meant."""
    products = [{**p, "unit_price_fen": 35.5} for p in DEMO["products"][:1]]
    buyers = [{**DEMO["buyers"][0], "credit_limit_fen": 2000.0}]
    path = tmp_path / "yuan.json"
    path.write_text(json.dumps({**DEMO, "products": products, "buyers": buyers}))
    done = caravan("seed", str(path))
    assert (done.returncode, done.stderr.splitlines()[1:]) == (
        2,
        [
            "  products.0.unit_price_fen: must be a whole number of fen, 1 CNY = 100 fen"
            " (35.5 CNY is 3550 fen?)",
            "  buyers.0.credit_limit_fen: must be a whole number of fen, 1 CNY = 100 fen"
            " (2000 CNY is 200000 fen?)",
        ],
    ), done.stderr


def test_a_lots_day_given_to_add_lot_is_refused_naming_its_option() -> None:
    """``caravan inventory add-lot ... --from 2026/12/01`` was refused by the API naming the
    field it sends, ``available_from``, which the command has no option of; the day is now
    checked before any call, as a seed's is, and told of ``--from`` (exit 2)."""
    url = ("--url", "http://127.0.0.1:1")  # never reached
    added = caravan(
        "inventory", "add-lot", "L-1", "S-1", "5", "--from", "2026/12/01",
        "--best-before", "2027-11-30", *url,
    )  # fmt: skip
    assert (added.returncode, added.stderr.splitlines()) == (
        2,
        ["--from: should be a date as YYYY-MM-DD, e.g. 2026-11-30, not '2026/12/01' (2026-12-01?)"],
    ), added.stderr
    corrected = caravan(
        "inventory", "correct-lot", "L-1", "--reason", "r", "--best-before", "2027-9-1", *url
    )
    assert corrected.returncode == 2, corrected.stderr
    assert corrected.stderr.startswith("--best-before: should be a date as YYYY-MM-DD"), (
        corrected.stderr
    )
