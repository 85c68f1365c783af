"""Run a service's Alembic migrations (each service owns one schema and its own history)."""

from pathlib import Path

from alembic import command
from alembic.config import Config


def alembic_config(migrations_dir: Path, url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(migrations_dir: Path, url: str) -> None:
    """Bring a service's schema to the newest revision (blocking; run it off the event loop)."""
    command.upgrade(alembic_config(migrations_dir, url), "head")
