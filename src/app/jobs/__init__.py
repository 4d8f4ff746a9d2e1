"""The tracked-job domain: the lifecycle, the queue and its recorder, the outbox, the
service, the reconciler, and the HTTP API over them."""
