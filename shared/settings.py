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
    # Notifications: the SMS gateway ("auto": the HTTP simulator when a URL is given, else a
    # local sink; "infobip": the real provider, needs the key), the URL its delivery receipts
    # go to (default: this service's /sms/receipts), delivery retries and quiet hours.
    notifications_gateway: Literal["auto", "sink", "simulator", "infobip"] = "auto"
    notifications_gateway_url: str | None = None
    notifications_gateway_api_key: str | None = None
    notifications_gateway_sender: str = "Caravan"
    notifications_gateway_timeout_seconds: float = 5.0
    notifications_receipts_url: str | None = None
    notifications_max_attempts: int = Field(6, ge=1)
    notifications_retry_base_seconds: float = 1.0
    notifications_retry_cap_seconds: float = 300.0
    notifications_lease_seconds: float = 30.0
    notifications_quiet_start: str = Field("21:00", pattern=r"^\d{2}:\d{2}$")
    notifications_quiet_end: str = Field("08:00", pattern=r"^\d{2}:\d{2}$")
    # Inventory: a hold not settled within this time is reported ``stock.expired`` (once);
    # longer than the saga deadline, so it is the safety net behind it.
    inventory_hold_seconds: float = 1200.0
    # Payments: the prepaid gateway (no URL: a local adapter approves every charge), the
    # flat monthly interest rate of microloans, and instalment reminders.
    payments_gateway_url: str | None = None
    payments_gateway_timeout_seconds: float = 2.0
    payments_gateway_retry_seconds: float = 0.5
    payments_gateway_lease_seconds: float = 10.0
    payments_monthly_interest_bp: int = Field(0, ge=0)
    payments_reminder_upcoming_days: int = Field(3, ge=0)
    payments_reminder_interval_seconds: float = 5.0
    # Performance: how many records a subscriber takes at once and handles in one transaction
    # (1: one record per transaction), and how long it waits for records when there are none.
    consumer_batch_size: int = Field(100, ge=1, le=10_000)
    consumer_batch_timeout_ms: int = Field(10, ge=1)

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
