"""The tracked-job domain: statuses, the lifecycle service, its API."""
