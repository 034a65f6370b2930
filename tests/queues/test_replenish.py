"""The queue-level check: refill a low queue, never within the interval, leave healthy ones."""

from sqlalchemy import text

from tests.factories import add_scores


def _leads(replica, store_engine, ids):
    for uid in ids:
        replica.unsigned(uid)
    add_scores(
        store_engine, [{"user_id": uid, "current_queue_type": "unsigned_users"} for uid in ids]
    )


def _age_populations(store_engine, minutes):
    with store_engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE population_run_queues"
                " SET started_at = started_at - make_interval(mins => :m),"
                " finished_at = finished_at - make_interval(mins => :m)"
            ),
            {"m": minutes},
        )


def test_refills_a_low_queue_and_refuses_within_the_interval(make_services, replica, store_engine):
    services = make_services()
    _leads(replica, store_engine, range(1, 4))
    services.population().run(trigger="test")
    _leads(replica, store_engine, range(4, 6))

    first = services.population().replenish(watermark=20, min_interval_minutes=15)
    unsigned = first["queues"]["unsigned_users"]
    assert unsigned["action"] == "none"
    assert "REPLENISH_MIN_INTERVAL_MINUTES" in unsigned["reason"]
    assert first["queues"]["outstanding_requests"]["action"] == "none"  # populated just now
    assert first["run"] is None

    _age_populations(store_engine, 16)
    # A second process (its own engine and pool) sees the same history.
    second = make_services().population().replenish(watermark=20, min_interval_minutes=15)
    assert second["queues"]["unsigned_users"]["action"] == "populate"
    assert second["run"]["queues"]["unsigned_users"]["populated"] == 5

    again = services.population().replenish(watermark=20, min_interval_minutes=15)
    assert again["queues"]["unsigned_users"]["action"] == "none"


def test_leaves_a_healthy_queue_alone(services, replica, store_engine):
    _leads(replica, store_engine, range(1, 6))
    services.population().run(trigger="test")
    _age_populations(store_engine, 120)
    body = services.population().replenish(watermark=5, min_interval_minutes=15)
    assert body["queues"]["unsigned_users"]["action"] == "none"
    assert body["queues"]["unsigned_users"]["reason"] == "at or above the low watermark"


def test_an_empty_queue_is_refilled_after_a_minute(services, replica, store_engine):
    services.population().run(trigger="test")  # nothing to populate: both queues empty
    _leads(replica, store_engine, [1])
    body = services.population().replenish(watermark=20, min_interval_minutes=15)
    assert body["queues"]["unsigned_users"]["action"] == "none"
    _age_populations(store_engine, 2)
    body = services.population().replenish(watermark=20, min_interval_minutes=15)
    assert body["queues"]["unsigned_users"]["action"] == "populate"
    assert body["queues"]["unsigned_users"]["reason"] == "the queue is empty"
    assert body["run"]["queues"]["unsigned_users"]["populated"] == 1


def test_route_requires_the_cron_secret(client, cron_headers):
    assert client.get("/api/cron/queue-level-check").status_code == 401
    response = client.get("/api/cron/queue-level-check", headers=cron_headers)
    assert response.status_code == 200
    assert set(response.json()["queues"]) == {"unsigned_users", "outstanding_requests"}
