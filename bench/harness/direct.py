"""The bench's only writes through the service's SQL functions (the claim functions' migration)
instead of its HTTP API, in one place so that a change to a function's signature is one edit
here. The rules comparison sets the do-not-call list between runs: emptied with a TRUNCATE of the
list and its audit, filled with one ``cq_suppress`` call, a second for 100,000 numbers."""

from __future__ import annotations

import psycopg

from bench.harness.db import libpq_url


def replace_suppression_list(store_url: str, hashes: list[str], fingerprint: str) -> None:
    """The list holds exactly ``hashes`` (keyed hashes, as ``SuppressionList.phone_key`` makes
    them) afterwards, its audit (``suppression_changes``) is empty, and the key check holds
    ``fingerprint`` (the server's key's, as the service records it on its first write)."""
    with psycopg.connect(libpq_url(store_url)) as conn:
        conn.execute("TRUNCATE suppressed_numbers, suppression_changes")
        stored = conn.execute(
            "INSERT INTO suppression_key_check (id, fingerprint) VALUES (1, %s)"
            " ON CONFLICT (id) DO UPDATE SET fingerprint = suppression_key_check.fingerprint"
            " RETURNING fingerprint",
            (fingerprint,),
        ).fetchone()
        if stored is None or stored[0] != fingerprint:
            raise SystemExit("suppression_key_check holds another key's fingerprint")
        if hashes:
            conn.execute("SELECT cq_suppress(%s::text[], 'import', NULL)", (hashes,))
