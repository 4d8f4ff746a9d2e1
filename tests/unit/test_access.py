"""Roles, key digests and every route's declared access, without I/O."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from app.asgi import create_app
from app.auth.guard import ByMethod, is_public, required_role, role
from app.auth.keys import KEY_PREFIX, digest, display_prefix, generate_key
from app.auth.roles import Principal, Role
from app.config import SECRET_MIN_BITS, Settings, SettingsError, estimated_bits

# The routes anyone may call: probes, the API docs and their assets, SAQ's JS and CSS (and,
# when they exist, /ready and /metrics, which a later setting may open).
PUBLIC_PATHS = re.compile(
    r"/health|/ready|/metrics|/schema(/.*)?|/saq/static/\{file_path:path\}"
    r"|/monitor/(login|logout|static/\{file_path:path\})"  # before a login there is no key
)


def test_roles_are_ordered_viewer_operator_admin() -> None:
    assert Role.VIEWER < Role.OPERATOR < Role.ADMIN
    assert Role.ADMIN > Role.VIEWER
    assert Role.ADMIN >= Role.ADMIN
    assert Role.VIEWER <= Role.VIEWER
    assert sorted([Role.ADMIN, Role.VIEWER, Role.OPERATOR]) == [
        Role.VIEWER,
        Role.OPERATOR,
        Role.ADMIN,
    ]
    assert Principal("x", Role.OPERATOR).may(Role.VIEWER)
    assert not Principal("x", Role.OPERATOR).may(Role.ADMIN)


def test_a_route_declares_a_role_by_method() -> None:
    saq = role(Role.VIEWER, write=Role.OPERATOR)
    assert saq["role"] == ByMethod(read=Role.VIEWER, write=Role.OPERATOR)
    assert [required_role(saq, method) for method in ("GET", "HEAD", "POST", "DELETE")] == [
        Role.VIEWER,
        Role.VIEWER,
        Role.OPERATOR,
        Role.OPERATOR,
    ]
    assert required_role(role(Role.ADMIN), "GET") is Role.ADMIN
    assert required_role({}, "GET") is None


def test_keys_are_long_random_and_recognisable() -> None:
    key = generate_key()
    assert key.startswith(KEY_PREFIX)
    assert len(key) >= 40
    assert key != generate_key()
    assert display_prefix(key) == key[:12]
    assert len(digest(key)) == 64


def test_the_bootstrap_key_is_kept_as_the_same_digest_and_never_in_plaintext() -> None:
    key = generate_key()
    settings = Settings.from_env({"ADMIN_API_KEY": key})
    assert settings.admin_key_digest == digest(key)
    assert key not in repr(settings)
    assert key not in str(vars(settings))


def test_a_short_bootstrap_key_is_refused() -> None:
    with pytest.raises(SettingsError, match="ADMIN_API_KEY must be at least 32"):
        Settings.from_env({"ADMIN_API_KEY": "too-short"})


@pytest.mark.parametrize("name", ["ADMIN_API_KEY", "METRICS_TOKEN"])
@pytest.mark.parametrize(
    "secret",
    [
        "a" * 32,
        "ab" * 16,
        "0123456789abcdef" * 2,
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaab",
        "aaaaaaaabbbbbbbbccccccccdddddddd",
    ],
)
def test_a_long_but_guessable_secret_is_refused(name: str, secret: str) -> None:
    with pytest.raises(SettingsError, match=f"{name} is too easy to guess"):
        Settings.from_env({name: secret})


@pytest.mark.parametrize(
    "secret",
    [
        generate_key(),
        "5c1f0e9a7b3d2c4e8f6a1b0d9c7e3f25",  # 32 random hex characters: 128 bits
        "Vq3xN8pL2mR7tY1wK9sD4fG6hJ0zBcXa",
        "test-bootstrap-admin-key-0123456789abcdef",
    ],
)
def test_a_random_secret_is_taken(secret: str) -> None:
    settings = Settings.from_env({"ADMIN_API_KEY": secret, "METRICS_TOKEN": secret})
    assert settings.admin_key_digest == digest(secret)
    assert estimated_bits(secret) >= SECRET_MIN_BITS


def test_a_guessable_key_stops_the_process_with_one_line() -> None:
    """What `uvicorn --factory app.asgi:create_app` prints, and nothing else."""
    run = subprocess.run(
        [sys.executable, "-c", "from app.asgi import create_app; create_app()"],
        env={**os.environ, "ADMIN_API_KEY": "a" * 32},
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 1
    lines = [line for line in (run.stdout + run.stderr).splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("configuration error: ADMIN_API_KEY is too easy to guess")


@pytest.mark.parametrize(
    ("env", "open_mode"),
    [
        ({}, False),
        ({"AUTH_DISABLED": "false"}, False),
        ({"AUTH_DISABLED": "true"}, True),
        ({"AUTH_DISABLED": "true", "ADMIN_API_KEY": generate_key()}, False),  # a key: checks on
    ],
)
def test_access_is_checked_unless_disabled_with_no_key(
    env: dict[str, str], open_mode: bool
) -> None:
    assert Settings.from_env(env).open_mode is open_mode


def test_every_route_declares_a_role_or_is_one_of_the_public_ones() -> None:
    app = create_app(Settings.from_env({}))
    public, guarded = set(), set()
    for route in app.routes:
        for handler in route.route_handlers:
            for method in sorted(getattr(handler, "http_methods", {"GET"}) - {"OPTIONS"}):
                if is_public(handler.opt):
                    public.add(route.path)
                    assert PUBLIC_PATHS.fullmatch(route.path), f"{route.path} is public"
                else:
                    assert required_role(handler.opt, method) is not None, (
                        f"{method} {route.path} declares no role"
                    )
                    guarded.add(route.path)
    assert {"/health", "/schema", "/schema/openapi.json", "/saq/static/{file_path:path}"} <= public
    assert {"/api/v1/jobs", "/api/v1/keys", "/api/v1/audit", "/saq", "/saq/api/queues"} <= guarded


# docs/security.md's table, route by route: the role each method needs, and whether a key
# scoped to a project is kept out (`every`: the route shows or acts on every project's jobs).
V, OP, A = Role.VIEWER, Role.OPERATOR, Role.ADMIN
DECLARED: dict[tuple[str, str], tuple[Role, bool]] = {
    ("GET", "/api/v1/audit"): (A, False),
    ("GET", "/api/v1/events"): (V, False),
    ("GET", "/api/v1/jobs"): (V, False),
    ("POST", "/api/v1/jobs/bulk/cancel"): (OP, False),
    ("POST", "/api/v1/jobs/bulk/retry"): (OP, False),
    ("GET", "/api/v1/jobs/stats"): (V, False),
    ("GET", "/api/v1/jobs/{job_id:str}"): (V, False),
    ("POST", "/api/v1/jobs/{job_id:str}/cancel"): (OP, False),
    ("GET", "/api/v1/jobs/{job_id:str}/events"): (V, False),
    ("POST", "/api/v1/jobs/{job_id:str}/retry"): (OP, False),
    ("GET", "/api/v1/keys"): (A, False),
    ("POST", "/api/v1/keys"): (A, False),
    ("POST", "/api/v1/keys/{key_id:uuid}/revoke"): (A, False),
    ("POST", "/api/v1/ops/prune"): (A, False),
    ("GET", "/api/v1/queues"): (V, True),
    ("POST", "/api/v1/queues/{name:str}/drain"): (OP, True),
    ("POST", "/api/v1/queues/{name:str}/pause"): (OP, True),
    ("POST", "/api/v1/queues/{name:str}/resume"): (OP, True),
    ("GET", "/api/v1/schedules"): (V, True),
    ("POST", "/api/v1/schedules/{name:str}/pause"): (OP, True),
    ("POST", "/api/v1/schedules/{name:str}/resume"): (OP, True),
    ("GET", "/api/v1/workers"): (V, True),
    ("POST", "/api/v1/tasks/trigger-test"): (OP, False),
    ("GET", "/monitor"): (V, True),
    ("GET", "/monitor/count"): (OP, True),
    ("GET", "/monitor/cron"): (V, True),
    ("GET", "/monitor/workers"): (V, True),
    ("GET", "/monitor/jobs"): (V, True),
    ("GET", "/monitor/jobs/{job_id:str}"): (V, True),
    ("GET", "/monitor/overview"): (V, True),
    ("GET", "/monitor/rows"): (V, True),
    ("GET", "/saq"): (V, True),
    ("GET", "/saq/api/queues"): (V, True),
    ("GET", "/saq/api/queues/{queue_id:str}"): (V, True),
    ("GET", "/saq/api/queues/{queue_id:str}/jobs/{job_id:str}"): (V, True),
    ("POST", "/saq/api/queues/{queue_id:str}/jobs/{job_id:str}/abort"): (OP, True),
    ("POST", "/saq/api/queues/{queue_id:str}/jobs/{job_id:str}/retry"): (OP, True),
    ("GET", "/saq/health"): (V, True),
    ("GET", "/saq/queues/{queue_id:str}"): (V, True),
    ("GET", "/saq/queues/{queue_id:str}/jobs/{job_id:str}"): (V, True),
}


def test_every_guarded_route_declares_exactly_the_role_the_docs_give() -> None:
    """Catches a route whose role was lowered (retry or a bulk action declared viewer) or
    raised, a scoped key let into a route that shows every project, or a new guarded route
    the docs do not list."""
    app = create_app(Settings.from_env({}))
    declared = {}
    for route in app.routes:
        for handler in route.route_handlers:
            for method in sorted(getattr(handler, "http_methods", {"GET"}) - {"OPTIONS"}):
                if not is_public(handler.opt):
                    role_needed = required_role(handler.opt, method)
                    assert role_needed is not None
                    every = bool(handler.opt.get("every_project"))
                    declared[(method, route.path)] = (role_needed, every)
    assert declared == DECLARED
