"""The outcome table (SPEC 3.4) as data; cq_complete (the claim functions' migration) applies it
to a score row in one relative, clamped statement."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum


class Outcome(StrEnum):
    NO_ANSWER = "no_answer"
    HUNG_UP = "hung_up"
    MIGHT_COMPLETE = "might_complete"
    GOING_TO_COMPLETE = "going_to_complete"
    CALL_BACK = "call_back"
    COMPLETED_FORM = "completed_form"
    MISSED_CALL = "missed_call"
    BAD_NUMBER = "bad_number"
    NOT_INTERESTED = "not_interested"
    DO_NOT_CONTACT = "do_not_contact"
    NO_CLAIM = "no_claim"


@dataclass(frozen=True, slots=True)
class OutcomeRule:
    score_change: int
    # None: next_call_after becomes null (callable now, or never when deactivating).
    delay: timedelta | None
    successful: bool = False
    deactivates: bool = False
    accepts_callback: bool = False
    # The number handed out goes on the do-not-call list (SPEC 7.3, 8.1).
    suppresses_number: bool = False


HOURS = timedelta(hours=1)
DAYS = timedelta(days=1)

RULES: dict[Outcome, OutcomeRule] = {
    Outcome.NO_ANSWER: OutcomeRule(1, 4 * HOURS),
    Outcome.HUNG_UP: OutcomeRule(2, 4 * HOURS),
    Outcome.MIGHT_COMPLETE: OutcomeRule(2, 24 * HOURS, accepts_callback=True),
    Outcome.GOING_TO_COMPLETE: OutcomeRule(0, 72 * HOURS, successful=True, accepts_callback=True),
    Outcome.CALL_BACK: OutcomeRule(0, 24 * HOURS, successful=True, accepts_callback=True),
    Outcome.COMPLETED_FORM: OutcomeRule(0, 24 * HOURS, successful=True),
    Outcome.MISSED_CALL: OutcomeRule(0, None),
    Outcome.BAD_NUMBER: OutcomeRule(50, 28 * DAYS),
    Outcome.NOT_INTERESTED: OutcomeRule(100, 28 * DAYS),
    Outcome.DO_NOT_CONTACT: OutcomeRule(200, None, deactivates=True, suppresses_number=True),
    Outcome.NO_CLAIM: OutcomeRule(200, None, deactivates=True),
}

MAX_CALLBACK_AHEAD = 30 * DAYS
MIN_SCORE, MAX_SCORE = 0, 200
