"""Hostile input (issue 5, item 4): oversized bodies, huge numbers, invalid UTF-8, malformed JSON,
malformed ids, SQL-looking strings, unknown fields, wrong types, NUL bytes, naive and out-of-range
timestamps, deep nesting.

Each request gets a 4xx with the standard error body (``{"error", "detail"}``, plus ``"fields"``
for a 422), never echoes the hostile input, and writes nothing: every table the service owns is
fingerprinted (row count and a digest of every row) before and after, so an UPDATE is caught as
surely as an INSERT. The requests aim at a live assignment wherever they can, so a request that
slipped through validation would really complete, release or extend something.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, create_engine, text

from app.config import load_settings
from app.main import create_app
from tests.api.test_agents_api import Agent, book, claim, new_agent
from tests.conftest import CRON_SECRET, OWNED_TABLES, REPLICA_TABLES, SUPPRESSION_KEY
from tests.factories import Replica

SQL = "'; DROP TABLE agents; --"
MARK = "H0stile-7f3a"  # put in the hostile input wherever possible; must never come back
NOBODY = "00000000-0000-4000-8000-000000000000"
LIVE = "{live}"  # replaced by the id of an assignment that is active right now
POPULATE = "/api/cron/populate-separated-queues"
TWO_MB = 2 * 1024 * 1024

# --- the fingerprint --------------------------------------------------------------------------


def fingerprint(engine: Engine) -> dict[str, tuple[int, str]]:
    """Row count and a digest of the full contents of every table the service owns."""
    out = {}
    with engine.connect() as conn:
        for table in OWNED_TABLES:
            out[table] = tuple(
                conn.execute(
                    text(
                        f"SELECT count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY t::text),"
                        f" '')) FROM {table} t"
                    )
                ).one()
            )
    return out  # type: ignore[return-value]


@dataclass
class World:
    client: TestClient
    store: Engine
    agent: Agent
    supervisor: Agent
    live: str

    def headers(self, who: str) -> dict[str, str]:
        return {
            "agent": self.agent.auth,
            "super": self.supervisor.auth,
            "cron": {"Authorization": f"Bearer {CRON_SECRET}"},
        }[who]


class Shared:
    """One app and one populated book for the whole module: building them for each of ~150
    read-only cases would cost a minute. Each test checks the fingerprint it was left with and
    rebuilds the book when an earlier test (or a bug) changed anything."""

    def __init__(self, client: TestClient, store: Engine, replica: Engine) -> None:
        self.client = client
        self.store = store
        self.replica = replica
        self.world: World | None = None
        self.print: dict[str, tuple[int, str]] = {}

    def get(self) -> World:
        if self.world is None or fingerprint(self.store) != self.print:
            self.world = self._build()
            self.print = fingerprint(self.store)
        return self.world

    def _build(self) -> World:
        """Populated queues, an agent holding a live assignment, a supervisor."""
        with self.store.begin() as conn:
            conn.execute(text(f"TRUNCATE {', '.join(OWNED_TABLES)} RESTART IDENTITY CASCADE"))
        with self.replica.begin() as conn:
            conn.execute(text(f"TRUNCATE {', '.join(REPLICA_TABLES)}"))
        cron = {"Authorization": f"Bearer {CRON_SECRET}"}
        book(self.client, self.store, Replica(self.replica), cron, (1, 2, 3), (4, 5))
        agent = new_agent(self.store, "hostile-agent")
        supervisor = new_agent(self.store, "hostile-super", "supervisor")
        live = claim(self.client, agent)["assignment_id"]
        return World(self.client, self.store, agent, supervisor, live)


@pytest.fixture(scope="module")
def shared(store_url: str, replica_url: str) -> Iterator[Shared]:
    # The same settings as conftest's make_settings; own engines, so conftest's per-test
    # truncation (keyed on store_engine) does not wipe the shared book between cases.
    settings = load_settings(
        database_url=store_url,
        replica_database_url=replica_url,
        cron_secret=CRON_SECRET,
        app_env="test",
        cooling_period_minutes=0,
        scheduler_enabled=False,
        webhook_sender_enabled=False,
        queue_front_seconds=0,
        calling_hours="always",
        suppression_key=SUPPRESSION_KEY,
    )
    store = create_engine(store_url, pool_size=2, max_overflow=2)
    replica = create_engine(replica_url, pool_size=2, max_overflow=2)
    try:
        with TestClient(create_app(settings), raise_server_exceptions=False) as client:
            yield Shared(client, store, replica)
    finally:
        store.dispose()
        replica.dispose()


@pytest.fixture
def world(shared: Shared) -> World:
    return shared.get()


def assert_standard_error(response: Any, expect: set[int] | frozenset[int]) -> dict[str, Any]:
    assert response.status_code in expect, (response.status_code, response.text[:500])
    assert 400 <= response.status_code < 500
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert isinstance(body, dict), body
    assert isinstance(body.get("error"), str) and body["error"], body
    assert isinstance(body.get("detail"), str) and body["detail"], body
    if response.status_code == 422:
        assert set(body) == {"error", "detail", "fields"}, body
        assert body["error"] == "ValidationError"
        assert isinstance(body["fields"], list) and body["fields"], body
        for item in body["fields"]:
            assert set(item) == {"loc", "msg"}, item
            assert isinstance(item["loc"], list) and isinstance(item["msg"], str), item
    else:
        assert set(body) == {"error", "detail"}, body
    return dict(body)


# --- the cases --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Hostile:
    method: str
    path: str
    who: str = "agent"  # agent | super | cron
    json: Any = None
    content: bytes | None = None
    params: dict[str, Any] | None = None
    expect: frozenset[int] = frozenset({422})
    echo: tuple[str, ...] = (MARK,)  # what must not come back in the body

    def send(self, world: World) -> Any:
        path = self.path.replace(LIVE, world.live)
        headers = dict(world.headers(self.who))
        kwargs: dict[str, Any] = {"params": self.params}
        if self.content is not None:
            headers["content-type"] = "application/json"
            kwargs["content"] = self.content
        elif self.json is not None:
            kwargs["json"] = self.json
        return world.client.request(self.method, path, headers=headers, **kwargs)


def complete(body: Any = None, *, content: bytes | None = None, at: str = LIVE, **kw: Any) -> Any:
    return Hostile("POST", f"/api/assignments/{at}/complete", json=body, content=content, **kw)


def release(body: Any = None, *, content: bytes | None = None, at: str = LIVE, **kw: Any) -> Any:
    return Hostile("POST", f"/api/assignments/{at}/release", json=body, content=content, **kw)


def force_release(body: Any = None, *, at: str = LIVE, **kw: Any) -> Any:
    return Hostile("POST", f"/api/admin/assignments/{at}/release", "super", json=body, **kw)


def put_flags(body: Any = None, *, content: bytes | None = None, **kw: Any) -> Any:
    return Hostile("PUT", "/api/admin/flags", "super", json=body, content=content, **kw)


def put_scores(body: Any = None, *, content: bytes | None = None, **kw: Any) -> Any:
    return Hostile("PUT", "/api/scores", "super", json=body, content=content, **kw)


def get(path: str, who: str = "super", expect: int = 422, **params: Any) -> Hostile:
    return Hostile("GET", path, who, params=params, expect=frozenset({expect}))


UNPARSEABLE = frozenset({422})  # even a body that cannot be decoded is a bad body: 422
TOO_LARGE = frozenset({413})
NOT_FOUND = frozenset({404})
SQL_ECHO = ("DROP TABLE", SQL)
ledger = "/api/assignments"
queue_listing = "/api/queues/unsigned_users"


CASES = [
    # -- oversized bodies: over MAX_BODY_BYTES (1 MiB) is 413 before anything reads them
    pytest.param(
        complete({"outcome": "no_answer", "notes": MARK + "x" * TWO_MB}, expect=TOO_LARGE),
        id="2MB-notes",
    ),
    pytest.param(
        complete({"outcome": "no_answer", "padding": [MARK] * (TWO_MB // 16)}, expect=TOO_LARGE),
        id="2MB-unknown-field",
    ),
    pytest.param(
        complete({"outcome": "no_answer", "notes": MARK + "n" * 100_000}), id="100k-notes"
    ),
    pytest.param(release({"requeue": False, "reason": MARK + "r" * 100_000}), id="100k-reason"),
    pytest.param(force_release({"reason": MARK + "r" * 100_000}), id="100k-forced-reason"),
    pytest.param(
        put_flags({"MIGRATION_MODE": MARK + "m" * TWO_MB}, expect=TOO_LARGE), id="2MB-flag-value"
    ),
    # -- huge numbers
    pytest.param(get(ledger, user_id=10**30), id="ledger-user_id-1e30"),
    pytest.param(get(ledger, user_id=2**63), id="ledger-user_id-2^63"),
    pytest.param(get(ledger, user_id=-1), id="ledger-user_id-negative"),
    pytest.param(get(ledger, agent_id=10**30), id="ledger-agent_id-1e30"),
    pytest.param(get(ledger, agent_id=2**31), id="ledger-agent_id-2^31"),
    pytest.param(get(ledger, limit=10**20), id="ledger-limit-1e20"),
    pytest.param(get(ledger, limit=0), id="ledger-limit-0"),
    pytest.param(get(ledger, offset=10**30), id="ledger-offset-1e30"),
    pytest.param(get(queue_listing, limit=10**20), id="listing-limit-1e20"),
    pytest.param(get(queue_listing, offset=10**30), id="listing-offset-1e30"),
    pytest.param(get("/api/population-runs", limit=10**20), id="runs-limit-1e20"),
    pytest.param(get("/api/queues/stats", "agent", window_minutes=10**30), id="stats-window-1e30"),
    pytest.param(get("/api/queues/stats", "agent", window_minutes=1e400), id="stats-window-inf"),
    pytest.param(
        complete({"outcome": "no_answer", "queue_position": 10**30}), id="body-queue_position-1e30"
    ),
    pytest.param(release({"requeue": 10**30}), id="body-requeue-1e30"),
    pytest.param(put_flags({"USE_SEPARATED_QUEUES": 10**30}), id="body-flag-1e30"),
    pytest.param(complete(content=b'{"outcome": "no_answer", "notes": 1e400}'), id="body-1e400"),
    pytest.param(
        complete(
            content=b'{"outcome": "no_answer", "notes": ' + b"9" * 5000 + b"}", expect=UNPARSEABLE
        ),
        id="body-5000-digit-int",
    ),
    pytest.param(
        complete({"outcome": "call_back", "callback_at": 10**20}), id="callback_at-epoch-1e20"
    ),
    # -- invalid UTF-8 with content-type application/json
    pytest.param(complete(content=b"\xff\xfe\xfd", expect=UNPARSEABLE), id="utf8-garbage"),
    pytest.param(
        complete(content=b'{"outcome": "no_answer", "notes": "\xc3\x28"}', expect=UNPARSEABLE),
        id="utf8-bad-continuation",
    ),
    pytest.param(
        release(content=b'{"requeue": false, "reason": "\xed\xa0\x80"}', expect=UNPARSEABLE),
        id="utf8-encoded-surrogate",
    ),
    pytest.param(
        put_flags(content=b'{"MIGRATION_MODE": "\xff"}', expect=UNPARSEABLE), id="utf8-flags"
    ),
    pytest.param(
        complete(content=b'{"outcome": "no_answer", "notes": "\\ud800"}'), id="json-lone-surrogate"
    ),
    pytest.param(
        Hostile("GET", ledger + "?status=%FF&since=%C3%28", "super"),
        id="utf8-query",
    ),
    # -- malformed JSON
    pytest.param(complete(content=b'{"outcome":'), id="json-truncated"),
    pytest.param(complete(content=b"{outcome: no_answer}"), id="json-unquoted"),
    pytest.param(complete(content=b"{'outcome': 'no_answer'}"), id="json-single-quotes"),
    pytest.param(complete(content=b'{"outcome": "no_answer",}'), id="json-trailing-comma"),
    pytest.param(complete(content=b'{"outcome": "no_answer"} {}'), id="json-trailing-garbage"),
    pytest.param(complete(content=b""), id="json-empty-body"),
    pytest.param(complete(content=b'{"outcome": NaN}'), id="json-NaN"),
    pytest.param(put_flags(content=b'{"MIGRATION_MODE": "dual"'), id="flags-truncated"),
    # -- JSON that is not an object (for release, null is "no body", which the contract allows)
    pytest.param(complete(content=b"[]"), id="complete-list"),
    pytest.param(complete(content=b'"no_answer"'), id="complete-string"),
    pytest.param(complete(content=b"null"), id="complete-null"),
    pytest.param(complete(content=b"42"), id="complete-number"),
    pytest.param(complete(content=b'[{"outcome": "no_answer"}]'), id="complete-list-of-object"),
    pytest.param(release(content=b"[]"), id="release-list"),
    pytest.param(release(content=b'"x"'), id="release-string"),
    pytest.param(release(content=b"true"), id="release-bool"),
    pytest.param(put_flags(content=b'[{"MIGRATION_MODE": "dual"}]'), id="flags-list"),
    pytest.param(put_flags(content=b'"dual"'), id="flags-string"),
    pytest.param(put_flags(content=b"null"), id="flags-null"),
    # -- malformed ids in paths
    pytest.param(complete({"outcome": "no_answer"}, at="not-a-uuid"), id="id-not-a-uuid"),
    pytest.param(Hostile("POST", "/api/assignments/not-a-uuid/extend"), id="extend-not-a-uuid"),
    pytest.param(
        Hostile("POST", f"/api/assignments/{LIVE}junk/extend", echo=("junk",)),
        id="extend-uuid-trailing-junk",
    ),
    pytest.param(
        Hostile("POST", f"/api/assignments/{LIVE}%20OR%201=1/extend", echo=("OR 1=1",)),
        id="extend-uuid-sql-suffix",
    ),
    pytest.param(
        Hostile("POST", "/api/assignments/../admin/flags/extend", expect=NOT_FOUND),
        id="extend-dot-dot",
    ),
    pytest.param(
        Hostile(
            "POST", "/api/assignments/..%2F..%2Fadmin%2Fflags/extend", expect=frozenset({404, 422})
        ),
        id="extend-encoded-dot-dot",
    ),
    pytest.param(release({"requeue": True}, at=NOBODY[:-1]), id="release-short-uuid"),
    pytest.param(force_release({}, at="1 OR 1=1"), id="forced-release-sql-id"),
    pytest.param(
        Hostile("POST", "/api/queues/..%2Fadmin%2Fflags/next-user", expect=NOT_FOUND),
        id="next-user-dot-dot",
    ),
    pytest.param(
        Hostile("POST", "/api/queues/UNSIGNED_USERS/next-user", expect=NOT_FOUND),
        id="next-user-upper-case",
    ),
    pytest.param(
        Hostile("POST", "/api/queues/%FF/next-user", expect=NOT_FOUND), id="next-user-utf8"
    ),
    # -- SQL-looking strings in every string field and query parameter
    pytest.param(complete({"outcome": SQL}, echo=SQL_ECHO), id="sql-outcome"),
    pytest.param(
        complete(
            {"outcome": "no_answer", "notes": SQL}, at=NOBODY, expect=NOT_FOUND, echo=SQL_ECHO
        ),
        id="sql-notes",
    ),
    pytest.param(
        complete({"outcome": "call_back", "callback_at": SQL}, echo=SQL_ECHO), id="sql-cb"
    ),
    pytest.param(
        release({"requeue": False, "reason": SQL}, at=NOBODY, expect=NOT_FOUND, echo=SQL_ECHO),
        id="sql-reason",
    ),
    pytest.param(release({"requeue": SQL}, echo=SQL_ECHO), id="sql-requeue"),
    pytest.param(
        force_release({"reason": SQL}, at=NOBODY, expect=NOT_FOUND, echo=SQL_ECHO),
        id="sql-forced-reason",
    ),
    pytest.param(put_flags({"MIGRATION_MODE": SQL}, echo=SQL_ECHO), id="sql-flag-value"),
    pytest.param(put_flags({"USE_SEPARATED_QUEUES": SQL}, echo=SQL_ECHO), id="sql-flag-bool"),
    pytest.param(
        Hostile("POST", f"/api/queues/{SQL}/next-user", expect=NOT_FOUND, echo=SQL_ECHO),
        id="sql-queue-path",
    ),
    pytest.param(
        Hostile("GET", f"/api/queues/{SQL}", "super", expect=NOT_FOUND, echo=SQL_ECHO),
        id="sql-listing-path",
    ),
    pytest.param(complete({"outcome": "no_answer"}, at=SQL, echo=SQL_ECHO), id="sql-id-path"),
    *[
        pytest.param(
            Hostile("GET", path, who, params={name: SQL}, echo=SQL_ECHO), id=f"sql-{label}-{name}"
        )
        for path, who, label, names in (
            (ledger, "super", "ledger", ("agent_id", "user_id", "queue_type", "status")),
            (ledger, "super", "ledger", ("since", "until", "limit", "offset")),
            (queue_listing, "super", "listing", ("status", "limit", "offset")),
            ("/api/population-runs", "super", "runs", ("limit", "offset")),
            ("/api/queues/stats", "agent", "stats", ("window_minutes",)),
            (POPULATE, "cron", "populate", ("queue", "dry_run")),
        )
        for name in names
    ],
    # -- unknown fields where the model forbids them
    pytest.param(complete({"outcome": "no_answer", "agent_id": 1}), id="unknown-complete"),
    pytest.param(release({"requeue": True, "queue_position": 1}), id="unknown-release"),
    pytest.param(force_release({"reason": "x", "agent_id": 1}), id="unknown-forced-release"),
    pytest.param(put_flags({"QUEUE_SIZE_LIMIT": 5}), id="unknown-flag"),
    pytest.param(put_flags({"migration_mode": "dual"}), id="unknown-flag-lower-case"),
    # -- wrong types
    pytest.param(complete({"outcome": 123}), id="type-outcome-int"),
    pytest.param(complete({"outcome": None}), id="type-outcome-null"),
    pytest.param(complete({"outcome": ["no_answer"]}), id="type-outcome-list"),
    pytest.param(complete({"outcome": "no_answer", "notes": {"a": MARK}}), id="type-notes-obj"),
    pytest.param(complete({"outcome": "call_back", "callback_at": True}), id="type-cb-bool"),
    pytest.param(release({"requeue": "yes"}), id="type-requeue-yes"),
    pytest.param(release({"requeue": 1}), id="type-requeue-1"),
    pytest.param(release({"requeue": None}), id="type-requeue-null"),
    pytest.param(release({"requeue": False, "reason": 123}), id="type-reason-int"),
    pytest.param(put_flags({"USE_SEPARATED_QUEUES": "false"}), id="type-flag-string"),
    pytest.param(put_flags({"MIGRATION_MODE": None}), id="type-flag-null"),
    pytest.param(put_flags({"ENABLE_QUEUE_VALIDATION": 0}), id="type-flag-0"),
    # -- NUL bytes
    pytest.param(complete({"outcome": "no_answer", "notes": f"{MARK}\u0000b"}), id="nul-notes"),
    pytest.param(release({"requeue": False, "reason": f"{MARK}\u0000b"}), id="nul-reason"),
    pytest.param(force_release({"reason": f"{MARK}\u0000b"}), id="nul-forced-reason"),
    pytest.param(complete({"outcome": "no_answer\u0000"}), id="nul-outcome"),
    pytest.param(
        complete({"outcome": "call_back", "callback_at": "2030-01-01T00:00:00Z\u0000"}),
        id="nul-callback_at",
    ),
    pytest.param(put_flags({"MIGRATION_MODE": "dual\u0000"}), id="nul-flag"),
    pytest.param(get(ledger, status="active\u0000"), id="nul-query"),
    pytest.param(
        Hostile("POST", "/api/queues/unsigned_users%00/next-user", expect=NOT_FOUND), id="nul-path"
    ),
    # -- naive datetimes and timestamps out of range
    pytest.param(
        complete({"outcome": "call_back", "callback_at": "2030-01-01T00:00:00"}), id="naive-cb"
    ),
    pytest.param(get(ledger, since="2025-01-01T00:00:00"), id="naive-since"),
    pytest.param(get(ledger, until="2025-01-01 00:00:00"), id="naive-until"),
    *[
        pytest.param(complete({"outcome": "call_back", "callback_at": value}), id=f"cb-{label}")
        for label, value in (
            ("year-0", "0000-01-01T00:00:00Z"),
            ("year-99999", "99999-01-01T00:00:00Z"),
            ("year-1", "0001-01-01T00:00:00Z"),
            ("year-9999", "9999-12-31T23:59:59Z"),
            ("month-13", "2030-13-01T00:00:00Z"),
            ("feb-30", "2030-02-30T00:00:00Z"),
            ("offset-25h", "2030-01-01T00:00:00+25:00"),
            ("infinity", "infinity"),
            ("negative-epoch", -(10**12)),
        )
    ],
    *[
        pytest.param(get(ledger, **{name: value}), id=f"{name}-{label}")
        for name in ("since", "until")
        for label, value in (
            ("year-0", "0000-01-01T00:00:00Z"),
            ("year-99999", "99999-01-01T00:00:00Z"),
            ("infinity", "infinity"),
            ("-infinity", "-infinity"),
        )
    ],
    # -- very deep JSON nesting
    pytest.param(
        complete(content=b"[" * 100_000 + b"]" * 100_000, expect=UNPARSEABLE), id="deep-list"
    ),
    pytest.param(
        complete(
            content=b'{"outcome": "no_answer", "notes": '
            + b'{"a": ' * 50_000
            + b"1"
            + b"}" * 50_000
            + b"}",
            expect=UNPARSEABLE,
        ),
        id="deep-object-in-notes",
    ),
    pytest.param(
        put_flags(
            content=b'{"MIGRATION_MODE": ' + b"[" * 5_000 + b"]" * 5_000 + b"}", expect=UNPARSEABLE
        ),
        id="deep-flags-5000",
    ),
    pytest.param(
        release(content=b'{"reason": ' + b"[" * 900 + b"]" * 900 + b"}"), id="deep-release-900"
    ),
    # -- the scores upsert: a malformed body writes nothing (bad rows are row errors, not here)
    pytest.param(put_scores(content=b'{"scores": [{"user_id": 1,'), id="scores-truncated"),
    pytest.param(
        put_scores(content=b'{"scores": [{"user_id": 1, "current_score": "\xff"}]}'),
        id="scores-utf8",
    ),
    pytest.param(
        put_scores(content=b'{"scores": ' + b"[" * 5_000 + b"]" * 5_000 + b"}"),
        id="scores-deep-5000",
    ),
    pytest.param(
        put_scores({"scores": [MARK, {"user_id": 1, "current_score": 1}]}), id="scores-row-string"
    ),
    pytest.param(
        put_scores({"scores": [{"user_id": 1, "current_score": 1}], MARK: 1}),
        id="scores-unknown-key",
    ),
    pytest.param(
        put_scores({"scores": [{"user_id": n, "current_score": 1} for n in range(1, 10_002)]}),
        id="scores-10001-rows",
    ),
    pytest.param(put_scores({"scores": []}), id="scores-empty"),
    pytest.param(put_scores(content=b'{"scores": null}'), id="scores-null"),
]


@pytest.mark.parametrize("case", CASES)
def test_hostile_input_is_refused_without_echo_or_writes(world: World, case: Hostile) -> None:
    before = fingerprint(world.store)

    response = case.send(world)

    assert_standard_error(response, case.expect)
    for needle in case.echo:
        assert needle not in response.text, f"the error body echoes {needle!r}"
    after = fingerprint(world.store)
    changed = [t for t in OWNED_TABLES if before[t] != after[t]]
    assert not changed, f"a refused request wrote to {changed}"


# --- beside the matrix ------------------------------------------------------------------------


def test_the_fingerprint_sees_an_update(world: World) -> None:
    """The no-write check is only worth something if it catches an UPDATE of one timestamp."""
    before = fingerprint(world.store)
    extended = world.client.post(f"/api/assignments/{world.live}/extend", headers=world.agent.auth)
    assert extended.status_code == 200
    after = fingerprint(world.store)
    assert before["assignments"] != after["assignments"]
    assert before["agents"] == after["agents"]


def test_unknown_field_names_are_not_echoed(world: World) -> None:
    before = fingerprint(world.store)
    for case in (
        complete({"outcome": "no_answer", SQL: 1}),
        put_flags({SQL: True}),
        release({f"{MARK}@example.invalid": True}),
    ):
        response = case.send(world)
        assert_standard_error(response, frozenset({422}))
        assert SQL not in response.text and MARK not in response.text, response.text
    assert fingerprint(world.store) == before


def test_sql_looking_text_is_stored_verbatim(world: World) -> None:
    """Free text is data, not SQL: a note and a release reason that look like SQL are kept as
    written (bound parameters), and the agents table is still there."""
    done = world.client.post(
        f"/api/assignments/{world.live}/complete",
        headers=world.agent.auth,
        json={"outcome": "no_answer", "notes": SQL + " \u00e9\u00e8 \U0001f4de"},
    )
    assert done.status_code == 200, done.text
    again = world.client.post("/api/queues/unsigned_users/next-user", headers=world.agent.auth)
    assert again.status_code == 200, again.text
    released = world.client.post(
        f"/api/assignments/{again.json()['assignment_id']}/release",
        headers=world.agent.auth,
        json={"requeue": True, "reason": SQL},
    )
    assert released.status_code == 200, released.text
    with world.store.connect() as conn:
        notes = conn.execute(
            text("SELECT notes FROM assignments WHERE id = :id"), {"id": world.live}
        ).scalar_one()
        reason = conn.execute(
            text("SELECT release_reason FROM assignments WHERE status = 'released'")
        ).scalar_one()
        agents = conn.execute(text("SELECT count(*) FROM agents")).scalar_one()
    assert notes == SQL + " \u00e9\u00e8 \U0001f4de"
    assert reason == SQL
    assert agents == 2


@pytest.mark.parametrize(
    ("path", "params"),
    [
        (ledger, {"user_id": 2**63 - 1}),
        (ledger, {"agent_id": 2**31 - 1}),
        (ledger, {"limit": 500, "offset": 1_000_000}),
        (ledger, {"since": "0001-01-01T00:00:00+14:00", "until": "9999-12-31T23:59:59-14:00"}),
        (ledger, {"since": "2030-01-01T00:00:00Z", "until": "2020-01-01T00:00:00Z"}),
        (queue_listing, {"limit": 500, "offset": 10_000_000}),
        ("/api/population-runs", {"limit": 500, "offset": 1_000_000}),
        ("/api/queues/stats", {"window_minutes": 1440}),
    ],
    ids=lambda v: str(v)[:40] if isinstance(v, str) else "-".join(map(str, v)),
)
def test_extreme_but_valid_numbers_and_times_are_answered(
    world: World, path: str, params: dict[str, Any]
) -> None:
    """The largest values the contract accepts reach PostgreSQL without overflowing anything."""
    before = fingerprint(world.store)
    response = world.client.get(path, headers=world.supervisor.auth, params=params)
    assert response.status_code == 200, response.text
    assert fingerprint(world.store) == before


def test_a_2mb_body_on_a_route_without_a_body_is_refused(world: World) -> None:
    """next-user takes no body, but a body over MAX_BODY_BYTES is refused before routing, as on
    every route (tests/api/test_body_limit.py); one under it is ignored."""
    before = fingerprint(world.store)
    response = world.client.post(
        "/api/queues/unsigned_users/next-user",
        headers={**world.agent.auth, "content-type": "application/json"},
        content=b'{"x": "' + b"y" * TWO_MB + b'"}',
    )
    assert response.status_code == 413, response.text[:300]
    assert_standard_error(response, TOO_LARGE)
    assert fingerprint(world.store) == before
    response = world.client.post(
        "/api/queues/unsigned_users/next-user",
        headers={**world.agent.auth, "content-type": "application/json"},
        content=b'{"x": "' + b"y" * 100_000 + b'"}',
    )
    assert response.status_code == 200, response.text[:300]
    assert response.json()["assignment_id"] == world.live
    assert response.json()["resumed"] is True
