"""Feature flags (SPEC 3.5): environment defaults, overridable at run time."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass

from sqlalchemy import Connection, text

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


def _parse(name: str, raw: str) -> object:
    if name == "MIGRATION_MODE":
        return MigrationMode(raw)
    return raw == "true"


def _render(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def current_flags(conn: Connection, settings: Settings) -> Flags:
    """Environment defaults overlaid with the supervisors' run-time changes (one small read, so
    every process applies a change on its very next request)."""
    overrides = {
        name: value for name, value in conn.execute(text("SELECT name, value FROM feature_flags"))
    }
    return flags_with(settings, overrides)


def flags_with(settings: Settings, overrides: Mapping[str, str]) -> Flags:
    values = default_flags(settings).as_dict()
    for name, raw in overrides.items():
        if name in values:
            values[name] = _parse(name, raw)
    values["MIGRATION_MODE"] = MigrationMode(str(values["MIGRATION_MODE"]))
    return Flags(**values)  # type: ignore[arg-type]


def update_flags(
    conn: Connection, settings: Settings, changes: dict[str, object], agent_id: int | None
) -> Flags:
    """Apply changes and audit each one that changes something; returns the flags in force."""
    conn.execute(text("LOCK TABLE feature_flags IN SHARE ROW EXCLUSIVE MODE"))
    before = current_flags(conn, settings).as_dict()
    for name, value in changes.items():
        old, new = _render(before[name]), _render(value)
        # Always stored, even when it equals this process's default: another process may have
        # another environment default, and the supervisor's value must win there too.
        conn.execute(
            text(
                "INSERT INTO feature_flags (name, value, updated_by, updated_at)"
                " VALUES (:n, :v, :a, now()) ON CONFLICT (name) DO UPDATE"
                " SET value = EXCLUDED.value, updated_by = EXCLUDED.updated_by,"
                " updated_at = EXCLUDED.updated_at"
            ),
            {"n": name, "v": new, "a": agent_id},
        )
        if old == new:
            continue
        conn.execute(
            text(
                "INSERT INTO feature_flag_changes (name, old_value, new_value, changed_by)"
                " VALUES (:n, :o, :v, :a)"
            ),
            {"n": name, "o": old, "v": new, "a": agent_id},
        )
    return current_flags(conn, settings)
