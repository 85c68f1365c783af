"""payments.gateway_ref is text: a gateway's charge id is opaque, and one longer than 64
characters made recording an approved charge fail, over and over

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-04 03:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from shared.db.migrate import refuse_losing

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

S = "payments"


def upgrade() -> None:
    # varchar to text is binary-coercible: PostgreSQL rewrites no row.
    op.alter_column(
        "payments",
        "gateway_ref",
        type_=sa.Text(),
        existing_type=sa.String(length=64),
        existing_nullable=True,
        schema=S,
    )


def downgrade() -> None:
    """Refused while a payment holds a longer ref, what the gateway knows its charge by, which
    the narrowed column cannot hold (PostgreSQL refuses too, but says only "value too long")."""
    refuse_losing(
        f"{S}.payments",
        "length(gateway_ref) > 64",
        "the gateway's charge ids longer than 64 characters (what the gateway knows a charge by)",
        f"UPDATE {S}.payments SET gateway_ref = NULL WHERE length(gateway_ref) > 64",
    )
    op.alter_column(
        "payments",
        "gateway_ref",
        type_=sa.String(length=64),
        existing_type=sa.Text(),
        existing_nullable=True,
        schema=S,
    )
