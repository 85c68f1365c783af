"""indexes in the order GET /platform/callbacks and /platform/problems list them: each page
reads from its cursor on, rather than sorting every row ever kept (neither table is pruned)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04 05:30:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "platform"


def upgrade() -> None:
    op.create_index("callbacks_newest", "callbacks", ["created_at", "event_id"], schema=SCHEMA)
    op.create_index(
        "problems_newest",
        "problems",
        ["first_seen_at", "app", "platform_order_id", "kind"],
        schema=SCHEMA,
    )


def downgrade() -> None:
    op.drop_index("problems_newest", table_name="problems", schema=SCHEMA)
    op.drop_index("callbacks_newest", table_name="callbacks", schema=SCHEMA)
