"""Reference data for the inventory tests: one seller, one SKU, its lots and some buyers."""

from datetime import timedelta
from typing import Any

from shared import days
from shared.events.orders import OrderRequested
from shared.seed import SeedFile

SELLER = {"id": "inv-seller", "name": "Inv coop", "county": "Shawan", "phone": "+8613000007001"}


def one_sku_seed(
    sku: str,
    unit_price_fen: int,
    lots: dict[str, tuple[int, int, int]] | None = None,
    buyers: list[dict[str, Any]] | None = None,
) -> SeedFile:
    """``lots`` maps a lot suffix to (quantity, first day, best-before day), the days counted
    from today; each lot's id is ``<sku>-<suffix>``."""
    today = days.today()
    return SeedFile.model_validate(
        {
            "sellers": [SELLER],
            "products": [
                {
                    "sku": sku,
                    "seller_id": SELLER["id"],
                    "unit_price_fen": unit_price_fen,
                    "name": {"en": sku},
                }
            ],
            "lots": [
                {
                    "lot_id": f"{sku}-{suffix}",
                    "sku": sku,
                    "quantity": quantity,
                    "available_from": str(today + timedelta(days=start)),
                    "best_before": str(today + timedelta(days=end)),
                }
                for suffix, (quantity, start, end) in (lots or {}).items()
            ],
            "buyers": buyers or [],
        }
    )


def prepaid_units(sku: str, buyer: dict[str, str], refs: list[str]) -> list[OrderRequested]:
    """A prepaid order of one unit of ``sku`` for ``buyer`` under each of ``refs``."""
    return [
        OrderRequested.model_validate(
            {
                "order_ref": order_ref,
                "buyer": buyer,
                "lines": [{"sku": sku, "quantity": 1}],
                "payment": {"method": "prepaid"},
            }
        )
        for order_ref in refs
    ]
