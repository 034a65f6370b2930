"""Attempt caps (SPEC 7.3): completed attempts per user in any rolling 24 hours and 7 days.

An attempt is a completed hand-out in the ledger (``assignments.status = 'completed'``), timed by
its completion (``finished_at``); the windows end at the database's ``now()``: 24 hours and 168
hours (not "7 days" of a calendar, which a session's time zone could stretch across a
daylight-saving change). The partial index ``ix_assignments_completed_user_id_finished_at``
makes each count a short index range scan.

The rule is one database function, ``callqueue_attempt_cap(user_id, max_day, max_week,
daily_exempt)`` (migration 0004), used by the candidates of a population and of direct mode
(``cq_candidates``) and by the hand-out (``cq_hand_out``). It answers ``'weekly'``, ``'daily'``
or null (not at a cap). The weekly cap is reported first: a due callback, exempt from the daily
cap only, is still held back by it.
"""

# Statement parameters carrying the caps into the candidates' statement.
DAY_PARAM = "max_attempts_per_day"
WEEK_PARAM = "max_attempts_per_week"
# The reason a queue entry met at a cap is skipped with.
REASON = "attempt_cap"
