"""PostgreSQL access: one async engine per service process, and Alembic migrations per schema."""

from shared.db.engine import Database, fault, log_retry, reason, storable_text

__all__ = ["Database", "fault", "log_retry", "reason", "storable_text"]
