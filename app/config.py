"""Settings: one validated class read from the environment (SPEC section 5)."""

from __future__ import annotations

from datetime import date
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from app.errors import ConfigError
from app.hours import CallingRules, parse_holidays, parse_hours, parse_timezone

MIN_CRON_SECRET_LENGTH = 32
MIN_SUPPRESSION_KEY_LENGTH = 32


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
    # A connection that bypasses a transaction-pooling proxy, for what needs a session (the
    # population's advisory lock, migrations). Defaults to DATABASE_URL.
    database_direct_url: str | None = None
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
    # Callbacks (SPEC 7.2): how long a due callback waits for the agent who booked it, and how
    # late a hand-out may be before the callback counts as late (or, not handed out, overdue).
    callback_personal_minutes: int = Field(30, ge=0, le=7 * 24 * 60)
    callback_grace_minutes: int = Field(15, ge=0, le=7 * 24 * 60)
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
    # Statements slower than this are logged (first line and duration only); 0 disables.
    slow_statement_ms: int = Field(1000, ge=0)

    # Calling rules (SPEC 7.3): defaults; supervisors change the hours at run time.
    calling_timezone: str = "Europe/London"
    calling_hours: str = "mon-fri 08:00-21:00; sat 09:00-17:00"
    calling_holidays: Annotated[list[date], NoDecode] = []
    max_attempts_per_day: int = Field(3, ge=1, le=1000)
    max_attempts_per_week: int = Field(10, ge=1, le=10_000)
    suppression_key: SecretStr | None = None

    # Production traps (issue 11).
    max_body_bytes: int = Field(1024 * 1024, ge=1024, le=1024 * 1024 * 1024)
    # PUT /api/scores' own cap (SPEC 8.1): 10,000 rows with every score component are about
    # 1.1 MB of compact JSON, more when indented.
    scores_max_body_bytes: int = Field(8 * 1024 * 1024, ge=1024, le=1024 * 1024 * 1024)
    docs_enabled: bool | None = None
    metrics_token: SecretStr | None = None
    # DATABASE_URL goes through a transaction-pooling proxy (PgBouncer pool_mode=transaction).
    # Unset: inferred from DATABASE_DIRECT_URL (see ``transaction_pooling``).
    db_transaction_pooling: bool | None = None
    # Sign-in and people (SPEC 8.2). PUBLIC_URL: the service's own external URL (links, the
    # identity provider's redirect URI, the CSRF Origin check); required (https) in production.
    public_url: str | None = None
    oidc_issuer: str | None = None
    oidc_client_id: str | None = None
    oidc_client_secret: SecretStr | None = None
    oidc_provider_name: str = "your company's sign-in"
    oidc_trust_unverified_email: bool = False
    password_login: bool = True
    session_idle_minutes: int = Field(120, ge=1, le=7 * 24 * 60)
    session_max_hours: int = Field(12, ge=1, le=24 * 30)
    # Personal data (SPEC 8.3): notes, release reasons and details cleared this long after an
    # assignment finished; finished assignments deleted after this long (0: kept forever).
    retention_notes_days: int = Field(365, ge=1, le=36_500)
    retention_ledger_days: int = Field(2190, ge=0, le=36_500)
    # Webhooks (SPEC 8.4): each attempt's time limit; private, loopback and link-local targets
    # (refused in production unless allowed); how long delivered events are kept.
    webhook_timeout_seconds: float = Field(10.0, gt=0, le=60)
    webhook_allow_private: bool = False
    webhook_retention_days: int = Field(30, ge=1, le=3650)
    # Whether this server process sends webhooks (every process does, by default).
    webhook_sender_enabled: bool = True

    # How long a peer (database host, replica, the app host holding the population lock) may be
    # silent before its connection is given up: TCP keepalives, tcp_user_timeout, and the
    # population lock's session lease.
    dead_peer_timeout_seconds: int = Field(60, ge=2, le=3600)
    # How often each process checks the replica in the background for the probes.
    replica_check_seconds: float = Field(5.0, gt=0, le=300)
    # How often each process moves the queues' fronts up (app/queues/fronts.py; 0: never).
    queue_front_seconds: float = Field(2.0, ge=0, le=300)

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str | None) -> str | None:
        return normalise_postgres_url(value, "DATABASE_URL") if value else None

    @field_validator("database_direct_url")
    @classmethod
    def _direct_url(cls, value: str | None) -> str | None:
        return normalise_postgres_url(value, "DATABASE_DIRECT_URL") if value else None

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

    @field_validator("calling_timezone")
    @classmethod
    def _calling_timezone(cls, value: str) -> str:
        parse_timezone(value)
        return value.strip()

    @field_validator("calling_hours")
    @classmethod
    def _calling_hours(cls, value: str) -> str:
        parse_hours(value)
        return value.strip()

    @field_validator("calling_holidays", mode="before")
    @classmethod
    def _calling_holidays(cls, value: Any) -> Any:
        if isinstance(value, str):
            return list(parse_holidays(value))
        return value

    @field_validator("retention_ledger_days")
    @classmethod
    def _ledger_days(cls, value: int) -> int:
        # The compliance report's caps look back a week: a ledger kept for less would lose days
        # the report still needs whole.
        if 0 < value < 30:
            raise ValueError("must be 0 (keep forever) or at least 30")
        return value

    @field_validator("public_url", "oidc_issuer")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        value = value.strip().rstrip("/")
        scheme, sep, rest = value.partition("://")
        if not sep or scheme not in ("http", "https") or not rest:
            raise ValueError("must be an http(s) URL")
        return value

    @field_validator("oidc_client_id", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("cron_secret", "suppression_key", "metrics_token", "oidc_client_secret")
    @classmethod
    def _empty_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value():
            return None
        return value

    @property
    def calling_rules(self) -> CallingRules:
        """The environment's calling rules (supervisors' run-time changes come on top)."""
        return CallingRules.parse(self.calling_timezone, self.calling_hours, self.calling_holidays)

    @property
    def replica_url(self) -> str | None:
        return self.replica_database_url or self.database_url

    @property
    def direct_url(self) -> str | None:
        """Where session-level work goes: never through a transaction pooler."""
        return self.database_direct_url or self.database_url

    @property
    def transaction_pooling(self) -> bool:
        """DATABASE_URL goes through a transaction pooler: DB_TRANSACTION_POOLING when set, else
        whenever DATABASE_DIRECT_URL names another connection (SPEC 7's way to say that
        DATABASE_URL does not reach PostgreSQL directly)."""
        if self.db_transaction_pooling is not None:
            return self.db_transaction_pooling
        return bool(self.database_direct_url) and self.database_direct_url != self.database_url

    @property
    def replica_pooled(self) -> bool:
        """The replica is read through the store's transaction pooler (REPLICA_DATABASE_URL
        unset, or the same URL)."""
        return self.transaction_pooling and self.replica_url == self.database_url

    @property
    def docs_on(self) -> bool:
        if self.docs_enabled is not None:
            return self.docs_enabled
        return self.app_env != "production"

    @property
    def webhook_targets_checked(self) -> bool:
        """Production's rule for webhook URLs: https, and no private, loopback or link-local
        address unless WEBHOOK_ALLOW_PRIVATE."""
        return self.app_env == "production"

    @property
    def scheduler_on(self) -> bool:
        if self.scheduler_enabled is not None:
            return self.scheduler_enabled
        return self.app_env == "development"

    @property
    def oidc_on(self) -> bool:
        """Sign-in with the company's identity provider is configured."""
        return self.oidc_issuer is not None

    @property
    def public_origin(self) -> str:
        """The origin (scheme, host, port) of ``base_url``: what a browser sends as ``Origin``."""
        scheme, _, rest = self.base_url.partition("://")
        return f"{scheme}://{rest.split('/', 1)[0]}"

    @property
    def base_url(self) -> str:
        """The service's external URL: PUBLIC_URL, or (outside production, where it is required)
        the local address ``callqueue serve`` listens on by default."""
        return self.public_url or "http://127.0.0.1:8000"

    def require_database(self) -> str:
        if not self.database_url:
            raise ConfigError("DATABASE_URL is not set: point it at the PostgreSQL database to use")
        return self.database_url

    def check_pooling(self) -> None:
        """Behind a transaction pooler the population's session lock needs a direct connection:
        without one, refuse to start rather than hold a lock the pooler cannot keep."""
        if not self.transaction_pooling or not self.database_url:
            return
        if not self.database_direct_url or self.database_direct_url == self.database_url:
            raise ConfigError(
                "DB_TRANSACTION_POOLING is on but DATABASE_DIRECT_URL is not set to a connection"
                " that bypasses the pooler: the population's session lock cannot work through"
                " transaction pooling"
            )

    def check_oidc(self) -> None:
        if self.oidc_issuer and not (self.oidc_client_id and self.oidc_client_secret):
            raise ConfigError(
                "OIDC_ISSUER is set but OIDC_CLIENT_ID or OIDC_CLIENT_SECRET is not: sign-in"
                " with the identity provider needs all three"
            )

    def check_server_ready(self) -> None:
        """The production server fails closed: no database, a weak cron secret, no https
        PUBLIC_URL stops start-up."""
        self.check_pooling()
        self.check_oidc()
        if self.app_env != "production":
            return
        self.require_database()
        secret = self.cron_secret.get_secret_value() if self.cron_secret else ""
        if len(secret) < MIN_CRON_SECRET_LENGTH:
            raise ConfigError(
                f"CRON_SECRET must be set to at least {MIN_CRON_SECRET_LENGTH} characters"
                " in production"
            )
        key = self.suppression_key.get_secret_value() if self.suppression_key else ""
        if len(key) < MIN_SUPPRESSION_KEY_LENGTH:
            raise ConfigError(
                f"SUPPRESSION_KEY must be set to at least {MIN_SUPPRESSION_KEY_LENGTH} characters"
                " in production (the key of the do-not-call list's hashes; keep it with the"
                " database's backups, the list is unusable without it)"
            )
        if not self.public_url or not self.public_url.startswith("https://"):
            raise ConfigError(
                "PUBLIC_URL must be set to the service's https URL in production (sign-in"
                " links, the identity provider's redirect URI and the browser checks use it)"
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
