"""The long-lived objects a process needs, built once from settings."""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property, partial

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from app.config import Settings
from app.db import create_store_engine
from app.flags import Flags, current_flags, default_flags, flags_with
from app.intake.discovery import Discovery, DiscoveryOptions
from app.queues.assignments import AssignmentService
from app.queues.claims import ClaimService, ClaimSettings
from app.queues.population import Population, PopulationOptions
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
        return Population(self.engine, self.replica, options)

    def discovery(self) -> Discovery:
        s = self.settings
        options = DiscoveryOptions(
            lookback_minutes=s.discovery_lookback_minutes, batch_size=s.discovery_batch_size
        )
        return Discovery(self.engine, self.replica, options)

    def dispose(self) -> None:
        self.engine.dispose()
        self.replica.engine.dispose()
