"""Domain errors. They carry a stable code and a human sentence, never an HTTP status."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any


class CallqueueError(Exception):
    code = "Error"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail

    def body_extra(self) -> dict[str, Any]:
        """Members the error adds to the standard body (never input values)."""
        return {}


class ConfigError(CallqueueError):
    code = "ConfigError"


class PopulationRunning(CallqueueError):
    code = "PopulationRunning"


class PopulationLockLost(CallqueueError):
    code = "PopulationLockLost"


class DiscoveryRunning(CallqueueError):
    code = "DiscoveryRunning"


class DiscoveryLockLost(CallqueueError):
    code = "DiscoveryLockLost"


class UnreadableFile(CallqueueError):
    """A file to import cannot be imported at all (missing, empty, not a CSV of scores)."""

    code = "UnreadableFile"


class SuppressionKeyMismatch(CallqueueError):
    """This process's SUPPRESSION_KEY is not the one the do-not-call list was built with."""

    code = "SuppressionKeyMismatch"


class ReplicaUnavailable(CallqueueError):
    code = "ReplicaUnavailable"


class ReplicaLagging(CallqueueError):
    code = "ReplicaLagging"


class NotFound(CallqueueError):
    code = "NotFound"


class Unauthorized(CallqueueError):
    code = "Unauthorized"


class Forbidden(CallqueueError):
    code = "Forbidden"


class Conflict(CallqueueError):
    code = "Conflict"


class QueueNotAllowed(Forbidden):
    """next-user on a queue outside the person's allowed queues (SPEC 8.2)."""

    code = "QueueNotAllowed"


class CsrfRejected(Forbidden):
    """A cookie-authenticated write without its session's CSRF token, or from another origin."""

    code = "CsrfRejected"


class SignInLocked(CallqueueError):
    """Too many failed sign-ins for one email: locked for a while (429 with Retry-After)."""

    code = "SignInLocked"

    def __init__(self, detail: str, retry_after: int) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class BadSignInRequest(CallqueueError):
    """An identity provider's callback or a set-password link that cannot be used (400)."""

    code = "BadRequest"


class InvalidInput(CallqueueError):
    """Input that parsed but breaks a rule only the service can check (e.g. against its clock)."""

    code = "ValidationError"

    def __init__(self, detail: str, loc: list[str | int]) -> None:
        super().__init__(detail)
        self.fields = [{"loc": loc, "msg": detail}]


class ServiceBusy(CallqueueError):
    """Temporarily unable to answer; the client should retry after ``retry_after`` seconds."""

    code = "ServiceBusy"
    retry_after = 2


class OutsideCallingHours(CallqueueError):
    """Nobody may be called now (SPEC 7.3). ``opens_at`` is the next opening (None when the rules
    never open); ``retry_after`` the whole seconds until then, counted from ``now`` (the
    database's clock), rounded up so a client retrying then finds the window open."""

    code = "OutsideCallingHours"

    def __init__(self, opens_at: datetime | None, now: datetime) -> None:
        super().__init__(
            "outside calling hours: nobody may be called now; see opens_at"
            if opens_at is not None
            else "the calling rules never open: nobody may be called"
        )
        self.opens_at = opens_at
        self.retry_after: int | None = (
            None if opens_at is None else max(1, math.ceil((opens_at - now).total_seconds()))
        )

    def body_extra(self) -> dict[str, Any]:
        return {"opens_at": self.opens_at.isoformat() if self.opens_at else None}
