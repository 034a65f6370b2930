"""Domain errors. They carry a stable code and a human sentence, never an HTTP status."""

from __future__ import annotations


class CallqueueError(Exception):
    code = "Error"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


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
