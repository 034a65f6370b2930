"""What the benchmarks share, one room per job.

``db`` scratch databases on the bench server; ``seed`` the claim benchmarks' store and replica
(users, score rows, a month of ledger history, one population, the agents); ``server`` the
service as a real uvicorn server; ``load`` the agents (the load generator); ``accounting`` CPU
and connections; ``report`` the per-mode lines; ``checks`` duplicates from the agents' side and in
the ledger; ``baseline`` the raw-SQL claim floor; ``pyspy`` and ``breakdown`` where a cycle's
time goes; ``alternating`` the A/B runs of the comparisons; ``direct`` the only writes the bench
makes through the service's SQL functions; ``session`` one claims benchmark's life, from the
databases to the baseline, as the ``bench/claims*.py`` scripts run it.
"""
