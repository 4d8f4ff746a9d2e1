"""The monitor in the app: its routes, templates, static files, session checks and services,
added by one plugin (`Monitor`) so that `create_app` wires it in one line."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from pathlib import Path

from litestar.config.app import AppConfig
from litestar.di import Provide
from litestar.plugins import InitPluginProtocol
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.static_files import create_static_files_router
from litestar.template.config import TemplateConfig
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.guard import PUBLIC, Authenticator
from app.auth.session import SessionCookies
from app.monitor.actions import MonitorActions
from app.monitor.cron import MonitorCron
from app.monitor.login import MonitorLogin, MonitorLoginController
from app.monitor.pages import MonitorPages
from app.monitor.queries import MonitorQueries
from app.monitor.row_html import rows_html
from app.monitor.security import MONITOR_PATH, BrowserRequestChecks, csrf_config
from app.monitor.workers import MonitorWorkers

HERE = Path(__file__).parent
STATIC_PATH = f"{MONITOR_PATH}/static"


class Monitor(InitPluginProtocol):
    """The monitor at `/monitor` (README "Monitor", docs/security.md)."""

    def __init__(
        self,
        sessions: Callable[[], AsyncSession],
        authenticator: Authenticator,
        cookies: SessionCookies,
        secret: str,
        saq_path: str | None,
    ) -> None:
        self.queries = MonitorQueries(sessions)
        self.login = MonitorLogin(authenticator, cookies)
        self.cookies = cookies
        # Its own key for the CSRF tokens: the session secret signs only sessions.
        self.csrf_secret = hmac.new(secret.encode(), b"monitor csrf", hashlib.sha256).hexdigest()
        self.saq_path = saq_path.rstrip("/") if saq_path else None

    def on_app_init(self, app_config: AppConfig) -> AppConfig:
        app_config.route_handlers.extend(
            [
                MonitorPages,
                MonitorCron,
                MonitorWorkers,
                MonitorActions,
                MonitorLoginController,
                create_static_files_router(
                    path=STATIC_PATH,
                    directories=[HERE / "static"],
                    name="monitor-static",
                    include_in_schema=False,
                    opt=PUBLIC,
                ),
            ]
        )
        app_config.template_config = TemplateConfig(
            directory=HERE / "templates",
            engine=JinjaTemplateEngine,
            engine_callback=_template_globals,
        )
        app_config.middleware.append(
            BrowserRequestChecks(csrf_config(self.csrf_secret), self.cookies, self.saq_path)
        )
        queries, login = self.queries, self.login
        app_config.dependencies["monitor_queries"] = Provide(
            lambda: queries, use_cache=True, sync_to_thread=False
        )
        app_config.dependencies["monitor_login"] = Provide(
            lambda: login, use_cache=True, sync_to_thread=False
        )
        app_config.state["monitor_saq_path"] = self.saq_path
        return app_config


def _template_globals(engine: JinjaTemplateEngine) -> None:
    engine.engine.globals["job_rows_html"] = rows_html
