"""each push's signature, so that a captured push re-split (its names and values cut
elsewhere, which signs the same) is a duplicate, not a push acted on again

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05 05:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Pushes taken before have none (they are pruned within three timestamp windows); the
    table holds only those windows' pushes, so the index is built at once."""
    op.add_column("pushes", sa.Column("sign", sa.String(64), nullable=True), schema="platform")
    op.create_index("pushes_sign", "pushes", ["app", "sign"], unique=True, schema="platform")


def downgrade() -> None:
    """Drops the signatures: the older version takes a re-split push as a new one, as before."""
    op.drop_index("pushes_sign", "pushes", schema="platform")
    op.drop_column("pushes", "sign", schema="platform")
