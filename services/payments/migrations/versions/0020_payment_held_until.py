"""a prepaid payment keeps its hold's time (``held_until``, as its ``stock.reserved`` said
it), and how many of its gateway calls never reached the gateway (``unreached``: the
connection refused or not made): a charge whose hold lapsed while the gateway was away was
sent once it came back, and voided when the order ended, a charge and a void for an order
that had already lapsed. NULL ``held_until`` (a payment of before, or a reservation that said
no time): charged as before

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-05 21:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

S = "payments"


def upgrade() -> None:
    held_until = sa.Column("held_until", sa.DateTime(timezone=True), nullable=True)
    op.add_column("payments", held_until, schema=S)
    unreached = sa.Column("unreached", sa.Integer, nullable=False, server_default="0")
    op.add_column("payments", unreached, schema=S)


def downgrade() -> None:
    """Loses the holds' times: the older version charges a payment however late."""
    op.drop_column("payments", "unreached", schema=S)
    op.drop_column("payments", "held_until", schema=S)
