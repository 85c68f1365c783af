"""an index of when each order closed before it was placed was last found so, for its
pruning (the table grew by every order a buyer abandoned, for ever)

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05 08:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """The table holds the orders abandoned since 0009 (2026-12-05): the index is built at
    once, and the first prune then deletes all but the last minutes' rows."""
    op.create_index("closed_unplaced_seen", "closed_unplaced", ["seen_at"], schema="platform")


def downgrade() -> None:
    """Drops the index: the older version prunes none of these rows anyway."""
    op.drop_index("closed_unplaced_seen", "closed_unplaced", schema="platform")
