"""The built-in scheduler: each job once per tick, however many processes run it."""

import threading

from sqlalchemy import text

from app.scheduler import Job, Scheduler


def test_each_job_runs_once_per_tick_across_schedulers(services, store_engine):
    runs: list[str] = []
    lock = threading.Lock()

    def job(name):
        def run():
            with lock:
                runs.append(name)
            return "ok"

        return run

    job_list = [Job("population", 3600, job("population")), Job("sweep", 60, job("sweep"))]
    schedulers = [Scheduler(services, job_list) for _ in range(4)]
    barrier = threading.Barrier(len(schedulers))

    def tick(s):
        barrier.wait()
        s.tick()

    threads = [threading.Thread(target=tick, args=(s,)) for s in schedulers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(runs) == ["population", "sweep"]
    # A later poll within the same tick runs nothing more.
    assert schedulers[0].tick() == []
    with store_engine.connect() as conn:
        rows = conn.execute(text("SELECT job, result FROM scheduler_ticks ORDER BY job")).all()
    assert [tuple(r) for r in rows] == [("population", "ok"), ("sweep", "ok")]


def test_scheduler_population_job_populates(services, replica, store_engine):
    from tests.factories import add_scores

    replica.unsigned(1)
    add_scores(store_engine, [{"user_id": 1, "current_queue_type": "unsigned_users"}])
    scheduler = Scheduler(services)
    assert scheduler.tick() == [
        "discovery",
        "population",
        "queue_level_check",
        "lease_sweep",
        "retention",
    ]
    with store_engine.connect() as conn:
        trigger = conn.execute(text("SELECT trigger FROM population_runs")).scalars().all()
        pending = conn.execute(
            text("SELECT count(*) FROM unsigned_users_queue WHERE status = 'pending'")
        ).scalar()
    assert trigger == ["scheduler"]
    assert pending == 1


def test_scheduler_discovers_first_then_populates(services, replica, store_engine):
    """At start-up the discovery job runs before the population: leads found on the replica
    have score rows by the time the queues are built (and wait out the cooling period)."""
    replica.unsigned(1)
    replica.outstanding(2)
    scheduler = Scheduler(services)
    assert scheduler.tick()[:2] == ["discovery", "population"]
    with store_engine.connect() as conn:
        ticks = dict(conn.execute(text("SELECT job, result FROM scheduler_ticks")).all())
        rows = dict(
            conn.execute(text("SELECT user_id, current_queue_type FROM user_call_scores")).all()
        )
        runs = conn.execute(text("SELECT trigger, status FROM discovery_runs")).all()
    assert ticks["discovery"] == "created 2"
    assert rows == {1: "unsigned_users", 2: "outstanding_requests"}
    assert [tuple(r) for r in runs] == [("scheduler", "succeeded")]
