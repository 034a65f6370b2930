"""The long-lived objects a process needs, built once from settings."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date
from functools import cached_property

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from app.config import Settings
from app.db import SessionBoundsMissing, create_direct_engine, create_store_engine
from app.errors import ConfigError, SuppressionKeyMismatch
from app.flags import Flags, current_flags, default_flags, flags_with
from app.hours import CallingRules
from app.intake.discovery import Discovery, DiscoveryOptions, discovery_lock
from app.locks import RunLock
from app.queues.assignments import AssignmentService
from app.queues.callbacks import CallbackService
from app.queues.claims import ClaimService, ClaimSettings
from app.queues.population import Population, PopulationOptions, population_lock
from app.replica.monitor import ReplicaMonitor
from app.replica.reader import Replica, create_replica_engine
from app.rules.calling import CallingWindow, calling_window, rules_from_row
from app.rules.suppression import SuppressionList
from app.webhooks.delivery import Deliverer


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
    def autocommit(self) -> Engine:
        """The store's pool, each statement its own transaction: for requests that read or
        write in one statement, BEGIN and COMMIT would be two more round trips."""
        return self.engine.execution_options(isolation_level="AUTOCOMMIT")

    def calling_rules_for(
        self, stored: tuple[str | None, str | None, Sequence[date] | None] | None
    ) -> CallingRules:
        """The calling rules in force given the supervisors' stored change (read with the
        agent), or the environment's when there is none."""
        if stored is None:
            return self.default_calling_rules
        return rules_from_row(self.settings, *stored)

    @cached_property
    def default_calling_rules(self) -> CallingRules:
        """The environment's rules, parsed once for the process (every claim asks for them)."""
        return self.settings.calling_rules

    def flags_for(self, overrides: Mapping[str, str]) -> Flags:
        """The flags in force given the supervisors' overrides (read with the agent)."""
        if not overrides:
            return self.environment_flags
        return flags_with(self.settings, overrides)

    @cached_property
    def environment_flags(self) -> Flags:
        """The environment's flags, built once for the process: with no override stored, every
        request's flags are these (building them cost about 8 µs of CPU per request)."""
        return default_flags(self.settings)

    @cached_property
    def replica_monitor(self) -> ReplicaMonitor:
        """Started by the server's lifespan; the probes read its last result."""
        return ReplicaMonitor(
            self.replica,
            self.settings.replica_check_seconds,
            stale_after_seconds=self.settings.replica_statement_timeout_ms / 1000,
        )

    def require_session_bounds(self) -> None:
        """Refuse to start when the store's sessions lack the bounds: behind a pooler that does
        not set them, or that drops the startup parameter which carries them (a database that is
        down is /readyz's business, not a reason to refuse)."""
        try:
            with self.engine.connect():
                pass
        except SessionBoundsMissing as exc:
            raise ConfigError(str(exc)) from None
        except SQLAlchemyError:
            pass

    def record_suppression_key(self) -> None:
        """At start-up: record this process's SUPPRESSION_KEY fingerprint when the database has
        none yet, so /readyz tells at once whether the key is the do-not-call list's. A process
        with another key starts, not ready, and hands nobody out (SPEC 8.1); a database that is
        down or not migrated yet is /readyz's business, and the first hand-out records it."""
        try:
            with self.engine.begin() as conn:
                self.suppression.check_key(conn)
        except (SuppressionKeyMismatch, SQLAlchemyError):
            pass

    def flags(self) -> Flags:
        """The flags in force, read per call so a supervisor's change reaches every process on
        its next request. With the database down, the environment defaults apply."""
        try:
            with self.engine.connect() as conn:
                return current_flags(conn, self.settings)
        except SQLAlchemyError:
            return self.environment_flags

    @cached_property
    def suppression(self) -> SuppressionList:
        """The do-not-call list with this process's key (SUPPRESSION_KEY, or the development
        key in DATA_DIR), built on first use."""
        return SuppressionList.from_settings(self.settings)

    @cached_property
    def claim_settings(self) -> ClaimSettings:
        s = self.settings
        return ClaimSettings(
            lease_seconds=s.lease_seconds,
            max_validation_attempts=s.max_validation_attempts,
            cooling_period_minutes=s.cooling_period_minutes,
            skip_cooldown_minutes=s.skip_cooldown_minutes,
            max_attempts_per_day=s.max_attempts_per_day,
            max_attempts_per_week=s.max_attempts_per_week,
            callback_personal_minutes=s.callback_personal_minutes,
        )

    def calling_window(self, conn: Connection) -> CallingWindow:
        return calling_window(conn, self.settings)

    @cached_property
    def claims(self) -> ClaimService:
        return ClaimService(
            self.engine,
            self.replica,
            self.claim_settings,
            self.suppression,
            self.calling_window,
        )

    @cached_property
    def callbacks(self) -> CallbackService:
        return CallbackService(self.engine, self.settings.callback_grace_minutes)

    @cached_property
    def assignments(self) -> AssignmentService:
        return AssignmentService(
            self.engine,
            self.autocommit,
            self.replica,
            self.claim_settings,
            self.calling_window,
        )

    @cached_property
    def population_options(self) -> PopulationOptions:
        s = self.settings
        return PopulationOptions(
            queue_size_limit=s.queue_size_limit,
            cooling_period_minutes=s.cooling_period_minutes,
            recheck_batch=s.recheck_batch,
            population_interval_minutes=s.population_interval_minutes,
            max_attempts_per_day=s.max_attempts_per_day,
            max_attempts_per_week=s.max_attempts_per_week,
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
    def population_lock(self) -> RunLock:
        return population_lock(self.direct_engine, self.settings.dead_peer_timeout_seconds)

    def discovery(self) -> Discovery:
        s = self.settings
        options = DiscoveryOptions(
            lookback_minutes=s.discovery_lookback_minutes, batch_size=s.discovery_batch_size
        )
        return Discovery(
            self.engine,
            self.replica,
            options,
            discovery_lock(self.direct_engine, self.settings.dead_peer_timeout_seconds),
        )

    @cached_property
    def deliverer(self) -> Deliverer:
        return Deliverer.for_settings(self.engine, self.settings)

    def dispose(self) -> None:
        if "replica_monitor" in self.__dict__:
            self.replica_monitor.stop()
        if "deliverer" in self.__dict__:
            self.deliverer.close()
        self.engine.dispose()
        self.replica.engine.dispose()
        if "direct_engine" in self.__dict__:
            self.direct_engine.dispose()
