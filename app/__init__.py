"""callqueue: prioritised outbound call queues."""
