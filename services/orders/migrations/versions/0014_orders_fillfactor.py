"""room in each page of ``orders.orders`` for an order's next version: its first update (the
stock reserved, which changes no indexed column) can then be a HOT update, written beside
the row with no entry in any of the table's seven indexes. Filled to the brim, a page had no
room, and 1.8 of an order's two updates went to another page, an entry in every index each
(bench/HISTORY.md, session 57)

A storage parameter: pages written from now on keep the room, those written before stay as
they are; nothing is rewritten, and the table's writers do not wait (``SHARE UPDATE
EXCLUSIVE``).

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07 02:15:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("ALTER TABLE orders.orders SET (fillfactor = 50)")


def downgrade() -> None:
    op.execute("ALTER TABLE orders.orders RESET (fillfactor)")
