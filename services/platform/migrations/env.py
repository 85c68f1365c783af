"""Alembic environment of the platform schema."""

from services.platform.adapters.tables import metadata
from shared.db.alembic_env import run

run(metadata)
