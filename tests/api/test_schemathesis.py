"""Property-based tests of every route from the service's own OpenAPI document (issue 5, item 4;
issue 11, item 6).

Schemathesis (4.x, the current major) loads /openapi.json from the ASGI app and generates
requests for every operation, valid (positive) and, wherever something can be made invalid,
invalid (negative), with real credentials for each: the cron secret for /api/cron/*, an agent's
token for the agents' routes, a supervisor's for the supervisors'. Every check Schemathesis has
runs on every answer: no 5xx; a documented status, content type and headers; the declared
schema; a schema-valid request accepted (2xx, or 404/409 for state: an assignment no longer
live, a queue the agent does not hold); a schema-invalid request rejected with a 4xx; a 405
with Allow for an undocumented method; 401 without the credentials an operation requires.

One thing the document cannot say: ``callback_at`` must be in the future and at most 30 days
ahead by the server's clock (the rule is in its description). JSON Schema has no "now", so for
valid requests the generated value is moved into that window (``into_callback_window``);
invalid ones keep whatever was generated.

One pytest item per operation, each on a fresh database with a little data (populated queues, an
agent and the supervisor each holding an assignment). Bounded and derandomized, so a run is
reproducible and the module stays around a minute on two cores.

Why not ``schemathesis.pytest.from_fixture`` + ``@schema.parametrize()``: the app needs per-test
fixtures (database, settings), which is what the lazy loader is for, but in schemathesis 4.32 it
reads ``request.node._nodeid``, which pytest 9 no longer has (AttributeError). So the operations
are listed from the app's document at collection time and each test drives
``operation.as_strategy()`` with Hypothesis itself.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.generation import GenerationMode
from schemathesis.python import asgi as schemathesis_asgi
from sqlalchemy import Engine

from app.config import Settings, load_settings
from app.main import create_app
from tests.api.test_agents_api import book, claim, new_agent
from tests.conftest import CRON_SECRET
from tests.factories import Replica

MAX_EXAMPLES = 25  # per operation and generation mode
HTTP_METHODS = ("get", "put", "post", "delete", "patch", "options", "head", "trace")
QUEUES = ("unsigned_users", "outstanding_requests")

# The app's document, built without a database: creating the app touches nothing, only its
# lifespan does. Used at collection time to make one test per operation.
DOCUMENT: dict[str, Any] = create_app(load_settings(app_env="test")).openapi()
OPERATIONS = sorted(
    f"{method.upper()} {path}"
    for path, item in DOCUMENT["paths"].items()
    for method in item
    if method in HTTP_METHODS
)


def _operation(label: str) -> dict[str, Any]:
    method, path = label.split(" ", 1)
    return dict(DOCUMENT["paths"][path][method.lower()])


def _can_be_made_invalid(label: str) -> bool:
    """Negative cases exist only for a body, or a parameter whose schema constrains it: a route
    without either (GET /healthz; next-user, whose queue_type is any string) has none, and
    Hypothesis would report Unsatisfiable."""
    operation = _operation(label)
    if "requestBody" in operation:
        return True
    for parameter in operation.get("parameters", []):
        schema = parameter.get("schema", {})
        if (
            parameter["in"] != "path"
            or set(schema) - {"type", "title"}
            or schema["type"] != "string"
        ):
            return True
    return False


schemathesis.checks.load_all_checks()
CHECKS = schemathesis.checks.CHECKS.get_all()  # every check Schemathesis has
CHECK_NAMES = sorted(check.__name__ for check in CHECKS)


def _tags(path: str) -> set[str]:
    return {tag for item in DOCUMENT["paths"][path].values() for tag in item.get("tags", ())}


@dataclass(frozen=True)
class Credentials:
    cron: dict[str, str]
    agent: dict[str, str]
    supervisor: dict[str, str]
    admin: dict[str, str]
    agents_assignment: str  # held by the agent: extend, release and complete can succeed
    agent_id: int  # a person the people routes can change

    def for_path(self, path: str) -> dict[str, str]:
        tags = _tags(path)
        if "cron" in tags:
            return self.cron
        if "supervisors" in tags:
            return self.supervisor
        if tags & {"people", "personal data", "webhooks"}:
            return self.admin
        return self.agent  # the agents' routes, and the open ones (the token is ignored there)

    def live_assignment(self, path: str) -> str:
        return self.agents_assignment


@pytest.fixture
def credentials(
    client: TestClient, store_engine: Engine, replica: Replica, cron_headers: dict[str, str]
) -> Credentials:
    """A little data first: both queues populated, an agent and the supervisor whose token the
    run uses each holding an assignment (so the ledger and the listings have rows, and the
    assignment routes meet a live assignment, not only unknown ids)."""
    book(client, store_engine, replica, cron_headers, unsigned=(1, 2, 3, 4), outstanding=(5, 6))
    agent = new_agent(store_engine, "fuzz-agent")
    held = claim(client, agent)
    supervisor = new_agent(store_engine, "fuzz-supervisor", "supervisor")
    claim(client, supervisor, "outstanding_requests")  # the ledger has two agents' rows
    return Credentials(
        cron={"Authorization": f"Bearer {CRON_SECRET}"},
        agent=agent.auth,
        supervisor=supervisor.auth,
        admin=new_agent(store_engine, "fuzz-admin", "admin").auth,
        agents_assignment=held["assignment_id"],
        agent_id=agent.id,
    )


@pytest.fixture
def api_schema(settings: Settings, credentials: Credentials) -> Iterator[schemathesis.BaseSchema]:
    """The document as the running app serves it. from_asgi starts the app's lifespan (its
    engine pools) and keeps it for the process; it is stopped with the test."""
    loaded = schemathesis.openapi.from_asgi("/openapi.json", create_app(settings))
    try:
        yield loaded
    finally:
        schemathesis_asgi.shutdown_lifespans()


def into_callback_window(case: schemathesis.Case) -> schemathesis.Case:
    """A valid request's callback_at, moved to tomorrow: the only rule the document states in
    prose alone (see the module's docstring)."""
    body = case.body
    if isinstance(body, dict) and isinstance(body.get("callback_at"), str):
        body["callback_at"] = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    return case


def with_a_receivable_url(case: schemathesis.Case) -> schemathesis.Case:
    """A webhook URL must be one the service can send to (a rule of the server's, not the
    document's: a scheme it speaks, a host); a generated string rarely is."""
    if isinstance(case.body, dict) and "url" in case.body:
        case.body["url"] = "https://receiver.example/hooks"
    return case


def for_a_person(case: schemathesis.Case, person_id: int) -> schemathesis.Case:
    """A valid token request names a person who exists and, if it expires, a time ahead: what
    the document cannot say."""
    body = case.body
    if isinstance(body, dict):
        body["agent_id"] = person_id
        if body.get("expires_at") is not None:
            body["expires_at"] = (datetime.now(UTC) + timedelta(days=30)).isoformat()
    return case


def strategy_for(
    operation: schemathesis.APIOperation, credentials: Credentials, mode: GenerationMode
) -> Any:
    path = operation.path
    headers = credentials.for_path(path)
    strategy = operation.as_strategy(mode, headers=headers)
    fixed: list[dict[str, str]] = []
    if "{assignment_id}" in path:
        # Some cases aim at a live assignment, so a body that passes validation really
        # extends, releases or completes something; the rest go to generated ids.
        fixed.append({"assignment_id": credentials.live_assignment(path)})
    if "{person_id}" in path:
        fixed.append({"person_id": str(credentials.agent_id)})
    if "{queue_type}" in path:
        # The document types queue_type as any string, so generated values are all 404s;
        # the two real queues are added so that the handler is reached.
        fixed.extend({"queue_type": queue} for queue in QUEUES)
    if fixed:
        strategy = st.one_of(
            *(operation.as_strategy(mode, headers=headers, path_parameters=p) for p in fixed),
            strategy,
        )
    if mode == GenerationMode.POSITIVE and path.endswith("/complete"):
        strategy = strategy.map(into_callback_window)
    if mode == GenerationMode.POSITIVE and path.startswith("/api/admin/webhooks"):
        strategy = strategy.map(with_a_receivable_url)
    if mode == GenerationMode.POSITIVE and path == "/api/admin/tokens":
        strategy = strategy.map(lambda case: for_a_person(case, credentials.agent_id))
    return strategy


def fuzz(
    api_schema: schemathesis.BaseSchema, label: str, credentials: Credentials, mode: GenerationMode
) -> None:
    operation = api_schema.find_operation_by_label(label)
    assert operation is not None, label
    headers = credentials.for_path(operation.path)

    @given(case=strategy_for(operation, credentials, mode))
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def run(case: schemathesis.Case) -> None:
        case.call_and_validate(headers=headers, checks=CHECKS)

    run()


def test_every_served_operation_is_fuzzed(api_schema: schemathesis.BaseSchema) -> None:
    served = sorted(op.ok().label for op in api_schema.get_all_operations())
    assert served == OPERATIONS
    assert len(OPERATIONS) >= 18


def test_every_check_runs() -> None:
    """Schemathesis's current major version, and all of its checks."""
    assert schemathesis.__version__.startswith("4.")
    assert {
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
        "negative_data_rejection",
        "positive_data_acceptance",
        "missing_required_header",
        "unsupported_method",
        "ignored_auth",
    } <= set(CHECK_NAMES)


@pytest.mark.parametrize("label", OPERATIONS)
def test_operation(
    api_schema: schemathesis.BaseSchema, credentials: Credentials, label: str
) -> None:
    fuzz(api_schema, label, credentials, GenerationMode.POSITIVE)
    if _can_be_made_invalid(label):
        fuzz(api_schema, label, credentials, GenerationMode.NEGATIVE)


# --- what the fuzz run tolerates or cannot see, as explicit findings ---------------------------

BODY_OPERATIONS = [label for label in OPERATIONS if "requestBody" in _operation(label)]


@pytest.mark.parametrize("label", BODY_OPERATIONS)
def test_an_undecodable_body_gets_a_documented_status(
    api_schema: schemathesis.BaseSchema, credentials: Credentials, label: str
) -> None:
    operation = api_schema.find_operation_by_label(label)
    assert operation is not None
    path_parameters = (
        {"assignment_id": credentials.live_assignment(operation.path)}
        if "{assignment_id}" in operation.path
        else {}
    )
    for name in ("callback_id", "endpoint_id"):
        if "{" + name + "}" in operation.path:
            path_parameters[name] = str(uuid.uuid4())  # nobody's: 404 once decoded
    if "{person_id}" in operation.path:
        path_parameters["person_id"] = str(credentials.agent_id)
    case = operation.Case(
        path_parameters=path_parameters,
        body=b'{"notes": "\xc3\x28"}',  # \xc3 opens a 2-byte sequence; ( cannot continue it
        media_type="application/json",
    )
    case.call_and_validate(
        headers=credentials.for_path(operation.path),
        checks=[
            schemathesis.checks.not_a_server_error,
            schemathesis.checks.status_code_conformance,
        ],
    )


def _success_without_schema() -> list[str]:
    missing = []
    for label in OPERATIONS:
        for status, response in _operation(label)["responses"].items():
            if not status.startswith("2") or status == "204":
                continue
            for media_type, content in response.get("content", {}).items():
                schema = content.get("schema", {})
                if media_type == "application/json" and not (set(schema) - {"title"}):
                    missing.append(f"{label} {status}")
    return missing


def test_every_success_answer_declares_its_schema() -> None:
    assert _success_without_schema() == []


def test_queue_type_is_documented_as_the_two_queue_names() -> None:
    for label in OPERATIONS:
        for parameter in _operation(label).get("parameters", []):
            if parameter["name"] == "queue_type" and parameter["in"] == "path":
                schema = parameter["schema"]
                if "$ref" in schema:  # an Enum is documented as a component
                    schema = DOCUMENT["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
                assert set(schema.get("enum", ())) == set(QUEUES), label
