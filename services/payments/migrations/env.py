"""Alembic environment of the payments schema."""

from services.payments.adapters.tables import metadata
from shared.db.alembic_env import run

run(metadata)
