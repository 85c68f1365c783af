"""a timeline step keeps what it names: ``payment.refunded``'s amount and transfer
reference, which the timeline (``GET /orders/{id}``, ``caravan orders show``, the operations
page) recorded without, so an operator reading it could not see what was refunded

Two nullable columns, NULL on every other step: added without rewriting the table. A refund
recorded before has neither (its event is not kept to read them back from). ``payment.voided``
keeps its ``refund_owed_fen`` in ``amount_fen`` too (what a void left owed back), since the
same day, without a migration of its own.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06 13:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from shared.db.migrate import refuse_losing

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "timeline", sa.Column("amount_fen", sa.BigInteger(), nullable=True), schema="orders"
    )
    op.add_column("timeline", sa.Column("reference", sa.Text(), nullable=True), schema="orders")


def downgrade() -> None:
    """Refused while steps on the timelines say what was refunded and under which transfer, or
    what a void left owed back: an operator would no longer see it (payments keeps both)."""
    refuse_losing(
        "orders.timeline",
        "amount_fen IS NOT NULL OR reference IS NOT NULL",
        "what each refund on an order's timeline paid back, and under which reference, and"
        " what each void left owed back",
        "UPDATE orders.timeline SET amount_fen = NULL, reference = NULL"
        " WHERE amount_fen IS NOT NULL OR reference IS NOT NULL",
    )
    op.drop_column("timeline", "reference", schema="orders")
    op.drop_column("timeline", "amount_fen", schema="orders")
