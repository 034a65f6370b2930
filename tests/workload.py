"""A call centre's mixed day, compressed: for the mixed-workload test and bench/mixed_workload.py.

Agents on two service processes (real HTTP) claim from both queues and do everything an agent
does: complete with every kind of outcome, complete after their lease ran out, extend, release,
skip, walk away from a call. Meanwhile populations run back to back (through both processes, so
they also collide: 409) and a supervisor flips MIGRATION_MODE through all three values, so hand-
outs come from the queues and straight from the scores in turn.

Everything the agents are told is recorded; ``check`` then holds it against the ledger and the
score rows: no 500, no failed population, no user held by two agents at once, no hand-out after
an acknowledged do_not_contact, no late completion accepted after a new hand-out, and
``total_attempts`` equal to the completions the agents were told succeeded.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import Engine, text

QUEUES = ("unsigned_users", "outstanding_requests")
MODES = ("new-only", "dual", "legacy-only")
POPULATE = "/api/cron/populate-separated-queues"

# What an agent does with a user, and how often. Most outcomes leave the person callable again
# soon (missed_call: at once), so the same people are handed out again and again.
ACTIONS = (
    ("complete", 0.55),
    ("complete_late", 0.10),
    ("extend_then_complete", 0.08),
    ("release", 0.09),
    ("skip", 0.08),
    ("abandon", 0.10),
)
OUTCOMES = (
    ("missed_call", 0.55),
    ("no_answer", 0.12),
    ("call_back", 0.08),
    ("hung_up", 0.07),
    ("not_interested", 0.05),
    ("do_not_contact", 0.08),
    ("no_claim", 0.05),
)
DEACTIVATING = {"do_not_contact", "no_claim"}


@dataclass(frozen=True)
class Config:
    users_per_queue: int = 150
    agents: int = 12
    seconds: float = 20.0
    mode_every: float = 1.5
    seed: int = 7


def seed_data(replica: Engine, store: Engine, cfg: Config) -> None:
    """Users of both queues (set-based inserts), each with a phone number and a score row; one
    in thirty has no open claim on the replica, so claims also invalidate and reclassify."""
    n = cfg.users_per_queue
    with replica.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO users (id, is_enabled, current_signature_file_id, first_name,"
                " last_name, phone_number, email_address, status, created_at)"
                " SELECT g, true, CASE WHEN g > :n THEN 7 END, 'Test', 'User' || g,"
                " '07700 900' || lpad((g % 1000)::text, 3, '0'), 'user' || g || '@example.invalid',"
                " 'active', timestamptz '2025-01-01 00:00Z' FROM generate_series(1, 2 * :n) g"
            ),
            {"n": n},
        )
        conn.execute(
            text(
                "INSERT INTO claims (id, user_id, status, created_at)"
                " SELECT 5000000 + g, g, CASE WHEN g % 30 = 0 THEN 'cancelled' ELSE 'open' END,"
                " timestamptz '2025-01-01 00:00Z' FROM generate_series(1, 2 * :n) g"
            ),
            {"n": n},
        )
        conn.execute(
            text(
                "INSERT INTO claim_requirements (id, claim_id, type, status,"
                " claim_requirement_reason, created_at)"
                " SELECT 7000000 + g, 5000000 + g, 'proof_of_address', 'pending', NULL,"
                " timestamptz '2025-01-01 00:00Z' FROM generate_series(:n + 1, 2 * :n) g"
            ),
            {"n": n},
        )
    with store.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO user_call_scores (user_id, current_score, is_active,"
                " current_queue_type, created_at)"
                " SELECT g, g % 5, true,"
                " CASE WHEN g > :n THEN 'outstanding_requests' ELSE 'unsigned_users' END,"
                " now() - interval '1 day' FROM generate_series(1, 2 * :n) g"
            ),
            {"n": n},
        )


@dataclass
class Record:
    """What the clients saw, thread-safe."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    # (agent, route, status, detail)
    responses: list[tuple[str, str, int, str]] = field(default_factory=list)
    # (agent, assignment id, user, resumed, request sent, answer received): client clock
    handed: list[tuple[str, str, int, bool, float, float]] = field(default_factory=list)
    # assignment id -> when its holder began to let it go (complete, release, lease ran out)
    let_go: dict[str, float] = field(default_factory=dict)
    # (agent, assignment id, user, outcome, status, body, late, request sent)
    completions: list[tuple[str, str, int, str, int, dict[str, Any], bool, float]] = field(
        default_factory=list
    )
    populations: list[int] = field(default_factory=list)
    modes: list[tuple[str, int]] = field(default_factory=list)

    def add(self, attr: str, item: Any) -> None:
        with self.lock:
            getattr(self, attr).append(item)

    def ends(self, assignment: str) -> None:
        with self.lock:
            self.let_go.setdefault(assignment, time.monotonic())


def _pick(rng: random.Random, table: tuple[tuple[str, float], ...]) -> str:
    return rng.choices([k for k, _ in table], weights=[w for _, w in table])[0]


def _agent(
    name: str,
    token: str,
    bases: list[str],
    lapse: Callable[[str], None],
    deadline: float,
    rec: Record,
    seed: int,
) -> None:
    rng = random.Random(seed)
    clients = [
        httpx.Client(base_url=b, headers={"Authorization": f"Bearer {token}"}, timeout=30)
        for b in bases
    ]
    calls = 0

    def call(method: str, path: str, route: str, **kw: Any) -> httpx.Response:
        nonlocal calls
        calls += 1
        response = clients[calls % len(clients)].request(method, path, **kw)
        detail = response.text[:200] if response.status_code >= 400 else ""
        rec.add("responses", (name, route, response.status_code, detail))
        return response

    def complete(assignment: dict[str, Any], outcome: str, late: bool = False) -> None:
        rec.ends(assignment["assignment_id"])
        sent = time.monotonic()
        body: dict[str, Any] = {"outcome": outcome}
        if outcome == "call_back":
            body["callback_at"] = (datetime.now(UTC) + timedelta(days=1)).isoformat()
        r = call(
            "POST",
            f"/api/assignments/{assignment['assignment_id']}/complete",
            "complete",
            json=body,
        )
        rec.add(
            "completions",
            (
                name,
                assignment["assignment_id"],
                assignment["user_id"],
                outcome,
                r.status_code,
                r.json()
                if r.headers.get("content-type", "").startswith("application/json")
                else {},
                late,
                sent,
            ),
        )

    try:
        while time.monotonic() < deadline:
            sent = time.monotonic()
            r = call("POST", f"/api/queues/{rng.choice(QUEUES)}/next-user", "next-user")
            if r.status_code != 200:
                time.sleep(0.05 if r.status_code in (204, 503) else 0.01)
                continue
            a = r.json()
            rec.add(
                "handed",
                (name, a["assignment_id"], a["user_id"], a["resumed"], sent, time.monotonic()),
            )
            action = _pick(rng, ACTIONS)
            path = f"/api/assignments/{a['assignment_id']}"
            if action == "complete":
                complete(a, _pick(rng, OUTCOMES))
            elif action == "complete_late":
                rec.ends(a["assignment_id"])
                lapse(a["assignment_id"])  # the call outlasted the lease
                complete(a, _pick(rng, OUTCOMES), late=True)
            elif action == "extend_then_complete":
                call("POST", f"{path}/extend", "extend")
                complete(a, _pick(rng, OUTCOMES))
            elif action == "release":
                rec.ends(a["assignment_id"])
                call("POST", f"{path}/release", "release", json={"requeue": True})
            elif action == "skip":
                rec.ends(a["assignment_id"])
                call("POST", f"{path}/release", "release", json={"requeue": False, "reason": "x"})
            else:  # walks away: the lease runs out; the next claim (anyone's) sweeps it
                rec.ends(a["assignment_id"])
                lapse(a["assignment_id"])
    finally:
        for c in clients:
            c.close()


def _populations(bases: list[str], cron_secret: str, deadline: float, rec: Record) -> None:
    headers = {"Authorization": f"Bearer {cron_secret}"}
    i = 0
    while time.monotonic() < deadline:
        r = httpx.get(f"{bases[i % len(bases)]}{POPULATE}", headers=headers, timeout=60)
        rec.add("populations", r.status_code)
        if r.status_code not in (200, 409):
            rec.add("responses", ("cron", "populate", r.status_code, r.text[:300]))
        i += 1


def _supervisor(bases: list[str], token: str, cfg: Config, deadline: float, rec: Record) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    i = 0
    while time.monotonic() < deadline:
        mode = MODES[i % len(MODES)]
        r = httpx.put(
            f"{bases[i % len(bases)]}/api/admin/flags",
            headers=headers,
            json={"MIGRATION_MODE": mode},
            timeout=30,
        )
        rec.add("modes", (mode, r.status_code))
        rec.add(
            "responses",
            ("supervisor", "flags", r.status_code, r.text[:200] if r.status_code >= 400 else ""),
        )
        i += 1
        time.sleep(cfg.mode_every)


def lapser(store: Engine) -> Callable[[str], None]:
    """Time passing for one call, from outside the service: its lease ends now."""

    def lapse(assignment_id: str) -> None:
        with store.begin() as conn:
            conn.execute(
                text(
                    "UPDATE assignments SET lease_expires_at = now() WHERE id = CAST(:id AS uuid)"
                ),
                {"id": assignment_id},
            )

    return lapse


def run(
    bases: list[str],
    agent_tokens: list[tuple[str, str]],
    supervisor_token: str,
    cron_secret: str,
    store: Engine,
    cfg: Config,
) -> Record:
    rec = Record()
    deadline = time.monotonic() + cfg.seconds
    lapse = lapser(store)
    threads = [
        threading.Thread(
            target=_agent,
            args=(name, tok, bases, lapse, deadline, rec, cfg.seed * 1000 + i),
            daemon=True,
        )
        for i, (name, tok) in enumerate(agent_tokens)
    ]
    threads.append(
        threading.Thread(target=_populations, args=(bases, cron_secret, deadline, rec), daemon=True)
    )
    threads.append(
        threading.Thread(
            target=_supervisor, args=(bases, supervisor_token, cfg, deadline, rec), daemon=True
        )
    )
    for t in threads:
        t.start()
    for t in threads:
        t.join(cfg.seconds + 60)
        assert not t.is_alive(), "a workload thread did not finish"
    return rec


@dataclass
class Findings:
    """What ``check`` found; every list must be empty."""

    server_errors: list[Any] = field(default_factory=list)
    failed_populations: list[Any] = field(default_factory=list)
    overlapping_holds: list[Any] = field(default_factory=list)
    late_accepted_after_hand_out: list[Any] = field(default_factory=list)
    handed_to_two_agents: list[Any] = field(default_factory=list)
    not_in_ledger: list[Any] = field(default_factory=list)
    handed_after_do_not_contact: list[Any] = field(default_factory=list)
    still_active_after_do_not_contact: list[Any] = field(default_factory=list)
    attempts_mismatch: list[Any] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)

    def problems(self) -> dict[str, list[Any]]:
        return {k: v[:5] for k, v in vars(self).items() if isinstance(v, list) and v}


def check(rec: Record, store: Engine) -> Findings:
    f = Findings()
    f.server_errors = [r for r in rec.responses if r[2] >= 500 and r[2] != 503]
    with store.connect() as conn:
        f.failed_populations = [
            tuple(r)
            for r in conn.execute(
                text(
                    "SELECT queue_type, status, error FROM population_run_queues"
                    " WHERE status = 'failed'"
                )
            )
        ]
        ledger = conn.execute(
            text(
                "SELECT a.id::text AS id, g.name AS agent, a.user_id, a.status, a.outcome,"
                " a.source, a.assigned_at, a.finished_at, a.updated_at"
                " FROM assignments a JOIN agents g ON g.id = a.agent_id ORDER BY a.assigned_at"
            )
        ).all()
        scores = {
            r.user_id: r
            for r in conn.execute(
                text("SELECT user_id, total_attempts, is_active FROM user_call_scores")
            )
        }
    f.failed_populations += [c for c in rec.populations if c not in (200, 409)]
    by_user: dict[int, list[Any]] = defaultdict(list)
    for row in ledger:
        by_user[row.user_id].append(row)
    ledger_by_id = {r.id: r for r in ledger}

    # The agents' side: every hand-out they were given is in the ledger, given to them, once.
    holders: dict[str, set[str]] = defaultdict(set)
    for agent, assignment, user, *_ in rec.handed:
        holders[assignment].add(agent)
        row = ledger_by_id.get(assignment)
        if row is None or row.agent != agent or row.user_id != user:
            f.not_in_ledger.append(
                (agent, assignment, user, row and (row.agent, row.user_id, row.status))
            )
    f.handed_to_two_agents = [a for a, who in holders.items() if len(who) > 1]

    # One user, one holder at a time, as the agents saw it: a hold runs from the answer that
    # gave the user until the holder began to let them go (complete, release, lease run out).
    # A hand-out whose whole request (sent to answered) falls inside another assignment's hold of
    # the same user was committed while that hold was live: two agents had the person at once.
    # (Sound on one clock; the ledger's times cannot say it, being taken inside transactions.)
    holds: dict[int, list[tuple[str, float, float, float]]] = defaultdict(list)
    for _, assignment, user, resumed, sent, received in rec.handed:
        if not resumed:
            end = rec.let_go.get(assignment, float("inf"))
            holds[user].append((assignment, sent, received, end))
    for user, hs in holds.items():
        for x_id, _, x_start, x_end in hs:
            for y_id, y_sent, y_received, _ in hs:
                if y_id != x_id and y_sent > x_start and y_received < x_end:
                    f.overlapping_holds.append((user, x_id, y_id))

    # A late completion (after the lease ran out) is accepted only if nobody had the user since:
    # no other hand-out of the user whose whole request fell between this assignment's answer
    # and the completion's request (that hand-out was committed before the completion began).
    given = {assignment: received for _, assignment, _, _, _, received in rec.handed}
    for _, assignment, user, _, status, _, late, sent in rec.completions:
        if late and status == 200:
            since = [
                y_id
                for y_id, y_sent, y_received, _ in holds[user]
                if y_id != assignment and y_sent > given[assignment] and y_received < sent
            ]
            if since:
                f.late_accepted_after_hand_out.append((user, assignment, since))

    # Nobody is handed out after a do_not_contact was acknowledged (200, or the 409 that says
    # the user was still marked not to be called).
    acknowledged: Counter[int] = Counter()
    for _, assignment, user, outcome, status, body, *_ in rec.completions:
        if status == 200:
            acknowledged[user] += 1
        late_mark = status == 409 and "marked not to be called" in str(body.get("detail", ""))
        if outcome in DEACTIVATING and (status == 200 or late_mark):
            recorded_at = ledger_by_id[assignment].updated_at
            later = [r.id for r in by_user[user] if r.assigned_at > recorded_at]
            if later:
                f.handed_after_do_not_contact.append((user, assignment, later))
            if scores[user].is_active:
                f.still_active_after_do_not_contact.append(user)
    for user, row in scores.items():
        if row.total_attempts != acknowledged[user]:
            f.attempts_mismatch.append((user, row.total_attempts, acknowledged[user]))

    statuses = Counter((route, status) for _, route, status, _ in rec.responses)
    f.figures = {
        "responses": dict(sorted(statuses.items())),
        "hand_outs": len(rec.handed),
        "completions_ok": sum(acknowledged.values()),
        "late_completions (status: count)": dict(Counter(c[4] for c in rec.completions if c[6])),
        "populations (status: count)": dict(Counter(rec.populations)),
        "mode_changes": len(rec.modes),
        "ledger_rows (source: count)": dict(Counter(r.source for r in ledger)),
    }
    return f


def summary(f: Findings) -> str:
    lines = [f"{k}: {v}" for k, v in f.figures.items()]
    problems = f.problems()
    lines.append("problems: none" if not problems else f"problems: {problems}")
    return "\n".join(lines)
