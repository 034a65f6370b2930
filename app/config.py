"""Settings: one validated class read from the environment (SPEC section 5)."""

from __future__ import annotations

from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from app.errors import ConfigError

MIN_CRON_SECRET_LENGTH = 32


class MigrationMode(StrEnum):
    NEW_ONLY = "new-only"
    DUAL = "dual"
    LEGACY_ONLY = "legacy-only"


def normalise_postgres_url(url: str, variable: str) -> str:
    """Map the URL spellings operators paste (postgres://, postgresql://) to the psycopg driver."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError(f"{variable} is not a database URL")
    scheme = scheme.lower()
    if scheme in ("postgres", "postgresql", "postgresql+psycopg"):
        return f"postgresql+psycopg://{rest}"
    raise ValueError(f"{variable} must be a PostgreSQL URL (postgresql://...)")


def normalise_replica_url(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if sep and scheme.lower() in ("mysql", "mysql+pymysql", "mariadb", "mariadb+pymysql"):
        return f"mysql+pymysql://{rest}"
    return normalise_postgres_url(url, "REPLICA_DATABASE_URL")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=None, extra="ignore", case_sensitive=False)

    database_url: str | None = None
    replica_database_url: str | None = None
    cron_secret: SecretStr | None = None
    app_env: Literal["production", "development", "test"] = "production"
    data_dir: Path = Path(".data")

    queue_size_limit: int = Field(100, ge=1, le=1_000_000)
    cooling_period_minutes: int = Field(120, ge=0)
    lease_seconds: int = Field(900, ge=10, le=86_400)
    max_validation_attempts: int = Field(10, ge=1, le=1000)
    queue_low_watermark: int = Field(20, ge=0)
    population_interval_minutes: int = Field(60, ge=1)
    replenish_min_interval_minutes: int = Field(15, ge=0)
    scheduler_enabled: bool | None = None
    cors_origins: Annotated[list[str], NoDecode] = []
    recheck_batch: int = Field(1000, ge=0)
    skip_cooldown_minutes: int = Field(60, ge=0)
    discovery_interval_minutes: int = Field(15, ge=1)
    discovery_lookback_minutes: int = Field(120, ge=0)
    discovery_batch_size: int = Field(10_000, ge=1, le=100_000)

    use_separated_queues: bool = True
    use_new_queue_services: bool = True
    migration_mode: MigrationMode = MigrationMode.NEW_ONLY
    enable_queue_validation: bool = True

    # Not in the contract's list, but operators need them: how long a replica statement may run,
    # how many users one replica round trip covers, and the store's connection pool.
    replica_statement_timeout_ms: int = Field(5000, ge=100)
    replica_batch_size: int = Field(2000, ge=1, le=20_000)
    db_pool_size: int = Field(10, ge=1)
    db_max_overflow: int = Field(10, ge=0)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str | None) -> str | None:
        return normalise_postgres_url(value, "DATABASE_URL") if value else None

    @field_validator("replica_database_url")
    @classmethod
    def _replica_url(cls, value: str | None) -> str | None:
        return normalise_replica_url(value) if value else None

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [origin.strip() for origin in value.split(",") if origin.strip()]
        return value

    @field_validator("cron_secret")
    @classmethod
    def _empty_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value():
            return None
        return value

    @property
    def replica_url(self) -> str | None:
        return self.replica_database_url or self.database_url

    @property
    def scheduler_on(self) -> bool:
        if self.scheduler_enabled is not None:
            return self.scheduler_enabled
        return self.app_env == "development"

    def require_database(self) -> str:
        if not self.database_url:
            raise ConfigError("DATABASE_URL is not set: point it at the PostgreSQL database to use")
        return self.database_url

    def check_server_ready(self) -> None:
        """The production server fails closed: no database or a weak cron secret stops start-up."""
        if self.app_env != "production":
            return
        self.require_database()
        secret = self.cron_secret.get_secret_value() if self.cron_secret else ""
        if len(secret) < MIN_CRON_SECRET_LENGTH:
            raise ConfigError(
                f"CRON_SECRET must be set to at least {MIN_CRON_SECRET_LENGTH} characters"
                " in production"
            )


def load_settings(**overrides: Any) -> Settings:
    """Build settings, turning pydantic's report into one line per bad variable, without values."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = []
        for error in exc.errors(include_input=False, include_url=False):
            name = str(error["loc"][0]).upper() if error["loc"] else "settings"
            problems.append(f"{name}: {error['msg']}")
        raise ConfigError("invalid configuration: " + "; ".join(problems)) from None


@lru_cache
def get_settings() -> Settings:
    return load_settings()
