"""``callqueue scores import FILE.csv [--dry-run]`` (SPEC 7.1): the scores API's semantics for a
file, run as an operator runs it (a real process), and the streaming importer in process where
a test needs to reach inside (small batches, a replica that stops answering)."""

from __future__ import annotations

import csv
import os
import pty
import subprocess
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, text

from app.intake.csv_import import _Columns, _integer, import_scores
from app.intake.scores import validate_row
from app.replica.reader import Replica as ReplicaReader
from app.services import Services
from tests.factories import Replica, add_scores
from tests.processes import command
from tests.test_cli import cli_env, run_cli

__all__ = ["cli_env"]

UNSIGNED, OUTSTANDING = "unsigned_users", "outstanding_requests"


def scores(store: Engine) -> dict[int, tuple[Any, ...]]:
    with store.connect() as conn:
        found = conn.execute(
            text(
                "SELECT user_id, current_score, base_score, time_penalty_score, current_queue_type"
                " FROM user_call_scores"
            )
        )
        return {r[0]: tuple(r[1:]) for r in found}


def read_csv(path: Path) -> list[list[str]]:
    with path.open(newline="") as handle:
        return list(csv.reader(handle))


def write(path: Path, content: str | bytes) -> Path:
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def test_a_clean_file_goes_in_and_the_same_file_again_changes_nothing(
    cli_env: dict[str, str], tmp_path: Path, replica: Replica, store_engine: Engine
) -> None:
    replica.unsigned(1)
    replica.outstanding(2)
    add_scores(store_engine, [{"user_id": 4, "current_queue_type": UNSIGNED, "current_score": 9}])
    feed = write(
        tmp_path / "scores.csv",
        "user_id,current_score,base_score,time_penalty_score\n1,5,5,0\n2,0,,3\n3,7,7,\n4,12,10,2\n",
    )

    first = run_cli("scores", "import", str(feed), env=cli_env)

    assert first.returncode == 0, first.stderr
    assert first.stdout == ("scores.csv: 4 rows: created 3, updated 1, unchanged 0, rejected 0\n")
    assert scores(store_engine) == {
        1: (5, 5, 0, UNSIGNED),
        2: (0, 0, 3, OUTSTANDING),
        3: (7, 7, 0, None),  # unknown to the replica: a lead of no queue, for now
        4: (12, 10, 2, UNSIGNED),
    }
    assert not (tmp_path / "scores.rejected.csv").exists()
    # Not a terminal: no progress bar in the log.
    assert "importing" not in first.stderr

    again = run_cli("scores", "import", str(feed), env=cli_env)
    assert again.returncode == 0
    assert again.stdout == "scores.csv: 4 rows: created 0, updated 0, unchanged 4, rejected 0\n"


def test_bad_lines_are_rejected_with_their_physical_line_numbers(
    cli_env: dict[str, str], tmp_path: Path, replica: Replica, store_engine: Engine
) -> None:
    replica.unsigned(1)
    feed = write(
        tmp_path / "feed.csv",
        "user_id,current_score\n"  # 1
        "1,5\n"  # 2
        "\n"  # 3: blank, skipped
        "2,201\n"  # 4
        "x7,3\n"  # 5
        "3\n"  # 6
        "4,5,6\n"  # 7
        "1,9\n"  # 8: user 1 again
        '"5","4"\n'  # 9: quoted integers are integers
        "6,2.5\n"  # 10
        ",3\n"  # 11
        "7, 8 \n",  # 12: spaces around a value are fine
    )

    result = run_cli("scores", "import", str(feed), env=cli_env)

    assert result.returncode == 1, result.stderr
    rejected = tmp_path / "feed.rejected.csv"
    assert result.stdout == (
        "feed.csv: 10 rows: created 3, updated 0, unchanged 0, rejected 7"
        f" (lines and reasons in {rejected})\n"
    )
    assert read_csv(rejected) == [
        ["line", "user_id", "error"],
        ["4", "2", "current_score must be an integer from 0 to 200"],
        ["5", "", "user_id must be an integer from 1 to 9223372036854775807"],
        ["6", "", "expected 2 fields as in the header, found 1"],
        ["7", "", "expected 2 fields as in the header, found 3"],
        ["8", "1", "duplicate user_id: an earlier row gives the same user"],
        ["10", "6", "current_score must be an integer from 0 to 200"],
        ["11", "", "user_id is required"],
    ]
    assert {uid: row[0] for uid, row in scores(store_engine).items()} == {1: 5, 5: 4, 7: 8}

    # Fixed and imported again: the stale list of rejections goes.
    write(feed, "user_id,current_score\n1,5\n")
    assert run_cli("scores", "import", str(feed), env=cli_env).returncode == 0
    assert not rejected.exists()


def test_a_file_with_a_byte_order_mark_and_windows_line_endings(
    cli_env: dict[str, str], tmp_path: Path, replica: Replica, store_engine: Engine
) -> None:
    replica.unsigned(1)
    feed = write(
        tmp_path / "excel.csv",
        b"\xef\xbb\xbfUser_ID , Current_Score\r\n1,5\r\n2,6\r\n\r\n3,x\xff\r\n",
    )

    result = run_cli("scores", "import", str(feed), env=cli_env)

    assert result.returncode == 1, result.stderr
    assert result.stdout.startswith(
        "excel.csv: 3 rows: created 2, updated 0, unchanged 0, rejected 1"
    )
    # Bytes that are not UTF-8 spoil their line only.
    assert (tmp_path / "excel.rejected.csv").read_text().splitlines()[1:] == [
        "5,3,current_score must be an integer from 0 to 200"
    ]
    assert scores(store_engine) == {1: (5, 0, 0, UNSIGNED), 2: (6, 0, 0, None)}


@pytest.mark.parametrize(
    "content,message",
    [
        pytest.param(
            "",
            "the file is empty: its first line must be a header, user_id,current_score[,...]",
            id="empty",
        ),
        pytest.param(
            "user_id,base_score\n1,2\n", "the header has no current_score column", id="missing"
        ),
        pytest.param(
            "current_score\n1\n", "the header has no user_id column", id="missing-user-id"
        ),
        pytest.param(
            "user_id,current_score,phone\n1,2,07700900123\n",
            "column 3 of the header is not one of user_id, current_score, base_score,"
            " outcome_penalty_score, time_penalty_score",
            id="unknown-column",
        ),
        pytest.param(
            "user_id,current_score,user_id\n1,2,1\n",
            "the header names a column twice",
            id="twice",
        ),
    ],
)
def test_a_file_that_cannot_be_imported_exits_2_and_writes_nothing(
    cli_env: dict[str, str], tmp_path: Path, store_engine: Engine, content: str, message: str
) -> None:
    feed = write(tmp_path / "bad.csv", content)

    result = run_cli("scores", "import", str(feed), env=cli_env)

    assert result.returncode == 2
    assert result.stderr.strip().endswith(f"callqueue: {feed}: {message}")
    assert result.stdout == ""
    assert scores(store_engine) == {}
    assert not (tmp_path / "bad.rejected.csv").exists()


def test_a_missing_file_exits_2(cli_env: dict[str, str], tmp_path: Path) -> None:
    result = run_cli("scores", "import", str(tmp_path / "nowhere.csv"), env=cli_env)
    assert result.returncode == 2
    assert "cannot read the file (No such file or directory)" in result.stderr


def test_a_header_alone_imports_nothing_and_exits_0(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    feed = write(tmp_path / "none.csv", "user_id,current_score\r\n")
    result = run_cli("scores", "import", str(feed), env=cli_env)
    assert result.returncode == 0
    assert result.stdout == "none.csv: 0 rows: created 0, updated 0, unchanged 0, rejected 0\n"


def test_a_dry_run_counts_and_writes_nothing(
    cli_env: dict[str, str], tmp_path: Path, replica: Replica, store_engine: Engine
) -> None:
    replica.unsigned(1)
    add_scores(store_engine, [{"user_id": 2, "current_score": 4}, {"user_id": 3}])
    feed = write(tmp_path / "try.csv", "user_id,current_score\n1,5\n2,6\n3,0\nnope,1\n")
    before = scores(store_engine)

    result = run_cli("scores", "import", str(feed), "--dry-run", env=cli_env)

    assert result.returncode == 1
    assert result.stdout == (
        "try.csv: 4 rows: created 1, updated 1, unchanged 1, rejected 1"
        " (dry run: nothing would be written)\n"
    )
    assert "line 5: user_id must be an integer" in result.stderr
    assert scores(store_engine) == before
    assert not (tmp_path / "try.rejected.csv").exists()
    with store_engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM queue_transitions")).scalar_one() == 0


def test_the_progress_bar_shows_on_a_terminal(
    cli_env: dict[str, str], tmp_path: Path, store_engine: Engine
) -> None:
    feed = write(tmp_path / "tty.csv", "user_id,current_score\n1,1\n2,2\n")
    leader, follower = pty.openpty()
    try:
        proc = subprocess.run(
            [*command(), "scores", "import", str(feed)],
            env={**cli_env, "COLUMNS": "100", "TERM": "xterm"},
            stdout=subprocess.PIPE,
            stderr=follower,
            timeout=120,
        )
        os.close(follower)
        follower = -1
        seen = b""
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
    finally:
        if follower != -1:
            os.close(follower)
        os.close(leader)
    assert proc.returncode == 0
    terminal = seen.decode(errors="replace")
    assert "importing tty.csv" in terminal
    assert "━" in terminal  # the bar itself
    assert proc.stdout == b"tty.csv: 2 rows: created 2, updated 0, unchanged 0, rejected 0\n"


# -- in process: batches, and a replica that stops answering ------------------------------------


def test_a_user_repeated_in_a_later_batch_is_rejected_where_it_repeats(
    services: Services, tmp_path: Path, replica: Replica, store_engine: Engine
) -> None:
    lines = ["user_id,current_score", *(f"{uid},{uid}" for uid in range(1, 8)), "2,50", "9,9"]
    feed = write(tmp_path / "batches.csv", "\n".join(lines) + "\n")
    progress: list[tuple[int, int]] = []

    summary = import_scores(
        services.engine,
        services.replica,
        feed,
        batch_size=3,
        on_progress=lambda done, total: progress.append((done, total)),
    )

    assert (summary.rows, summary.rejected, summary.counts.created) == (9, 1, 8)
    assert (tmp_path / "batches.rejected.csv").read_text().splitlines()[1:] == [
        "9,2,duplicate user_id: an earlier row gives the same user"
    ]
    assert scores(store_engine)[2][0] == 2
    size = feed.stat().st_size
    assert len(progress) == 4 and progress[-1] == (size, size)
    assert all(total == size for _, total in progress)


def test_an_import_stops_cleanly_when_the_replica_stops_answering(
    services: Services, tmp_path: Path, store_engine: Engine
) -> None:
    add_scores(store_engine, [{"user_id": uid} for uid in (1, 2)])
    feed = write(tmp_path / "late.csv", "user_id,current_score\n1,1\n2,2\n3,3\n4,4\n")
    nowhere = create_engine("postgresql+psycopg://postgres@127.0.0.1:1/replica")
    try:
        summary = import_scores(services.engine, ReplicaReader(nowhere), feed, batch_size=2)
    finally:
        nowhere.dispose()

    assert summary.counts.updated == 2
    assert summary.stopped == (
        "the claims replica did not answer (OperationalError) (lines from 4 on were not imported)"
    )
    assert summary.complete is False
    assert sorted(scores(store_engine)) == [1, 2]


@pytest.mark.parametrize(
    "record",
    [
        ["1", "5", ""],
        ["9223372036854775807", "200", "2147483647"],
        ["9223372036854775808", "5", ""],
        ["0", "5", ""],
        ["1", "201", ""],
        ["12", "0", "2147483648"],
        ["12", "0", "0012"],
        [" 12", "+3", "-4"],
        ["1_000", "5", ""],
        ["\u0663", "5", ""],  # an Arabic-Indic digit: int() would take it, the API would not
        ["12", "\u00b2", ""],
        ["", "5", ""],
        ["12", " ", "  "],
    ],
)
def test_a_line_reads_as_the_api_reads_the_same_row(record: list[str]) -> None:
    """The importer reads plain-digit lines directly, for speed: it must give exactly what the
    API's row check gives for the same fields, row or error."""
    names = ["user_id", "current_score", "base_score"]
    fields = {}
    for name, value in zip(names, record, strict=True):
        parsed = _integer(value)
        if parsed is not None:
            fields[name] = parsed
    assert _Columns(names).row(7, record) == validate_row(7, fields)
