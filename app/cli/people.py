"""``callqueue people``, ``callqueue tokens`` and ``callqueue agents``: who may sign in, their
API tokens, and named agents with a token (SPEC 6, 8.2). Changes made here are audited with no
actor: the operator at the command line."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Annotated

import typer
from sqlalchemy import Connection, Engine, create_engine

from app.cli.base import Role, cli, command_settings, database
from app.config import Settings
from app.errors import ConfigError, NotFound
from app.vocabulary import QueueType

log = logging.getLogger(__name__)

agents_cli = typer.Typer(
    help="Named agents with an API token (scripts, machines).", no_args_is_help=True
)
cli.add_typer(agents_cli, name="agents")
people_cli = typer.Typer(help="People who sign in to the console.", no_args_is_help=True)
cli.add_typer(people_cli, name="people")
tokens_cli = typer.Typer(help="API tokens for machines and scripts.", no_args_is_help=True)
cli.add_typer(tokens_cli, name="tokens")


@contextmanager
def _store() -> Iterator[tuple[Settings, Engine]]:
    with database(command_settings()) as settings:
        engine = create_engine(settings.direct_url or settings.require_database())
        try:
            yield settings, engine
        finally:
            engine.dispose()


# -- agents: a name and a token ------------------------------------------------------------------


@agents_cli.command("create")
def agents_create(
    name: Annotated[str, typer.Option(help="a unique name, e.g. the person's login")],
    role: Annotated[
        Role,
        typer.Option(help="agent, supervisor, admin, or scorer (may only PUT /api/scores)"),
    ] = Role.AGENT,
) -> None:
    """Create an agent; prints its token, alone, on standard output (it is not shown again)."""
    from app.auth.people import create_agent

    if not name.strip() or len(name) > 200:
        raise ConfigError("--name must be 1 to 200 characters")
    with _store() as (_, engine), engine.begin() as conn:
        token = create_agent(conn, name.strip(), role.value)
    typer.echo(token)


@agents_cli.command("list")
def agents_list() -> None:
    """Agents, one per line: id, name, role, active or deactivated, creation time."""
    from app.auth.people import list_agents

    with _store() as (_, engine), engine.connect() as conn:
        for agent in list_agents(conn):
            state = "active" if agent.is_active else "deactivated"
            typer.echo(
                f"{agent.id}\t{agent.name}\t{agent.role}\t{state}\t{agent.created_at.isoformat()}"
            )


@agents_cli.command("deactivate")
def agents_deactivate(name: Annotated[str, typer.Argument(help="the agent's name")]) -> None:
    """Deactivate an agent: its tokens and sessions stop working at once; its history stays."""
    from app.auth.people import deactivate_agent

    with _store() as (_, engine), engine.begin() as conn:
        deactivate_agent(conn, name)
    typer.echo(f"deactivated {name}", err=True)


# -- people: email, role, queues, a password or the identity provider ----------------------------


def _queues(values: list[QueueType] | None) -> list[str]:
    return [str(q) for q in values] if values else [str(q) for q in QueueType]


@people_cli.command("create")
def people_create(
    email: Annotated[str, typer.Option(help="their email: how they sign in")],
    role: Annotated[Role, typer.Option(help="agent, supervisor, admin or scorer")] = Role.AGENT,
    queue: Annotated[
        list[QueueType] | None,
        typer.Option(
            "--queue", "--queues", help="a queue they may work (repeat for both; default both)"
        ),
    ] = None,
    name: Annotated[str | None, typer.Option(help="the name the console shows")] = None,
) -> None:
    """Add a person; prints their one-time set-password link (valid 72 hours), alone, on
    standard output. On a new installation, the first ``--role admin`` is how it starts."""
    from app.auth.people import create_person

    with _store() as (settings, engine), engine.begin() as conn:
        created = create_person(
            conn,
            None,
            email=email,
            display_name=name or "",
            role=role.value,
            allowed_queues=_queues(queue),
            address=None,
            base_url=settings.base_url if settings.password_login else None,
        )
    typer.echo(f"created {created.person.email} ({created.person.role})", err=True)
    if created.link:
        typer.echo(created.link)
    else:
        typer.echo("passwords are off: they sign in with the identity provider", err=True)


@people_cli.command("list")
def people_list() -> None:
    """People, one per line: id, email, name, role, queues, active or deactivated, and how they
    sign in."""
    from app.auth.people import list_people

    with _store() as (_, engine), engine.connect() as conn:
        for p in list_people(conn):
            state = "active" if p.is_active else "deactivated"
            ways = [
                w
                for w, on in (("password", p.has_password), ("oidc", p.has_identity_provider))
                if on
            ]
            queues = ",".join(p.allowed_queues)
            typer.echo(
                f"{p.id}\t{p.email or '-'}\t{p.display_name}\t{p.role}\t{queues}"
                f"\t{state}\t{','.join(ways) or '-'}"
            )


def _find(conn: Connection, email: str) -> int:
    from app.auth.people import find_by_email

    person = find_by_email(conn, email)
    if person is None:
        raise NotFound(f"nobody has the email {email}")
    return person.id


@people_cli.command("deactivate")
def people_deactivate(email: Annotated[str, typer.Argument(help="their email")]) -> None:
    """Deactivate a person: their sessions end and their tokens stop working at once; their
    history stays."""
    from app.auth.people import deactivate_agent

    with _store() as (_, engine), engine.begin() as conn:
        _find(conn, email)
        deactivate_agent(conn, email)
    typer.echo(f"deactivated {email}", err=True)


@people_cli.command("reset-password")
def people_reset_password(email: Annotated[str, typer.Argument(help="their email")]) -> None:
    """Clear a person's password and end their sessions; prints a new one-time link."""
    from app.auth.people import reset_password

    with _store() as (settings, engine):
        if not settings.password_login:
            raise ConfigError("passwords are off (PASSWORD_LOGIN=false)")
        with engine.begin() as conn:
            link = reset_password(
                conn, None, _find(conn, email), address=None, base_url=settings.base_url
            )
    typer.echo(link)


# -- tokens --------------------------------------------------------------------------------------


@tokens_cli.command("list")
def tokens_list() -> None:
    """API tokens, one per line: id, name, owner, created, expires, revoked (never the token)."""
    from app.auth.api_tokens import list_tokens

    with _store() as (_, engine), engine.connect() as conn:
        for t in list_tokens(conn):
            expires = t.expires_at.isoformat() if t.expires_at else "never"
            revoked = t.revoked_at.isoformat() if t.revoked_at else "live"
            typer.echo(
                f"{t.id}\t{t.name}\t{t.owner}\t{t.created_at.isoformat()}\t{expires}\t{revoked}"
            )


@tokens_cli.command("create")
def tokens_create(
    owner: Annotated[str, typer.Option(help="the email (or agent name) of the person it acts as")],
    name: Annotated[str, typer.Option(help="what uses it, e.g. scorer")],
    expires: Annotated[
        datetime | None, typer.Option(help="when it stops working (ISO 8601, with an offset)")
    ] = None,
) -> None:
    """Create an API token; prints it, alone, on standard output (it is not shown again)."""
    from sqlalchemy import text

    from app.auth.api_tokens import create_token

    if expires is not None and expires.tzinfo is None:
        raise ConfigError("--expires needs an offset, e.g. 2027-01-31T18:00:00+00:00")
    with _store() as (_, engine), engine.begin() as conn:
        owner_id = conn.execute(
            text("SELECT id FROM agents WHERE lower(email) = lower(:o) OR name = :o"), {"o": owner}
        ).scalar()
        if owner_id is None:
            raise NotFound(f"nobody has the email or name {owner}")
        _, token = create_token(
            conn, None, owner_id=owner_id, name=name, expires_at=expires, address=None
        )
    typer.echo(token)


@tokens_cli.command("revoke")
def tokens_revoke(
    token_id: Annotated[int, typer.Argument(help="the token's id (tokens list)")],
) -> None:
    """Revoke a token: the next request with it is refused."""
    from app.auth.api_tokens import revoke_token

    with _store() as (_, engine), engine.begin() as conn:
        revoke_token(conn, None, token_id, address=None)
    typer.echo(f"revoked token {token_id}", err=True)
