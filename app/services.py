"""The long-lived objects a process needs, built once from settings."""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property, partial

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from app.config import Settings
from app.db import SessionBoundsMissing, create_direct_engine, create_store_engine
from app.errors import ConfigError
from app.flags import Flags, current_flags, default_flags, flags_with
from app.queues.assignments import AssignmentService
from app.queues.claims import ClaimService, ClaimSettings
from app.queues.kinds import POPULATION_LOCK_KEY
from app.queues.population import Population, PopulationOptions
from app.queues.population_lock import PopulationLock
from app.replica.monitor import ReplicaMonitor
from app.replica.reader import Replica, create_replica_engine


@dataclass
class Services:
    settings: Settings
    engine: Engine
    replica: Replica

    @classmethod
    def build(cls, settings: Settings) -> Services:
        return cls(
            settings=settings,
            engine=create_store_engine(settings),
            replica=Replica(
                create_replica_engine(settings),
                settings.replica_batch_size,
                # A second past the server-side statement timeout: the server normally answers
                # first; the client-side bound is for links that stop carrying bytes.
                deadline_seconds=settings.replica_statement_timeout_ms / 1000 + 1,
            ),
        )

    @cached_property
    def replica_monitor(self) -> ReplicaMonitor:
        """Started by the server's lifespan; the probes read its last result."""
        return ReplicaMonitor(
            self.replica,
            self.settings.replica_check_seconds,
            stale_after_seconds=self.settings.replica_statement_timeout_ms / 1000,
        )

    def require_session_bounds(self) -> None:
        """Behind a transaction pooler, refuse to start when the pooler's sessions lack the
        bounds (a database that is down is /readyz's business, not a reason to refuse)."""
        if not self.settings.db_transaction_pooling:
            return
        try:
            with self.engine.connect():
                pass
        except SessionBoundsMissing as exc:
            raise ConfigError(str(exc)) from None
        except SQLAlchemyError:
            pass

    def flags(self) -> Flags:
        """The flags in force, read per call so a supervisor's change reaches every process on
        its next request. With the database down, the environment defaults apply."""
        try:
            with self.engine.connect() as conn:
                return current_flags(conn, self.settings)
        except SQLAlchemyError:
            return default_flags(self.settings)

    @cached_property
    def claim_settings(self) -> ClaimSettings:
        s = self.settings
        return ClaimSettings(
            lease_seconds=s.lease_seconds,
            max_validation_attempts=s.max_validation_attempts,
            cooling_period_minutes=s.cooling_period_minutes,
            skip_cooldown_minutes=s.skip_cooldown_minutes,
        )

    @cached_property
    def claims(self) -> ClaimService:
        return ClaimService(
            self.engine, self.replica, self.claim_settings, partial(flags_with, self.settings)
        )

    @cached_property
    def assignments(self) -> AssignmentService:
        return AssignmentService(self.engine, self.replica, self.claim_settings)

    @cached_property
    def population_options(self) -> PopulationOptions:
        s = self.settings
        return PopulationOptions(
            queue_size_limit=s.queue_size_limit,
            cooling_period_minutes=s.cooling_period_minutes,
            recheck_batch=s.recheck_batch,
            population_interval_minutes=s.population_interval_minutes,
        )

    def population(self) -> Population:
        options = replace(
            self.population_options, use_separated_queues=self.flags().USE_SEPARATED_QUEUES
        )
        return Population(self.engine, self.replica, options, self.population_lock)

    @cached_property
    def direct_engine(self) -> Engine:
        """Connections that bypass a transaction pooler; opened only when a population runs."""
        return create_direct_engine(self.settings)

    @cached_property
    def population_lock(self) -> PopulationLock:
        return PopulationLock(
            self.direct_engine, POPULATION_LOCK_KEY, self.settings.dead_peer_timeout_seconds
        )

    def dispose(self) -> None:
        if "replica_monitor" in self.__dict__:
            self.replica_monitor.stop()
        self.engine.dispose()
        self.replica.engine.dispose()
        if "direct_engine" in self.__dict__:
            self.direct_engine.dispose()
