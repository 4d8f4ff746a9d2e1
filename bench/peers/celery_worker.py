"""The app module Celery's worker loads: `celery -A bench.peers.celery_worker worker ...`.

Built from DATABASE_URL and REDIS_URL (the harness sets both); it says when it is ready.
"""

from __future__ import annotations

import os
from typing import Any

from celery.signals import worker_ready

from bench.peers.celery_side import make_app

app = make_app(os.environ["DATABASE_URL"], os.environ["REDIS_URL"])


def _announce(**_: Any) -> None:
    print("celery worker started", flush=True)


worker_ready.connect(_announce)
