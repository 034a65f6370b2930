"""Discovery's run history, as supervisors read it (``GET /api/discovery-runs``)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, text

_COLUMNS = (
    "id, trigger, status, full_walk, resumed, started_at, finished_at, duration_ms,"
    " scanned_users, scanned_claims, scanned_requirements, created, reclassified, watermark,"
    " error"
)


def list_discovery_runs(conn: Connection, *, limit: int, offset: int) -> dict[str, Any]:
    total = conn.execute(text("SELECT count(*) FROM discovery_runs")).scalar_one()
    rows = conn.execute(
        text(
            f"SELECT {_COLUMNS} FROM discovery_runs"
            " ORDER BY started_at DESC, id LIMIT :limit OFFSET :offset"
        ),
        {"limit": limit, "offset": offset},
    ).mappings()
    items = []
    for r in rows:
        item = dict(r)
        item["run_id"] = str(item.pop("id"))
        for key in ("started_at", "finished_at", "watermark"):
            item[key] = item[key].isoformat() if item[key] else None
        items.append(item)
    return {"items": items, "limit": limit, "offset": offset, "total": total}
