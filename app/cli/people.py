"""``callqueue agents``: agents and their API tokens."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import typer
from sqlalchemy import Engine, create_engine

from app.cli.base import (
    Role,
    cli,
    command_settings,
    database,
)
from app.errors import (
    ConfigError,
)

log = logging.getLogger(__name__)


agents_cli = typer.Typer(help="Manage agents and their API tokens.", no_args_is_help=True)
cli.add_typer(agents_cli, name="agents")


@contextmanager
def _store() -> Iterator[Engine]:
    with database(command_settings()) as settings:
        engine = create_engine(settings.direct_url or settings.require_database())
        try:
            yield engine
        finally:
            engine.dispose()


@agents_cli.command("create")
def agents_create(
    name: Annotated[str, typer.Option(help="a unique name, e.g. the person's login")],
    role: Annotated[
        Role, typer.Option(help="agent, supervisor, or scorer (may only PUT /api/scores)")
    ] = Role.AGENT,
) -> None:
    """Create an agent; prints its token, alone, on standard output (it is not shown again)."""
    from app.agents import create_agent

    if not name.strip() or len(name) > 200:
        raise ConfigError("--name must be 1 to 200 characters")
    with _store() as engine, engine.begin() as conn:
        token = create_agent(conn, name.strip(), role.value)
    typer.echo(token)


@agents_cli.command("list")
def agents_list() -> None:
    """Agents, one per line: id, name, role, active or deactivated, creation time."""
    from app.agents import list_agents

    with _store() as engine, engine.connect() as conn:
        for agent in list_agents(conn):
            state = "active" if agent.is_active else "deactivated"
            typer.echo(
                f"{agent.id}\t{agent.name}\t{agent.role}\t{state}\t{agent.created_at.isoformat()}"
            )


@agents_cli.command("deactivate")
def agents_deactivate(name: Annotated[str, typer.Argument(help="the agent's name")]) -> None:
    """Deactivate an agent: its token stops working at once; its history stays."""
    from app.agents import deactivate_agent

    with _store() as engine, engine.begin() as conn:
        deactivate_agent(conn, name)
    typer.echo(f"deactivated {name}", err=True)
