"""Signing in and out (SPEC 8.2): the sign-in page, passwords, set-password links, and the
company's identity provider. Each way in ends in the same place: a new session
(app/auth/sessions.py), its token in the ``callqueue_session`` cookie, and a 303 to the console.

Forms and JSON are both accepted. A form (a browser) that fails gets the page again with one
sentence and the same status a JSON client gets. Every POST here that a browser sends with an
``Origin`` must come from PUBLIC_URL's (a forged sign-in form on another site would otherwise
sign the victim's browser into the forger's account).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import parse_qsl

import httpx2
from authlib.common.errors import AuthlibBaseError
from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse
from joserfc.errors import JoseError
from pydantic import BaseModel, ValidationError
from sqlalchemy import Connection, Engine

from app.api.deps import credential_of, in_thread, origin_allowed
from app.api.people import address_of
from app.api.people_schemas import SetPasswordIn, SignInIn
from app.auth import audit, passwords
from app.auth.identity import Via
from app.auth.oidc import STATE_COOKIE, FlowStore, IdentityProvider, match_person
from app.auth.sessions import COOKIE, end_session, start_session
from app.auth.tokens import csrf_token, same
from app.config import Settings
from app.console.pages import PageResponse, page_frame
from app.errors import (
    BadSignInRequest,
    CallqueueError,
    CsrfRejected,
    InvalidInput,
    NotFound,
    SignInLocked,
    Unauthorized,
)
from app.services import Services

router = APIRouter(prefix="/auth", include_in_schema=False)
log = logging.getLogger(__name__)

FORM = "application/x-www-form-urlencoded"
# Where a sign-in may send the browser afterwards: the console's own pages, nothing else.
_NEXT = re.compile(r"^/console(/[a-z-]+)?$")

M = TypeVar("M", bound=BaseModel)


def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def _is_form(request: Request) -> bool:
    return request.headers.get("content-type", "").split(";")[0].strip().lower() == FORM


async def _read(request: Request, model: type[M]) -> M:
    """The body, a form or JSON, as ``model``: 422 when it does not fit, 415 for another type."""
    body = await request.body()
    if _is_form(request):
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidInput("the form is not UTF-8", ["body"]) from None
        data: Any = dict(parse_qsl(text, keep_blank_values=True, max_num_fields=10))
        data.pop("next", None)
    else:
        try:
            data = json.loads(body)
        except ValueError:
            raise InvalidInput("the body is neither a form nor JSON", ["body"]) from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise RequestValidationError(
            [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_input=False)]
        ) from None


def _check_origin(request: Request, settings: Settings) -> None:
    if not origin_allowed(request, settings):
        raise CsrfRejected("this form was sent from another origin than the service's")


def _next_page(request: Request) -> str:
    wanted = request.query_params.get("next", "")
    return wanted if _NEXT.match(wanted) else "/console"


def cookie_is_secure(settings: Settings) -> bool:
    """Secure always, except in development over plain HTTP (a laptop's http://127.0.0.1)."""
    return not (settings.app_env == "development" and settings.base_url.startswith("http://"))


def _signed_in(settings: Settings, token: str, to: str) -> RedirectResponse:
    """303 to the console with the session's cookie: HttpOnly, SameSite=Lax, Path=/, Secure.
    No Max-Age: the cookie goes when the browser closes (a shared desk's next user finds no
    session), and the server ends the session anyway at its idle or absolute timeout."""
    response = RedirectResponse(to, status_code=303, headers={"Cache-Control": "no-store"})
    response.set_cookie(
        COOKIE,
        token,
        path="/",
        httponly=True,
        samesite="lax",
        secure=cookie_is_secure(settings),
    )
    return response


def _password_session(
    request: Request,
    settings: Settings,
    find: Callable[[Connection, str | None], int],
) -> Callable[[Connection], str]:
    """The work of a password sign-in (a sign-in, or a set-password link): the person ``find``
    answers, and a session started for them; the new session's token."""
    address = address_of(request)
    user_agent = request.headers.get("user-agent")

    def work(conn: Connection) -> str:
        return start_session(
            conn,
            find(conn, address),
            method="password",
            max_hours=settings.session_max_hours,
            user_agent=user_agent,
            address=address,
        )

    return work


def _transaction(engine: Engine, work: Callable[[Connection], str]) -> str:
    """``work`` in a transaction that commits whatever it answers: a refused sign-in's failure
    and its audit are kept, the refusal raised after the commit."""
    with engine.connect() as conn:
        try:
            result = work(conn)
        except CallqueueError:
            conn.commit()
            raise
        conn.commit()
    return result


# -- pages ---------------------------------------------------------------------------------------


def _login_page(
    settings: Settings,
    *,
    message: str | None = None,
    status: int = 200,
    ended: bool = False,
    next_page: str = "/console",
    headers: dict[str, str] | None = None,
) -> PageResponse:
    context = {
        **page_frame("signin"),
        "password_login": settings.password_login,
        "provider_name": settings.oidc_provider_name if settings.oidc_on else None,
        "message": message,
        "ended": ended,
        "next_page": next_page,
    }
    response = PageResponse("login.html", context, status_code=status)
    response.headers.update(headers or {})
    return response


def message_page(title: str, text: str, status: int) -> PageResponse:
    """A page that says one thing (refused, or a link that cannot be used), with a way back."""
    return PageResponse(
        "message.html", {**page_frame("signin"), "title": title, "text": text}, status_code=status
    )


@router.get("/login")
async def login_page(request: Request) -> Response:
    return _login_page(
        _services(request).settings,
        ended=request.query_params.get("ended") == "1",
        next_page=_next_page(request),
    )


@router.post("/login")
async def login(request: Request) -> Response:
    """Email and password (a form or JSON): 303 to the console with the session cookie; 401
    with one sentence for a wrong email or a wrong password; 429 with Retry-After while the email
    is locked."""
    services = _services(request)
    settings = services.settings
    if not settings.password_login:
        raise NotFound("passwords are off: sign in with the identity provider")
    form = _is_form(request)
    try:
        _check_origin(request, settings)
        body = await _read(request, SignInIn)
        work = _password_session(
            request,
            settings,
            lambda conn, address: passwords.sign_in(
                conn, body.email, body.password, address=address
            ),
        )
        token = await in_thread(request, _transaction, services.engine, work)
    except (Unauthorized, SignInLocked, InvalidInput, RequestValidationError) as exc:
        if not form:
            raise
        again = _next_page(request)
        if isinstance(exc, SignInLocked):
            return _login_page(
                settings,
                message=exc.detail,
                status=429,
                next_page=again,
                headers={"Retry-After": str(exc.retry_after)},
            )
        if isinstance(exc, Unauthorized):
            return _login_page(settings, message=exc.detail, status=401, next_page=again)
        return _login_page(
            settings, message="Enter your email and your password.", status=422, next_page=again
        )
    return _signed_in(settings, token, _next_page(request))


@router.post("/logout", status_code=204)
async def logout(request: Request) -> Response:
    """Ends the cookie's session. A cookie-authenticated write like any other: it carries the
    session's CSRF token (and, from a browser, the service's Origin). 204, the cookie cleared."""
    services = _services(request)
    credential = credential_of(request)
    if credential is None or credential.via is not Via.SESSION:
        raise Unauthorized("there is no session to end")
    if not same(request.headers.get("x-csrf-token"), csrf_token(credential.secret)):
        raise CsrfRejected("signing out needs the session's X-CSRF-Token header")
    _check_origin(request, services.settings)
    address = address_of(request)

    def work(conn: Connection) -> str:
        end_session(conn, credential.secret, address=address)
        return ""

    await in_thread(request, _transaction, services.engine, work)
    response = Response(status_code=204)
    response.delete_cookie(
        COOKIE, path="/", httponly=True, samesite="lax", secure=cookie_is_secure(services.settings)
    )
    return response


@router.get("/set-password")
async def set_password_page(request: Request) -> Response:
    """The form a one-time link opens (the token travels on in a hidden field)."""
    services = _services(request)
    token = request.query_params.get("token", "")
    usable = bool(token) and len(token) <= 200

    def check(conn: Connection) -> bool:
        return passwords.link_is_usable(conn, token)

    if usable:
        usable = await in_thread(request, _read_only, services.engine, check)
    if not usable:
        return message_page(
            "This link cannot be used",
            "It was used already, has expired (links last 72 hours) or was mistyped."
            " Ask a supervisor for a new one.",
            400,
        )
    return PageResponse(
        "set_password.html",
        {
            **page_frame("signin"),
            "token": token,
            "min_length": passwords.MIN_LENGTH,
            "message": None,
        },
        headers={"Cache-Control": "no-store"},
    )


def _read_only(engine: Engine, work: Callable[[Connection], bool]) -> bool:
    with engine.connect() as conn:
        return work(conn)


@router.post("/set-password")
async def set_password(request: Request) -> Response:
    """``token`` and ``password`` (a form or JSON): the password is set, the link used up, and
    the person signed in (303 to the console). A used, expired or unknown link: 400; a password
    of fewer than 12 characters: 422."""
    services = _services(request)
    settings = services.settings
    form = _is_form(request)
    try:
        _check_origin(request, settings)
        body = await _read(request, SetPasswordIn)
        work = _password_session(
            request,
            settings,
            lambda conn, address: passwords.set_password(
                conn, body.token, body.password, address=address
            ),
        )
        # The link is used and the password set only if the session starts too.
        token = await in_thread(request, _all_or_nothing, services.engine, work)
    except (BadSignInRequest, InvalidInput, RequestValidationError) as exc:
        if not form:
            raise
        if isinstance(exc, BadSignInRequest):
            return message_page("This link cannot be used", exc.detail, 400)
        token_field = (await _form_token(request)) or ""
        return PageResponse(
            "set_password.html",
            {
                **page_frame("signin"),
                "token": token_field,
                "min_length": passwords.MIN_LENGTH,
                "message": (f"Choose a password of at least {passwords.MIN_LENGTH} characters."),
            },
            status_code=422,
            headers={"Cache-Control": "no-store"},
        )
    return _signed_in(settings, token, "/console")


async def _form_token(request: Request) -> str | None:
    fields = dict(parse_qsl((await request.body()).decode("utf-8", "replace"), max_num_fields=10))
    token = fields.get("token")
    return token if token and len(token) <= 200 else None


def _all_or_nothing(engine: Engine, work: Callable[[Connection], str]) -> str:
    with engine.begin() as conn:
        return work(conn)


# -- the company's identity provider -------------------------------------------------------------


def _provider(request: Request) -> IdentityProvider:
    services = _services(request)
    if not services.settings.oidc_on:
        raise NotFound("sign-in with an identity provider is not configured")
    provider: IdentityProvider | None = getattr(request.app.state, "identity_provider", None)
    if provider is None:
        provider = IdentityProvider(services.settings, FlowStore(services.engine))
        request.app.state.identity_provider = provider
    return provider


@router.get("/oidc/login")
async def oidc_login(request: Request) -> Response:
    """To the provider: authorization code with PKCE (S256), state and nonce; the redirect URI
    is PUBLIC_URL's, never the request's Host."""
    provider = _provider(request)
    try:
        return await provider.login(request)
    except (AuthlibBaseError, httpx2.HTTPError, ValueError) as exc:
        # The provider's metadata could not be fetched or read.
        log.warning("identity provider unreachable", extra={"reason": type(exc).__name__})
        return message_page(
            "The sign-in service is not answering",
            "Try again in a minute, or sign in with your password if you have one.",
            503,
        )


@router.get("/oidc/callback")
async def oidc_callback(request: Request) -> Response:
    """The provider's answer. Bad state (forged, another browser's, replayed, expired), a code
    the provider refuses or a wrong nonce: 400, no session. Nobody matching (unknown,
    deactivated, an unverified email): 403, ask a supervisor."""
    provider = _provider(request)
    services = _services(request)
    settings = services.settings
    address = address_of(request)
    try:
        claims = await provider.callback(request)
    except (AuthlibBaseError, JoseError, httpx2.HTTPError) as exc:
        # Authlib's errors (state, the code's exchange, the ID token's claims: nonce, issuer,
        # audience), joserfc's (the ID token's signature), httpx's (the provider unreachable).
        log.info("identity provider sign-in refused", extra={"reason": type(exc).__name__})
        refused = message_page(
            "Sign-in did not complete",
            "The answer from the sign-in service could not be used (it may have been used"
            " already, or taken too long). Start again from the sign-in page.",
            400,
        )
        refused.delete_cookie(STATE_COOKIE, path="/auth/oidc")
        return refused
    user_agent = request.headers.get("user-agent")

    def work(conn: Connection) -> str:
        person = match_person(conn, claims, trust_unverified=settings.oidc_trust_unverified_email)
        if person is None:
            audit.record(
                conn,
                "sign_in_failed",
                actor=None,
                subject=None,
                address=address,
                details={"method": "oidc"},
            )
            return ""
        return start_session(
            conn,
            person,
            method="oidc",
            max_hours=settings.session_max_hours,
            user_agent=user_agent,
            address=address,
        )

    token = await in_thread(request, _all_or_nothing, services.engine, work)
    if not token:
        response: Response = message_page(
            "You cannot sign in here yet",
            "Your company account is not set up for callqueue, or it was deactivated."
            " Ask a supervisor to add you.",
            403,
        )
    else:
        response = _signed_in(settings, token, "/console")
    response.delete_cookie(STATE_COOKIE, path="/auth/oidc")
    return response
