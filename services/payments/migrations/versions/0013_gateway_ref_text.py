"""payments.gateway_ref is text: a gateway's charge id is opaque, and one longer than 64
characters made recording an approved charge fail, over and over

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-04 03:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

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
    # Refused if a longer ref was stored since (as a downgrade that would lose it should be).
    op.alter_column(
        "payments",
        "gateway_ref",
        type_=sa.String(length=64),
        existing_type=sa.Text(),
        existing_nullable=True,
        schema=S,
    )
