"""The reference-data file that ``caravan seed`` loads (CONTRACT.md, Reference data), and
the bounds of the money it sets (prices, credit limits), which the admin APIs keep too, and
of a product's name (its texts list it)."""

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from difflib import get_close_matches
from pathlib import Path
from typing import Annotated, Any, Self, get_args

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    ModelWrapValidatorHandler,
    ValidationError,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from shared.api import again
from shared.events.envelope import WHOLE_SEGMENTS, Frozen, NoNul
from shared.events.orders import E164_PATTERN, MAX_LINES, MAX_QUANTITY, Locale
from shared.phones import as_written

MAX_UNIT_PRICE_FEN = 10**10
"""The most a unit may cost: 100,000,000 CNY. An order (at most 50 lines of at most 10,000
units) then totals at most 5 * 10^15 fen and its loan, at the most interest the settings take
(``shared.settings.MAX_MONTHLY_INTEREST_BP``, 100 % a month, for 12 months), 13 times that:
every total, instalment and ledger entry is far within PostgreSQL's bigint (about 9.2 *
10^18), which a price near 10^15 fen was not (the order's total did not fit, and its
``stock.reserved`` was dead-lettered)."""

MAX_CREDIT_LIMIT_FEN = 10**16
"""The most a buyer's credit limit may be: 100,000,000,000,000 CNY, two orders of the largest
total. A limit and the most an adjustment may add to it then still fit PostgreSQL's bigint,
where an adjustment beyond it failed in the database (a 500)."""


def _unit_price(fen: int) -> int:
    if fen < 1:
        raise ValueError(
            "a unit price is at least 1 fen: goods priced 0 make orders of 0 fen, which no "
            "payment is made for"
        )
    if fen > MAX_UNIT_PRICE_FEN:
        raise ValueError(
            f"a unit price is at most {MAX_UNIT_PRICE_FEN} fen (100,000,000 CNY), so that an "
            f"order of {MAX_LINES} lines of {MAX_QUANTITY} units and its loan fit PostgreSQL's "
            "bigint"
        )
    return fen


def _credit_limit(fen: int) -> int:
    if fen > MAX_CREDIT_LIMIT_FEN:
        raise ValueError(
            f"a credit limit is at most {MAX_CREDIT_LIMIT_FEN} fen (10^14 CNY), so that it and "
            "any adjustment of it fit PostgreSQL's bigint"
        )
    return fen


MAX_NAME_CHARS = 64
"""The most characters a product's name may have, in each language: an order's texts list
its lines by name, and a name of thousands of characters made a text of dozens of SMS parts
(services.notifications.domain.templates cuts one longer than it still, as a name loaded
before this bound may be)."""


def _product_name(name: str) -> str:
    if not name.strip():
        raise ValueError("a product's name is not blank: an order's texts name its products")
    if len(name) > MAX_NAME_CHARS:
        raise ValueError(
            f"a product's name is at most {MAX_NAME_CHARS} characters, this one has"
            f" {len(name)}: an order's texts name its products"
        )
    return name


LOCALES: tuple[str, ...] = get_args(Locale)
"""The languages Caravan has texts in, as a product's name and a buyer's ``locale`` say them."""


def _name_locale(key: str) -> str:
    if key not in LOCALES:
        raise ValueError(
            f"{key!r} is not a language Caravan has texts in: a name's keys are"
            f" {', '.join(LOCALES)}"
        )
    return key


def _product_names(names: dict[str, str]) -> dict[str, str]:
    if not names:
        raise ValueError(
            f"a product has a name in one of {', '.join(LOCALES)} at least: its texts name it"
        )
    return names


UnitPrice = Annotated[int, Field(strict=True), AfterValidator(_unit_price)]
"""A product's price in fen, 1 to :data:`MAX_UNIT_PRICE_FEN`. A price of 0 on a farm
marketplace is a data error, refused: its orders of 0 fen were confirmed with nothing lent
and nothing charged but a prepaid charge of 0 sent to the gateway, and the refund of that
never recorded. A product a seed loaded at 0 before keeps its price (the database allows 0)
until a seed names it with another; orders of it are still handled as they were."""
CreditLimit = Annotated[int, Field(strict=True, ge=0), AfterValidator(_credit_limit)]
"""A buyer's credit limit in fen, 0 to :data:`MAX_CREDIT_LIMIT_FEN`."""
ProductName = Annotated[str, AfterValidator(_product_name)]
"""A product's name in one language, not blank, at most :data:`MAX_NAME_CHARS` characters."""
ProductNames = Annotated[
    dict[Annotated[str, AfterValidator(_name_locale)], ProductName],
    AfterValidator(_product_names),
]
"""A product's names by locale (:data:`LOCALES`), one at least. A key of no locale Caravan
texts in (``zh_CN``, ``EN``) or no name at all was loaded, and the product's texts named it by
its SKU; both refused, with the file's other errors."""


ISO_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")
_YEAR_FIRST = re.compile(r"(\d{4})\s*[-/.年]\s*(\d{1,2})\s*[-/.月]\s*(\d{1,2})\s*日?")
"""A day written year first otherwise (``2026/9/1``, ``2026.09.01``, ``2026年9月1日``): as a
spreadsheet in a Chinese locale shows a date cell, and so as a file made from one says it."""


def _day_as_given(given: object) -> object:
    """A lot's day as the file gives it, refused unless ``YYYY-MM-DD``: pydantic took a number
    for seconds since 1970 (a blank cell exported as 0 loaded a lot on sale since
    1970-01-01; a spreadsheet's day number, 46266, was refused in its words "Datetimes
    provided to dates should have zero time"), and said of ``2026/09/01`` that it "should be a
    date that exists". A day shaped right that no calendar has (``2026-02-30``) is pydantic's
    to refuse, said so."""
    if isinstance(given, date) or (isinstance(given, str) and ISO_DAY.fullmatch(given)):
        return given
    hint = ""
    if isinstance(given, int | float) or (isinstance(given, str) and given.strip().isdigit()):
        hint = ": a spreadsheet's day number? Format the column as text, YYYY-MM-DD"
    elif isinstance(given, str) and (day := _YEAR_FIRST.fullmatch(given.strip())):
        hint = f" ({day[1]}-{int(day[2]):02d}-{int(day[3]):02d}?)"
    raise PydanticCustomError(
        "day_format",
        "should be a date as YYYY-MM-DD, e.g. 2026-11-30, not {given}{hint}",
        {"given": repr(given)[:40], "hint": hint},
    )


Day = Annotated[date, BeforeValidator(_day_as_given)]
"""A lot's first or last day, as ``YYYY-MM-DD`` alone (:func:`_day_as_given`)."""


Phone = Annotated[str, BeforeValidator(as_written)]
"""A seller's or a buyer's phone, kept in E.164: one written as a county's spreadsheet has it
(``13900000001``, ``139 0000 0001``, ``0086...``) read as ``+8613900000001``, as
``caravan platform map-buyer`` reads one; every seller of a sheet of local numbers was
refused "should be an E.164 phone number" until each was rewritten by hand."""


class Seller(NoNul):
    id: str = Field(min_length=1, max_length=64)
    name: str = Field(min_length=1, max_length=256)
    county: str = Field(min_length=1, max_length=64)
    phone: Phone = Field(pattern=E164_PATTERN)
    locale: Locale | None = None
    """The language of the seller's texts (a new order); None: not said, so left as it is
    (``zh-CN`` for a seller new to the database), as a file written before sellers had one
    must not undo it."""


class Product(NoNul):
    sku: str = Field(min_length=1, max_length=64)
    seller_id: str = Field(min_length=1, max_length=64)
    unit_price_fen: UnitPrice
    name: ProductNames


MAX_LOT_QUANTITY = 2**31 - 1
"""The most units a lot holds (received, and so each counter): PostgreSQL's integer."""


class LotSeed(NoNul):
    lot_id: str = Field(min_length=1, max_length=64)
    sku: str = Field(min_length=1, max_length=64)
    quantity: int = Field(ge=0, le=MAX_LOT_QUANTITY, strict=True)
    available_from: Day
    best_before: Day

    @model_validator(mode="after")
    def _dates_in_order(self) -> Self:
        if self.best_before < self.available_from:
            raise ValueError(
                f"lot {self.lot_id}: best_before {self.best_before} is before available_from"
                f" {self.available_from}"
            )
        return self


class BuyerSeed(NoNul):
    # As PUT /credit-lines/{buyer_id} takes it: "b1/" would be a credit line the API cannot name.
    id: Annotated[str, Field(min_length=1, max_length=64), WHOLE_SEGMENTS]
    phone: Phone = Field(pattern=E164_PATTERN)
    locale: Locale | None = None
    """The language of the buyer's texts where an order leaves ``buyer.locale`` out; None:
    not said, so left as it is (``zh-CN`` for a buyer no seed gave one)."""
    credit_limit_fen: CreditLimit


_ID_FIELDS = {"sellers": "id", "products": "sku", "lots": "lot_id", "buyers": "id"}
"""Each section of a seed file, in its order, and the field naming its rows."""


def _given_ids(data: object) -> dict[str, list[tuple[int, str]]]:
    """The ids that a seed file's rows give, by section, each with its row's place: those of
    rows that are objects giving their id as a string, whatever else they get wrong."""
    sections = data if isinstance(data, dict) else {}
    given: dict[str, list[tuple[int, str]]] = {}
    for section, key in _ID_FIELDS.items():
        rows = sections.get(section)
        for i, row in enumerate(rows if isinstance(rows, list) else []):
            if isinstance(row, dict) and isinstance(row.get(key), str):
                given.setdefault(section, []).append((i, row[key]))
    return given


def _listed_twice(given: dict[str, list[tuple[int, str]]]) -> list[str]:
    """Per section of ``given`` (:func:`_given_ids`) that lists an id more than once, a line
    naming each such id and its rows (``lots listed more than once: 'L1' (lots.0, lots.3)``)."""
    said = []
    for section, rows in given.items():
        where: dict[str, list[str]] = {}
        for i, row_id in rows:
            where.setdefault(row_id, []).append(f"{section}.{i}")
        twice = [f"{row_id!r} ({', '.join(at)})" for row_id, at in where.items() if len(at) > 1]
        if twice:
            said.append(f"{section} listed more than once: {', '.join(twice)}")
    return said


def _no_such_section(data: object) -> list[str]:
    """A line for each key of ``data`` that names no section of a seed file, and the section
    it may have meant: a section misspelt (``buyer``) would load nothing, and say so as "0
    buyers"."""
    keys = data if isinstance(data, dict) else {}
    said = []
    for key in keys:
        if key not in _ID_FIELDS:
            close = get_close_matches(str(key), _ID_FIELDS, n=1)
            meant = f" (did you mean {close[0]}?)" if close else ""
            said.append(
                f"no section {key!r} in a seed file: its sections are"
                f" {', '.join(_ID_FIELDS)}{meant}"
            )
    return said


def _whole_file(said: list[str], data: object) -> list[InitErrorDetails]:
    """Errors of the whole file (no field of it), worded as ``said``."""
    return [
        {"type": PydanticCustomError("seed_file", line), "loc": (), "input": data} for line in said
    ]


class SeedFile(Frozen):
    # A section misspelt ("buyer") is refused by _whole_file_errors, naming the sections
    # there are. Within the sections unknown fields are ignored, as in every contract model.

    sellers: list[Seller] = Field(default_factory=list)
    products: list[Product] = Field(default_factory=list)
    lots: list[LotSeed] = Field(default_factory=list)
    buyers: list[BuyerSeed] = Field(default_factory=list)

    @model_validator(mode="wrap")
    @classmethod
    def _whole_file_errors(cls, data: Any, handler: ModelWrapValidatorHandler[Self]) -> Self:
        """A section of no name a seed file has (:func:`_no_such_section`), and an id twice in
        a file: mistakes to mend, not choices to make for its author (a lot's second entry was
        reported "loaded before", a product's or buyer's second entry silently replaced the
        first). Told with the rows' own errors, after them (the ids as the rows give them,
        whatever else a row gets wrong): told only once the rows were mended, it was one more
        round of edits and runs."""
        said = [*_no_such_section(data), *_listed_twice(_given_ids(data))]
        try:
            seed = handler(data)
        except ValidationError as exc:
            if not said:
                raise
            raise ValidationError.from_exception_data(
                exc.title, [*map(again, exc.errors()), *_whole_file(said, data)]
            ) from None
        if said:
            raise ValidationError.from_exception_data(cls.__name__, _whole_file(said, data))
        return seed

    def ids(self) -> dict[str, list[str]]:
        """The ids the file lists, by section (a product's is its SKU), in its order."""
        return {
            section: [getattr(row, key) for row in getattr(self, section)]
            for section, key in _ID_FIELDS.items()
        }

    @classmethod
    def load(cls, path: Path) -> "SeedFile":
        return cls.model_validate_json(path.read_bytes())


@dataclass
class Loaded:
    """What loading a seed file, or one owner's part of it, did: the ids it added and the ids
    of rows it changed, by section (``sellers``, ``products``, ``lots``, ``buyers``; a section
    it left alone is absent), and, by section, what of the file it left as it was that the
    operator should hear of, said. Whatever else the file lists was there already, as it says."""

    added: dict[str, set[str]] = field(default_factory=dict)
    changed: dict[str, set[str]] = field(default_factory=dict)
    kept: dict[str, list[str]] = field(default_factory=dict)

    def __or__(self, other: "Loaded") -> "Loaded":
        """Both owners' parts: an id one added is added (another's row of it, written as well,
        does not make it changed)."""
        added = _union(self.added, other.added)
        changed = {
            s: ids - added.get(s, set()) for s, ids in _union(self.changed, other.changed).items()
        }
        kept = {s: self.kept.get(s, []) + other.kept.get(s, []) for s in {*self.kept, *other.kept}}
        return Loaded(added, changed, kept)


def _union(a: dict[str, set[str]], b: dict[str, set[str]]) -> dict[str, set[str]]:
    return {s: a.get(s, set()) | b.get(s, set()) for s in {*a, *b}}


NAMED = 10
"""How many ids a line of ``caravan seed`` names (its summary counts them all)."""


def named(what: str, ids: Sequence[str]) -> str:
    """``what``, then the first :data:`NAMED` of ``ids`` and how many more, in one line: a
    centre's file of a season's hundreds of lots printed a line for each."""
    more = f" and {len(ids) - NAMED} more" if len(ids) > NAMED else ""
    return f"{what}: {', '.join(ids[:NAMED])}{more}"
