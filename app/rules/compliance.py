"""The compliance report (SPEC 7.3): per day, did we call anyone outside hours, too often, or
against their wishes? Every figure comes from the ledger and the invalidation record.

Days are local dates in the time zone of the calling rules in force when the report is made, from
``from`` to ``to`` inclusive. Each hand-out is judged by the calling rules in force at the moment it
was made (their history is the audit of their changes, app/rules/calling.py), so a later change
never rewrites the past; the attempt caps are the settings' (MAX_ATTEMPTS_PER_DAY/WEEK).

The report is a list of sections, each adding its columns to every day: hand-outs, hand-outs the
claim path refused, and the callbacks of SPEC 7.2 (booked / kept on time / late / overdue /
cancelled).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, text

from app.config import Settings
from app.errors import InvalidInput
from app.hours import local_day_start
from app.rules.calling import RulesTimeline, load_calling_rules, rules_timeline
from app.rules.caps import REASON as ATTEMPT_CAP_REASON

MAX_DAYS = 366
SUPPRESSED_REASON = "suppressed"
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    description: str


def days_between(first: date, last: date) -> list[date]:
    """The local days ``first`` to ``last``, inclusive."""
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


@dataclass(frozen=True, slots=True)
class Period:
    first: date
    last: date
    zone: ZoneInfo
    # [start, end) in UTC: local midnight of ``first`` to local midnight after ``last``.
    start: datetime
    end: datetime

    def day_of(self, instant: datetime) -> date:
        return instant.astimezone(self.zone).date()

    def days(self) -> list[date]:
        return days_between(self.first, self.last)


@dataclass(frozen=True, slots=True)
class Context:
    settings: Settings
    period: Period
    timeline: RulesTimeline


DayCounts = dict[date, Counter[str]]


class Section(Protocol):
    columns: tuple[Column, ...]

    def count(self, conn: Connection, context: Context, counts: DayCounts) -> None: ...


class HandOuts:
    """Every hand-out of the period, judged by the rules of its moment and the caps."""

    columns: tuple[Column, ...] = (
        Column("handouts", "users handed out to agents"),
        Column("outside_hours", "hand-outs outside the calling hours in force at the time"),
        Column(
            "over_daily_cap",
            "hand-outs of users who already had MAX_ATTEMPTS_PER_DAY completed attempts in the"
            " 24 hours before (due callbacks exempt)",
        ),
        Column(
            "over_weekly_cap",
            "hand-outs of users who already had MAX_ATTEMPTS_PER_WEEK completed attempts in the"
            " 7 days before",
        ),
    )

    # The attempts each hand-out's user had completed in the 24 hours and 7 days before it;
    # one index range scan per hand-out (ix_assignments_completed_user_id_finished_at).
    SQL = """
        SELECT a.assigned_at, a.source = 'callback' AS callback, p.day, p.week
          FROM assignments a
          CROSS JOIN LATERAL (
               SELECT count(*) FILTER (WHERE c.finished_at > a.assigned_at - interval '24 hours')
                          AS day,
                      count(*) AS week
                 FROM assignments c
                WHERE c.user_id = a.user_id AND c.status = 'completed' AND c.id <> a.id
                  AND c.finished_at > a.assigned_at - interval '168 hours'
                  AND c.finished_at <= a.assigned_at) p
         WHERE a.assigned_at >= :start AND a.assigned_at < :end
         ORDER BY a.assigned_at
    """

    def count(self, conn: Connection, context: Context, counts: DayCounts) -> None:
        period, timeline, settings = context.period, context.timeline, context.settings
        # Streamed, this statement alone (Connection.execution_options would stream every
        # later statement on the connection too).
        rows = conn.execute(
            text(self.SQL),
            {"start": period.start, "end": period.end},
            execution_options={"stream_results": True, "yield_per": 5000},
        )
        for assigned_at, callback, day, week in rows:
            figures = counts[period.day_of(assigned_at)]
            figures["handouts"] += 1
            if not timeline.at(assigned_at).is_open(assigned_at):
                figures["outside_hours"] += 1
            if not callback and day >= settings.max_attempts_per_day:
                figures["over_daily_cap"] += 1
            if week >= settings.max_attempts_per_week:
                figures["over_weekly_cap"] += 1


class Blocked:
    """Hand-outs the claim path refused, from the invalidation record."""

    columns: tuple[Column, ...] = (
        Column("blocked_suppressed", "hand-outs refused because the number is suppressed"),
        Column("blocked_attempt_cap", "hand-outs refused because the user was at an attempt cap"),
    )
    REASONS = {SUPPRESSED_REASON: "blocked_suppressed", ATTEMPT_CAP_REASON: "blocked_attempt_cap"}

    def count(self, conn: Connection, context: Context, counts: DayCounts) -> None:
        period = context.period
        rows = conn.execute(
            text(
                "SELECT created_at, reason FROM entry_invalidations"
                " WHERE created_at >= :start AND created_at < :end"
                " AND reason = ANY(CAST(:reasons AS text[]))"
            ),
            {"start": period.start, "end": period.end, "reasons": list(self.REASONS)},
        )
        for created_at, reason in rows:
            counts[period.day_of(created_at)][self.REASONS[reason]] += 1


class Callbacks:
    """The promises of SPEC 7.2: booked on the day they were booked; kept on time, late and
    still overdue on the day they were due (judged by the first hand-out against
    CALLBACK_GRACE_MINUTES); cancelled on the day they were cancelled."""

    columns: tuple[Column, ...] = (
        Column("callbacks_booked", "callbacks booked"),
        Column(
            "callbacks_kept_on_time",
            "callbacks due that day first handed out within CALLBACK_GRACE_MINUTES of due",
        ),
        Column(
            "callbacks_late",
            "callbacks due that day first handed out more than CALLBACK_GRACE_MINUTES after due",
        ),
        Column(
            "callbacks_overdue",
            "callbacks due that day still waiting more than CALLBACK_GRACE_MINUTES after due",
        ),
        Column("callbacks_cancelled", "callbacks cancelled (by a supervisor, or their person)"),
    )

    # From the callbacks, and from what erasure kept of an erased person's (SPEC 8.3: the
    # figures are the same before and after an erasure).
    SQL = """
        WITH every AS (
            SELECT created_at, due_at, first_handed_out_at, status, finished_at FROM callbacks
            UNION ALL
            SELECT created_at, due_at, first_handed_out_at, status, finished_at
              FROM erased_callbacks
        )
        SELECT 'callbacks_booked' AS what, created_at AS at FROM every
         WHERE created_at >= :start AND created_at < :end
        UNION ALL
        SELECT CASE WHEN first_handed_out_at IS NULL THEN 'callbacks_overdue'
                    WHEN first_handed_out_at > due_at + make_interval(mins => :grace)
                    THEN 'callbacks_late'
                    ELSE 'callbacks_kept_on_time' END,
               due_at
          FROM every
         WHERE due_at >= :start AND due_at < :end
           AND (first_handed_out_at IS NOT NULL
                OR (status = 'scheduled' AND due_at + make_interval(mins => :grace) < now()))
        UNION ALL
        SELECT 'callbacks_cancelled', finished_at FROM every
         WHERE status = 'cancelled' AND finished_at >= :start AND finished_at < :end
    """

    def count(self, conn: Connection, context: Context, counts: DayCounts) -> None:
        period = context.period
        rows = conn.execute(
            text(self.SQL),
            {
                "start": period.start,
                "end": period.end,
                "grace": context.settings.callback_grace_minutes,
            },
        )
        for what, at in rows:
            counts[period.day_of(at)][what] += 1


SECTIONS: tuple[Section, ...] = (HandOuts(), Blocked(), Callbacks())
COLUMNS: tuple[Column, ...] = tuple(c for s in SECTIONS for c in s.columns)


def parse_period_dates(first: str | None, last: str | None) -> tuple[date, date]:
    """``from`` and ``to`` as given (ISO dates), or InvalidInput on the one that is wrong."""
    days = []
    for name, value in (("from", first), ("to", last)):
        if value is None or not value.strip():
            raise InvalidInput(f"'{name}' is required (an ISO date, YYYY-MM-DD)", ["query", name])
        try:
            if not _ISO_DATE.fullmatch(value.strip()):
                raise ValueError
            days.append(date.fromisoformat(value.strip()))
        except ValueError:
            raise InvalidInput(
                f"'{name}' must be an ISO date (YYYY-MM-DD)", ["query", name]
            ) from None
    if days[1] < days[0]:
        raise InvalidInput("'to' must not be before 'from'", ["query", "to"])
    if (days[1] - days[0]).days >= MAX_DAYS:
        raise InvalidInput(f"the report covers at most {MAX_DAYS} days", ["query", "to"])
    return days[0], days[1]


def count_days(
    conn: Connection, settings: Settings, first: date, last: date, zone: ZoneInfo
) -> DayCounts:
    """Each local day's figures from the ledger, the invalidation record and the callbacks."""
    period = Period(
        first,
        last,
        zone,
        local_day_start(zone, first),
        local_day_start(zone, last + timedelta(days=1)),
    )
    context = Context(settings, period, rules_timeline(conn, settings))
    counts: DayCounts = {day: Counter() for day in period.days()}
    for section in SECTIONS:
        section.count(conn, context, counts)
    return counts


_KEPT = text(
    "SELECT day, figures FROM compliance_days WHERE day BETWEEN :first AND :last ORDER BY day"
)


def _runs(days: list[date], longest: int) -> Iterator[tuple[date, date]]:
    """Consecutive days as (first, last) ranges of at most ``longest`` days."""
    start = end = None
    for day in days:
        if start is not None and end is not None:
            if day == end + timedelta(days=1) and (day - start).days < longest:
                end = day
                continue
            yield start, end
        start = end = day
    if start is not None and end is not None:
        yield start, end


def compliance_report(
    conn: Connection, settings: Settings, first: date, last: date
) -> dict[str, Any]:
    """The report for local days ``first`` to ``last``: a day whose figures are kept
    (``keep_days``: final days, and those whose rows retention deleted) answers them; the others
    are counted from the ledger, a run of consecutive days at a time."""
    now = conn.execute(text("SELECT now()")).scalar_one()
    rules = load_calling_rules(conn, settings)
    kept: DayCounts = {
        day: Counter(figures)
        for day, figures in conn.execute(_KEPT, {"first": first, "last": last})
    }
    period = days_between(first, last)
    counts: DayCounts = dict(kept)
    for run_first, run_last in _runs([d for d in period if d not in kept], MAX_DAYS):
        counts.update(count_days(conn, settings, run_first, run_last, rules.zone))
    names = [c.name for c in COLUMNS]
    days = [{"date": day.isoformat(), **{n: counts[day][n] for n in names}} for day in period]
    return {
        "from": first.isoformat(),
        "to": last.isoformat(),
        "timezone": rules.timezone,
        "generated_at": now.isoformat(),
        "caps": {
            "per_day": settings.max_attempts_per_day,
            "per_week": settings.max_attempts_per_week,
        },
        "columns": [{"name": c.name, "description": c.description} for c in COLUMNS],
        "days": days,
        "totals": {n: sum(d[n] for d in days) for n in names},
    }


_KEEP = text(
    "INSERT INTO compliance_days (day, timezone, figures)"
    " VALUES (:day, :zone, CAST(:figures AS jsonb)) ON CONFLICT (day) DO NOTHING"
)
_FIRST_RECORD = text(
    "SELECT least((SELECT min(assigned_at) FROM assignments),"
    " (SELECT min(created_at) FROM entry_invalidations),"
    " (SELECT min(created_at) FROM callbacks), (SELECT min(created_at) FROM erased_callbacks))"
)
_KEPT_DAYS = text("SELECT day FROM compliance_days WHERE day BETWEEN :first AND :last")
# Days with a callback due that is still waiting for its first hand-out: its figures (overdue,
# later late or kept) can still change.
_OPEN_DAYS = text(
    "SELECT DISTINCT (due_at AT TIME ZONE :zone)::date FROM callbacks"
    " WHERE status IN ('scheduled', 'assigned') AND first_handed_out_at IS NULL"
    " AND due_at < :end"
)


def keep_days(
    conn: Connection,
    settings: Settings,
    through: date,
    *,
    forced_through: date | None = None,
    most: int = 31,
) -> int:
    """Keep the figures of up to ``most`` days through ``through`` not kept yet, oldest first,
    each one that can no longer change: ended (``through`` is before today), with no callback due
    that day still waiting. Days through ``forced_through`` are kept whatever (retention is
    about to delete their rows). Returns how many were kept; a kept day is never recomputed,
    and the report answers it from here (a year's report reads a year of rows, not a year of
    the ledger)."""
    rules = load_calling_rules(conn, settings)
    first: datetime | None = conn.execute(_FIRST_RECORD).scalar()
    if first is None:
        return 0
    start = first.astimezone(rules.zone).date()
    if start > through:
        return 0
    kept = set(conn.execute(_KEPT_DAYS, {"first": start, "last": through}).scalars())
    waiting = set(
        conn.execute(
            _OPEN_DAYS,
            {"zone": rules.timezone, "end": local_day_start(rules.zone, through + timedelta(1))},
        ).scalars()
    )
    forced = forced_through or date.min
    wanted = [
        day
        for day in days_between(start, through)
        if day not in kept and (day <= forced or day not in waiting)
    ][:most]
    names = [c.name for c in COLUMNS]
    for run_first, run_last in _runs(wanted, most):
        counts = count_days(conn, settings, run_first, run_last, rules.zone)
        for day, figures in counts.items():
            conn.execute(
                _KEEP,
                {
                    "day": day,
                    "zone": rules.timezone,
                    "figures": json.dumps({n: figures[n] for n in names}),
                },
            )
    return len(wanted)
