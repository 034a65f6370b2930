"""The long-lived objects a process needs, built once from settings."""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property

from sqlalchemy import Engine

from app.config import Settings
from app.db import create_store_engine
from app.flags import Flags, default_flags
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
            replica=Replica(create_replica_engine(settings), settings.replica_batch_size),
        )

    def flags(self) -> Flags:
        return default_flags(self.settings)

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

    def dispose(self) -> None:
        self.engine.dispose()
        self.replica.engine.dispose()
