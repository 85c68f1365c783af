"""Alembic environment of the notifications schema."""

from services.notifications.adapters.tables import metadata
from shared.db.alembic_env import run

run(metadata)
