"""indexes for the statements that read callbacks and open problems: neither table is pruned

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04 02:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "platform"


def upgrade() -> None:
    # A push of an order cancelled on the platform: how did our order end (handlers.OUR_OUTCOME).
    op.create_index(
        "callbacks_platform_order", "callbacks", ["app", "platform_order_id"], schema=SCHEMA
    )
    # The problems gauge, every 5 s (handlers.OPEN_BY_KIND), and the list of open problems.
    op.create_index(
        "problems_open",
        "problems",
        ["kind"],
        schema=SCHEMA,
        postgresql_where=sa.text("resolved_at IS NULL"),
    )


def downgrade() -> None:
    op.drop_index("problems_open", table_name="problems", schema=SCHEMA)
    op.drop_index("callbacks_platform_order", table_name="callbacks", schema=SCHEMA)
