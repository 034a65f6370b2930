"""The credentials before the body (SPEC 8.1).

FastAPI reads and parses a route's body before it solves the route's dependencies, the
authentication among them: an anonymous request to ``PUT /api/scores`` would have its 8 MiB read
and parsed before being told 401. ``CredentialsFirstRoute`` turns that round for every route that
takes a body: the route's credential dependencies (those that read a security scheme, such as
``SupervisorDep``, ``ScorerDep`` or the dashboards' bearer) run first, and only then does FastAPI
read the body, so an anonymous or wrongly-roled request within the cap is 401/403 without a byte
of its body read (the middleware in ``app.api.body_limit`` answered any declared
``Content-Length`` over the cap before this). The authentication is not run twice:
``current_agent`` keeps the agent it found for the rest of the request.

The dependencies run first are the route's own and its router's; any given to
``include_router`` are not (the service gives none there). A route that takes a body without
this class fails ``tests/api/test_credentials_before_body.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.dependencies.models import Dependant
from fastapi.dependencies.utils import solve_dependencies
from fastapi.routing import APIRoute
from fastapi.security.base import SecurityBase


def reads_credentials(dependant: Dependant) -> bool:
    """Whether a dependency is, or depends on, a security scheme (a bearer token's reader)."""
    return isinstance(dependant.call, SecurityBase) or any(
        reads_credentials(sub) for sub in dependant.dependencies
    )


class CredentialsFirstRoute(APIRoute):
    def credential_checks(self) -> Dependant | None:
        """The route's dependencies that check who is calling, when the route takes a body."""
        if self.body_field is None:
            return None
        checks = [sub for sub in self.dependant.dependencies if reads_credentials(sub)]
        return Dependant(dependencies=checks, path=self.path_format) if checks else None

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        checks = self.credential_checks()
        if checks is None:
            return handler

        async def credentials_then_body(request: Request) -> Response:
            # A refusal (401, 403) is raised from here; a malformed header is left for the
            # route's own solving to report, with the rest of the request's errors.
            await solve_dependencies(
                request=request,
                dependant=checks,
                dependency_overrides_provider=request.app,
                async_exit_stack=request.scope["fastapi_inner_astack"],
                embed_body_fields=False,
            )
            return await handler(request)

        return credentials_then_body
