"""``bench/county.py``: a seed file at a county's size, that ``caravan seed`` takes, the same
for the same arguments (so that seeding it again changes nothing), with one lot of each
product in season and the seasons before it expired."""

from datetime import date

from bench.county import county, season_start
from caravan.seeding import will_not_sell
from shared.seed import Loaded, SeedFile


def test_a_county_s_seed_file_is_taken_and_made_again_the_same() -> None:
    today = date(2026, 12, 6)
    made = county(sellers=4, buyers=30, today=today)
    seed = SeedFile.model_validate(made)
    assert {section: len(ids) for section, ids in seed.ids().items()} == {
        "sellers": 4,
        "products": 20,
        "lots": 100,
        "buyers": 30,
    }
    assert county(sellers=4, buyers=30, today=today) == made
    in_season = [lot for lot in seed.lots if lot.available_from <= today <= lot.best_before]
    assert sorted(lot.sku for lot in in_season) == sorted(p.sku for p in seed.products)
    expired = will_not_sell(seed, Loaded(), today)
    assert sum(map(len, expired.values())) == 80  # the four seasons before this one's


def test_a_season_begins_on_the_first_of_september() -> None:
    assert season_start(date(2026, 12, 6)) == date(2026, 9, 1)
    assert season_start(date(2027, 8, 31)) == date(2026, 9, 1)
    assert season_start(date(2027, 9, 1)) == date(2027, 9, 1)
