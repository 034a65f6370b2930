"""Request dependencies: the process's services and authentication."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.errors import Unauthorized
from app.services import Services

bearer = HTTPBearer(auto_error=False)


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


def require_cron_secret(
    services: ServicesDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> None:
    """Bearer CRON_SECRET, compared in constant time. With no secret configured, nobody passes."""
    secret = services.settings.cron_secret
    if credentials is None or secret is None:
        raise Unauthorized("a valid cron bearer token is required")
    expected = secret.get_secret_value().encode()
    if not hmac.compare_digest(credentials.credentials.encode(), expected):
        raise Unauthorized("a valid cron bearer token is required")
