"""The roles of SAQ's web UI at `/saq`: viewers read it, operators retry and abort from it.

litestar-saq builds the UI's controller itself, so its routes cannot be given an `opt=` like
ours. This plugin (listed after `SAQPlugin`) mounts that controller inside a router whose
`opt` declares the roles, which Litestar merges into each of the controller's routes; the
app-wide guard (`require_role`) then checks them like any other route's, by method. The UI's
static files (JS and CSS) stay public: litestar-saq marks them `exclude_from_auth`.

litestar-saq's JSON answers carry each job's arguments (`kwargs`) and result as SAQ holds
them. The two routes that show jobs (a queue with its jobs, one job) are replaced by ours,
which mask them for viewers exactly as the API's job bodies are masked (`Redactor`): the
UI's pages draw from these answers, so they show the mask too.

The same router writes the audit row of each retry and abort made from the UI, after the
answer (`after_response` runs only for calls that succeeded).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from uuid import UUID

from litestar import Controller, MediaType, Request, Response, Router, get
from litestar.config.app import AppConfig
from litestar.di import NamedDependency
from litestar.params import FromPath
from litestar.plugins import InitPluginProtocol
from litestar_saq import SAQConfig, TaskQueues
from litestar_saq.controllers import build_controller, get_queue_or_404, job_info

from app.auth.audit import AuditAction, AuditLog
from app.auth.guard import role
from app.auth.roles import Principal, Role
from app.jobs.http.shared.redaction import Redactor

# It lists and acts on every job in Redis: keys scoped to a project stay out.
SAQ_WEB_ROLES = role(Role.VIEWER, write=Role.OPERATOR, every_project=True)


_APP_ROOT = '<div id="app"></div>'  # where SAQ's script draws its page
_UI_ACTIONS = {"retry": AuditAction.SAQ_RETRY, "abort": AuditAction.SAQ_ABORT}


class SaqWebRoles(InitPluginProtocol):
    def __init__(self, config: SAQConfig, audit: AuditLog, monitor_path: str | None = None) -> None:
        self.config = config
        self.audit = audit
        self.monitor_path = monitor_path  # SAQ's page links there (the history of every job)

    def on_app_init(self, app_config: AppConfig) -> AppConfig:
        if not self.config.web_enabled:
            return app_config
        # The same arguments give the same class: litestar-saq caches what it builds.
        ui = build_controller(
            self.config.web_path, self.config.web_guards, self.config.web_include_in_schema
        )
        if ui not in app_config.route_handlers:
            raise RuntimeError("SaqWebRoles must be listed after SAQPlugin")
        masked = masking_controller(ui, self.config.web_path)
        app_config.route_handlers = [
            Router(
                path="/",
                route_handlers=[masked],
                opt=SAQ_WEB_ROLES,
                after_response=audit_ui_actions(self.audit),
                after_request=link_to(self.monitor_path) if self.monitor_path else None,
            )
            if handler is ui
            else handler
            for handler in app_config.route_handlers
        ]
        return app_config


def masking_controller(ui: type[Controller], web_path: str) -> type[Controller]:
    """litestar-saq's controller with its two routes that show jobs replaced by ones that
    mask arguments and results for viewers (same paths, names and answers otherwise)."""
    base = web_path.rstrip("/")

    class MaskedSaqController(ui):  # type: ignore[valid-type,misc]
        @get(
            operation_id="WorkerQueueDetail",
            name="worker:queue-detail",
            path=f"{base}/api/queues/{{queue_id:str}}",
            media_type=MediaType.JSON,
            cache=False,
        )
        async def queue_detail(
            self,
            task_queues: TaskQueues,
            queue_id: FromPath[str],
            principal: NamedDependency[Principal],
            redactor: NamedDependency[Redactor],
        ) -> dict[str, Any]:
            info: dict[str, Any] = dict(
                await get_queue_or_404(task_queues, queue_id).info(jobs=True)
            )
            info["jobs"] = [shown_job(job, redactor, principal) for job in info["jobs"]]
            return {"queue": info}

        @get(
            operation_id="WorkerJobDetail",
            name="worker:job-detail",
            path=f"{base}/api/queues/{{queue_id:str}}/jobs/{{job_id:str}}",
            media_type=MediaType.JSON,
            cache=False,
        )
        async def job_detail(
            self,
            task_queues: TaskQueues,
            queue_id: FromPath[str],
            job_id: FromPath[str],
            principal: NamedDependency[Principal],
            redactor: NamedDependency[Redactor],
        ) -> dict[str, Any]:
            job = await job_info(get_queue_or_404(task_queues, queue_id), job_id)
            shown = shown_job(job.to_dict(), redactor, principal)
            # litestar-saq's own spelling of a job's page: arguments and result as Python reprs.
            for name in ("kwargs", "result"):
                if name in shown:
                    shown[name] = repr(shown[name])
            return {"job": shown}

    return MaskedSaqController


def shown_job(job: dict[str, Any], redactor: Redactor, principal: Principal) -> dict[str, Any]:
    """A SAQ job's dict as `principal` may see it: its arguments and result masked for
    viewers, as `Redactor.job` masks a row's."""
    if not redactor.masks_for(principal):
        return job
    masked = dict(job)
    for name in ("kwargs", "result"):
        if name in masked:
            masked[name] = redactor.value(masked[name])
    return masked


def link_to(monitor_path: str) -> Callable[[Response[Any]], Awaitable[Response[Any]]]:
    """The UI router's `after_request`: SAQ's page (litestar-saq's own HTML) gets a link to
    the monitor above the part its script draws."""
    link = (
        f'<nav class="container"><a href="{monitor_path}">History monitor: every job, '
        "searchable →</a></nav>"
    )

    async def add_link(response: Response[Any]) -> Response[Any]:
        if isinstance(response.content, str) and _APP_ROOT in response.content:
            response.content = response.content.replace(_APP_ROOT, link + _APP_ROOT, 1)
        return response

    return add_link


def audit_ui_actions(audit: AuditLog) -> Callable[[Request[Any, Any, Any]], Awaitable[None]]:
    """The UI router's `after_response`: an audit row per retry or abort (a plain function:
    Litestar deep-copies a router when it registers it)."""

    async def record(request: Request[Any, Any, Any]) -> None:
        action = _UI_ACTIONS.get(request.url.path.rsplit("/", 1)[-1])
        if request.method != "POST" or action is None:
            return
        principal: Principal = request.user
        job_key = str(request.path_params.get("job_id", ""))
        try:  # the API's jobs are keyed by their job_id; other SAQ keys go in the detail
            job_ids = [UUID(job_key)]
        except ValueError:
            job_ids = []
        queue = request.path_params.get("queue_id")
        await audit.record(
            principal, action, job_ids=job_ids, count=1, detail=f"from /saq: {queue}/{job_key}"
        )

    return record
