"""Attempt caps (SPEC 7.3): completed attempts per user in any rolling 24 hours and 7 days.

An attempt is a completed hand-out in the ledger (``assignments.status = 'completed'``), timed by
its completion (``finished_at``); the windows end at the database's ``now()``: 24 hours and 168
hours (not "7 days" of a calendar, which a session's time zone could stretch across a
daylight-saving change). The partial index ``ix_assignments_completed_user_id_finished_at``
makes each count a short index range scan.

The same rule exists twice, on purpose, and ``tests/rules/test_caps.py`` proves they agree:

- ``attempt_cap_sql`` is SQL text for set-based statements (the candidates of a population and of
  direct mode, see ``app.queues.kinds.candidates_sql``): the planner sees through it, where a
  function call per candidate would cost an executor start each;
- ``callqueue_attempt_cap(user_id, max_day, max_week, daily_exempt)`` is the database function
  (migration 0004) for the claim path's statements and PL/pgSQL functions.

Both answer ``'weekly'``, ``'daily'`` or null (not at a cap). The weekly cap is reported first:
a due callback, exempt from the daily cap only, is still held back by it.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, text

from app.config import Settings

# Statement parameters carrying the caps; ``cap_params`` fills them from the settings.
DAY_PARAM = "max_attempts_per_day"
WEEK_PARAM = "max_attempts_per_week"
REASON = "attempt_cap"


def cap_params(settings: Settings) -> dict[str, int]:
    return {
        DAY_PARAM: settings.max_attempts_per_day,
        WEEK_PARAM: settings.max_attempts_per_week,
    }


def attempt_cap_sql(user_id: str, *, daily_exempt: str = "false") -> str:
    """A SQL expression: ``'weekly'``, ``'daily'`` or null for the user ``user_id`` (an SQL
    expression, e.g. ``s.user_id`` or ``:user_id``), with the parameters ``:max_attempts_per_day``
    and ``:max_attempts_per_week``. ``daily_exempt`` is an SQL boolean (true for a due callback)."""
    return (
        "(SELECT CASE"
        f" WHEN count(*) >= :{WEEK_PARAM} THEN 'weekly'"
        f" WHEN NOT ({daily_exempt}) AND count(*) FILTER"
        f" (WHERE cap.finished_at > now() - interval '24 hours') >= :{DAY_PARAM}"
        " THEN 'daily' END"
        " FROM assignments cap"
        f" WHERE cap.user_id = {user_id} AND cap.status = 'completed'"
        " AND cap.finished_at > now() - interval '168 hours')"
    )


def at_daily_cap_sql(user_id: str) -> str:
    """SQL boolean: the user has ``:max_attempts_per_day`` completed attempts in the last 24 h."""
    return (
        "((SELECT count(*) FROM assignments cap"
        f" WHERE cap.user_id = {user_id} AND cap.status = 'completed'"
        f" AND cap.finished_at > now() - interval '24 hours') >= :{DAY_PARAM})"
    )


def at_weekly_cap_sql(user_id: str) -> str:
    """SQL boolean: the user has ``:max_attempts_per_week`` completed attempts in 7 days."""
    return (
        "((SELECT count(*) FROM assignments cap"
        f" WHERE cap.user_id = {user_id} AND cap.status = 'completed'"
        f" AND cap.finished_at > now() - interval '168 hours') >= :{WEEK_PARAM})"
    )


@dataclass(frozen=True, slots=True)
class Attempts:
    last_24_hours: int
    last_7_days: int


def attempts(conn: Connection, user_id: int) -> Attempts:
    """The user's completed attempts in the two rolling windows, on the database's clock."""
    row = conn.execute(
        text(
            "SELECT count(*) FILTER (WHERE finished_at > now() - interval '24 hours') AS day,"
            " count(*) AS week FROM assignments"
            " WHERE user_id = :u AND status = 'completed'"
            " AND finished_at > now() - interval '168 hours'"
        ),
        {"u": user_id},
    ).one()
    return Attempts(int(row.day), int(row.week))


def attempt_cap(
    conn: Connection, settings: Settings, user_id: int, *, due_callback: bool = False
) -> str | None:
    """``'weekly'``, ``'daily'`` or None for one user: the database function, called from Python."""
    value = conn.execute(
        text("SELECT callqueue_attempt_cap(:u, :d, :w, :exempt)"),
        {
            "u": user_id,
            "d": settings.max_attempts_per_day,
            "w": settings.max_attempts_per_week,
            "exempt": due_callback,
        },
    ).scalar_one()
    return None if value is None else str(value)
