"""the orders holding a lot (``GET /lots/{id}/holds``, ``caravan inventory holds LOT``): an
index of the reservation lines by lot, and each hold's time (``held_until``, as its
stock.reserved said)

Without it a lot's holds were found by a scan of every order's hold (reservations, each
still held probed for a line of the lot: the key of the lines is by order first), a table
that keeps every order: 748 buffers at 50,000 orders, growing with them; through it, the lot's
own lines (a few hundred at most), about 545 at 50,000 or 200,000. It costs every hold an index
entry more for each lot it takes from, about 40 bytes. A hold's time was said in its
stock.reserved alone, not kept: the order's deadline is inventory's to know only from
order.placed.

Built without CONCURRENTLY, as every migration here is (each schema migrates in one
transaction, under an advisory lock, on a stopped system: docs/running.md, Upgrading),
during which the writers of reservation_lines wait.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06 22:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

S = "inventory"


def upgrade() -> None:
    op.create_index(
        "ix_inventory_reservation_lines_lot_id", "reservation_lines", ["lot_id"], schema=S
    )
    op.add_column(
        "reservations", sa.Column("held_until", sa.DateTime(timezone=True), nullable=True), schema=S
    )


def downgrade() -> None:
    """Drops each hold's time without refusing: the older version reads none (a hold lasts
    until its order's deadline or the hold's time, as before, whether kept or not)."""
    op.drop_column("reservations", "held_until", schema=S)
    op.drop_index("ix_inventory_reservation_lines_lot_id", table_name="reservation_lines", schema=S)
