"""Calling rules (SPEC 7.3): pure decisions the claim path asks, and the records that prove them.

- ``hours``: the weekly calling window in a time zone, with holidays (pure; no database).
- ``calling``: the rules in force (environment defaults, supervisors' run-time changes, their
  audit and history), and the checks the claim and completion paths raise.
- ``caps``: attempt caps counted from the ledger, as SQL the population and the claim use.
- ``suppression``: the do-not-call list, stored only as keyed hashes of E.164 numbers.
- ``compliance``: the per-day report that shows the rules held.
"""
