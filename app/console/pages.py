"""The console's pages and assets, and the headers that keep them self-contained.

Every asset is served from here and the policy allows nothing else: ``default-src 'self'`` and
no inline script or style, so an injected ``<script>`` or ``style=`` does not run, and no request
can leave for another host. A page carries no personal data but the signed-in person's own name
(the browser fetches the rest with the person's session); ``private, no-cache`` keeps it out of
shared caches and makes the browser ask again, so a deployment reaches every open console on its
next load.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import jinja2
from annotated_types import MaxLen
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from sqlalchemy import Engine
from starlette.types import Receive, Scope, Send

from app.api.deps import in_thread
from app.api.schemas import CompleteIn, ReleaseIn
from app.auth.identity import ROLES, AgentIdentity, Credential, Via, authenticate
from app.auth.people import may_manage
from app.auth.sessions import COOKIE
from app.config import Settings
from app.errors import Unauthorized
from app.rules.outcomes import MAX_CALLBACK_AHEAD, RULES, Outcome
from app.services import Services
from app.vocabulary import QUEUE_LABELS
from app.webhooks.delivery import EVENT_TYPES

HERE = Path(__file__).parent
STATIC_PATH = "/console/static"

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # same-origin, not no-referrer: under no-referrer a browser sends "Origin: null" with a form
    # or a fetch that writes, which the CSRF check must refuse. Other hosts still get nothing.
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()",
    "Cache-Control": "private, no-cache",
}

# Words for agents, in the order they are offered; the nine outcomes that keep a person callable
# get the digit keys 1-9. The two that stop all calls have no single-key shortcut on purpose:
# they are chosen deliberately and confirmed.
OUTCOME_LABELS: dict[Outcome, str] = {
    Outcome.NO_ANSWER: "No answer",
    Outcome.HUNG_UP: "Hung up",
    Outcome.MIGHT_COMPLETE: "Might complete",
    Outcome.GOING_TO_COMPLETE: "Going to complete",
    Outcome.CALL_BACK: "Call back",
    Outcome.COMPLETED_FORM: "Completed the form",
    Outcome.MISSED_CALL: "Missed call",
    Outcome.BAD_NUMBER: "Bad number",
    Outcome.NOT_INTERESTED: "Not interested",
    Outcome.DO_NOT_CONTACT: "Do not contact",
    Outcome.NO_CLAIM: "No claim",
}


@dataclass(frozen=True)
class OutcomeChoice:
    value: str
    label: str
    key: str | None
    hint: str
    accepts_callback: bool
    deactivates: bool


def _span(delay: timedelta) -> str:
    hours = int(delay.total_seconds() // 3600)
    if hours <= 24:
        return f"{hours} h"
    return f"{hours // 24} days"


def _hint(outcome: Outcome) -> str:
    """What the outcome does to the person's next call (SPEC 3.4), from the outcome table."""
    rule = RULES[outcome]
    if rule.deactivates:
        return "never called again"
    if rule.delay is None:
        return "callable again straight away"
    if rule.accepts_callback:
        return f"called at the time you pick, else in {_span(rule.delay)}"
    return f"called again in {_span(rule.delay)}"


def outcome_choices() -> list[OutcomeChoice]:
    ordered = sorted(OUTCOME_LABELS, key=lambda o: RULES[o].deactivates)  # stable sort
    choices = []
    digit = 0
    for outcome in ordered:
        rule = RULES[outcome]
        key = None
        if not rule.deactivates:
            digit += 1
            key = str(digit)
        choices.append(
            OutcomeChoice(
                value=str(outcome),
                label=OUTCOME_LABELS[outcome],
                key=key,
                hint=_hint(outcome),
                accepts_callback=rule.accepts_callback,
                deactivates=rule.deactivates,
            )
        )
    return choices


def _max_length(model: Any, field: str) -> int:
    """A text field's limit as the API declares it, so the page and the API cannot disagree."""
    for item in model.model_fields[field].metadata:
        if isinstance(item, MaxLen):
            return int(item.max_length)
    raise LookupError(f"{model.__name__}.{field} declares no max_length")


class ConsoleStaticFiles(StaticFiles):
    """The console's own scripts and styles, with the same protective headers as its pages."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        for name in ("X-Content-Type-Options", "Cache-Control", "Cross-Origin-Opener-Policy"):
            response.headers[name] = SECURITY_HEADERS[name]
        response.headers["Cross-Origin-Resource-Policy"] = "same-origin"
        return response


# Templates see only what their context gives them (no request, no settings, no globals such
# as url_for): SPEC 8.1, pages get only the values they show. StrictUndefined: a template that
# names a value its page was not given fails loudly instead of rendering it empty.
templates = jinja2.Environment(
    loader=jinja2.FileSystemLoader(HERE / "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)
router = APIRouter(include_in_schema=False)


class PageResponse(HTMLResponse):
    """A rendered page. Like Starlette's template responses, it tells a server that asks for it
    (the ``http.response.debug`` ASGI extension: only the test client does) which template
    rendered it and with what context, so a test can check exactly what the template was
    given."""

    def __init__(
        self,
        name: str,
        context: dict[str, Any],
        *,
        status_code: int = 200,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.template = templates.get_template(name)
        self.context = context
        super().__init__(
            self.template.render(context),
            status_code=status_code,
            headers={**SECURITY_HEADERS, **(headers or {})},
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if "http.response.debug" in scope.get("extensions", {}):
            info = {"template": self.template, "context": self.context}
            await send({"type": "http.response.debug", "info": info})
        await super().__call__(scope, receive, send)


@dataclass(frozen=True)
class Signed:
    """The signed-in person as the header shows them."""

    display_name: str
    role: str
    supervising: bool


def page_frame(view: str, person: Signed | None = None) -> dict[str, Any]:
    """What every page's frame shows: its assets, its view, and who is signed in (None on the
    sign-in pages)."""
    return {"static": STATIC_PATH, "view": view, "person": person}


def _common(view: str, settings: Settings, agent: AgentIdentity) -> dict[str, Any]:
    return {
        **page_frame(view, Signed(agent.display_name, agent.role, agent.is_supervisor)),
        "queues": [
            (str(q), label) for q, label in QUEUE_LABELS.items() if q in agent.allowed_queues
        ],
        "callback_grace_minutes": settings.callback_grace_minutes,
        "callback_personal_minutes": settings.callback_personal_minutes,
    }


def agent_page_context(settings: Settings, agent: AgentIdentity) -> dict[str, Any]:
    """The values the agent's page shows, and nothing else."""
    return {
        **_common("agent", settings, agent),
        "outcomes": outcome_choices(),
        "notes_max": _max_length(CompleteIn, "notes"),
        "reason_max": _max_length(ReleaseIn, "reason"),
        "callback_max_days": MAX_CALLBACK_AHEAD.days,
        "skip_cooldown_minutes": settings.skip_cooldown_minutes,
    }


def supervisor_page_context(settings: Settings, agent: AgentIdentity) -> dict[str, Any]:
    """The values the supervisor's page shows, and nothing else."""
    return {
        **_common("supervisor", settings, agent),
        "queues": [(str(q), label) for q, label in QUEUE_LABELS.items()],
        "reason_max": _max_length(ReleaseIn, "reason"),
    }


def people_page_context(settings: Settings, agent: AgentIdentity) -> dict[str, Any]:
    """The values the people page shows: the roles this person may give, the queues, whether
    passwords are on (a new person gets a link), whether API tokens and personal-data requests
    are theirs to handle."""
    return {
        **_common("people", settings, agent),
        "queues": [(str(q), label) for q, label in QUEUE_LABELS.items()],
        "roles": [role for role in ROLES if may_manage(agent, role)],
        "password_login": settings.password_login,
        "manages_tokens": agent.is_admin,
        "handles_personal_data": agent.is_admin,
        "manages_webhooks": agent.is_admin,
        "event_types": EVENT_TYPES,
    }


def _settings(request: Request) -> Settings:
    services: Services = request.app.state.services
    return services.settings


def _session_person(engine: Engine, token: str, idle_minutes: int) -> AgentIdentity | None:
    with engine.connect() as conn:
        try:
            return authenticate(
                conn, Credential(Via.SESSION, token), idle_minutes=idle_minutes
            ).agent
        except Unauthorized:
            return None


async def signed_in_person(request: Request) -> AgentIdentity | None:
    """The person the request's session cookie names, if it is live (the console never takes a
    bearer token: no token is pasted into a page)."""
    token = request.cookies.get(COOKIE)
    if not token:
        return None
    services: Services = request.app.state.services
    return await in_thread(
        request,
        _session_person,
        services.autocommit,
        token,
        services.settings.session_idle_minutes,
    )


def _to_sign_in(request: Request) -> RedirectResponse:
    return RedirectResponse(f"/auth/login?next={request.url.path}", status_code=303)


def _refused(text: str) -> PageResponse:
    return PageResponse(
        "message.html",
        {**page_frame("signin"), "title": "This page is not for you", "text": text},
        status_code=403,
    )


@router.get("/")
async def root() -> RedirectResponse:
    """The service's front door is the agents' screen."""
    return RedirectResponse("/console", status_code=307)


@router.get("/console", response_class=HTMLResponse)
async def agent_view(request: Request) -> Response:
    agent = await signed_in_person(request)
    if agent is None:
        return _to_sign_in(request)
    if agent.role == "scorer":
        return _refused("The console is for agents and supervisors; a scorer only sends scores.")
    return PageResponse("agent.html", agent_page_context(_settings(request), agent))


@router.get("/console/supervisor", response_class=HTMLResponse)
async def supervisor_view(request: Request) -> Response:
    agent = await signed_in_person(request)
    if agent is None:
        return _to_sign_in(request)
    if not agent.is_supervisor:
        return _refused("The supervisor view is for supervisors and admins.")
    return PageResponse("supervisor.html", supervisor_page_context(_settings(request), agent))


@router.get("/console/people", response_class=HTMLResponse)
async def people_view(request: Request) -> Response:
    agent = await signed_in_person(request)
    if agent is None:
        return _to_sign_in(request)
    if not agent.is_supervisor:
        return _refused("The people page is for supervisors and admins.")
    return PageResponse("people.html", people_page_context(_settings(request), agent))
