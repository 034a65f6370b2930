"""The plain SQL files the migrations install: ``migrations/sql/<folder>/``, one file per function
(or view), each a ``CREATE FUNCTION`` (``CREATE VIEW``) statement as PostgreSQL will keep it.

A migration reads only its own folder, so what it installs never changes with later work: a
migration that changes a function carries the new text in its folder (and, for its downgrade,
the text it replaces). A folder's files run in name order, and PostgreSQL checks each as it is
created: a SQL-language function or a view may only use what exists by then (PL/pgSQL bodies are
checked for syntax; the names they use are looked up when they run).

Not a migration: the migrations import it like any module.
"""

from __future__ import annotations

import re
from pathlib import Path

SQL_DIR = Path(__file__).resolve().with_name("sql")

# The folders that hold every function and view as the newest migration leaves them, oldest
# first: where a reader finds the claim path's SQL. A later folder's file replaces an earlier
# one's of the same function (a migration that changes a few functions carries only those); one
# that replaces the whole set starts the list again. tests/test_migrations.py checks that
# `alembic upgrade head` installs exactly ``current_files()``.
CURRENT = (
    "0009_promises_hold/up",
    "0011_claim_waits_holding_nothing/up",
    "0012_personal_data/up",
    "0013_webhooks/up",
    "0014_events_name_people/up",
    "0015_queue_fronts/up",
)


_DEFINES = re.compile(
    r"^\s*CREATE\s+(?:OR\s+REPLACE\s+)?(FUNCTION|VIEW)\s+(\w+)", re.IGNORECASE | re.MULTILINE
)


def files(folder: str) -> list[Path]:
    found = sorted((SQL_DIR / folder).glob("*.sql"))
    if not found:
        raise FileNotFoundError(f"no SQL files in {SQL_DIR / folder}")
    return found


def defined(path: Path) -> tuple[str, str]:
    """(kind, name) of what the file creates: ``("FUNCTION", "cq_claim")``."""
    match = _DEFINES.search(path.read_text())
    if match is None:
        raise ValueError(f"{path} creates no function or view")
    return match.group(1).upper(), match.group(2)


def current_files() -> list[Path]:
    """Every function and view as they are today: the files of CURRENT, later ones winning."""
    newest: dict[str, Path] = {}
    for folder in CURRENT:
        for path in files(folder):
            newest[defined(path)[1]] = path
    return sorted(newest.values(), key=lambda path: path.name)


def install_statements(folder: str) -> list[str]:
    return [path.read_text() for path in files(folder)]


def drop_statements(folder: str) -> list[str]:
    """Drop what the folder creates: views first (they may use nothing of ours, but functions
    may read them), each by its name (every name is one function: no overloads)."""
    made = [defined(path) for path in files(folder)]
    return [f"DROP {kind} IF EXISTS {name}" for kind, name in sorted(made, key=_views_first)]


def _views_first(item: tuple[str, str]) -> tuple[int, str]:
    kind, name = item
    return (0 if kind == "VIEW" else 1, name)
