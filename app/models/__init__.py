"""Every owned table; Alembic imports its metadata from here."""

from app.db import Base
from app.models.agents import Agent, Assignment
from app.models.audit import QueueTransition
from app.models.callbacks import Callback, CallbackChange
from app.models.flags import FeatureFlag, FeatureFlagChange
from app.models.intake import DiscoveryRun, DiscoveryState
from app.models.ops import EntryInvalidation, SchedulerTick
from app.models.queues import OutstandingRequestsEntry, QueueEntry, UnsignedUsersEntry
from app.models.rules import (
    CallingRulesChange,
    CallingRulesOverride,
    SuppressedNumber,
    SuppressionChange,
    SuppressionKeyCheck,
)
from app.models.runs import PopulationRun, PopulationRunQueue
from app.models.scores import UserCallScore

metadata = Base.metadata

__all__ = [
    "Agent",
    "Assignment",
    "Callback",
    "CallbackChange",
    "CallingRulesChange",
    "CallingRulesOverride",
    "DiscoveryRun",
    "DiscoveryState",
    "EntryInvalidation",
    "FeatureFlag",
    "FeatureFlagChange",
    "OutstandingRequestsEntry",
    "PopulationRun",
    "PopulationRunQueue",
    "QueueEntry",
    "QueueTransition",
    "SchedulerTick",
    "SuppressedNumber",
    "SuppressionChange",
    "SuppressionKeyCheck",
    "UnsignedUsersEntry",
    "UserCallScore",
    "metadata",
]
