"""The roles of SAQ's web UI at `/saq`: viewers read it, operators retry and abort from it.

litestar-saq builds the UI's controller itself, so its routes cannot be given an `opt=` like
ours. This plugin (listed after `SAQPlugin`) mounts that controller inside a router whose
`opt` declares the roles, which Litestar merges into each of the controller's routes; the
app-wide guard (`require_role`) then checks them like any other route's, by method. The UI's
static files (JS and CSS) stay public: litestar-saq marks them `exclude_from_auth`.

The same router writes the audit row of each retry and abort made from the UI, after the
answer (`after_response` runs only for calls that succeeded).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from uuid import UUID

from litestar import Request, Response, Router
from litestar.config.app import AppConfig
from litestar.plugins import InitPluginProtocol
from litestar_saq import SAQConfig
from litestar_saq.controllers import build_controller

from app.auth.audit import AuditAction, AuditLog
from app.auth.guard import role
from app.auth.roles import Principal, Role

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
        app_config.route_handlers = [
            Router(
                path="/",
                route_handlers=[ui],
                opt=SAQ_WEB_ROLES,
                after_response=audit_ui_actions(self.audit),
                after_request=link_to(self.monitor_path) if self.monitor_path else None,
            )
            if handler is ui
            else handler
            for handler in app_config.route_handlers
        ]
        return app_config


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
