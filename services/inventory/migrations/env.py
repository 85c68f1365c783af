"""Alembic environment of the inventory schema."""

from services.inventory.adapters.tables import metadata
from shared.db.alembic_env import run

run(metadata)
