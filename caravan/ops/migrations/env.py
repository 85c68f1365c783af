"""Alembic environment of the ops schema."""

from caravan.ops.tables import metadata
from shared.db.alembic_env import run

run(metadata)
