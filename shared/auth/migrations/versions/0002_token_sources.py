"""a token may be bound to its own orders and those of given sources (``caravan tokens issue
--own-orders``, ``--source S``); NULL, as every token issued before, reaches every order

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-06 08:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from shared.db.migrate import refuse_losing

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "tokens",
        sa.Column("sources", postgresql.ARRAY(sa.String(length=256)), nullable=True),
        schema="auth",
    )
    op.add_column("tokens", sa.Column("client", sa.String(length=64), nullable=True), schema="auth")


def downgrade() -> None:
    """Refused while a token is bound: the older version would let it reach every order, so
    the statement it names revokes each bound token as it unbinds it."""
    refuse_losing(
        "auth.tokens",
        "sources IS NOT NULL",
        "the binding of tokens to their own orders (the older version lets them reach every order)",
        "UPDATE auth.tokens SET sources = NULL, revoked_at = coalesce(revoked_at, now())"
        " WHERE sources IS NOT NULL",
    )
    op.drop_column("tokens", "client", schema="auth")
    op.drop_column("tokens", "sources", schema="auth")
