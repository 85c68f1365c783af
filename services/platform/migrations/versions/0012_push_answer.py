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

from shared.db.migrate import refuse_losing

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Rows from before keep none: such a push sent again is answered duplicate, as it was."""
    op.add_column("pushes", sa.Column("answer", JSONB(), nullable=True), schema="platform")


def downgrade() -> None:
    """Refused while a push was answered other than ``accepted`` or ``duplicate`` (a
    ``problem`` with its kinds, ``ignored``): the older version answers every push sent again
    ``duplicate``, which a platform whose first answer was lost reads as placed. An answer
    ``accepted`` or ``duplicate`` is answered again ``duplicate`` by both: dropped. Push ids
    are kept three timestamp windows (15 minutes by default), their answers with them."""
    refuse_losing(
        "platform.pushes",
        "answer->>'status' NOT IN ('accepted', 'duplicate')",
        "what each push answered neither accepted nor duplicate was answered, which the older"
        " version answers again duplicate, as if the order were placed (or wait until the push"
        " ids are forgotten, three timestamp windows after they came)",
        "UPDATE platform.pushes SET answer = NULL"
        " WHERE answer->>'status' NOT IN ('accepted', 'duplicate')",
    )
    op.drop_column("pushes", "answer", schema="platform")
