"""``callqueue webhooks``: endpoints (SPEC 8.4) for the operator at the command line (audited
with no admin), and ``deliver``, which dispatches and sends everything due once, as every
server process does in the background."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any

import typer

from app.cli.base import cli, command_settings, database

if TYPE_CHECKING:
    from app.services import Services

webhooks_cli = typer.Typer(help="Webhook endpoints and delivery.", no_args_is_help=True)
cli.add_typer(webhooks_cli, name="webhooks")

EndpointId = Annotated[uuid.UUID, typer.Argument(help="the endpoint's id")]


@contextmanager
def _services() -> Iterator[Services]:
    from app.services import Services

    with database(command_settings()) as settings:
        services = Services.build(settings)
        try:
            yield services
        finally:
            services.dispose()


def _echo(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, default=str))


@webhooks_cli.command("deliver")
def deliver() -> None:
    """Dispatch new events and send every delivery due now, once; prints how many attempts."""
    with _services() as services:
        services.deliverer.report_overdue()
        made = services.deliverer.drain()
    _echo({"attempts": made})


@webhooks_cli.command("list")
def list_endpoints() -> None:
    """Every endpoint, as JSON (never a secret)."""
    from app.webhooks import endpoints

    with _services() as services, services.engine.connect() as conn:
        _echo(endpoints.listed(conn))


@webhooks_cli.command("add")
def add(
    url: Annotated[str, typer.Argument(help="where to send (https in production)")],
    event_types: Annotated[
        list[str], typer.Option("--event", "-e", help="an event type to subscribe to (repeat)")
    ],
    description: Annotated[str, typer.Option(help="what it is for")] = "",
) -> None:
    """A new endpoint; prints it with its secret, shown this once."""
    from app.webhooks import endpoints

    with _services() as services, services.engine.begin() as conn:
        made = endpoints.create(
            conn,
            services.settings,
            endpoints.Actor(None),
            url=url,
            event_types=event_types,
            description=description,
        )
    _echo(made)


@webhooks_cli.command("rotate-secret")
def rotate_secret(endpoint_id: EndpointId) -> None:
    """A new secret, printed this once; the old one signs beside it for 24 hours."""
    from app.webhooks import endpoints

    with _services() as services, services.engine.begin() as conn:
        _echo(endpoints.rotate(conn, endpoints.Actor(None), endpoint_id))


@webhooks_cli.command("enable")
def enable(endpoint_id: EndpointId) -> None:
    """Enable an endpoint (disabled by a 410, five days of failures or an admin)."""
    _set_enabled(endpoint_id, True)


@webhooks_cli.command("disable")
def disable(endpoint_id: EndpointId) -> None:
    """Stop sending to an endpoint; its events wait until it is enabled again."""
    _set_enabled(endpoint_id, False)


def _set_enabled(endpoint_id: uuid.UUID, enabled: bool) -> None:
    from app.webhooks import endpoints

    with _services() as services, services.engine.begin() as conn:
        _echo(
            endpoints.update(
                conn, services.settings, endpoints.Actor(None), endpoint_id, {"enabled": enabled}
            )
        )


@webhooks_cli.command("remove")
def remove(endpoint_id: EndpointId) -> None:
    """Delete an endpoint with its deliveries and log."""
    from app.webhooks import endpoints

    with _services() as services, services.engine.begin() as conn:
        endpoints.delete(conn, endpoints.Actor(None), endpoint_id)
    _echo({"removed": str(endpoint_id)})
