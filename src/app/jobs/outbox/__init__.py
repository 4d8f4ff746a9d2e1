"""The row first, then the job: the enqueuer, idempotency."""
