"""Settings, read from the environment (and a ``.env`` file) with pydantic-settings."""

from functools import lru_cache
from typing import Literal

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Everything a service or the CLI may be configured with.

    The contract's names (``KAFKA_BOOTSTRAP_SERVERS``, ``DATABASE_URL``, ``CARAVAN_HTTP_PORT``)
    are read as they are; the project's own settings carry the ``CARAVAN_`` prefix.
    """

    model_config = SettingsConfigDict(env_prefix="CARAVAN_", env_file=".env", extra="ignore")

    environment: Literal["development", "test", "production"] = "development"
    kafka_bootstrap_servers: str = Field(
        "127.0.0.1:9092", validation_alias=AliasChoices("KAFKA_BOOTSTRAP_SERVERS")
    )
    database_url: str | None = Field(None, validation_alias=AliasChoices("DATABASE_URL"))
    http_port: int = Field(8080, validation_alias=AliasChoices("CARAVAN_HTTP_PORT"))
    http_host: str = "127.0.0.1"
    # Admin APIs of the other services (0 picks a free port, for extra instances).
    inventory_http_port: int = 8081
    payments_http_port: int = 8082
    notifications_http_port: int = 8083
    topic_partitions: int = 3
    topic_replication_factor: int = 1
    saga_deadline_seconds: float = 900.0
    expiry_sweep_seconds: float = 1.0
    outbox_batch_size: int = 500
    outbox_idle_poll_seconds: float = 0.05
    db_pool_size: int = 10
    handler_max_attempts: int = 3
    instance_id: str = "1"

    def async_database_url(self) -> str:
        """The database URL with the asyncpg driver, whatever scheme it was given in."""
        if self.database_url is None:
            raise RuntimeError("DATABASE_URL is not set and no local cluster was started")
        url = self.database_url
        for prefix in ("postgresql+asyncpg://", "postgresql://", "postgres://"):
            if url.startswith(prefix):
                return "postgresql+asyncpg://" + url[len(prefix) :]
        raise ValueError(f"DATABASE_URL must be a postgresql:// URL, got {url.split(':', 1)[0]}")


@lru_cache
def get_settings() -> Settings:
    return Settings()
