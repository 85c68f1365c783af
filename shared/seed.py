"""The reference-data file that ``caravan seed`` loads (CONTRACT.md, Reference data)."""

from collections import Counter
from datetime import date
from pathlib import Path
from typing import Self

from pydantic import ConfigDict, Field, model_validator

from shared.events.envelope import Fen, Frozen, NoNul
from shared.events.orders import E164_PATTERN, Locale


class Seller(NoNul):
    id: str = Field(min_length=1, max_length=64)
    name: str = Field(min_length=1, max_length=256)
    county: str = Field(min_length=1, max_length=64)
    phone: str = Field(pattern=E164_PATTERN)


class Product(NoNul):
    sku: str = Field(min_length=1, max_length=64)
    seller_id: str = Field(min_length=1, max_length=64)
    unit_price_fen: Fen
    name: dict[str, str]


class LotSeed(NoNul):
    lot_id: str = Field(min_length=1, max_length=64)
    sku: str = Field(min_length=1, max_length=64)
    quantity: int = Field(ge=0, le=2**31 - 1, strict=True)  # PostgreSQL's integer
    available_from: date
    best_before: date

    @model_validator(mode="after")
    def _dates_in_order(self) -> Self:
        if self.best_before < self.available_from:
            raise ValueError("best_before is before available_from")
        return self


class BuyerSeed(NoNul):
    id: str = Field(min_length=1, max_length=64)
    phone: str = Field(pattern=E164_PATTERN)
    locale: Locale = "zh-CN"
    credit_limit_fen: Fen


class SeedFile(Frozen):
    # A section misspelt ("buyer") would load nothing, and say so as "0 buyers": refused,
    # by its name. Within the sections unknown fields are ignored, as in every contract model.
    model_config = ConfigDict(extra="forbid")

    sellers: list[Seller] = Field(default_factory=list)
    products: list[Product] = Field(default_factory=list)
    lots: list[LotSeed] = Field(default_factory=list)
    buyers: list[BuyerSeed] = Field(default_factory=list)

    @model_validator(mode="after")
    def _each_id_once(self) -> Self:
        """An id twice in a file is a mistake to mend, not a choice to make for its author:
        a lot's second entry was reported "loaded before", a product's or buyer's second
        entry silently replaced the first."""
        said = []
        for kind, ids in (
            ("seller", [s.id for s in self.sellers]),
            ("product", [p.sku for p in self.products]),
            ("lot", [lot.lot_id for lot in self.lots]),
            ("buyer", [b.id for b in self.buyers]),
        ):
            twice = sorted(i for i, n in Counter(ids).items() if n > 1)
            if twice:
                said.append(f"{kind}s listed more than once: {', '.join(map(repr, twice))}")
        if said:
            raise ValueError("; ".join(said))
        return self

    @classmethod
    def load(cls, path: Path) -> "SeedFile":
        return cls.model_validate_json(path.read_bytes())
