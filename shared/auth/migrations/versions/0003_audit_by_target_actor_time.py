"""indexes of the audit trail by target, by actor and by time: ``caravan audit --target``,
``--actor``, ``--since``/``--until`` read the trail whole, newest first, where ``--action``
alone had an index (a row per change an operator made, every cancellation through the orders
API included: it grows with every season)

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07 01:40:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

S = "auth"
INDEXES = {
    "ix_audit_target_at": ["target", "at", "id"],
    "ix_audit_actor_at": ["actor", "at", "id"],
    "ix_audit_at": ["at", "id"],
}
"""Each in the trail's order, newest first (its time, then its id), after what it narrows by."""


def upgrade() -> None:
    for name, columns in INDEXES.items():
        op.create_index(name, "audit", columns, schema=S)


def downgrade() -> None:
    for name in reversed(INDEXES):
        op.drop_index(name, table_name="audit", schema=S)
