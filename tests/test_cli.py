"""The ``callqueue`` command, run as an operator runs it: a real process against real databases."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, create_engine, text

from app.health import schema_head
from app.queues.kinds import POPULATION_LOCK_KEY
from tests import pg
from tests.conftest import CRON_SECRET
from tests.factories import Replica, add_scores
from tests.processes import clean_env, command, free_port, stop, wait_ready

CRON_PATH = "/api/cron/populate-separated-queues"


def run_cli(
    *args: str, env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*command(), *args], env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture
def cli_env(store_url: str, replica_url: str) -> dict[str, str]:
    return clean_env(
        DATABASE_URL=store_url,
        REPLICA_DATABASE_URL=replica_url,
        APP_ENV="test",
        CRON_SECRET=CRON_SECRET,
        COOLING_PERIOD_MINUTES="0",
    )


@pytest.fixture
def two_leads(replica: Replica, store_engine: Engine) -> None:
    """One lead per queue, plus one whose score row says outstanding but has no claim."""
    replica.unsigned(1)
    replica.outstanding(2, "proof_of_address", "bank_statement")
    replica.user(3)
    add_scores(
        store_engine,
        [
            {"user_id": 1, "current_queue_type": "unsigned_users"},
            {"user_id": 2, "current_queue_type": "outstanding_requests", "current_score": 3},
            {"user_id": 3, "current_queue_type": "outstanding_requests"},
        ],
    )


def shape(report: dict[str, Any]) -> dict[str, Any]:
    return {
        "keys": sorted(report),
        "queues": {name: sorted(q) for name, q in report["queues"].items()},
    }


def test_populate_prints_the_cron_report_and_exits_0(
    cli_env: dict[str, str],
    two_leads: None,
    store_engine: Engine,
    client: TestClient,
    cron_headers: dict[str, str],
) -> None:
    result = run_cli("populate", env=cli_env)

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1, "standard output carries the report and nothing else"
    report = json.loads(lines[0])
    assert report["success"] is True
    assert {name: q["status"] for name, q in report["queues"].items()} == {
        "unsigned_users": "succeeded",
        "outstanding_requests": "succeeded",
    }
    unsigned, outstanding = (
        report["queues"]["unsigned_users"],
        report["queues"]["outstanding_requests"],
    )
    assert (unsigned["eligible"], unsigned["invalid"], unsigned["populated"]) == (1, 0, 1)
    assert (outstanding["eligible"], outstanding["invalid"], outstanding["populated"]) == (2, 1, 1)
    assert "population.finished" in result.stderr, "logs go to standard error"
    with store_engine.connect() as conn:
        runs = conn.execute(text("SELECT id::text, trigger, status FROM population_runs")).all()
    assert [tuple(r) for r in runs] == [(report["run_id"], "cli", "succeeded")]

    # Same document as the scheduler's route.
    route = client.get(CRON_PATH, headers=cron_headers)
    assert route.status_code == 200
    assert shape(route.json()) == shape(report)


def test_populate_one_queue_dry_run_writes_nothing(
    cli_env: dict[str, str], two_leads: None, store_engine: Engine
) -> None:
    result = run_cli("populate", "--queue", "outstanding_requests", "--dry-run", env=cli_env)

    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["queues"]["unsigned_users"]["status"] == "skipped"
    assert report["queues"]["outstanding_requests"]["populated"] == 1
    with store_engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM outstanding_requests_queue")).scalar() == 0
        assert conn.execute(
            text("SELECT current_queue_type FROM user_call_scores WHERE user_id = 3")
        ).scalar() == ("outstanding_requests")


def test_populate_exits_75_while_another_population_holds_the_lock(
    cli_env: dict[str, str], two_leads: None, store_engine: Engine
) -> None:
    with store_engine.connect() as holder:
        holder.execute(text("SELECT pg_advisory_lock(:k)"), {"k": POPULATION_LOCK_KEY})
        holder.commit()
        try:
            result = run_cli("populate", env=cli_env)
        finally:
            holder.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": POPULATION_LOCK_KEY})
            holder.commit()

    assert result.returncode == 75, result.stderr
    assert result.stdout == ""
    assert "another population is running" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.fixture
def failing_outstanding_queue(store_engine: Engine) -> Iterator[None]:
    """A fault injected from outside the application: inserts into one queue table fail."""
    with store_engine.begin() as conn:
        conn.execute(
            text(
                "CREATE FUNCTION cq_test_refuse() RETURNS trigger LANGUAGE plpgsql AS"
                " $$ BEGIN RAISE EXCEPTION 'injected fault'; END $$"
            )
        )
        conn.execute(
            text(
                "CREATE TRIGGER cq_test_refuse BEFORE INSERT ON outstanding_requests_queue"
                " FOR EACH ROW EXECUTE FUNCTION cq_test_refuse()"
            )
        )
    try:
        yield
    finally:
        with store_engine.begin() as conn:
            conn.execute(text("DROP TRIGGER cq_test_refuse ON outstanding_requests_queue"))
            conn.execute(text("DROP FUNCTION cq_test_refuse()"))


def test_populate_exits_1_when_a_queue_fails(
    cli_env: dict[str, str], two_leads: None, failing_outstanding_queue: None
) -> None:
    result = run_cli("populate", env=cli_env)

    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    assert report["success"] is False
    assert report["queues"]["unsigned_users"]["status"] == "succeeded"
    assert report["queues"]["unsigned_users"]["populated"] == 1
    failed = report["queues"]["outstanding_requests"]
    assert failed["status"] == "failed"
    assert failed["error"] == "database error (RaiseException, sqlstate P0001)"


def test_migrate_builds_a_fresh_database(pg_server: str) -> None:
    name = f"cq_test_cli_migrate_{os.getpid()}"
    url = pg.recreate_database(pg_server, name)
    try:
        result = run_cli("migrate", env=clean_env(DATABASE_URL=url))
        assert result.returncode == 0, result.stderr
        engine = create_engine(url)
        with engine.connect() as conn:
            assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == (
                schema_head()
            )
            assert conn.execute(text("SELECT count(*) FROM user_call_scores")).scalar() == 0
        engine.dispose()
        again = run_cli("migrate", env=clean_env(DATABASE_URL=url))
        assert again.returncode == 0, again.stderr
    finally:
        admin = create_engine(pg_server, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.mark.parametrize("args", [["populate"], ["migrate"], ["serve"]])
def test_an_invalid_setting_stops_the_command_naming_it(
    args: list[str], cli_env: dict[str, str]
) -> None:
    result = run_cli(*args, env={**cli_env, "QUEUE_SIZE_LIMIT": "abc"})

    assert result.returncode == 2
    assert "QUEUE_SIZE_LIMIT" in result.stderr
    assert "abc" not in result.stderr, "error messages never echo input values"
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_production_serve_refuses_to_start_without_cron_secret(
    store_url: str, tmp_path: Path
) -> None:
    env = clean_env(DATABASE_URL=store_url, APP_ENV="production", DATA_DIR=str(tmp_path))
    result = run_cli("serve", "--port", str(free_port()), env=env, timeout=60)

    assert result.returncode == 2
    assert "CRON_SECRET" in result.stderr
    assert "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == [], "production never generates a secret"


def test_production_serve_refuses_the_embedded_database(tmp_path: Path) -> None:
    env = clean_env(APP_ENV="production", CRON_SECRET="x" * 40, DATA_DIR=str(tmp_path / "data"))
    result = run_cli("serve", "--port", str(free_port()), env=env, timeout=60)

    assert result.returncode == 2
    assert "DATABASE_URL" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "data").exists(), "no embedded database was started"


def get_population(url: str, headers: dict[str, str]) -> httpx.Response:
    """GET the population, waiting out a run the development scheduler started (409)."""
    deadline = time.monotonic() + 30
    while True:
        response = httpx.get(url, headers=headers, timeout=60)
        if response.status_code != 409 or time.monotonic() > deadline:
            return response
        time.sleep(0.5)


@pytest.mark.slow
def test_serve_runs_the_demo_on_the_embedded_database(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    env = clean_env(DATA_DIR=str(data_dir))
    port = free_port()
    base = f"http://127.0.0.1:{port}"

    proc = subprocess.Popen(
        [*command(), "serve", "--demo", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        ready = wait_ready(base, proc)
        assert ready.json()["schema"] == "current"
        secret_file = data_dir / "cron_secret"
        assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
        secret = secret_file.read_text().strip()
        auth = {"Authorization": f"Bearer {secret}"}

        populated = get_population(f"{base}{CRON_PATH}", auth)
        assert populated.status_code == 200
        assert populated.json()["success"] is True
        assert {q["populated"] for q in populated.json()["queues"].values()} == {100}
        assert httpx.post(f"{base}{CRON_PATH}", headers=auth, timeout=30).status_code == 200
        assert (data_dir / "pgdata" / "postmaster.pid").exists()

        # Calling rules and suppression (issue 14): open at any hour, as a supervisor set it;
        # ten suppressed numbers hashed with the development key kept in DATA_DIR.
        credentials = json.loads((data_dir / "demo_credentials.json").read_text())
        boss = {"Authorization": "Bearer " + credentials["tokens"]["demo-supervisor"]}
        rules = httpx.get(f"{base}/api/admin/calling-rules", headers=boss, timeout=30).json()
        assert (rules["hours"], rules["open_now"]) == ("always", True)
        listed = httpx.get(f"{base}/api/admin/suppression", headers=boss, timeout=30).json()
        assert listed == {"count": 10}
        assert stat.S_IMODE((data_dir / "suppression_key").stat().st_mode) == 0o600
        console = httpx.get(f"{base}/", follow_redirects=True)
        assert console.url.path == "/auth/login" and "Sign in" in console.text
        # The demo people sign in with the passwords the banner printed.
        signed = httpx.post(
            f"{base}/auth/login",
            data={
                "email": "agent3@example.com",
                "password": credentials["passwords"]["agent3@example.com"],
            },
        )
        assert signed.status_code == 303, signed.text
        session = {"callqueue_session": signed.cookies["callqueue_session"]}
        me = httpx.get(f"{base}/api/me", cookies=session).json()
        assert me["allowed_queues"] == ["unsigned_users"]

        # Callbacks (issue 13): demo-agent-1's own are due now and come before its queue.
        agent = {"Authorization": "Bearer " + credentials["tokens"]["demo-agent-1"]}
        mine = httpx.get(f"{base}/api/callbacks/mine", headers=agent, timeout=30).json()
        assert len(mine["items"]) == 4, mine
        booked = httpx.get(f"{base}/api/callbacks", headers=boss, timeout=30).json()
        assert booked["total"] == 8
        queue = {c["id"]: c["queue_type"] for c in mine["items"]}
        first = min(mine["items"], key=lambda c: c["due_at"])
        served = httpx.post(
            f"{base}/api/queues/{first['queue_type']}/next-user", headers=agent, timeout=30
        )
        assert served.status_code == 200, served.text
        assert served.json()["source"] == "callback"
        assert served.json()["callback_id"] in queue
    finally:
        code, err = stop(proc)
    assert code == 0, err
    assert secret in err, "development mode prints the secret and the curl"
    assert (data_dir / "suppression_key").read_text().strip() not in err, "the key is never shown"
    # The banner says where the console is, and who signs in to it with which password.
    assert f"console:      {base}/console (agents), {base}/console/supervisor" in err
    credentials = json.loads((data_dir / "demo_credentials.json").read_text())
    assert stat.S_IMODE((data_dir / "demo_credentials.json").stat().st_mode) == 0o600
    for email, password in credentials["passwords"].items():
        assert f"{email} " in err and password in err
    assert set(credentials["passwords"]) == {
        "admin@example.com",
        "supervisor@example.com",
        "agent1@example.com",
        "agent2@example.com",
        "agent3@example.com",
    }
    assert credentials["tokens"]["demo-agent-1"] in err
    assert "embedded.stopped" in err
    assert not (data_dir / "pgdata" / "postmaster.pid").exists(), "PostgreSQL was stopped"

    # A restart keeps the secret and does not seed a second time.
    proc = subprocess.Popen(
        [*command(), "serve", "--demo", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_ready(base, proc)
        auth = {"Authorization": f"Bearer {secret}"}
        assert httpx.post(f"{base}{CRON_PATH}", headers=auth, timeout=30).status_code == 200
    finally:
        code, err = stop(proc)
    assert code == 0, err
    assert "demo.skipped" in err
    assert not (data_dir / "pgdata" / "postmaster.pid").exists()


def test_agents_create_list_deactivate(cli_env: dict[str, str], store_engine: Engine) -> None:
    created = run_cli("agents", "create", "--name", "maria", "--role", "supervisor", env=cli_env)
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    assert created.stdout == token + "\n"  # the token, alone
    assert token.startswith("cq_") and len(token) > 40
    with store_engine.connect() as conn:
        stored = conn.execute(
            text(
                "SELECT a.role, t.token_hash FROM agents a JOIN api_tokens t ON t.agent_id = a.id"
                " WHERE a.name = 'maria'"
            )
        ).one()
    assert stored.role == "supervisor"
    assert token not in stored.token_hash  # only the hash is kept

    duplicate = run_cli("agents", "create", "--name", "maria", env=cli_env)
    assert duplicate.returncode == 1
    assert "already exists" in duplicate.stderr

    listed = run_cli("agents", "list", env=cli_env)
    assert listed.returncode == 0
    assert listed.stdout.split("\t")[1:4] == ["maria", "supervisor", "active"]
    assert token not in listed.stdout

    gone = run_cli("agents", "deactivate", "maria", env=cli_env)
    assert gone.returncode == 0
    assert "\tdeactivated\t" in run_cli("agents", "list", env=cli_env).stdout
    missing = run_cli("agents", "deactivate", "nobody", env=cli_env)
    assert missing.returncode == 1
    admin = run_cli("agents", "create", "--name", "ops-admin", "--role", "admin", env=cli_env)
    assert admin.returncode == 0 and admin.stdout.startswith("cq_")


def test_an_installation_starts_with_its_first_admin_from_the_command_line(
    cli_env: dict[str, str], store_engine: Engine, make_client: Callable[..., TestClient]
) -> None:
    """The README's first run: ``people create --role admin`` prints a one-time link; the
    link sets a password and signs the admin in; the admin adds an agent for one queue."""
    env = {**cli_env, "PUBLIC_URL": "https://calls.example"}
    created = run_cli("people", "create", "--email", "Root@Example.com", "--role", "admin", env=env)
    assert created.returncode == 0, created.stderr
    link = created.stdout.strip()
    assert created.stdout == link + "\n"  # the link, alone
    assert link.startswith("https://calls.example/auth/set-password?token=cqp_")
    with store_engine.connect() as conn:
        assert link.split("token=")[1] not in str(
            conn.execute(text("SELECT * FROM password_links")).all()
        )

    client = make_client()
    signed = client.post(
        "/auth/set-password",
        json={"token": link.split("token=")[1], "password": "the first admin's passphrase"},
        follow_redirects=False,
    )
    assert signed.status_code == 303
    me = client.get("/api/me").json()
    assert (me["email"], me["role"]) == ("Root@Example.com", "admin")

    agent = run_cli(
        "people",
        "create",
        "--email",
        "una@example.com",
        "--queue",
        "unsigned_users",
        "--name",
        "Una",
        env=env,
    )
    assert agent.returncode == 0, agent.stderr
    listed = run_cli("people", "list", env=env).stdout.splitlines()
    assert [line.split("\t")[1:6] for line in listed] == [
        [
            "Root@Example.com",
            "Root@Example.com",
            "admin",
            "unsigned_users,outstanding_requests",
            "active",
        ],
        ["una@example.com", "Una", "agent", "unsigned_users", "active"],
    ]
    assert listed[0].endswith("\tpassword") and listed[1].endswith("\t-")

    again = run_cli("people", "reset-password", "root@example.com", env=env)
    assert again.returncode == 0 and again.stdout.startswith("https://calls.example/")
    assert client.get("/api/me").status_code == 401  # the reset ended the session
    gone = run_cli("people", "deactivate", "una@example.com", env=env)
    assert gone.returncode == 0
    assert "\tdeactivated\t" in run_cli("people", "list", env=env).stdout
    nobody = run_cli("people", "deactivate", "nobody@example.com", env=env)
    assert nobody.returncode == 1 and "nobody has the email" in nobody.stderr
    duplicate = run_cli("people", "create", "--email", "UNA@example.com", env=env)
    assert duplicate.returncode == 1 and "already exists" in duplicate.stderr


def test_tokens_are_made_listed_and_revoked_from_the_command_line(
    cli_env: dict[str, str], make_client: Callable[..., TestClient]
) -> None:
    run_cli("people", "create", "--email", "job@example.com", "--role", "scorer", env=cli_env)
    made = run_cli(
        "tokens", "create", "--owner", "job@example.com", "--name", "nightly", env=cli_env
    )
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    assert token.startswith("cq_")
    client = make_client()
    scores = {"scores": [{"user_id": 5, "current_score": 1}]}
    bearer = {"Authorization": f"Bearer {token}"}
    assert client.put("/api/scores", json=scores, headers=bearer).status_code == 200
    listed = run_cli("tokens", "list", env=cli_env).stdout
    assert token not in listed
    token_id, name, owner = listed.splitlines()[-1].split("\t")[:3]
    assert (name, owner) == ("nightly", "job@example.com")
    assert run_cli("tokens", "revoke", token_id, env=cli_env).returncode == 0
    assert client.put("/api/scores", json=scores, headers=bearer).status_code == 401
    naive = run_cli(
        "tokens",
        "create",
        "--owner",
        "job@example.com",
        "--name",
        "x",
        "--expires",
        "2030-01-01T00:00:00",
        env=cli_env,
    )
    assert naive.returncode == 2 and "offset" in naive.stderr


def test_sweep_expires_overdue_leases(
    cli_env: dict[str, str], two_leads: None, store_engine: Engine
) -> None:
    assert run_cli("populate", env=cli_env).returncode == 0
    created = run_cli("agents", "create", "--name", "ann", env=cli_env)
    assert created.returncode == 0
    with store_engine.begin() as conn:
        entry = conn.execute(text("SELECT id FROM unsigned_users_queue")).scalar_one()
        conn.execute(
            text("UPDATE unsigned_users_queue SET status = 'assigned' WHERE id = :e"), {"e": entry}
        )
        conn.execute(
            text(
                "INSERT INTO assignments (agent_id, user_id, queue_type, source, queue_entry_id,"
                " priority_score, lease_expires_at) SELECT id, 1, 'unsigned_users', 'queue', :e,"
                " 0, now() - interval '1 second' FROM agents WHERE name = 'ann'"
            ),
            {"e": entry},
        )
    swept = run_cli("sweep", env=cli_env)
    assert swept.returncode == 0, swept.stderr
    assert swept.stdout == "1\n"
    with store_engine.connect() as conn:
        assert conn.execute(text("SELECT status FROM assignments")).scalar() == "expired"
        assert conn.execute(text("SELECT status FROM unsigned_users_queue")).scalar() == "pending"
    assert run_cli("sweep", env=cli_env).stdout == "0\n"
