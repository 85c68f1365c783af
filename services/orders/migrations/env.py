"""Alembic environment of the orders schema."""

from services.orders.adapters.tables import metadata
from shared.db.alembic_env import run

run(metadata)
