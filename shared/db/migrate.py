"""Run a service's Alembic migrations (each service owns one schema and its own history)."""

from pathlib import Path

from alembic import command
from alembic.config import Config


def alembic_config(migrations_dir: Path, url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(migrations_dir: Path, url: str, role: str | None = None) -> None:
    """Bring a service's schema to the newest revision (blocking; run it off the event loop);
    with ``role``, as that role (``SET ROLE``), which then owns what the migrations create."""
    cfg = alembic_config(migrations_dir, url)
    if role is not None:
        cfg.set_main_option("caravan_role", role)
    command.upgrade(cfg, "head")
