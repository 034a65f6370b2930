"""The claim benchmarks' scratch store and replica, one population, the agents.

Two databases on the bench server: a store migrated with Alembic and a replica made with
``replica_metadata.create_all``. All rows come from server-side ``INSERT ... SELECT FROM
generate_series``: ``users`` (by default ``entries`` x 1.02) users, each with one open claim, a
pending ``signature`` requirement and a phone number in 07700 900xxx; 99% have no signature (so
they classify ``unsigned_users``), 1% have one (reclassified away by the population). Every score
row says ``unsigned_users``, is active, due now and past the cooling period. The ledger gets a
month of history (86,400 completed assignments and 1,728 kept callbacks, all finished more than a
week ago, outside the attempt caps' window), as a production ledger has: on an empty ledger
PostgreSQL would plan the claim functions' statements (cached per session) as sequential scans of
a table that then grows for the whole run.

``populate`` then runs one population in this process (``Population.run`` with
``QUEUE_SIZE_LIMIT`` = ``entries``); ``create_agents`` makes the agents with ``create_agent``.
"""

from __future__ import annotations

import time

from alembic import command
from sqlalchemy import create_engine, text

from bench.harness.db import maintain, recreate_database, step

STORE_DB = "cq_bench_claims_store"
REPLICA_DB = "cq_bench_claims_replica"
QUEUE = "unsigned_users"
TABLE = "unsigned_users_queue"


def h(seed: int, modulus: int) -> str:
    """SQL for a deterministic pseudo-random integer in [0, modulus) derived from ``id``."""
    return f"mod(mod(hashint8extended(id, {seed}), {modulus}) + {modulus}, {modulus})"


# 1% of users (id % 100 = 0) have signed: they classify none and are not queued.
USERS_SQL = f"""
INSERT INTO users (id, is_enabled, current_signature_file_id, first_name, last_name,
                   phone_number, email_address, status, created_at)
SELECT id, true, CASE WHEN id % 100 = 0 THEN id * 10 + 7 END,
       'First' || id, 'Last' || id, '07700 900' || lpad((id % 1000)::text, 3, '0'),
       'user' || id || '@example.invalid', 'active',
       now() - interval '30 days' - make_interval(mins => {h(1, 500000)}::int)
  FROM generate_series(1, :m) AS id
"""
CLAIMS_SQL = """
INSERT INTO claims (id, user_id, status, created_at)
SELECT u.id, u.id, CASE WHEN u.id % 3 = 0 THEN 'OPEN' ELSE 'open' END,
       u.created_at + interval '1 hour'
  FROM users u
"""
REQUIREMENTS_SQL = """
INSERT INTO claim_requirements (id, claim_id, type, status, claim_requirement_reason, created_at)
SELECT c.id, c.id, 'signature', 'pending', NULL, c.created_at + interval '1 minute'
  FROM claims c
"""
SCORES_SQL = f"""
INSERT INTO user_call_scores (user_id, current_score, base_score, is_active, current_queue_type,
                              total_attempts, created_at)
SELECT id, floor(51 * power({h(2, 1000000)} / 1000000.0, 2))::int,
       floor(51 * power({h(2, 1000000)} / 1000000.0, 2))::int,
       true, 'unsigned_users', {h(3, 4)},
       now() - interval '1 day' - make_interval(mins => {h(4, 100000)}::int)
  FROM generate_series(1, :m) AS id
"""

# A month of the floor's past work, as a production ledger always has (the service keeps it): one
# outcome every 30 s for 30 days, ending 8 days ago (outside the attempt caps' week), and one
# callback kept for every fiftieth of them. Without it the ledger starts empty and the claim
# functions' plans, which PostgreSQL caches per session (PL/pgSQL) on the first call, are made for
# an empty table: sequential scans of a ledger that then grows for the whole run, until an
# autovacuum's ANALYZE invalidates them (about a minute in production; never in a 45 s run).
# A larger ledger (``--ledger-rows``) spans a year, as a centre's would: ten million rows are a
# year of a 150-seat centre, one outcome every 3 s.
HISTORY_AGENT_SQL = (
    "INSERT INTO agents (name, display_name, role, is_active)"
    " VALUES ('bench-history', 'bench-history', 'agent', true) RETURNING id"
)
HISTORY_SQL = f"""
INSERT INTO assignments (agent_id, user_id, queue_type, source, priority_score, status,
                         assigned_at, lease_expires_at, finished_at, outcome, created_at,
                         updated_at)
SELECT :agent, 1 + (g::bigint * 7919) % :users, '{QUEUE}', 'queue', 25, 'completed', t,
       t + interval '15 minutes', t + interval '3 minutes', 'no_answer', t,
       t + interval '3 minutes'
  FROM generate_series(1, :n) AS g,
       LATERAL (SELECT now() - interval '8 days' - make_interval(secs => g * :step)) AS at(t)
"""
CALLBACK_HISTORY_SQL = f"""
INSERT INTO callbacks (user_id, queue_type, due_at, owner_agent_id, status, first_handed_out_at,
                       finished_at, created_at, updated_at)
SELECT 1 + (g::bigint * 104729) % :users, '{QUEUE}', t, :agent, 'completed', t,
       t + interval '3 minutes', t - interval '1 day', t + interval '3 minutes'
  FROM generate_series(1, :n) AS g,
       LATERAL (SELECT now() - interval '8 days' - make_interval(secs => g * :step)) AS at(t)
"""
HISTORY_ROWS = 30 * 24 * 60 * 2
YEAR_SECONDS = 365 * 86_400


def history_step(rows: int) -> float:
    """Seconds between two outcomes of the history: a month's worth at 30 s, more over a year."""
    return 30.0 if rows <= HISTORY_ROWS else YEAR_SECONDS / rows


def build(
    server: str,
    entries: int,
    store_db: str = STORE_DB,
    replica_db: str = REPLICA_DB,
    users: int | None = None,
    ledger_rows: int = HISTORY_ROWS,
) -> tuple[str, str, int]:
    """Both databases, filled; returns their URLs and the number of users (``users``, by default
    ``entries`` and 2% more); ``ledger_rows`` finished assignments of history."""
    from app.health import alembic_config
    from app.replica.schema import replica_metadata

    users = users or entries + entries // 50
    print(f"Building {users:,} users and score rows ({store_db}, {replica_db})")
    store_url = recreate_database(server, store_db)
    replica_url = recreate_database(server, replica_db)
    with step("alembic upgrade head"):
        command.upgrade(alembic_config(store_url), "head")
    replica = create_engine(replica_url)
    replica_metadata.create_all(replica)
    with replica.begin() as conn, step("replica users, claims, claim_requirements"):
        conn.execute(text("SET LOCAL synchronous_commit = off"))
        conn.execute(text(USERS_SQL), {"m": users})
        conn.execute(text(CLAIMS_SQL))
        conn.execute(text(REQUIREMENTS_SQL))
    replica.dispose()
    store = create_engine(store_url)
    with store.begin() as conn, step("store user_call_scores"):
        conn.execute(text("SET LOCAL synchronous_commit = off"))
        conn.execute(text(SCORES_SQL), {"m": users})
    with store.begin() as conn, step(f"store ledger history ({ledger_rows:,} outcomes)"):
        conn.execute(text("SET LOCAL synchronous_commit = off"))
        agent = conn.execute(text(HISTORY_AGENT_SQL)).scalar_one()
        history = {"agent": agent, "users": users}
        step_s = history_step(ledger_rows)
        conn.execute(text(HISTORY_SQL), {**history, "n": ledger_rows, "step": step_s})
        conn.execute(
            text(CALLBACK_HISTORY_SQL), {**history, "n": ledger_rows // 50, "step": step_s * 50}
        )
    store.dispose()
    with step("VACUUM ANALYZE both"):
        maintain(replica_url, checkpoint=False)
        maintain(store_url, checkpoint=False)
    return store_url, replica_url, users


def populate(store_url: str, replica_url: str, entries: int) -> None:
    """One population in this process, ``QUEUE_SIZE_LIMIT`` = ``entries``; it must fill it."""
    from app.config import load_settings
    from app.services import Services

    settings = load_settings(
        database_url=store_url,
        replica_database_url=replica_url,
        app_env="test",
        queue_size_limit=entries,
        log_level="WARNING",
    )
    services = Services.build(settings)
    try:
        t0 = time.perf_counter()
        report = services.population().run(trigger="bench-claims")
        seconds = time.perf_counter() - t0
    finally:
        services.dispose()
    q = report.queues[QUEUE]  # type: ignore[index]
    print(
        f"  population (QUEUE_SIZE_LIMIT {entries:,}): {seconds:.1f} s, {q.status}, eligible"
        f" {q.eligible:,}, invalid {q.invalid:,}, populated {q.populated:,}"
    )
    if not report.success or q.populated != entries:
        raise SystemExit(f"population did not fill the queue: {report.as_dict()}")


def agent_headers(store_url: str, tokens: list[str], auth: str) -> list[dict[str, str]]:
    """What each agent's dashboard sends: its bearer token (``auth`` "token"), or, as the
    console does (``auth`` "session"), a session's cookie and its CSRF token, one session per
    agent started the way a sign-in starts one."""
    if auth == "token":
        return [{"Authorization": f"Bearer {token}"} for token in tokens]
    from app.auth.identity import authenticate_token
    from app.auth.sessions import COOKIE, start_session
    from app.auth.tokens import csrf_token

    engine = create_engine(store_url)
    headers = []
    try:
        with engine.begin() as conn:
            for token in tokens:
                person = authenticate_token(conn, token).agent.id
                session = start_session(
                    conn, person, method="password", max_hours=12, user_agent="bench", address=None
                )
                headers.append(
                    {"Cookie": f"{COOKIE}={session}", "X-CSRF-Token": csrf_token(session)}
                )
    finally:
        engine.dispose()
    return headers


def create_agents(
    store_url: str, n: int, role: str = "agent", prefix: str = "bench-agent"
) -> list[str]:
    """``n`` agents (or supervisors) through the service's ``create_agent``; their tokens."""
    from app.auth.people import create_agent

    engine = create_engine(store_url)
    try:
        with engine.begin() as conn:
            return [create_agent(conn, f"{prefix}-{i:02d}", role) for i in range(n)]
    finally:
        engine.dispose()


def subscribe_everything(store_url: str, url: str) -> str:
    """One webhook endpoint at ``url`` subscribed to every event type, through the service's own
    ``endpoints.create`` (outside production: a local receiver is allowed); its id."""
    from app.config import load_settings
    from app.webhooks.delivery import EVENT_TYPES
    from app.webhooks.endpoints import Actor, create

    settings = load_settings(database_url=store_url, app_env="development")
    engine = create_engine(store_url)
    try:
        with engine.begin() as conn:
            made = create(conn, settings, Actor(None), url=url, event_types=EVENT_TYPES)
    finally:
        engine.dispose()
    return str(made["id"])
