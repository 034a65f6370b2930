"""Lead intake's routes: the upstream scorer's upsert (SPEC 7.1) and discovery's history."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from app.api.deps import ScorerDep, ServicesDep, SupervisorDep
from app.api.errors import responses
from app.api.intake_schemas import DiscoveryRunPage, ScoresIn, ScoresOut
from app.api.routing import CredentialsFirstRoute
from app.intake.history import list_discovery_runs
from app.intake.scores import apply_scores

router = APIRouter(prefix="/api", tags=["intake"], route_class=CredentialsFirstRoute)


@router.put("/scores", response_model=ScoresOut, responses=responses(401, 403, 422, 503))
def put_scores(body: ScoresIn, _: ScorerDep, services: ServicesDep) -> Any:
    """Upsert 1 to 10,000 leads' scores by ``user_id`` (scorers and supervisors).

    Existing rows get the given score columns only; a new row is classified on the replica and
    created, score as given, active. A bad row is reported in ``errors`` and the others are
    applied; the same body twice answers ``unchanged`` for every row the second time. A
    ``current_score`` never lowers what a call completed since the scorer's previous write to
    that row raised (see the README, "Feeding callqueue"). 503 when the replica cannot classify
    the new rows: nothing is written then."""
    return apply_scores(services.engine, services.replica, body.scores).as_dict()


@router.get("/discovery-runs", response_model=DiscoveryRunPage, responses=responses(401, 403, 422))
def discovery_runs(
    _: SupervisorDep,
    services: ServicesDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> Any:
    """Discovery's runs, newest first, with their figures and errors."""
    with services.engine.connect() as conn:
        return list_discovery_runs(conn, limit=limit, offset=offset)
