"""Reserving order lines from harvest lots: pure rules, no storage.

A line is served from the in-season lots of its SKU (``available_from <= day <=
best_before``) that are on sale (not stopped selling), earliest ``best_before`` first, and
may span lots. An order is reserved
whole or not at all. Reasons are told apart: ``unknown_sku`` (no such product),
``out_of_season`` (lots exist, none in season), ``out_of_stock`` (too little in season on
sale: a lot stopped selling is in season, its stock not to be had).

The lots that cannot serve (empty, expired, not on sale yet) are most of a SKU's after a
season: they need not be given, if what tells the reasons apart is (:class:`Season`).
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Literal

RejectReason = Literal["unknown_sku", "out_of_stock", "out_of_season"]
_PRIORITY: dict[RejectReason, int] = {"unknown_sku": 0, "out_of_season": 1, "out_of_stock": 2}


@dataclass(frozen=True)
class Lot:
    lot_id: str
    sku: str
    available: int
    available_from: date
    best_before: date
    on_sale: bool = True

    def in_season(self, day: date) -> bool:
        return self.available_from <= day <= self.best_before

    def serves(self, day: date) -> bool:
        """Whether an order on ``day`` may take from it."""
        return self.on_sale and self.in_season(day) and self.available > 0


@dataclass(frozen=True)
class Season:
    """Whether a SKU has any lot, and any in season on the order's day, counting the lots
    that cannot serve it (empty or not): what :func:`allocate` needs to know of the lots it
    is not given."""

    has_lots: bool
    in_season: bool


@dataclass(frozen=True)
class Take:
    """``quantity`` units of ``sku`` taken from ``lot_id``."""

    lot_id: str
    sku: str
    quantity: int


@dataclass(frozen=True)
class Reserved:
    takes: list[Take]


@dataclass(frozen=True)
class Rejected:
    reason: RejectReason
    skus: list[str]


def allocate(
    lines: Sequence[tuple[str, int]],
    known_skus: set[str],
    lots: Sequence[Lot],
    day: date,
    seasons: Mapping[str, Season] | None = None,
) -> Reserved | Rejected:
    """Decide which lots serve each (sku, quantity) line, or why the order cannot be served.

    ``lots`` holds every lot that can serve (in season on ``day``, on sale, something
    available), and
    may leave out the others of a SKU that ``seasons`` describes: the reason is then told
    from what ``seasons`` says of them. Each SKU appears in at most one line (two lines of
    one SKU would each see the whole lot).
    """
    if len({sku for sku, _ in lines}) != len(lines):
        raise ValueError("each sku may appear in at most one line")
    by_sku: dict[str, list[Lot]] = {}
    for lot in lots:
        by_sku.setdefault(lot.sku, []).append(lot)
    failures: dict[str, RejectReason] = {}
    takes: list[Take] = []
    for sku, quantity in lines:
        if sku not in known_skus:
            failures[sku] = "unknown_sku"
            continue
        sku_lots = by_sku.get(sku, [])
        usable = sorted(
            (lot for lot in sku_lots if lot.serves(day)),
            key=lambda lot: (lot.best_before, lot.lot_id),
        )
        season = (seasons or {}).get(sku, Season(False, False))
        has_lots = bool(sku_lots) or season.has_lots
        if has_lots and not (season.in_season or any(lot.in_season(day) for lot in sku_lots)):
            failures[sku] = "out_of_season"
            continue
        need = quantity
        line_takes: list[Take] = []
        for lot in usable:
            if need == 0:
                break
            n = min(need, lot.available)
            line_takes.append(Take(lot.lot_id, sku, n))
            need -= n
        if need > 0:
            failures[sku] = "out_of_stock"
            continue
        takes.extend(line_takes)
    if failures:
        reason = min(failures.values(), key=_PRIORITY.__getitem__)
        return Rejected(reason, sorted(s for s, r in failures.items() if r == reason))
    return Reserved(takes)


def release_split(quantity: int, lot_best_before: date, day: date) -> tuple[int, int]:
    """(returned, spoiled): stock coming back to a lot that has expired meanwhile is spoiled."""
    return (0, quantity) if day > lot_best_before else (quantity, 0)


def price_total(lines: Sequence[tuple[str, int]], prices: Mapping[str, int]) -> int:
    return sum(prices[sku] * quantity for sku, quantity in lines)
