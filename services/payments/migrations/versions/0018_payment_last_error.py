"""the last error a prepaid payment's gateway calls met (a timeout, a refused connection, a
5xx, an answer not the gateway's), kept once the gateway answers: which orders an outage
held up, after its first warning named one of them

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-05 19:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

S = "payments"


def upgrade() -> None:
    op.add_column("payments", sa.Column("last_error", sa.Text, nullable=True), schema=S)


def downgrade() -> None:
    """Loses the errors kept: the older version keeps the attempts alone."""
    op.drop_column("payments", "last_error", schema=S)
