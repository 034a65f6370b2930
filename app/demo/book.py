"""A realistic, deterministic demo book for ``callqueue serve --demo`` (SPEC 6).

It writes the claims platform's tables (users, claims, claim_requirements) and the service's
``user_call_scores`` the way a live system would hold them after months of calling:

- leads for both queues and for neither: disabled users, users with no claim or only cancelled
  claims, signed users whose documents are all in, and the traps of SPEC 3.1 (pending requirements
  of excluded types only, the base ``id_document``, pending documents on a cancelled claim);
- statuses in the mixed case the platform really stores (``CANCELLED``, ``Pending``, ``completed``)
  and a few ``id_document`` reasons that only look like the base one, since it is compared exactly;
- scores spread over 0..200 and skewed low, built from attempts and outcomes like the scorer's;
  creation times over nine months (a few inside the cooling period); ``next_call_after`` following
  each lead's last outcome, so some leads are not callable yet; some leads deactivated;
- ``current_queue_type`` set from the classification itself, except for a stale ~7% so the first
  population has something to reclassify, and null where the user belongs in no queue;
- lead intake at work (SPEC 7.1): half the sign-ups of the last two hours have no score row yet,
  and discovery's watermark says it last ran 15 minutes ago, so the first discovery (the built-in
  scheduler runs it at start) finds them and creates their rows; and a block of users migrated
  from an older platform (``LEGACY_IDS``, created months ago, so beyond discovery's reach) whom
  only the scoring pipeline can bring in: the README's CSV and ``curl`` examples use them.

Contact details are fiction: phone numbers only from Ofcom's drama range 07700 900000-900999
(a few users have none, which claims must reject), e-mail addresses at example.com/example.org.
The last ten numbers of the range, 07700 900990-900999, are kept for the suppression list: each
belongs to exactly two callable users, written once nationally and once internationally
(``+44 7700 900990``), and is put on the list (SPEC 7.3), so both people are blocked whichever
of them comes up and however the number is written.

The same ``seed`` and ``now`` give the same rows. ``now`` defaults to the current time so the
book always looks recent. Replica rows go in with COPY on PostgreSQL and batched executemany
elsewhere (MySQL/MariaDB); timestamps are whole seconds in UTC, which MariaDB's DATETIME keeps.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from app.replica.classification import (
    BASE_ID_DOCUMENT_REASON,
    EXCLUDED_REQUIREMENT_TYPES,
    ReplicaClaim,
    ReplicaRequirement,
    ReplicaUser,
    UserFacts,
    classify,
)
from app.vocabulary import QueueType

DEFAULT_SEED = 20_240_601
FIRST_USER_ID = 100_001
FIRST_CLAIM_ID = 500_001
FIRST_REQUIREMENT_ID = 2_000_001
HISTORY = timedelta(days=270)
STALE_SHARE = 0.07
SUPPRESSED_PAIRS = 10
# Regular numbers are drawn below this; the ten above it are the suppressed pairs' own.
SUPPRESSED_FIRST = 990
FRESH_SHARE = 0.05  # sign-ups of the last two hours
UNSCORED_FRESH_SHARE = 0.5  # of those, the ones the scorer has not picked up yet
DISCOVERY_RAN_AGO = timedelta(minutes=15)
# The migrated users, for the README's intake examples: unsigned, then outstanding.
LEGACY_UNSIGNED = range(900_001, 900_011)
LEGACY_OUTSTANDING = range(900_011, 900_021)
LEGACY_IDS = range(LEGACY_UNSIGNED.start, LEGACY_OUTSTANDING.stop)
LEGACY_AGE = timedelta(days=200)
INSERT_BATCH = 2000

FIRST_NAMES = (  # noqa: SIM905 (a word list reads better as prose)
    "Oliver Amelia George Isla Harry Ava Noah Mia Jack Ivy Leo Grace Arthur Freya Muhammad Lily"
    " Oscar Florence Charlie Sophia Jacob Emily Thomas Poppy Alfie Evie Henry Ella William Rosie"
    " Joshua Willow Archie Aisha Theo Priya Rhys Niamh Callum Siobhan Tomasz Zofia Kwame Amara"
).split()
LAST_NAMES = (  # noqa: SIM905
    "Smith Jones Taylor Brown Williams Wilson Johnson Davies Patel Wright Robinson Thompson Evans"
    " Walker White Roberts Green Hall Wood Jackson Clarke Khan Hughes Edwards Lewis Harris Morgan"
    " Murphy O'Brien Campbell Kowalski Okafor Nguyen Begum Ahmed Singh MacDonald Price Ellis"
).split()

PENDING = ("pending", "pending", "Pending", "PENDING")
COMPLETED = ("completed", "completed", "Completed", "COMPLETED")
OTHER_REQUIREMENT_STATUSES = ("rejected", "Rejected", "waived", "cancelled")
OPEN_CLAIM_STATUSES = ("open", "open", "Open", "Pending", "PENDING", "in_progress", "submitted")
CLOSED_CLAIM_STATUSES = ("completed", "Completed")
CANCELLED_CLAIM_STATUSES = ("cancelled", "CANCELLED", "Cancelled")
VALID_TYPES = (
    "proof_of_address",
    "bank_statement",
    "payslip",
    "id_document",
    "utility_bill",
    "council_tax_bill",
    "p60",
    "credit_agreement",
)
EXCLUDED_TYPES = tuple(sorted(EXCLUDED_REQUIREMENT_TYPES))
ID_DOCUMENT_REASONS = (
    "document expired",
    "name does not match claim",
    "photo unreadable",
    None,
    # Not the base requirement: the reason is compared exactly.
    "Base requirement for claim.",
    "base requirement for claim",
)

# profile -> weight. The profile decides how a user's rows are drawn; the classification of
# the rows drawn, not the profile, is what the score row records.
PROFILES = {
    "unsigned": 33,
    "outstanding": 34,
    "documents_in": 11,
    "excluded_only": 4,
    "cancelled_only": 6,
    "no_claim": 4,
    "disabled": 5,
    "pending_on_cancelled": 3,
}

# outcome -> (score change, delay before the next call, successful)
OUTCOMES: dict[str, tuple[int, timedelta | None, bool]] = {
    "no_answer": (1, timedelta(hours=4), False),
    "hung_up": (2, timedelta(hours=4), False),
    "might_complete": (2, timedelta(hours=24), False),
    "going_to_complete": (0, timedelta(hours=72), True),
    "call_back": (0, timedelta(hours=24), True),
    "completed_form": (0, timedelta(hours=24), True),
    "missed_call": (0, None, False),
    "bad_number": (50, timedelta(days=28), False),
    "not_interested": (100, timedelta(days=28), False),
}
OUTCOME_WEIGHTS = {
    "no_answer": 45,
    "hung_up": 12,
    "might_complete": 10,
    "going_to_complete": 5,
    "call_back": 8,
    "completed_form": 3,
    "missed_call": 10,
    "bad_number": 2,
    "not_interested": 2,
}

USER_COLUMNS = (
    "id",
    "is_enabled",
    "current_signature_file_id",
    "first_name",
    "last_name",
    "phone_number",
    "email_address",
    "status",
    "created_at",
)
CLAIM_COLUMNS = ("id", "user_id", "status", "created_at")
REQUIREMENT_COLUMNS = (
    "id",
    "claim_id",
    "type",
    "status",
    "claim_requirement_reason",
    "created_at",
)
SCORE_COLUMNS = (
    "user_id",
    "current_score",
    "base_score",
    "outcome_penalty_score",
    "time_penalty_score",
    "next_call_after",
    "last_call_at",
    "total_attempts",
    "successful_calls",
    "last_outcome",
    "is_active",
    "current_queue_type",
    "last_queue_check",
    "created_at",
    "updated_at",
)


@dataclass
class _Book:
    users: list[tuple[Any, ...]] = field(default_factory=list)
    claims: list[tuple[Any, ...]] = field(default_factory=list)
    requirements: list[tuple[Any, ...]] = field(default_factory=list)
    scores: list[tuple[Any, ...]] = field(default_factory=list)
    truth: Counter[str | None] = field(default_factory=Counter)
    stale: int = 0
    inactive: int = 0
    # Users who will be queued (active score row, a queue by the replica), with a number.
    queued: list[int] = field(default_factory=list)
    # Numbers shared by two such users each, for the suppression list.
    suppressed_phones: list[str] = field(default_factory=list)
    # Users with no score row, and the queue type each belongs in: recent sign-ups for
    # discovery, migrated users for the scoring pipeline.
    unscored: list[tuple[int, str | None]] = field(default_factory=list)
    legacy: list[tuple[int, str]] = field(default_factory=list)


class _Generator:
    def __init__(self, seed: int, now: datetime) -> None:
        self.rng = random.Random(seed)
        self.now = now
        self.claim_id = FIRST_CLAIM_ID
        self.requirement_id = FIRST_REQUIREMENT_ID
        self.book = _Book()

    # -- helpers -------------------------------------------------------------------------------

    def _after(self, start: datetime, max_delay: timedelta) -> datetime:
        seconds = self.rng.randint(0, int(max_delay.total_seconds()))
        return min(start + timedelta(seconds=seconds), self.now)

    def _weighted(self, weights: dict[str, int]) -> str:
        return self.rng.choices(list(weights), weights=list(weights.values()))[0]

    # -- replica rows ---------------------------------------------------------------------------

    def user(self, user_id: int) -> None:
        rng = self.rng
        profile = self._weighted(PROFILES)
        fresh = rng.random() < FRESH_SHARE
        if fresh:  # a sign-up of the last two hours, still inside the cooling period
            created = self.now - timedelta(minutes=rng.randint(5, 110))
        else:
            created = self.now - timedelta(
                seconds=int(rng.betavariate(1.3, 2.2) * HISTORY.total_seconds())
            )
        enabled = profile != "disabled"
        signed = profile != "unsigned" and (profile != "disabled" or rng.random() < 0.5)
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        # The draw is unchanged (the same book for the same seed); its last ten values fold back
        # into the range, leaving 900990-900999 to the suppressed pairs.
        phone = (
            None
            if rng.random() < 0.005
            else f"07700 900{rng.randrange(1000) % SUPPRESSED_FIRST:03d}"
        )
        email = None
        if rng.random() > 0.03:
            local = f"{first}.{last}".lower().replace("'", "")
            email = f"{local}{rng.randrange(1, 100)}@{rng.choice(('example.com', 'example.org'))}"
        status = (
            rng.choice(("active", "active", "Active", "ACTIVE", None))
            if enabled
            else rng.choice(("suspended", "Closed", "deleted"))
        )
        signature = rng.randrange(10_000, 99_999) if signed else None
        self.book.users.append(
            (user_id, enabled, signature, first, last, phone, email, status, created)
        )

        facts = UserFacts(user=ReplicaUser(user_id, enabled, signature, created))
        getattr(self, f"_claims_{profile}")(facts, created)
        truth = classify(facts).queue_type
        if fresh and rng.random() < UNSCORED_FRESH_SHARE:
            # The scorer has not picked this user up yet: the first discovery will.
            self.book.unscored.append((user_id, None if truth is None else str(truth)))
            return
        self.score(user_id, created, truth)

    def legacy(self, user_id: int, queue_type: QueueType) -> None:
        """A user migrated from an older platform: months old, callable, and no score row."""
        created = self.now - LEGACY_AGE + timedelta(minutes=user_id - LEGACY_IDS.start)
        unsigned = queue_type is QueueType.UNSIGNED_USERS
        signature = None if unsigned else self.rng.randrange(10_000, 99_999)
        first, last = self.rng.choice(FIRST_NAMES), self.rng.choice(LAST_NAMES)
        email = f"{first}.{last}".lower().replace("'", "") + f"{user_id % 100}@example.org"
        phone = f"07700 900{user_id % 1000:03d}"
        self.book.users.append(
            (user_id, True, signature, first, last, phone, email, "active", created)
        )
        facts = UserFacts(user=ReplicaUser(user_id, True, signature, created))
        if unsigned:
            self._claims_unsigned(facts, created)
        else:
            self._claims_outstanding(facts, created)
        assert classify(facts).queue_type is queue_type
        self.book.legacy.append((user_id, str(queue_type)))

    def _claim(self, facts: UserFacts, created: datetime, status: str) -> ReplicaClaim:
        assert facts.user is not None
        claim = ReplicaClaim(self.claim_id, status, self._after(created, timedelta(days=7)))
        self.claim_id += 1
        facts.claims.append(claim)
        self.book.claims.append((claim.id, facts.user.id, claim.status, claim.created_at))
        return claim

    def _open_claim(self, facts: UserFacts, created: datetime) -> ReplicaClaim:
        statuses = OPEN_CLAIM_STATUSES if self.rng.random() < 0.9 else CLOSED_CLAIM_STATUSES
        return self._claim(facts, created, self.rng.choice(statuses))

    def _cancelled_claim(self, facts: UserFacts, created: datetime) -> ReplicaClaim:
        return self._claim(facts, created, self.rng.choice(CANCELLED_CLAIM_STATUSES))

    def _requirement(self, facts: UserFacts, claim: ReplicaClaim, type_: str, status: str) -> None:
        reason: str | None = None
        if type_ == "id_document":
            reason = self.rng.choice(ID_DOCUMENT_REASONS)
        elif type_ == "base_id_document":
            type_, reason = "id_document", BASE_ID_DOCUMENT_REASON
        elif self.rng.random() < 0.3:
            reason = self.rng.choice(("requested by case handler", "resubmission needed"))
        req = ReplicaRequirement(
            self.requirement_id,
            claim.id,
            type_,
            status,
            reason,
            self._after(claim.created_at, timedelta(days=30)),
        )
        self.requirement_id += 1
        facts.requirements.append(req)
        self.book.requirements.append(
            (req.id, req.claim_id, req.type, req.status, req.reason, req.created_at)
        )

    def _excluded(self, facts: UserFacts, claim: ReplicaClaim, *, pending: bool) -> None:
        """The requirements every claim carries that never make a lead outstanding."""
        rng = self.rng
        statuses = PENDING if pending else COMPLETED
        self._requirement(facts, claim, "base_id_document", rng.choice(statuses))
        for type_ in rng.sample(EXCLUDED_TYPES, rng.randint(1, 3)):
            self._requirement(facts, claim, type_, rng.choice(statuses))

    def _valid(
        self, facts: UserFacts, claim: ReplicaClaim, n: int, statuses: Sequence[str]
    ) -> None:
        for type_ in self.rng.sample(VALID_TYPES, n):
            self._requirement(facts, claim, type_, self.rng.choice(statuses))

    def _maybe_cancelled_history(self, facts: UserFacts, created: datetime) -> None:
        if self.rng.random() < 0.15:
            old = self._cancelled_claim(facts, created)
            self._valid(facts, old, self.rng.randint(1, 2), PENDING)

    def _claims_unsigned(self, facts: UserFacts, created: datetime) -> None:
        self._maybe_cancelled_history(facts, created)
        for _ in range(1 if self.rng.random() < 0.85 else 2):
            claim = self._open_claim(facts, created)
            self._excluded(facts, claim, pending=True)
            if self.rng.random() < 0.4:
                self._valid(facts, claim, self.rng.randint(1, 3), PENDING + COMPLETED)

    def _claims_outstanding(self, facts: UserFacts, created: datetime) -> None:
        self._maybe_cancelled_history(facts, created)
        for index in range(1 if self.rng.random() < 0.8 else 2):
            claim = self._open_claim(facts, created)
            self._excluded(facts, claim, pending=self.rng.random() < 0.3)
            if index == 0:
                self._valid(facts, claim, 1, PENDING)
            self._valid(facts, claim, self.rng.randint(0, 3), PENDING + COMPLETED)

    def _claims_documents_in(self, facts: UserFacts, created: datetime) -> None:
        claim = self._open_claim(facts, created)
        self._excluded(facts, claim, pending=self.rng.random() < 0.5)
        self._valid(facts, claim, self.rng.randint(1, 4), COMPLETED + OTHER_REQUIREMENT_STATUSES)

    def _claims_excluded_only(self, facts: UserFacts, created: datetime) -> None:
        claim = self._open_claim(facts, created)
        self._requirement(facts, claim, "base_id_document", self.rng.choice(PENDING))
        for type_ in EXCLUDED_TYPES:
            if self.rng.random() < 0.6:
                self._requirement(facts, claim, type_, self.rng.choice(PENDING))

    def _claims_cancelled_only(self, facts: UserFacts, created: datetime) -> None:
        for _ in range(self.rng.randint(1, 2)):
            claim = self._cancelled_claim(facts, created)
            self._excluded(facts, claim, pending=True)
            self._valid(facts, claim, self.rng.randint(1, 3), PENDING)

    def _claims_no_claim(self, facts: UserFacts, created: datetime) -> None:
        return None

    def _claims_disabled(self, facts: UserFacts, created: datetime) -> None:
        claim = self._open_claim(facts, created)
        self._excluded(facts, claim, pending=True)
        self._valid(facts, claim, self.rng.randint(1, 3), PENDING)

    def _claims_pending_on_cancelled(self, facts: UserFacts, created: datetime) -> None:
        current = self._open_claim(facts, created)
        self._excluded(facts, current, pending=False)
        self._valid(facts, current, self.rng.randint(1, 2), COMPLETED)
        old = self._cancelled_claim(facts, created)
        self._valid(facts, old, self.rng.randint(1, 3), PENDING)

    # -- score rows -----------------------------------------------------------------------------

    def score(self, user_id: int, user_created: datetime, truth: QueueType | None) -> None:
        rng = self.rng
        created = self._after(user_created, timedelta(hours=6))
        fresh = self.now - created < timedelta(days=1)
        attempts = 0 if fresh else min(int(rng.expovariate(0.4)), 14)
        outcomes = [self._weighted(OUTCOME_WEIGHTS) for _ in range(attempts)]
        base = rng.choice((0, 0, 0, 1, 2, 3))
        outcome_penalty = sum(OUTCOMES[o][0] for o in outcomes)
        outcome_penalty += sum(3 if n > 10 else 1 if n > 5 else 0 for n in range(1, attempts + 1))
        time_penalty = min(int((self.now - created).days / 30), 9) if attempts else 0
        current = max(0, min(200, base + outcome_penalty + time_penalty))
        last_outcome = outcomes[-1] if outcomes else None
        last_call_at = next_call_after = None
        if last_outcome is not None:
            # Recent calls for a third of the book, so some leads are not callable yet.
            window = timedelta(days=3) if rng.random() < 0.35 else self.now - created
            last_call_at = self.now - timedelta(
                seconds=rng.randint(600, max(600, int(window.total_seconds())))
            )
            last_call_at = max(last_call_at, created)
            delay = OUTCOMES[last_outcome][1]
            next_call_after = last_call_at + delay if delay is not None else None
        is_active = True
        if attempts and rng.random() < 0.04:  # asked not to be called, or has no claim after all
            last_outcome = rng.choice(("do_not_contact", "no_claim"))
            current, next_call_after, is_active = 200, None, False
            self.book.inactive += 1

        if is_active and truth is not None:
            self.book.queued.append(user_id)
        stored = None if truth is None else str(truth)
        if rng.random() < STALE_SHARE:
            stored = rng.choice([t for t in (*map(str, QueueType), None) if t != stored])
            self.book.stale += 1
        self.book.truth[None if truth is None else str(truth)] += 1
        checked = last_call_at or created
        self.book.scores.append(
            (
                user_id,
                current,
                base,
                outcome_penalty,
                time_penalty,
                next_call_after,
                last_call_at,
                attempts,
                sum(OUTCOMES[o][2] for o in outcomes),
                last_outcome,
                is_active,
                stored,
                checked,
                created,
                max(created, last_call_at or created),
            )
        )


def build_book(*, users: int, seed: int, now: datetime) -> _Book:
    generator = _Generator(seed, now)
    for offset in range(users):
        generator.user(FIRST_USER_ID + offset)
    _share_suppressed_numbers(generator.book, random.Random(seed + 1))
    for user_id in LEGACY_IDS:
        generator.legacy(
            user_id,
            QueueType.UNSIGNED_USERS
            if user_id in LEGACY_UNSIGNED
            else QueueType.OUTSTANDING_REQUESTS,
        )
    return generator.book


def _share_suppressed_numbers(book: _Book, rng: random.Random) -> None:
    """Give each reserved number to two queued users, once written nationally and once
    internationally: the list must block both, however the number is written."""
    position = {row[0]: index for index, row in enumerate(book.users)}
    phoned = [uid for uid in book.queued if book.users[position[uid]][5] is not None]
    pairs = min(SUPPRESSED_PAIRS, len(phoned) // 2)
    chosen = rng.sample(phoned, pairs * 2)
    for pair in range(pairs):
        digits = f"{SUPPRESSED_FIRST + pair:03d}"
        book.suppressed_phones.append(f"07700 900{digits}")
        for user_id, written in zip(
            chosen[2 * pair : 2 * pair + 2],
            (f"07700 900{digits}", f"+44 7700 900{digits}"),
            strict=True,
        ):
            row = list(book.users[position[user_id]])
            row[5] = written
            book.users[position[user_id]] = tuple(row)
