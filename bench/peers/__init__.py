"""`make bench-peers`: the same no-op jobs through plain SAQ, this project's tracked worker,
Procrastinate and Celery, on one throwaway PostgreSQL (durable settings) and Redis."""
