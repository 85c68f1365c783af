"""what each push was answered, answered again to the same push sent again (a platform whose
answer was lost was told duplicate, placed, of a push answered problem)

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07 18:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Rows from before keep none: such a push sent again is answered duplicate, as it was."""
    op.add_column("pushes", sa.Column("answer", JSONB(), nullable=True), schema="platform")


def downgrade() -> None:
    """Drops the answers: the older version answers every push sent again duplicate."""
    op.drop_column("pushes", "answer", schema="platform")
