"""Supervisors' reports: statistics from a prepared ledger, queue listings, run history.

Every figure below is computed by hand from rows written at known offsets from the database's
clock, so a wrong window boundary, a figure counted outside its window, a percentile taken over
the wrong rows or one queue's activity showing up in the other's figures all fail a test.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from app.auth.people import create_agent
from app.vocabulary import QueueType
from tests.factories import add_scores

UU = "unsigned_users"
OR = "outstanding_requests"
MIN = 60  # seconds

FIGURES = ("status", "eligible", "invalid", "populated", "removed", "kept_assigned")
CONTACT_KEYS = {"first_name", "last_name", "phone_number", "email_address", "user", "notes"}


# -- helpers ---------------------------------------------------------------------------------------


def _agents(store_engine, *names, supervisor="sup"):
    """Create agents (and one supervisor); return their tokens and ids by name."""
    tokens = {}
    with store_engine.begin() as conn:
        for name in names:
            tokens[name] = create_agent(conn, name)
        tokens[supervisor] = create_agent(conn, supervisor, "supervisor")
        ids = {r.name: r.id for r in conn.execute(text("SELECT name, id FROM agents"))}
    return tokens, ids


def _auth(token):
    return {"Authorization": f"Bearer {token}"}


def _assignment(
    conn,
    *,
    agent_id,
    user_id,
    queue_type,
    status,
    assigned_ago,
    finished_ago=None,
    outcome=None,
    claim_ms=None,
    source="queue",
    lease_ahead=None,
    notes=None,
):
    """One ledger row; all times are seconds before (or, for lease_ahead, after) the DB's now().

    An expired row's lease ran out when it finished; other finished rows had a 15-minute lease.
    """
    if status == "active":
        lease = "now() + make_interval(secs => :lease)"
    elif status == "expired":
        lease = "now() - make_interval(secs => :fin)"
    else:
        lease = "now() - make_interval(secs => :ago) + interval '15 minutes'"
    finished = "NULL" if finished_ago is None else "now() - make_interval(secs => :fin)"
    conn.execute(
        text(
            "INSERT INTO assignments (agent_id, user_id, queue_type, source, priority_score,"
            " status, assigned_at, lease_expires_at, finished_at, outcome, claim_ms, notes)"
            " VALUES (:agent, :user, :q, :source, 0, :status,"
            f" now() - make_interval(secs => :ago), {lease}, {finished}, :outcome, :ms, :notes)"
        ),
        {
            "agent": agent_id,
            "user": user_id,
            "q": queue_type,
            "source": source,
            "status": status,
            "ago": assigned_ago,
            "fin": finished_ago,
            "lease": lease_ahead if lease_ahead is not None else 600,
            "outcome": outcome,
            "ms": claim_ms,
            "notes": notes,
        },
    )


def _invalidation(conn, queue_type, reason, ago, user_id=1, agent_id=None):
    conn.execute(
        text(
            "INSERT INTO entry_invalidations (queue_type, source, user_id, reason, agent_id,"
            " created_at) VALUES (:q, 'queue', :u, :r, :a, now() - make_interval(secs => :ago))"
        ),
        {"q": queue_type, "u": user_id, "r": reason, "a": agent_id, "ago": ago},
    )


NOTE = "she said call after lunch, husband answers"


def _prepare_ledger(store_engine):
    """The prepared ledger of both queues (see the table in each row's comment).

    unsigned_users, minutes ago (assigned -> finished), claim_ms:
      u1  10 -> 8   completed no_answer   10      u7  16 -> 14  expired          2000
      u2   9 -> 5   completed no_answer   20      u8  40 -> 16  completed no_answer 3000
      u3   7 -> 2   completed call_back   30      u9  59 -> 30  expired          4000
      u4   6 -> 3   released (direct)     40      u10 90 -> 61  completed bad_number 9000
      u5   5 (300 s) active               100     u11 120 -> 70 released         9000
      u6  20 -> 12  completed hung_up     1000
    outstanding_requests:
      o1   3 -> 1   completed not_interested 5    o4  30 -> 25  expired           700
      o2   2 (120 s) active                 7     o5 200 -> 100 completed no_answer 50000
      o3  50 -> 40  released              500
    """
    tokens, ids = _agents(store_engine, "alice", "bob", "carol")
    alice, bob, carol = ids["alice"], ids["bob"], ids["carol"]
    u = [
        # (user, agent, status, assigned_ago_min, finished_ago_min, outcome, claim_ms, source)
        (1, carol, "completed", 10, 8, "no_answer", 10, "queue"),
        (2, carol, "completed", 9, 5, "no_answer", 20, "queue"),
        (3, carol, "completed", 7, 2, "call_back", 30, "queue"),
        (4, carol, "released", 6, 3, None, 40, "direct"),
        (5, alice, "active", 5, None, None, 100, "queue"),
        (6, carol, "completed", 20, 12, "hung_up", 1000, "queue"),
        (7, carol, "expired", 16, 14, None, 2000, "queue"),
        (8, carol, "completed", 40, 16, "no_answer", 3000, "queue"),
        (9, carol, "expired", 59, 30, None, 4000, "queue"),
        (10, carol, "completed", 90, 61, "bad_number", 9000, "queue"),
        (11, carol, "released", 120, 70, None, 9000, "queue"),
    ]
    o = [
        (201, carol, "completed", 3, 1, "not_interested", 5, "queue"),
        (202, bob, "active", 2, None, None, 7, "queue"),
        (203, carol, "released", 50, 40, None, 500, "queue"),
        (204, carol, "expired", 30, 25, None, 700, "queue"),
        (205, carol, "completed", 200, 100, "no_answer", 50000, "queue"),
    ]
    with store_engine.begin() as conn:
        for queue_type, rows in ((UU, u), (OR, o)):
            for user, agent, status, ago, fin, outcome, ms, source in rows:
                _assignment(
                    conn,
                    agent_id=agent,
                    user_id=user,
                    queue_type=queue_type,
                    status=status,
                    assigned_ago=ago * MIN,
                    finished_ago=None if fin is None else fin * MIN,
                    outcome=outcome,
                    claim_ms=ms,
                    source=source,
                    notes=NOTE if outcome else None,
                )
        for reason, ago in (
            ("no_phone_number", 3),
            ("reclassified: missing_signature", 10),
            ("no_phone_number", 14),
            ("already_assigned", 16),
            ("inactive", 59),
            ("no_phone_number", 61),
            ("not_due", 90),
        ):
            _invalidation(conn, UU, reason, ago * MIN)
        _invalidation(conn, OR, "queue_type_changed", 1 * MIN)
        _invalidation(conn, OR, "no_phone_number", 20 * MIN)
    return tokens, ids


def _stats(client, token, **params):
    response = client.get("/api/queues/stats", params=params, headers=_auth(token))
    assert response.status_code == 200, response.text
    return response.json()


# -- statistics ------------------------------------------------------------------------------------


def test_window_figures_from_a_prepared_ledger(client, store_engine):
    tokens, _ = _prepare_ledger(store_engine)

    # Open to any agent, not only supervisors.
    s15 = _stats(client, tokens["bob"], window_minutes=15)
    assert s15["window_minutes"] == 15
    assert s15["queues"][UU]["window"] == {
        # u1..u5: u6 (20 min) and u7 (16 min) were claimed before the window.
        "claims": 5,
        # u6 was claimed before the window but completed inside it; u8 finished 16 min ago.
        "completions": {"no_answer": 2, "call_back": 1, "hung_up": 1},
        "releases": 1,  # u4 (a direct-mode hand-out still belongs to its queue)
        "lease_expiries": 1,  # u7 expired 14 min ago, u9 30 min ago
        "invalid": {"no_phone_number": 2, "reclassified: missing_signature": 1},
        # percentile_cont over 10, 20, 30, 40, 100: p95 = 40 + 0.8 * (100 - 40)
        "next_user_ms": {"p50": 30.0, "p95": 88.0},
    }
    assert s15["queues"][OR]["window"] == {
        "claims": 2,
        "completions": {"not_interested": 1},
        "releases": 0,
        "lease_expiries": 0,
        "invalid": {"queue_type_changed": 1},
        # over 5, 7: p50 = 6, p95 = 5 + 0.95 * 2
        "next_user_ms": {"p50": 6.0, "p95": 6.9},
    }

    s60 = _stats(client, tokens["sup"], window_minutes=60)
    assert s60["window_minutes"] == 60
    assert s60["queues"][UU]["window"] == {
        "claims": 9,  # u1..u9; u10 (90 min) and u11 (120 min) are outside
        "completions": {"no_answer": 3, "call_back": 1, "hung_up": 1},  # not u10 (61 min)
        "releases": 1,  # not u11 (70 min)
        "lease_expiries": 2,
        "invalid": {
            "no_phone_number": 2,
            "reclassified: missing_signature": 1,
            "already_assigned": 1,
            "inactive": 1,
        },
        # over 10, 20, 30, 40, 100, 1000, 2000, 3000, 4000: p95 = 3000 + 0.6 * 1000
        "next_user_ms": {"p50": 100.0, "p95": 3600.0},
    }
    assert s60["queues"][OR]["window"] == {
        "claims": 4,
        "completions": {"not_interested": 1},
        "releases": 1,
        "lease_expiries": 1,
        "invalid": {"queue_type_changed": 1, "no_phone_number": 1},
        # over 5, 7, 500, 700: p50 = 7 + 0.5 * 493, p95 = 500 + 0.85 * 200
        "next_user_ms": {"p50": 253.5, "p95": 670.0},
    }

    s_day = _stats(client, tokens["alice"], window_minutes=1440)
    assert s_day["queues"][UU]["window"]["claims"] == 11
    assert s_day["queues"][UU]["window"]["completions"] == {
        "no_answer": 3,
        "call_back": 1,
        "hung_up": 1,
        "bad_number": 1,
    }
    assert s_day["queues"][UU]["window"]["releases"] == 2
    assert s_day["queues"][UU]["window"]["invalid"] == {
        "no_phone_number": 3,
        "reclassified: missing_signature": 1,
        "already_assigned": 1,
        "inactive": 1,
        "not_due": 1,
    }
    assert s_day["queues"][OR]["window"]["claims"] == 5
    assert s_day["queues"][OR]["window"]["completions"] == {"not_interested": 1, "no_answer": 1}

    # The default window is 15 minutes.
    default = _stats(client, tokens["alice"])
    assert default["window_minutes"] == 15
    assert {q: v["window"] for q, v in default["queues"].items()} == {
        q: v["window"] for q, v in s15["queues"].items()
    }

    # Live figures of the same ledger: only the running assignments count.
    for body in (s15, s60, s_day):
        assert abs(body["queues"][UU]["longest_assignment_seconds"] - 300) <= 1
        assert abs(body["queues"][OR]["longest_assignment_seconds"] - 120) <= 1
        for q in (UU, OR):
            assert body["queues"][q]["pending"] == 0
            assert body["queues"][q]["assigned"] == 0
            assert body["queues"][q]["oldest_pending_age_seconds"] is None
            assert body["queues"][q]["last_population"] is None
    generated = datetime.fromisoformat(s15["generated_at"])
    assert abs(generated - datetime.now(UTC)) < timedelta(minutes=1)
    # No contact data or notes anywhere in the statistics.
    assert NOTE not in json.dumps(s_day)


def test_stats_of_an_empty_store(client, store_engine):
    tokens, _ = _agents(store_engine, "alice")
    body = _stats(client, tokens["alice"])
    for q in (UU, OR):
        assert body["queues"][q] == {
            "pending": 0,
            "assigned": 0,
            "oldest_pending_age_seconds": None,
            "longest_assignment_seconds": None,
            "last_population": None,
            "window": {
                "claims": 0,
                "completions": {},
                "releases": 0,
                "lease_expiries": 0,
                "invalid": {},
                "next_user_ms": {"p50": None, "p95": None},
            },
            "callbacks": {"scheduled": 0, "due": 0, "overdue": 0, "assigned": 0, "late": 0},
        }
    assert set(body["queues"]) == {UU, OR}


def _entry(conn, table, user_id, position, status, available_ago):
    conn.execute(
        text(
            f"INSERT INTO {table} (user_id, claim_id, priority_score, queue_position, status,"
            " queue_reason, available_from)"
            " VALUES (:u, :u, 0, :p, :s, 'New lead', now() - make_interval(secs => :ago))"
        ),
        {"u": user_id, "p": position, "s": status, "ago": available_ago},
    )


def test_live_figures_per_queue(client, store_engine):
    tokens, ids = _agents(store_engine, "alice", "bob")
    with store_engine.begin() as conn:
        uq, oq = "unsigned_users_queue", "outstanding_requests_queue"
        # Only pending entries count for the oldest pending age; the older assigned, finished
        # and invalid entries must not.
        _entry(conn, uq, 1, 1, "pending", 600)
        _entry(conn, uq, 2, 2, "pending", 300)
        _entry(conn, uq, 3, 3, "pending", 60)
        _entry(conn, uq, 4, 4, "assigned", 900)
        _entry(conn, uq, 5, 5, "completed", 3600)
        _entry(conn, uq, 6, 6, "skipped", 5000)
        _entry(conn, uq, 7, 7, "invalid", 7200)
        _entry(conn, oq, 11, 1, "pending", 100)
        _entry(conn, oq, 12, 2, "invalid", 9999)
        # Running for 300 s: the longest running assignment of unsigned_users.
        _assignment(
            conn,
            agent_id=ids["alice"],
            user_id=4,
            queue_type=UU,
            status="active",
            assigned_ago=300,
            claim_ms=1,
        )
        # Status still 'active' but its lease ran out a minute ago: no longer running.
        _assignment(
            conn,
            agent_id=ids["bob"],
            user_id=8,
            queue_type=UU,
            status="active",
            assigned_ago=1800,
            lease_ahead=-60,
            claim_ms=1,
        )
        # Finished assignments are not running, however old.
        _assignment(
            conn,
            agent_id=ids["sup"],
            user_id=12,
            queue_type=OR,
            status="completed",
            assigned_ago=3000,
            finished_ago=2900,
            outcome="no_answer",
            claim_ms=1,
        )

    body = _stats(client, tokens["alice"])
    unsigned, outstanding = body["queues"][UU], body["queues"][OR]
    assert (unsigned["pending"], unsigned["assigned"]) == (3, 1)
    assert abs(unsigned["oldest_pending_age_seconds"] - 600) <= 1
    assert abs(unsigned["longest_assignment_seconds"] - 300) <= 1
    assert (outstanding["pending"], outstanding["assigned"]) == (1, 0)
    assert abs(outstanding["oldest_pending_age_seconds"] - 100) <= 1
    assert outstanding["longest_assignment_seconds"] is None


def test_last_population_ignores_dry_runs_and_skipped_queues(
    client, make_services, services, replica, store_engine
):
    tokens, _ = _agents(store_engine, "alice")
    for uid in (1, 2):
        replica.unsigned(uid)
    replica.outstanding(11)
    add_scores(
        store_engine,
        [
            {"user_id": 1, "current_queue_type": UU},
            {"user_id": 2, "current_queue_type": UU},
            {"user_id": 11, "current_queue_type": OR},
        ],
    )
    first = services.population().run(trigger="test")
    assert first.queues[QueueType.UNSIGNED_USERS].populated == 2
    assert first.queues[QueueType.OUTSTANDING_REQUESTS].populated == 1

    replica.unsigned(3)
    add_scores(store_engine, [{"user_id": 3, "current_queue_type": UU}])
    # outstanding_requests is skipped in this run.
    second = services.population().run(trigger="test", queue=QueueType.UNSIGNED_USERS)
    assert second.queues[QueueType.UNSIGNED_USERS].populated == 3
    assert second.queues[QueueType.UNSIGNED_USERS].removed == 2
    assert second.queues[QueueType.OUTSTANDING_REQUESTS].status == "skipped"

    # A run with USE_SEPARATED_QUEUES off skips both queues.
    off = make_services(use_separated_queues=False).population().run(trigger="test")
    assert {r.status for r in off.queues.values()} == {"skipped"}

    # The newest run is a dry run whose figures differ from every real one.
    replica.unsigned(4)
    replica.user(5, signed=True)  # signed, nothing outstanding: reclassified
    replica.claim(5)
    replica.outstanding(12)
    add_scores(
        store_engine,
        [
            {"user_id": 4, "current_queue_type": UU},
            {"user_id": 5, "current_queue_type": UU},
            {"user_id": 12, "current_queue_type": OR},
        ],
    )
    dry = services.population().run(trigger="test", dry_run=True)
    assert dry.queues[QueueType.UNSIGNED_USERS].populated == 4
    assert dry.queues[QueueType.UNSIGNED_USERS].invalid == 1
    assert dry.queues[QueueType.OUTSTANDING_REQUESTS].populated == 2

    body = _stats(client, tokens["alice"])
    for queue_type, run in ((UU, second), (OR, first)):
        report = run.queues[QueueType(queue_type)]
        last = body["queues"][queue_type]["last_population"]
        assert last["run_id"] == str(run.run_id), queue_type
        assert {k: last[k] for k in (*FIGURES, "duration_ms", "error")} == asdict(report)
        assert run.started_at <= datetime.fromisoformat(last["finished_at"]) <= run.finished_at
    # The snapshot the stats describe is the real one, not the dry run's.
    assert body["queues"][UU]["pending"] == 3
    assert body["queues"][OR]["pending"] == 1


def test_window_minutes_is_validated(client, store_engine):
    tokens, _ = _agents(store_engine, "alice")
    for bad in ("0", "1441", "-5", "abc", "1.5"):
        response = client.get(
            "/api/queues/stats", params={"window_minutes": bad}, headers=_auth(tokens["alice"])
        )
        assert response.status_code == 422, bad
        assert response.json()["error"] == "ValidationError"
    assert _stats(client, tokens["alice"], window_minutes=1)["window_minutes"] == 1
    assert _stats(client, tokens["alice"], window_minutes=1440)["window_minutes"] == 1440
    assert client.get("/api/queues/stats").status_code == 401
    assert client.get("/api/queues/stats", headers=_auth("cq_not-a-real-token")).status_code == 401


# -- the ledger ------------------------------------------------------------------------------------


def test_ledger_lists_filters_and_keeps_notes_out(client, store_engine):
    tokens, _ = _prepare_ledger(store_engine)
    sup = _auth(tokens["sup"])
    page = client.get("/api/assignments", params={"queue_type": OR}, headers=sup)
    assert page.status_code == 200, page.text
    body = page.json()
    assert body["total"] == 5
    assert [i["user_id"] for i in body["items"]] == [202, 201, 204, 203, 205]  # newest first
    assert {i["queue_type"] for i in body["items"]} == {OR}
    for item in body["items"]:
        assert not CONTACT_KEYS & set(item), item
    assert NOTE not in page.text

    released = client.get(
        "/api/assignments", params={"queue_type": UU, "status": "released"}, headers=sup
    ).json()
    assert [(i["user_id"], i["source"]) for i in released["items"]] == [
        (4, "direct"),
        (11, "queue"),
    ]
    assert released["total"] == 2

    second_page = client.get(
        "/api/assignments", params={"queue_type": UU, "limit": 3, "offset": 3}, headers=sup
    ).json()
    # Newest first: u5, u4, u3, u2, u1, u7, u6, u8, u9, u10, u11.
    assert [i["user_id"] for i in second_page["items"]] == [2, 1, 7]
    assert (second_page["total"], second_page["limit"], second_page["offset"]) == (11, 3, 3)
    assert client.get("/api/assignments", headers=_auth(tokens["alice"])).status_code == 403


# -- queue listings --------------------------------------------------------------------------------

# user -> (score, score row age in days); serving order: score, then fresher score rows first.
LISTED = {
    101: (12, 1),
    102: (0, 3),
    103: (7, 1),
    104: (3, 1),
    105: (0, 2),
    106: (200, 1),
    107: (1, 1),
}
SERVING_ORDER = [105, 102, 107, 104, 103, 101, 106]
REASONS = {
    0: "New lead",
    1: "High priority",
    3: "High priority",
    7: "Medium priority",
    12: "Aged lead",
    200: "Aged lead",
}


def _listing_fixture(client, replica, store_engine, cron_headers):
    """Seven unsigned users and two outstanding ones, populated through the cron route; then
    position 2 is marked invalid and position 5 completed, as claims and outcomes would."""
    signed_up = {uid: datetime(2025, 3, uid - 100, 9, 30, tzinfo=UTC) for uid in LISTED}
    for uid in LISTED:
        replica.user(uid, signed=False, created_at=signed_up[uid])
        replica.claim(uid, claim_id=5000 + uid)
    replica.user(201, signed=True)
    c201 = replica.claim(201, claim_id=6201)
    replica.requirement(c201, "proof_of_address", created_at=datetime(2025, 2, 3, tzinfo=UTC))
    replica.requirement(c201, "bank_statement", created_at=datetime(2025, 2, 1, tzinfo=UTC))
    replica.requirement(c201, "id_document", status="completed")
    replica.user(202, signed=True)
    c202 = replica.claim(202, claim_id=6202)
    replica.requirement(c202, "payslip", created_at=datetime(2025, 4, 1, tzinfo=UTC))
    now = datetime.now(UTC)
    add_scores(
        store_engine,
        [
            {
                "user_id": uid,
                "current_queue_type": UU,
                "current_score": score,
                "created_at": now - timedelta(days=days),
            }
            for uid, (score, days) in LISTED.items()
        ]
        + [
            {"user_id": 201, "current_queue_type": OR, "current_score": 2},
            {"user_id": 202, "current_queue_type": OR, "current_score": 0},
        ],
    )
    report = client.get("/api/cron/populate-separated-queues", headers=cron_headers)
    assert report.status_code == 200, report.text
    with store_engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE unsigned_users_queue SET status = 'invalid',"
                " invalid_reason = 'no_phone_number' WHERE user_id = 102"
            )
        )
        conn.execute(
            text("UPDATE unsigned_users_queue SET status = 'completed' WHERE user_id = 103")
        )
    return report.json(), signed_up


def test_queue_listing_orders_filters_and_paginates(client, replica, store_engine, cron_headers):
    report, signed_up = _listing_fixture(client, replica, store_engine, cron_headers)
    tokens, _ = _agents(store_engine, "alice")
    sup = _auth(tokens["sup"])
    populated_at = datetime.fromisoformat(report["started_at"])

    full = client.get("/api/queues/unsigned_users", headers=sup)
    assert full.status_code == 200, full.text
    body = full.json()
    assert (body["total"], body["limit"], body["offset"]) == (7, 100, 0)
    assert [i["user_id"] for i in body["items"]] == SERVING_ORDER
    statuses = {102: "invalid", 103: "completed"}
    for position, item in enumerate(body["items"], start=1):
        uid = item["user_id"]
        score = LISTED[uid][0]
        assert item["queue_position"] == position
        assert item["claim_id"] == 5000 + uid
        assert item["priority_score"] == score
        assert item["status"] == statuses.get(uid, "pending")
        assert item["queue_reason"] == f"{REASONS[score]} - Missing signature"
        assert datetime.fromisoformat(item["available_from"]) == populated_at
        assert datetime.fromisoformat(item["signature_missing_since"]) == signed_up[uid]
        assert item["signature_type"] == "initial"
        assert item["assigned_to_agent"] is None
        assert item["assigned_at"] is None
        assert isinstance(item["id"], str) and item["id"]
        assert datetime.fromisoformat(item["created_at"]).tzinfo is not None
        assert datetime.fromisoformat(item["updated_at"]).tzinfo is not None
        assert not CONTACT_KEYS & set(item), item
    # No contact data at all: not the phone, the name or the email address.
    for secret in ("07700", "example.invalid", "User101", '"Test"'):
        assert secret not in full.text

    pending = client.get("/api/queues/unsigned_users", params={"status": "pending"}, headers=sup)
    assert pending.status_code == 200
    assert [i["user_id"] for i in pending.json()["items"]] == [105, 107, 104, 101, 106]
    assert pending.json()["total"] == 5
    assert {i["status"] for i in pending.json()["items"]} == {"pending"}

    invalid = client.get("/api/queues/unsigned_users?status=invalid", headers=sup).json()
    assert ([i["user_id"] for i in invalid["items"]], invalid["total"]) == ([102], 1)
    assert client.get("/api/queues/unsigned_users?status=skipped", headers=sup).json() == {
        "items": [],
        "limit": 100,
        "offset": 0,
        "total": 0,
    }

    page = client.get("/api/queues/unsigned_users?limit=2&offset=2", headers=sup).json()
    assert [i["user_id"] for i in page["items"]] == [107, 104]
    assert [i["queue_position"] for i in page["items"]] == [3, 4]
    assert (page["total"], page["limit"], page["offset"]) == (7, 2, 2)
    last = client.get("/api/queues/unsigned_users?limit=2&offset=6", headers=sup).json()
    assert [i["user_id"] for i in last["items"]] == [106]
    assert last["total"] == 7
    beyond = client.get("/api/queues/unsigned_users?limit=2&offset=7", headers=sup).json()
    assert (beyond["items"], beyond["total"]) == ([], 7)
    pending_page = client.get(
        "/api/queues/unsigned_users?status=pending&limit=2&offset=2", headers=sup
    ).json()
    assert [i["user_id"] for i in pending_page["items"]] == [104, 101]
    assert pending_page["total"] == 5

    # The other queue lists only its own entries, with its own fields.
    outstanding = client.get("/api/queues/outstanding_requests", headers=sup)
    assert outstanding.status_code == 200
    items = outstanding.json()["items"]
    assert outstanding.json()["total"] == 2
    assert [i["user_id"] for i in items] == [202, 201]
    assert items[1]["claim_id"] == 6201
    assert items[1]["requirement_types"] == ["bank_statement", "proof_of_address"]
    assert (
        items[1]["total_requirements"],
        items[1]["pending_requirements"],
        items[1]["completed_requirements"],
    ) == (3, 2, 1)
    assert datetime.fromisoformat(items[1]["oldest_requirement_date"]) == datetime(
        2025, 2, 1, tzinfo=UTC
    )
    assert items[1]["queue_reason"] == "High priority - Outstanding requirements"
    assert items[0]["requirement_types"] == ["payslip"]
    assert items[0]["queue_reason"] == "New lead - Outstanding requirements"
    assert "signature_type" not in items[0]


def test_queue_listing_rejects_bad_requests(client, store_engine):
    tokens, _ = _agents(store_engine, "alice")
    sup = _auth(tokens["sup"])
    for query in ("status=bogus", "limit=0", "limit=501", "offset=-1", "limit=abc"):
        response = client.get(f"/api/queues/unsigned_users?{query}", headers=sup)
        assert response.status_code == 422, query
        assert response.json()["error"] == "ValidationError"
        assert "bogus" not in response.text  # error bodies never echo input values
    assert client.get("/api/queues/unsigned_users?limit=500", headers=sup).status_code == 200
    unknown = client.get("/api/queues/signed_users", headers=sup)
    assert unknown.status_code == 404
    assert unknown.json()["error"] == "NotFound"
    assert "signed_users" not in unknown.text
    assert client.get("/api/queues/unsigned_users", headers=_auth(tokens["alice"])).status_code == (
        403
    )
    assert client.get("/api/queues/outstanding_requests").status_code == 401


# -- population run history ------------------------------------------------------------------------


def test_population_runs_newest_first_with_their_figures(
    client, replica, store_engine, cron_headers
):
    tokens, _ = _agents(store_engine, "alice")
    sup = _auth(tokens["sup"])
    for uid in (1, 2):
        replica.unsigned(uid)
    replica.outstanding(11)
    add_scores(
        store_engine,
        [
            {"user_id": 1, "current_queue_type": UU},
            {"user_id": 2, "current_queue_type": UU},
            {"user_id": 11, "current_queue_type": OR},
        ],
    )
    cron = "/api/cron/populate-separated-queues"
    reports = [client.get(cron, headers=cron_headers).json()]
    replica.unsigned(3)
    add_scores(store_engine, [{"user_id": 3, "current_queue_type": UU}])
    reports.append(client.get(f"{cron}?queue=unsigned_users", headers=cron_headers).json())
    replica.outstanding(12)
    add_scores(store_engine, [{"user_id": 12, "current_queue_type": OR}])
    reports.append(client.get(f"{cron}?dry_run=true", headers=cron_headers).json())
    assert [r["success"] for r in reports] == [True, True, True]
    assert reports[1]["queues"][UU]["populated"] == 3
    assert reports[2]["queues"][OR]["populated"] == 2

    response = client.get("/api/population-runs", headers=sup)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["total"], body["limit"], body["offset"]) == (3, 50, 0)
    newest_first = list(reversed(reports))
    assert [i["run_id"] for i in body["items"]] == [r["run_id"] for r in newest_first]
    assert [(i["dry_run"], i["queue"]) for i in body["items"]] == [
        (True, None),
        (False, UU),
        (False, None),
    ]
    for item, report in zip(body["items"], newest_first, strict=True):
        assert item["trigger"] == "cron"
        assert item["status"] == "succeeded"
        assert item["error"] is None
        assert datetime.fromisoformat(item["started_at"]) == datetime.fromisoformat(
            report["started_at"]
        )
        assert datetime.fromisoformat(item["finished_at"]) == datetime.fromisoformat(
            report["finished_at"]
        )
        assert item["duration_ms"] == report["duration_ms"]
        for queue_type, figures in report["queues"].items():
            listed = item["queues"].get(queue_type)
            if figures["status"] == "skipped":
                # A skipped queue may be left out of the history, or shown as skipped.
                assert listed is None or {k: listed[k] for k in FIGURES} == {
                    k: figures[k] for k in FIGURES
                }
            else:
                assert listed == figures, (item["run_id"], queue_type)
    assert set(body["items"][1]["queues"]) <= {UU, OR}
    assert UU in body["items"][1]["queues"]

    page = client.get("/api/population-runs?limit=1&offset=1", headers=sup).json()
    assert [i["run_id"] for i in page["items"]] == [reports[1]["run_id"]]
    assert (page["total"], page["limit"], page["offset"]) == (3, 1, 1)
    tail = client.get("/api/population-runs?limit=2&offset=2", headers=sup).json()
    assert [i["run_id"] for i in tail["items"]] == [reports[0]["run_id"]]
    assert tail["items"][0]["queues"] == reports[0]["queues"]
    beyond = client.get("/api/population-runs?offset=3", headers=sup).json()
    assert (beyond["items"], beyond["total"]) == ([], 3)

    for query in ("limit=0", "limit=501", "offset=-1"):
        assert client.get(f"/api/population-runs?{query}", headers=sup).status_code == 422, query
    assert client.get("/api/population-runs", headers=_auth(tokens["alice"])).status_code == 403
    assert client.get("/api/population-runs").status_code == 401


# -- times in UTC ----------------------------------------------------------------------------------


@pytest.fixture
def store_timezone(store_engine):
    """Give the store database a session time zone other than UTC, as a server installed with
    the host's zone has; new connections (a new app's pool) pick it up."""
    database = store_engine.url.database
    with store_engine.connect() as conn:
        conn.execute(text(f"ALTER DATABASE {database} SET timezone = 'Asia/Kolkata'"))
        conn.commit()
    try:
        yield "Asia/Kolkata"
    finally:
        with store_engine.connect() as conn:
            conn.execute(text(f"ALTER DATABASE {database} RESET timezone"))
            conn.commit()
        store_engine.dispose()  # no pooled connection keeps the zone for later tests


def test_report_times_are_returned_in_utc(
    store_timezone, make_client, replica, store_engine, cron_headers
):
    client = make_client()
    tokens, _ = _agents(store_engine, "alice")
    replica.unsigned(1)
    add_scores(store_engine, [{"user_id": 1, "current_queue_type": UU}])
    assert (
        client.get("/api/cron/populate-separated-queues", headers=cron_headers).status_code == 200
    )
    sup = _auth(tokens["sup"])
    stats = _stats(client, tokens["alice"])
    entry = client.get("/api/queues/unsigned_users", headers=sup).json()["items"][0]
    run = client.get("/api/population-runs", headers=sup).json()["items"][0]
    stamps = {
        "generated_at": stats["generated_at"],
        "last_population.finished_at": stats["queues"][UU]["last_population"]["finished_at"],
        "entry.available_from": entry["available_from"],
        "entry.created_at": entry["created_at"],
        "run.started_at": run["started_at"],
        "run.finished_at": run["finished_at"],
    }
    offsets = {name: datetime.fromisoformat(v).utcoffset() for name, v in stamps.items()}
    assert offsets == dict.fromkeys(stamps, timedelta(0))
