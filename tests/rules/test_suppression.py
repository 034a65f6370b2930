"""The suppression list (SPEC 7.3): E.164 normalisation (default region GB, possible by length,
so the fiction range works), keyed hashes only, the key's handling, the supervisor API, the import
command with bad lines, the do_not_contact entry point, and the stored form never being the number.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pty
import select
import stat
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text

from app.config import Settings
from app.errors import ConfigError, InvalidInput, SuppressionKeyMismatch
from app.rules import suppression
from app.rules.suppression import (
    SuppressionList,
    add_numbers,
    normalise,
    resolve_key,
)
from tests.api.test_agents_api import assert_error, fetch_all
from tests.conftest import OWNED_TABLES, SUPPRESSION_KEY
from tests.factories import Replica, new_agent
from tests.processes import clean_env, command

SUPPRESSION = "/api/admin/suppression"
KEY = SUPPRESSION_KEY.encode()

# One number, written the ways people and systems write it.
SAME_NUMBER = [
    "07700 900123",
    "07700900123",
    "07700-900-123",
    "(07700) 900 123",
    "+44 7700 900123",
    "+447700900123",
    "+44 (0)7700 900123",
    "0044 7700 900123",
    "44 7700 900123",
    "447700900123",
    "7700 900123",
    "tel:+44-7700-900123",
    " 07700 900123 ",
    "07700 900123 ext. 12",
]
UNPARSEABLE = [
    "",
    "   ",
    "no number here",
    "123",
    "07700 9001234567",  # too long for the UK
    "7946 0000",  # a London number without its area code: local only
    "+999 1234 5678",  # no such country code
    "0" * 65,  # longer than any number
]


@pytest.fixture
def hashing() -> SuppressionList:
    return SuppressionList(KEY)


def test_every_written_form_of_a_number_has_one_key(hashing: SuppressionList) -> None:
    assert {normalise(p) for p in SAME_NUMBER} == {"+447700900123"}
    keys = {hashing.phone_key(p) for p in SAME_NUMBER}
    assert len(keys) == 1
    [key] = keys
    assert key is not None and len(key) == 64 and set(key) <= set("0123456789abcdef")
    # Keyed: neither the plain SHA-256 of the number nor the key of another list.
    assert key != hashlib.sha256(b"+447700900123").hexdigest()
    assert SuppressionList(b"another key").phone_key("07700 900123") != key
    # The next number is another key; the fiction range's ends and other countries parse.
    assert hashing.phone_key("07700 900124") not in (None, key)
    assert normalise("07700 900000") == "+447700900000"
    assert normalise("07700 900999") == "+447700900999"
    assert normalise("+1 (212) 555-0123") == "+12125550123"
    assert normalise("020 7946 0000") == "+442079460000"


@pytest.mark.parametrize("phone", [*UNPARSEABLE, None])
def test_unparseable_numbers_have_no_key(hashing: SuppressionList, phone: str | None) -> None:
    assert hashing.phone_key(phone) is None


# -- the key -------------------------------------------------------------------------------------


def test_the_key_comes_from_the_settings_or_development_data_dir(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    assert resolve_key(make_settings()) == KEY
    with pytest.raises(ConfigError) as caught:
        resolve_key(make_settings(suppression_key=None, app_env="production"))
    assert "SUPPRESSION_KEY" in caught.value.detail

    dev = make_settings(suppression_key=None, app_env="development", data_dir=tmp_path / "data")
    key = resolve_key(dev)
    path = tmp_path / "data" / "suppression_key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(key) >= 32 and resolve_key(dev) == key, "kept, never replaced"
    # A key written first by another process is the one every process uses.
    other = tmp_path / "other"
    other.mkdir()
    (other / "suppression_key").write_text("written-by-the-first-process-" + "k" * 20 + "\n")
    assert resolve_key(make_settings(suppression_key=None, data_dir=other)) == (
        b"written-by-the-first-process-" + b"k" * 20
    )
    assert sorted(p.name for p in other.iterdir()) == ["suppression_key"], "no temp file left"


def test_production_refuses_to_start_without_a_strong_key(
    make_settings: Callable[..., Settings],
) -> None:
    strong = "s" * 32
    for key in (None, "short"):
        with pytest.raises(ConfigError) as caught:
            make_settings(
                app_env="production", cron_secret="c" * 40, suppression_key=key
            ).check_server_ready()
        assert "SUPPRESSION_KEY" in caught.value.detail
        assert "short" not in caught.value.detail
    make_settings(
        app_env="production", cron_secret="c" * 40, suppression_key=strong
    ).check_server_ready()


def test_a_process_with_another_key_is_refused(
    hashing: SuppressionList, store_engine: Engine
) -> None:
    with store_engine.begin() as conn:
        hashing.add(conn, ["07700 900123"], "api", None)
    stranger = SuppressionList(b"not the key the list was built with")
    with store_engine.begin() as conn, pytest.raises(SuppressionKeyMismatch) as caught:
        stranger.add(conn, ["07700 900124"], "api", None)
    assert "SUPPRESSION_KEY" in caught.value.detail
    assert fetch_all(store_engine, "SELECT source FROM suppressed_numbers") == [{"source": "api"}]


# -- the list ------------------------------------------------------------------------------------


def test_add_remove_and_their_audit(hashing: SuppressionList, store_engine: Engine) -> None:
    boss = new_agent(store_engine, "boss", "supervisor")
    with store_engine.begin() as conn:
        added = hashing.add(conn, ["07700 900123", "+447700900123", "07700 900124"], "api", boss.id)
    assert (added.added, added.already_present) == (2, 0), "two forms of one number are one"
    with store_engine.begin() as conn:
        again = hashing.add(conn, ["0044 7700 900124", "07700 900125"], "api", boss.id)
        assert (again.added, again.already_present) == (1, 1)
        assert suppression.count(conn) == 3
        removed = hashing.remove(conn, ["+44 7700 900123", "07700 900999"], "api", boss.id)
        assert (removed.removed, removed.not_present) == (1, 1)
        assert suppression.count(conn) == 2
    audit = fetch_all(
        store_engine,
        "SELECT action, phone_hash, source, agent_id FROM suppression_changes ORDER BY id",
    )
    k = hashing.phone_key
    assert [(a["action"], a["phone_hash"], a["source"], a["agent_id"]) for a in audit] == [
        ("add", k("07700 900123"), "api", boss.id),
        ("add", k("07700 900124"), "api", boss.id),
        ("add", k("07700 900125"), "api", boss.id),
        ("remove", k("07700 900123"), "api", boss.id),
    ]


def test_an_unparseable_number_in_a_list_changes_nothing(
    hashing: SuppressionList, store_engine: Engine
) -> None:
    with store_engine.begin() as conn, pytest.raises(InvalidInput) as caught:
        hashing.add(conn, ["07700 900123", "not a number", "07700 900124", "123"], "api", None)
    assert caught.value.fields == [
        {"loc": ["body", "phones", 1], "msg": "not a possible phone number"},
        {"loc": ["body", "phones", 3], "msg": "not a possible phone number"},
    ]
    assert fetch_all(store_engine, "SELECT * FROM suppressed_numbers") == []
    assert fetch_all(store_engine, "SELECT * FROM suppression_changes") == []


def test_do_not_contact_adds_the_users_number(
    hashing: SuppressionList, store_engine: Engine
) -> None:
    """The completion path's entry point: the hash of the number read from the replica."""
    alice = new_agent(store_engine, "alice")
    with store_engine.begin() as conn:
        key = hashing.phone_key("+44 7700 900321")
        assert add_numbers(conn, [key] if key else [], "do_not_contact", alice.id) == 1
        assert add_numbers(conn, [key] if key else [], "do_not_contact", alice.id) == 0
        assert add_numbers(conn, [], "do_not_contact", alice.id) == 0
    assert fetch_all(store_engine, "SELECT source, added_by FROM suppressed_numbers") == [
        {"source": "do_not_contact", "added_by": alice.id}
    ]
    with pytest.raises(ValueError), store_engine.begin() as conn:
        add_numbers(conn, [key or ""], "somewhere", None)


def test_a_number_shared_by_two_users_is_suppressed_for_both(
    hashing: SuppressionList, store_engine: Engine, replica: Replica, replica_engine: Engine
) -> None:
    """The replica's numbers, hashed as every hand-out path hashes the number about to be handed
    out, against the list (tests/callbacks/test_suppressed_everywhere.py drives the hand-outs)."""
    replica.unsigned(1, phone="07700 900555")
    replica.unsigned(2, phone="+44 (0)7700 900-555")
    replica.unsigned(3, phone="07700 900556")
    with store_engine.begin() as conn:
        hashing.add(conn, ["0044 7700 900555"], "api", None)
    with replica_engine.connect() as conn:
        phones = dict(conn.execute(text("SELECT id, phone_number FROM users")).all())
    with store_engine.connect() as conn:
        listed = set(conn.execute(text("SELECT phone_hash FROM suppressed_numbers")).scalars())
    # The hand-out (cq_hand_out) refuses a number whose key is on the list: both written forms
    # of the shared number have the listed key; the other number and no number do not.
    blocked = {user_id: hashing.phone_key(phone) in listed for user_id, phone in phones.items()}
    assert blocked == {1: True, 2: True, 3: False}
    assert hashing.phone_key(None) is None


# -- the routes ----------------------------------------------------------------------------------


def test_the_supervisor_api(client: TestClient, store_engine: Engine) -> None:
    boss = new_agent(store_engine, "boss", "supervisor")
    agent = new_agent(store_engine, "alice")
    assert client.get(SUPPRESSION, headers=boss.auth).json() == {"count": 0}

    added = client.post(
        SUPPRESSION,
        json={"phones": ["07700 900123", "+447700900123", "07700 900124"]},
        headers=boss.auth,
    )
    assert added.status_code == 200, added.text
    assert added.json() == {"added": 2, "already_present": 0, "count": 2}
    assert client.get(SUPPRESSION, headers=boss.auth).json() == {"count": 2}

    removed = client.request(
        "DELETE",
        SUPPRESSION,
        json={"phones": ["0044 7700 900124", "07700 900999"]},
        headers=boss.auth,
    )
    assert removed.status_code == 200, removed.text
    assert removed.json() == {"removed": 1, "not_present": 1, "count": 1}
    assert [
        r["agent_id"] for r in fetch_all(store_engine, "SELECT * FROM suppression_changes")
    ] == [boss.id] * 3

    for method in ("GET", "POST", "DELETE"):
        body = None if method == "GET" else {"phones": ["07700 900123"]}
        assert_error(client.request(method, SUPPRESSION, json=body), 401, "Unauthorized")
        assert_error(
            client.request(method, SUPPRESSION, json=body, headers=agent.auth), 403, "Forbidden"
        )
    assert client.get(SUPPRESSION, headers=boss.auth).json() == {"count": 1}


@pytest.mark.parametrize(
    "body",
    [
        {"phones": ["07700 900123", "07700 9999 H0stile"]},
        {"phones": []},
        {"phones": ["07700 900777"] * 10_001},
        {"phones": ["0" * 65]},
        {"phones": [7700900777]},
        {"phones": "07700 900777"},
        {"phones": ["07700 900777"], "H0stile": 1},
        {},
    ],
    ids=["unparseable", "empty", "too-many", "too-long", "number", "string", "extra", "missing"],
)
def test_bad_bodies_are_422_echo_nothing_and_write_nothing(
    client: TestClient, store_engine: Engine, body: dict[str, object]
) -> None:
    boss = new_agent(store_engine, "boss", "supervisor")
    for method in ("POST", "DELETE"):
        response = client.request(method, SUPPRESSION, json=body, headers=boss.auth)
        assert_error(response, 422, "ValidationError")
        assert "H0stile" not in response.text
        assert "7700" not in response.text, "error bodies never echo a number"
    assert fetch_all(store_engine, "SELECT * FROM suppressed_numbers") == []
    assert fetch_all(store_engine, "SELECT * FROM suppression_changes") == []


def test_an_unparseable_number_is_named_by_its_position(
    client: TestClient, store_engine: Engine
) -> None:
    boss = new_agent(store_engine, "boss", "supervisor")
    response = client.post(
        SUPPRESSION, json={"phones": ["07700 900123", "nope", "07700 900124"]}, headers=boss.auth
    )
    assert response.json()["fields"] == [
        {"loc": ["body", "phones", 1], "msg": "not a possible phone number"}
    ]


# -- the import command --------------------------------------------------------------------------


@pytest.fixture
def cli_env(store_url: str, replica_url: str) -> dict[str, str]:
    return clean_env(
        DATABASE_URL=store_url,
        REPLICA_DATABASE_URL=replica_url,
        APP_ENV="test",
        SUPPRESSION_KEY=SUPPRESSION_KEY,
    )


def run_import(path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*command(), "suppression", "import", str(path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


PLAIN_FILE = (
    "07700 900101\n"  # 1
    "+44 7700 900102\n"  # 2
    "\n"  # 3: blank, skipped
    "0044 7700 900101\n"  # 4: the first number again
    "not a phone number\n"  # 5
    "07700 900103\n"  # 6
    "123\n"  # 7
    "  (07700) 900-104  \n"  # 8
    "07700 9001234567\n"  # 9: too long
)


def test_import_a_file_with_bad_lines(
    cli_env: dict[str, str], store_engine: Engine, tmp_path: Path
) -> None:
    path = tmp_path / "dnc.txt"
    path.write_text(PLAIN_FILE)
    result = run_import(path, cli_env)

    assert result.returncode == 1, result.stderr
    assert result.stdout == "added 4, already present 1, unparseable 3\n"
    assert "unparseable numbers on lines 5, 7, 9" in result.stderr
    assert "7700" not in result.stderr and "not a phone" not in result.stderr
    hashing = SuppressionList(KEY)
    with store_engine.connect() as conn:
        stored = set(conn.execute(text("SELECT phone_hash FROM suppressed_numbers")).scalars())
        sources = set(conn.execute(text("SELECT source FROM suppression_changes")).scalars())
    assert stored == {hashing.phone_key(f"07700 900{n}") for n in (101, 102, 103, 104)}
    assert sources == {"import"}

    # Again: nothing new; the good numbers are all already present.
    again = run_import(path, cli_env)
    assert again.returncode == 1
    assert again.stdout == "added 0, already present 5, unparseable 3\n"


def test_import_a_csv_with_a_phone_column(
    cli_env: dict[str, str], store_engine: Engine, tmp_path: Path
) -> None:
    path = tmp_path / "dnc.csv"
    path.write_text(
        "\ufeffname,Phone,reason\n"  # line 1: a BOM and a capitalised header, as Excel writes
        'Ann Example,07700 900201,"asked, twice"\n'  # 2
        "Bob Example,+447700900202,\n"  # 3
        ",,\n"  # 4: an empty row, skipped
        "Cat Example,,asked\n"  # 5: no number
        "Dan Example,07700 900201,again\n"  # 6: the first number again
        '"Eve, Example",garbage,x\n'  # 7
    )
    result = run_import(path, cli_env)
    assert result.returncode == 1, result.stderr
    assert result.stdout == "added 2, already present 1, unparseable 2\n"
    assert "unparseable numbers on lines 5, 7" in result.stderr

    clean = tmp_path / "clean.csv"
    clean.write_text("phone\n07700 900203\n07700 900201\n")
    ok = run_import(clean, cli_env)
    assert (ok.returncode, ok.stdout) == (0, "added 1, already present 1, unparseable 0\n")
    with store_engine.connect() as conn:
        assert suppression.count(conn) == 3


def test_an_unreadable_file_is_exit_2(cli_env: dict[str, str], tmp_path: Path) -> None:
    for path in (tmp_path / "missing.txt", tmp_path):
        result = run_import(path, cli_env)
        assert result.returncode == 2, result.stderr
        assert "cannot be read" in result.stderr and "Traceback" not in result.stderr


def test_a_development_key_is_kept_in_data_dir_and_guarded(
    store_url: str, store_engine: Engine, tmp_path: Path
) -> None:
    """Without SUPPRESSION_KEY outside production, the key lives in DATA_DIR; a command with
    another DATA_DIR (another key) against the same database is refused, not silently wrong."""
    path = tmp_path / "one.txt"
    path.write_text("07700 900301\n")
    env = clean_env(DATABASE_URL=store_url, APP_ENV="development", DATA_DIR=str(tmp_path / "a"))
    first = run_import(path, env)
    assert first.returncode == 0, first.stderr
    assert stat.S_IMODE((tmp_path / "a" / "suppression_key").stat().st_mode) == 0o600

    other = run_import(path, {**env, "DATA_DIR": str(tmp_path / "b")})
    assert other.returncode == 1
    assert "SUPPRESSION_KEY is not the key" in other.stderr
    with store_engine.connect() as conn:
        assert suppression.count(conn) == 1


def test_a_progress_bar_on_a_terminal(
    cli_env: dict[str, str], store_engine: Engine, tmp_path: Path
) -> None:
    path = tmp_path / "many.txt"
    path.write_text("".join(f"07700 900{n % 1000:03d}\n" for n in range(20_000)))
    main, child = pty.openpty()
    proc = subprocess.Popen(
        [*command(), "suppression", "import", str(path)],
        env={**cli_env, "TERM": "xterm", "COLUMNS": "100"},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=child,
        text=True,
    )
    os.close(child)
    seen = b""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        ready, _, _ = select.select([main], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(main, 65536)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
        elif proc.poll() is not None:
            break
    out, _ = proc.communicate(timeout=60)
    os.close(main)
    assert proc.returncode == 0, seen[-2000:]
    assert out == "added 1000, already present 19000, unparseable 0\n"
    assert b"importing" in seen and b"\x1b[" in seen, "a rich bar was drawn on the terminal"


def test_import_file_reports_progress_in_bytes(
    hashing: SuppressionList, store_engine: Engine, tmp_path: Path
) -> None:
    path = tmp_path / "many.txt"
    path.write_text("".join(f"07700 900{n % 1000:03d}\n" for n in range(12_000)))
    seen: list[int] = []
    result = hashing.import_file(store_engine, path, progress=seen.append)
    assert (result.added, result.already_present, result.unparseable) == (1000, 11_000, 0)
    assert seen == sorted(seen) and seen[-1] == path.stat().st_size


# -- the stored form -----------------------------------------------------------------------------


def test_no_owned_table_holds_the_numbers(
    client: TestClient,
    store_engine: Engine,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Every way in (API, import, do_not_contact): then the text of every row of every table the
    service owns is searched for the numbers' digits, in every form they were given."""
    boss = new_agent(store_engine, "boss", "supervisor")
    hashing = SuppressionList(KEY)
    with caplog.at_level(logging.DEBUG):
        assert (
            client.post(
                SUPPRESSION, json={"phones": ["07700 900401", "+44 7700 900402"]}, headers=boss.auth
            ).status_code
            == 200
        )
        path = tmp_path / "dnc.txt"
        path.write_text("0044 7700 900403\n07700900404\n")
        hashing.import_file(store_engine, path)
        with store_engine.begin() as conn:
            add_numbers(conn, [hashing.phone_key("07700 900405") or ""], "do_not_contact", boss.id)
            hashing.remove(conn, ["07700 900402"], "api", boss.id)
    # Ten digits: a random hex string (a token's hash, a uuid) holds one by chance about once in
    # 10^11; the national, international and E.164 forms all contain them.
    digits = [f"7700900{n}" for n in range(401, 406)]
    with store_engine.connect() as conn:
        assert suppression.count(conn) == 4
        for table in OWNED_TABLES:
            rows = conn.execute(text(f"SELECT t::text FROM {table} t")).scalars().all()
            dump = "\n".join(rows).replace(" ", "").replace("-", "")
            for number in digits:
                assert number not in dump, (table, number)
    assert not any(number in caplog.text.replace(" ", "") for number in digits)


def metric(client: TestClient, series: str) -> float:
    """One series' value from /metrics (0 before it first appears)."""
    for line in client.get("/metrics").text.splitlines():
        name, _, value = line.rpartition(" ")
        if name == series:
            return float(value)
    return 0.0


def test_the_list_in_the_metrics(client: TestClient, store_engine: Engine) -> None:
    boss = new_agent(store_engine, "boss", "supervisor")
    added = 'callqueue_suppression_changes_total{action="add",source="api"}'
    removed = 'callqueue_suppression_changes_total{action="remove",source="api"}'
    before = (metric(client, added), metric(client, removed))
    client.post(SUPPRESSION, json={"phones": ["07700 900601", "07700 900602"]}, headers=boss.auth)
    client.request("DELETE", SUPPRESSION, json={"phones": ["07700 900601"]}, headers=boss.auth)
    assert metric(client, "callqueue_suppressed_numbers") == 1
    assert (metric(client, added), metric(client, removed)) == (before[0] + 2, before[1] + 1)
