"""Every owned table; Alembic imports its metadata from here."""

from app.db import Base
from app.models.audit import QueueTransition
from app.models.callbacks import Callback, CallbackChange
from app.models.flags import FeatureFlag, FeatureFlagChange
from app.models.intake import DiscoveryRun, DiscoveryState
from app.models.ledger import Assignment
from app.models.ops import EntryInvalidation, SchedulerTick
from app.models.people import (
    Agent,
    ApiToken,
    AuthEvent,
    OidcLogin,
    PasswordLink,
    Session,
    SignInFailure,
)
from app.models.privacy import (
    ComplianceDay,
    DataRequest,
    ErasedCallback,
    ErasedUser,
    RetentionState,
)
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
from app.models.webhooks import WebhookAttempt, WebhookDelivery, WebhookEndpoint, WebhookEvent

metadata = Base.metadata

__all__ = [
    "Agent",
    "ApiToken",
    "Assignment",
    "AuthEvent",
    "Callback",
    "CallbackChange",
    "CallingRulesChange",
    "CallingRulesOverride",
    "ComplianceDay",
    "DataRequest",
    "DiscoveryRun",
    "DiscoveryState",
    "EntryInvalidation",
    "ErasedCallback",
    "ErasedUser",
    "FeatureFlag",
    "FeatureFlagChange",
    "OidcLogin",
    "OutstandingRequestsEntry",
    "PasswordLink",
    "PopulationRun",
    "PopulationRunQueue",
    "QueueEntry",
    "QueueTransition",
    "RetentionState",
    "SchedulerTick",
    "Session",
    "SignInFailure",
    "SuppressedNumber",
    "SuppressionChange",
    "SuppressionKeyCheck",
    "UnsignedUsersEntry",
    "UserCallScore",
    "WebhookAttempt",
    "WebhookDelivery",
    "WebhookEndpoint",
    "WebhookEvent",
    "metadata",
]
