"""What ``caravan seed`` says it did (caravan/seeding.summary): new, updated and unchanged
per section, from what the owners' parts did (shared.seed.Loaded), and the lots that will
not sell (caravan/seeding.will_not_sell)."""

from datetime import UTC, date, datetime

from caravan.seeding import EMPTY, EXPIRED, summary, will_not_sell
from services.inventory.adapters.repository import Correction
from services.inventory.handlers import corrected_since, loaded_before
from shared.seed import Loaded, LotSeed, SeedFile

TODAY = date(2026, 12, 4)


def seed_file(best_befores: list[str]) -> SeedFile:
    return SeedFile.model_validate(
        {
            "sellers": [
                {"id": s, "name": "Co-op", "county": "Shawan", "phone": "+8613000000001"}
                for s in ("s1", "s2", "s3")
            ],
            "products": [
                {"sku": p, "seller_id": "s1", "unit_price_fen": 100, "name": {"en": p}}
                for p in ("p1", "p2")
            ],
            "lots": [
                {
                    "lot_id": f"l{i}",
                    "sku": "p1",
                    "quantity": 5,
                    "available_from": "2020-01-01",
                    "best_before": best_before,
                }
                for i, best_before in enumerate(best_befores, 1)
            ],
            "buyers": [{"id": "b1", "phone": "+8613900000009", "credit_limit_fen": 1}],
        }
    )


def test_a_file_loaded_again_is_all_unchanged() -> None:
    seed = seed_file(["2027-01-01", "2027-02-01"])
    assert summary(seed, Loaded(), TODAY) == [
        "  sellers: 0 new, 0 updated, 3 unchanged",
        "  products: 0 new, 0 updated, 2 unchanged",
        "  lots: 0 new, 2 unchanged",
        "  buyers: 0 new, 1 unchanged",
    ]


def test_the_owners_parts_are_told_together_an_id_one_added_is_new_only() -> None:
    """Inventory adds a seller that notifications writes as well (its phone): new, not new
    and updated; a seller whose locale alone changed is notifications' to tell: updated."""
    inventory = Loaded(
        added={"sellers": {"s1"}, "products": set(), "lots": {"l1"}},
        changed={"sellers": set(), "products": {"p2"}},
        kept={"lots": ["lots loaded before, left as they are: l2"]},
    )
    payments = Loaded(added={"buyers": {"b1"}}, kept={"buyers": []})
    notifications = Loaded(changed={"sellers": {"s1", "s3"}, "products": set()})
    loaded = Loaded() | inventory | payments | notifications
    assert loaded.kept == {"lots": ["lots loaded before, left as they are: l2"], "buyers": []}
    assert summary(seed_file(["2027-01-01", "2027-02-01"]), loaded, TODAY) == [
        "  sellers: 1 new, 1 updated, 1 unchanged",
        "  products: 0 new, 1 updated, 1 unchanged",
        "  lots: 1 new, 1 unchanged",
        "  buyers: 1 new, 0 unchanged",
    ]


def test_a_lot_past_its_best_before_is_named_and_counted_one_ending_today_sells() -> None:
    seed = seed_file(["2026-12-03", "2026-12-04", "2025-06-30"])
    assert will_not_sell(seed, Loaded(), TODAY) == {EXPIRED: ["l1", "l3"]}
    lots = summary(seed, Loaded(added={"lots": {"l1", "l2", "l3"}}), TODAY)[2]
    assert lots == "  lots: 3 new, 0 unchanged, 2 will not sell"


def test_the_lots_loaded_before_are_one_line_naming_the_first_ten() -> None:
    """A file of a season's lots loaded again printed a line for each lot."""
    assert loaded_before(["L1"]) == "lots loaded before, left as they are: L1"
    ids = [f"L{i}" for i in range(1, 231)]
    said = loaded_before(ids)
    assert said == f"lots loaded before, left as they are: {', '.join(ids[:10])} and 220 more"


def test_a_new_lot_of_no_units_is_named_and_counted_as_one_that_will_not_sell() -> None:
    """A lot loaded with quantity 0 (a typo for 50, or booked before the harvest is counted)
    sells nothing until `caravan inventory adjust` gives it units: said as an expired one is,
    when it is new (one loaded before may have been given units since)."""
    seed = seed_file(["2027-01-01", "2027-01-01", "2025-06-30", "2027-01-01"])
    for i in (1, 2, 3):
        seed.lots[i] = seed.lots[i].model_copy(update={"quantity": 0})
    loaded = Loaded(added={"lots": {"l1", "l2", "l3"}}, kept={"lots": ["... l4"]})
    assert will_not_sell(seed, loaded, TODAY) == {EMPTY: ["l2"], EXPIRED: ["l3"]}
    assert summary(seed, loaded, TODAY)[2] == "  lots: 3 new, 1 unchanged, 2 will not sell"


def test_a_lot_is_the_same_on_any_terms_it_had_before_a_correction_and_on_no_other() -> None:
    """A lot received with a mistyped SKU, its best_before corrected, then its SKU: a file
    of its terms as received, or as after the first correction, is the same lot, with the
    corrections made since; a file mixing the two (terms it never had) is not."""

    def terms(sku: str, best_before: str) -> LotSeed:
        return LotSeed.model_validate(
            {
                "lot_id": "l1",
                "sku": sku,
                "quantity": 5,
                "available_from": "2026-09-01",
                "best_before": best_before,
            }
        )

    at = datetime(2026, 12, 4, 9, 0, tzinfo=UTC)
    dates = Correction(at, "alice", {"best_before": "2207-08-31"}, {"best_before": "2027-08-31"})
    skus = Correction(at, "bob", {"sku": "p9"}, {"sku": "p1"})
    now = terms("p1", "2027-08-31")
    assert corrected_since(now, [dates, skus], terms("p9", "2207-08-31")) == [dates, skus]
    assert corrected_since(now, [dates, skus], terms("p9", "2027-08-31")) == [skus]
    assert corrected_since(now, [dates, skus], terms("p1", "2207-08-31")) is None
    assert corrected_since(now, [], terms("p9", "2027-08-31")) is None
