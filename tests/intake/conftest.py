"""Intake reads the replica on both engines the claims platform runs, as the classification does."""

from tests.replica.conftest import mysql_replica_engine, replica_db, rows

__all__ = ["mysql_replica_engine", "replica_db", "rows"]
