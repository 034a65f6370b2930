"""Feature flags (SPEC 3.5): environment defaults, overridable at run time."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from app.config import MigrationMode, Settings


@dataclass(frozen=True, slots=True)
class Flags:
    USE_SEPARATED_QUEUES: bool
    USE_NEW_QUEUE_SERVICES: bool
    MIGRATION_MODE: MigrationMode
    ENABLE_QUEUE_VALIDATION: bool

    @property
    def serving_mode(self) -> str:
        """``queues``, ``dual`` (queues, then direct) or ``direct``."""
        if (
            not self.USE_SEPARATED_QUEUES
            or not self.USE_NEW_QUEUE_SERVICES
            or self.MIGRATION_MODE is MigrationMode.LEGACY_ONLY
        ):
            return "direct"
        return "dual" if self.MIGRATION_MODE is MigrationMode.DUAL else "queues"

    def as_dict(self) -> dict[str, object]:
        values = asdict(self)
        values["MIGRATION_MODE"] = str(self.MIGRATION_MODE)
        return values


def default_flags(settings: Settings) -> Flags:
    return Flags(
        USE_SEPARATED_QUEUES=settings.use_separated_queues,
        USE_NEW_QUEUE_SERVICES=settings.use_new_queue_services,
        MIGRATION_MODE=settings.migration_mode,
        ENABLE_QUEUE_VALIDATION=settings.enable_queue_validation,
    )
