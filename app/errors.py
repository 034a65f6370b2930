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
