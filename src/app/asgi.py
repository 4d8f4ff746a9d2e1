"""The composition root: `create_app(settings)` wires plugins, routes and dependencies.

`litestar --app app.asgi:create_app ...` and `uvicorn --factory app.asgi:create_app`
call it with no argument, reading the settings from the environment.
"""

from __future__ import annotations

from typing import cast

from advanced_alchemy.extensions.litestar import SQLAlchemyPlugin
from litestar import Litestar
from litestar.di import Provide
from litestar.openapi.config import OpenAPIConfig
from litestar_saq import SAQPlugin

from app.config import (
    ApiQueueLifecycle,
    Settings,
    logging_config,
    saq_config,
    sqlalchemy_config,
)
from app.jobs.controllers import JobController, TaskController
from app.jobs.dependencies import jobs_service_provider
from app.jobs.errors import exception_handlers
from app.jobs.queue import TrackedQueue
from app.jobs.registry import TaskRegistry
from app.jobs.services import Enqueuer
from app.system import health, tune_garbage_collector
from app.worker.settings import REGISTRY


def create_app(settings: Settings | None = None, registry: TaskRegistry = REGISTRY) -> Litestar:
    """The API, and (through the SAQ plugin's CLI) the worker, for `registry`'s tasks."""
    settings = settings or Settings.from_env()
    database = sqlalchemy_config(settings)
    saq = SAQPlugin(saq_config(settings, registry))
    enqueuer = Enqueuer(
        queue=cast("TrackedQueue", saq.get_queue(settings.queue_name)),
        registry=registry,
        default_timeout=settings.job_timeout,
        engine=database.get_engine,  # concurrent triggers share one INSERT and one pipeline
    )
    app = Litestar(
        route_handlers=[TaskController, JobController, health],
        plugins=[
            SQLAlchemyPlugin(config=database),
            saq,
            ApiQueueLifecycle(saq),
        ],
        dependencies={
            "jobs_service": Provide(
                jobs_service_provider(enqueuer, database.get_engine), sync_to_thread=False
            )
        },
        exception_handlers=exception_handlers(),
        logging_config=logging_config(settings),
        openapi_config=OpenAPIConfig(
            title="Tracked background jobs", version="0.1.0", path="/schema"
        ),
        request_max_body_size=settings.max_request_body,
        on_shutdown=[enqueuer.close],
    )
    app.on_startup.append(tune_garbage_collector)  # last: after every plugin's start-up
    return app
