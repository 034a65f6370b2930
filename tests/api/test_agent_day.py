"""An agent's whole day through the API: claim, call, outcome, next."""

from app.auth.people import create_agent
from tests.factories import add_scores, own_phone


def test_claim_complete_next(client, services, replica, store_engine, cron_headers):
    for uid in (1, 2):
        replica.unsigned(uid)
    add_scores(
        store_engine,
        [
            {"user_id": 1, "current_queue_type": "unsigned_users", "current_score": 0},
            {"user_id": 2, "current_queue_type": "unsigned_users", "current_score": 4},
        ],
    )
    with store_engine.begin() as conn:
        token = create_agent(conn, "alice")
    assert (
        client.get("/api/cron/populate-separated-queues", headers=cron_headers).status_code == 200
    )
    auth = {"Authorization": f"Bearer {token}"}

    first = client.post("/api/queues/unsigned_users/next-user", headers=auth)
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["user_id"] == 1
    assert body["resumed"] is False
    assert body["user"]["phone_number"] == own_phone(body["user_id"])
    assert body["queue_position"] == 1
    assert body["details"]["signature_type"] == "initial"

    again = client.post("/api/queues/unsigned_users/next-user", headers=auth)
    assert again.json()["assignment_id"] == body["assignment_id"]
    assert again.json()["resumed"] is True

    other = client.post("/api/queues/outstanding_requests/next-user", headers=auth)
    assert other.status_code == 409

    done = client.post(
        f"/api/assignments/{body['assignment_id']}/complete",
        json={"outcome": "no_answer"},
        headers=auth,
    )
    assert done.status_code == 200, done.text
    assert done.json()["status"] == "completed"
    assert done.json()["score"]["current_score"] == 1
    assert done.json()["user"] is None

    second = client.post("/api/queues/unsigned_users/next-user", headers=auth)
    assert second.json()["user_id"] == 2
    empty_release = client.post(
        f"/api/assignments/{second.json()['assignment_id']}/release",
        json={"requeue": False},
        headers=auth,
    )
    assert empty_release.status_code == 200
    assert client.post("/api/queues/unsigned_users/next-user", headers=auth).status_code == 204
    assert client.get("/api/assignments/current", headers=auth).status_code == 204


def test_stats_after_a_day(client, services, replica, store_engine, cron_headers):
    test_claim_complete_next(client, services, replica, store_engine, cron_headers)
    with store_engine.begin() as conn:
        token = create_agent(conn, "sup", "supervisor")
    auth = {"Authorization": f"Bearer {token}"}
    stats = client.get("/api/queues/stats", headers=auth).json()
    unsigned = stats["queues"]["unsigned_users"]
    assert unsigned["pending"] == 0
    assert unsigned["window"]["claims"] == 2
    assert unsigned["window"]["completions"] == {"no_answer": 1}
    assert unsigned["window"]["releases"] == 1
    assert unsigned["last_population"]["populated"] == 2
    listing = client.get("/api/queues/unsigned_users?status=completed", headers=auth).json()
    assert [e["user_id"] for e in listing["items"]] == [1]
    runs = client.get("/api/population-runs", headers=auth).json()
    assert runs["total"] == 1
    assert runs["items"][0]["queues"]["unsigned_users"]["populated"] == 2
