"""each push id's fingerprint, so that the same push sent again is told from another push of
that id

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04 17:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Push ids taken before have none: a push sent again under one is refused 409, as before
    (they are pruned within three timestamp windows)."""
    op.add_column(
        "pushes", sa.Column("fingerprint", sa.String(64), nullable=True), schema="platform"
    )


def downgrade() -> None:
    """Drops the fingerprints without refusing: the older version refuses every push under a
    push id taken, whatever it carries."""
    op.drop_column("pushes", "fingerprint", schema="platform")
