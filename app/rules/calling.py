"""The calling rules in force: environment defaults, supervisors' run-time changes, their audit.

Like the feature flags, a supervisor's change is stored in the database (``calling_rules``, one
row; a null column means "the environment's default") and every process reads it on each
request, so a change reaches every process on its next request. Each change that alters the
rules in force is audited in ``calling_rules_changes`` with the whole rules before and after, which
is also their history: the compliance report judges each hand-out by the rules in force at that
moment, so a later change never rewrites the past.

For the claim path (see the README, "Calling rules and compliance"): the authentication statement
reads the stored change beside the agent and ``rules_from_row`` turns it into the rules in force
(``load_calling_rules`` does the same in one small query of its own); ``require_open`` raises
``OutsideCallingHours`` and ``require_callback_inside`` the 422 for a ``callback_at`` outside the
window.
"""

from __future__ import annotations

import json
import logging
from bisect import bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import Connection, text

from app.config import Settings
from app.errors import InvalidInput, OutsideCallingHours
from app.hours import CallingRules, RulesError, parse_hours, parse_timezone

log = logging.getLogger(__name__)

FIELDS = ("timezone", "hours", "holidays")
BEGINNING = datetime.min.replace(tzinfo=UTC)


def load_calling_rules(conn: Connection, settings: Settings) -> CallingRules:
    """The rules in force, in one small query (every process sees a change on its next call)."""
    row = conn.execute(text("SELECT timezone, hours, holidays FROM calling_rules")).one_or_none()
    if row is None:
        return settings.calling_rules
    return rules_from_row(settings, row.timezone, row.hours, row.holidays)


def rules_from_row(
    settings: Settings,
    timezone: str | None,
    hours: str | None,
    holidays: Sequence[date | str] | None,
) -> CallingRules:
    """The rules in force from the stored change's columns (null: the environment's value)."""
    try:
        return CallingRules.parse(
            timezone if timezone is not None else settings.calling_timezone,
            hours if hours is not None else settings.calling_hours,
            settings.calling_holidays if holidays is None else map(_as_date, holidays),
        )
    except RulesError as exc:
        # Stored rules were valid when written; a time zone a later tzdata dropped is the one
        # way they stop being so. The environment's rules, validated at start-up, are the
        # operator's own baseline: better than failing every claim.
        log.error("calling_rules.stored_rules_unusable", extra={"error": str(exc)})
        return settings.calling_rules


def _as_date(value: date | str) -> date:
    return value if isinstance(value, date) else date.fromisoformat(value)


# -- checks for the claim and completion paths ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class CallingWindow:
    """The calling rules in force and the database's clock, as one request sees them."""

    rules: CallingRules
    now: datetime

    @property
    def is_open(self) -> bool:
        return self.rules.is_open(self.now)

    def require_open(self) -> None:
        require_open(self.rules, self.now)


def calling_window(conn: Connection, settings: Settings) -> CallingWindow:
    """For callers outside a request (the metrics, tests, the benchmarks' in-process replay): the
    rules in force and the database's clock."""
    now = conn.execute(text("SELECT now()")).scalar_one()
    return CallingWindow(load_calling_rules(conn, settings), now)


def require_open(rules: CallingRules, now: datetime) -> None:
    """Raise OutsideCallingHours unless ``now`` (the database's clock) is inside the window."""
    if not rules.is_open(now):
        raise OutsideCallingHours(rules.next_open(now), now)


def require_callback_inside(rules: CallingRules, callback_at: datetime) -> None:
    """A callback must be booked for a time someone may be called: else 422 on ``callback_at``."""
    if not rules.is_open(callback_at):
        raise InvalidInput("callback_at is outside calling hours", ["body", "callback_at"])


# -- supervisors' changes ------------------------------------------------------------------------


def update_calling_rules(
    conn: Connection, settings: Settings, changes: Mapping[str, Any], agent_id: int | None
) -> CallingRules:
    """Apply any subset of timezone/hours/holidays; returns the rules in force.

    The whole result is validated before anything is written (a bad value is InvalidInput on
    its field). A field given is stored even when it equals this process's default: another
    process may have another environment default, and the supervisor's value must win there too.
    A change that alters the rules in force is audited with the whole rules before and after.
    """
    unknown = set(changes) - set(FIELDS)
    if unknown:
        raise ValueError("unknown calling-rules fields")
    for name, parse in (("timezone", parse_timezone), ("hours", parse_hours)):
        if name in changes:
            try:
                parse(changes[name])
            except RulesError as exc:
                raise InvalidInput(str(exc), ["body", name]) from None
    conn.execute(text("LOCK TABLE calling_rules IN SHARE ROW EXCLUSIVE MODE"))
    before = load_calling_rules(conn, settings)
    timezone = changes.get("timezone", before.timezone)
    hours = changes.get("hours", before.hours)
    holidays = changes.get("holidays", before.holidays)
    after = CallingRules.parse(timezone, hours, holidays)
    # Only the fields given are stored; the others keep what is stored (or the default).
    stored = {
        "timezone": after.timezone if "timezone" in changes else None,
        "hours": after.hours if "hours" in changes else None,
        "holidays": list(after.holidays) if "holidays" in changes else None,
    }
    conn.execute(
        text(
            "INSERT INTO calling_rules (id, timezone, hours, holidays, updated_by, updated_at)"
            " VALUES (1, :timezone, :hours, CAST(:holidays AS date[]), :agent, now())"
            " ON CONFLICT (id) DO UPDATE SET"
            " timezone = coalesce(EXCLUDED.timezone, calling_rules.timezone),"
            " hours = coalesce(EXCLUDED.hours, calling_rules.hours),"
            " holidays = coalesce(EXCLUDED.holidays, calling_rules.holidays),"
            " updated_by = EXCLUDED.updated_by, updated_at = EXCLUDED.updated_at"
        ),
        {**stored, "agent": agent_id},
    )
    if after.as_dict() != before.as_dict():
        conn.execute(
            text(
                "INSERT INTO calling_rules_changes (old_rules, new_rules, changed_by)"
                " VALUES (CAST(:old AS jsonb), CAST(:new AS jsonb), :agent)"
            ),
            {
                "old": json.dumps(before.as_dict()),
                "new": json.dumps(after.as_dict()),
                "agent": agent_id,
            },
        )
        log.info("calling_rules.changed", extra={"agent_id": agent_id, "fields": sorted(changes)})
    return load_calling_rules(conn, settings)


def rules_status(conn: Connection, settings: Settings) -> dict[str, Any]:
    """The rules in force and whether the window is open now (the database's clock)."""
    now = conn.execute(text("SELECT now()")).scalar_one()
    rules = load_calling_rules(conn, settings)
    opens_at = rules.next_open(now)
    return {
        **rules.as_dict(),
        "open_now": rules.is_open(now),
        "opens_at": opens_at.isoformat() if opens_at else None,
    }


# -- history -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RulesTimeline:
    """The rules in force at any instant, from the audit: rules[i] from starts[i] (the first
    from the beginning of time) until the next start."""

    starts: tuple[datetime, ...]
    rules: tuple[CallingRules, ...]

    def at(self, instant: datetime) -> CallingRules:
        return self.rules[bisect_right(self.starts, instant) - 1]


def rules_timeline(conn: Connection, settings: Settings) -> RulesTimeline:
    """Before the first audited change, that change's "before"; then each change's "after" from
    the moment it was made. With no change ever made, the rules in force now (the environment's:
    environment defaults are not history, see the README)."""
    changes = conn.execute(
        text(
            "SELECT changed_at, old_rules, new_rules FROM calling_rules_changes"
            " ORDER BY changed_at, id"
        )
    ).all()
    if not changes:
        return RulesTimeline((BEGINNING,), (load_calling_rules(conn, settings),))
    starts = [BEGINNING]
    rules = [_snapshot(settings, changes[0].old_rules)]
    for change in changes:
        starts.append(change.changed_at)
        rules.append(_snapshot(settings, change.new_rules))
    return RulesTimeline(tuple(starts), tuple(rules))


def _snapshot(settings: Settings, value: Any) -> CallingRules:
    if isinstance(value, str | bytes):
        value = json.loads(value)
    return rules_from_row(settings, value["timezone"], value["hours"], value["holidays"])
