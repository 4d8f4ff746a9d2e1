"""Operations over HTTP: `GET /metrics` (Prometheus) and `POST /api/v1/ops/prune` (admin).

`/metrics` answers a scrape that brings `METRICS_TOKEN` as its bearer token, or any
unscoped API key (viewer and up); with `METRICS_PUBLIC=true` (or in open mode) anyone.
It is public to the app-wide guard and checked by its own (`scrape_guard`), because a
scrape token is not an API key. HTTP metrics come from Litestar's Prometheus middleware,
each request counted under its route's path template (so no job id becomes a label); job
metrics from `JobsCollector`; `bgjobs_ready` from the checks `GET /ready` makes
(`app.ops.probes.readiness`), for the alert on readiness.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.config.app import AppConfig
from litestar.di import NamedDependency, Provide
from litestar.exceptions import PermissionDeniedException, ValidationException
from litestar.params import JSONBody
from litestar.plugins import InitPluginProtocol
from litestar.plugins.prometheus import PrometheusConfig
from litestar.status_codes import HTTP_200_OK
from litestar_saq import TaskQueues
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.audit import AuditAction, AuditLog, Outcome
from app.auth.guard import BEARER, PUBLIC, Authenticator, role
from app.auth.roles import Principal, Role
from app.http_common.body import OptionalBody, StrictJSONBody
from app.http_common.responses import NOT_JSON, errors
from app.ops.probes import READINESS_CHECKS, Readiness, readiness
from app.ops.retention import Retention

if TYPE_CHECKING:
    from litestar.connection import ASGIConnection
    from litestar.handlers.base import BaseRouteHandler
    from prometheus_client.core import Metric

    from app.ops.collector import JobsCollector

RETENTION_DAYS_MAX = 36_500  # a window past a century is a typo, and would overflow a date
# Not counted: the scrape itself and static assets.
_NOT_MEASURED = ["^/metrics", "^/schema/assets/", "^/saq/static/"]


class ScrapeAccess:
    """Who may read `/metrics`: the scrape token, an unscoped key, or anyone if public."""

    def __init__(
        self, authenticator: Authenticator, *, token_digest: str | None, public: bool
    ) -> None:
        self._authenticator = authenticator
        self._token_digest = token_digest
        self.public = public or authenticator.open_mode

    async def check(self, authorization: str | None) -> None:
        if self.public:
            return
        scheme, _, token = (authorization or "").partition(" ")
        token = token.strip()
        if self._token_digest is not None and scheme.lower() == "bearer" and token:
            offered = hashlib.sha256(token.encode()).hexdigest()
            if hmac.compare_digest(offered, self._token_digest):
                return
        principal = await self._authenticator.principal_for(authorization)  # 401 if not a key
        if principal.project_id is not None:
            raise PermissionDeniedException(
                detail="metrics count every project's jobs: a key scoped to a project may not "
                "read them"
            )


async def scrape_guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    access: ScrapeAccess = connection.app.state["scrape_access"]
    await access.check(connection.headers.get("authorization"))


class _Prepared:
    """Families gathered beforehand, in the shape prometheus_client renders."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> list[Metric]:
        return self._families


def readiness_family(ready: Readiness) -> Metric:
    """`bgjobs_ready{check}`: 1 when that check of `/ready` passes, so an alert can say which
    one failed (Prometheus' `up` says whether the scrape itself did)."""
    family = GaugeMetricFamily(
        "bgjobs_ready", "1 when this check of GET /ready passes.", labels=["check"]
    )
    for check in READINESS_CHECKS:
        family.add_metric([check], 1 if getattr(ready, check) == "ok" else 0)
    return family


def http_registry() -> CollectorRegistry:
    """The process's own registry, or every process's with PROMETHEUS_MULTIPROC_DIR set
    (several uvicorn workers on one host), as Litestar's PrometheusController reads it."""
    if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        return REGISTRY
    registry = CollectorRegistry()
    MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return registry


class MetricsController(Controller):
    path = "/metrics"
    opt = PUBLIC  # to the app-wide guard: `scrape_guard` decides
    include_in_schema = False  # Prometheus' text format, not the JSON API

    @get("/", guards=[scrape_guard])
    async def scrape(
        self,
        request: Request[Any, Any, Any],
        db_session: NamedDependency[AsyncSession],
        task_queues: NamedDependency[TaskQueues],
    ) -> Response[bytes]:
        """HTTP metrics of this process, job metrics of the whole queue, and what `/ready`
        would answer now."""
        collector: JobsCollector = request.app.state["jobs_collector"]
        families, ready = await asyncio.gather(
            collector.collect(), readiness(request.app.state, db_session, task_queues)
        )
        jobs = CollectorRegistry(auto_describe=False)
        jobs.register(_Prepared([*families, readiness_family(ready)]))
        body = generate_latest(http_registry()) + generate_latest(jobs)
        # As a header: as a media type, Litestar would add a second charset to it.
        return Response(body, headers={"Content-Type": CONTENT_TYPE_LATEST})


class PruneRequest(msgspec.Struct, forbid_unknown_fields=True):
    """Body of `POST /api/v1/ops/prune` (optional)."""

    # Absent or null: JOB_RETENTION_DAYS. A number that is whole (`30` or `30.0`: JSON
    # Schema's "integer" allows both) rather than an int, which would refuse `30.0`.
    older_than_days: (
        Annotated[float, msgspec.Meta(ge=1, le=RETENTION_DAYS_MAX, multiple_of=1)] | None
    ) = None


class PruneResult(msgspec.Struct):
    deleted: int  # rows of background_jobs deleted (with their partitions)
    # A number (an int unless JOB_RETENTION_DAYS has a fraction): "int | float" would be a
    # oneOf that a whole number matches twice, which no answer satisfies.
    older_than_days: float
    cutoff: datetime  # partitions of jobs created before this were dropped
    complete: bool  # false: partitions past the window are left for the next call
    partitions: list[str] = msgspec.field(default_factory=list)  # dropped
    kept: list[str] = msgspec.field(default_factory=list)  # past the window, not dropped yet


class OpsController(Controller):
    path = "/api/v1/ops"
    tags = ("operations",)
    opt = role(Role.ADMIN)
    security = BEARER

    @post(
        "/prune",
        status_code=HTTP_200_OK,
        dto=StrictJSONBody[PruneRequest],
        return_dto=None,
        operation_class=OptionalBody,
        responses=errors(
            {
                400: "The body is not JSON, or older_than_days is not an integer from 1 to "
                f"{RETENTION_DAYS_MAX}, or it is missing while JOB_RETENTION_DAYS is 0.",
                415: NOT_JSON,
                503: "PostgreSQL cannot be reached; some rows may have been deleted.",
            }
        ),
    )
    async def prune(
        self,
        retention: NamedDependency[Retention],
        audit: NamedDependency[AuditLog],
        principal: NamedDependency[Principal],
        data: JSONBody[PruneRequest | None] = None,
    ) -> PruneResult:
        """Drop the partitions of jobs created more than `older_than_days` ago (default:
        JOB_RETENTION_DAYS), oldest first; their unfinished jobs, and those changed
        since, stay. One audit row (`prune`)."""
        asked_days = data.older_than_days if data is not None else None
        days: int | float = int(asked_days) if asked_days is not None else retention.job_days
        days = int(days) if float(days).is_integer() else days
        if not days:
            raise ValidationException(
                detail="retention is off (JOB_RETENTION_DAYS=0): give older_than_days"
            )
        asked = {"older_than_days": days}
        try:
            pruned = await retention.prune_jobs(days)
        except Exception as exc:
            await audit.record(
                principal, AuditAction.PRUNE, filter=asked, count=0, outcome=Outcome.FAILED,
                detail=f"{type(exc).__name__}: {exc}",
            )  # fmt: skip
            raise
        await audit.record(
            principal,
            AuditAction.PRUNE,
            filter={**asked, "cutoff": pruned.cutoff.isoformat()},
            count=pruned.deleted,
            detail=None if pruned.complete else f"left for a later pass: {', '.join(pruned.kept)}",
        )
        return PruneResult(
            pruned.deleted, days, pruned.cutoff, pruned.complete, pruned.partitions, pruned.kept
        )


class Operations(InitPluginProtocol):
    """`/metrics` with its guard and the HTTP metrics middleware, and the prune route."""

    def __init__(
        self,
        collector: JobsCollector,
        retention: Retention,
        access: ScrapeAccess,
        *,
        app_name: str = "tracked-jobs",
    ) -> None:
        self._collector = collector
        self._retention = retention
        self._access = access
        self._prometheus = PrometheusConfig(
            app_name=app_name, prefix="bgjobs_http", group_path=True, exclude=_NOT_MEASURED
        )

    def on_app_init(self, app_config: AppConfig) -> AppConfig:
        disable_created_metrics()  # type: ignore[no-untyped-call]  # `_created` twins: noise
        app_config.route_handlers.extend([MetricsController, OpsController])
        app_config.middleware.append(self._prometheus.middleware)
        app_config.state["scrape_access"] = self._access
        app_config.state["jobs_collector"] = self._collector
        retention = self._retention

        def provide_retention() -> Retention:
            return retention

        app_config.dependencies["retention"] = Provide(
            provide_retention, use_cache=True, sync_to_thread=False
        )
        return app_config
