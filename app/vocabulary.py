"""The service's shared words: names every layer may use without importing a higher one (the
replica's classification, the queues' services, the console's pages and the API alike)."""

from __future__ import annotations

from enum import StrEnum


class QueueType(StrEnum):
    """The two queues (SPEC 1): people who have not signed their claim, and people who owe
    documents. What else differs between them is data in app/queues/kinds.py."""

    UNSIGNED_USERS = "unsigned_users"
    OUTSTANDING_REQUESTS = "outstanding_requests"


# What people see: the console's pages and anything else that names a queue to a person.
QUEUE_LABELS: dict[QueueType, str] = {
    QueueType.UNSIGNED_USERS: "Unsigned users",
    QueueType.OUTSTANDING_REQUESTS: "Outstanding requests",
}
