"""Events to the rest of the business (SPEC 8.4): endpoints, the outbox's dispatch, signed
delivery with retries, and the background sender every server process runs."""
