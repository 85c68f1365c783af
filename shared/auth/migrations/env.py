"""Alembic environment of the auth schema."""

from shared.auth.tables import metadata
from shared.db.alembic_env import run

run(metadata)
