from app.queues.kinds import QueueType
from tests.factories import add_scores


def test_population_fills_both_queues(services, replica, store_engine):
    replica.unsigned(1)
    replica.outstanding(2, "proof_of_address", "bank_statement")
    replica.user(3)  # no claim: none
    add_scores(
        store_engine,
        [
            {"user_id": 1, "current_queue_type": "unsigned_users"},
            {"user_id": 2, "current_queue_type": "outstanding_requests", "current_score": 3},
            {"user_id": 3, "current_queue_type": "outstanding_requests"},
        ],
    )
    report = services.population().run(trigger="test")
    d = report.as_dict()
    print(d)
    assert d["queues"]["unsigned_users"]["populated"] == 1
    assert d["queues"]["outstanding_requests"]["populated"] == 1
    assert d["queues"]["outstanding_requests"]["invalid"] == 1
    assert report.queues[QueueType.UNSIGNED_USERS].status == "succeeded"
