"""docker-compose.yml and the Dockerfile, read as files: no engine runs here (see the README's
Docker notes), so what `docker compose up` would do is checked against what the README says."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from app.config import Settings

ROOT = Path(__file__).resolve().parents[2]
APP_SERVICES = ("migrate", "api", "worker")
# The seed README's Docker commands, word for word: they must keep working.
SEED_COMMANDS = (
    "docker-compose up --build",
    "docker-compose logs -f worker",
    'docker-compose exec db psql -U user -d app_db -c "SELECT * FROM background_jobs'
    ' ORDER BY created_at DESC LIMIT 1;"',
)
SEED_API = "http://localhost:8000/api/v1/tasks/trigger-test"
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|_KEY$")
VARIABLE = re.compile(r"\$\{(\w+)(?:(:?[-?])([^}]*))?\}")


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's `${VAR}`, `${VAR:-default}` and `${VAR-default}`, with `env` as .env."""

    def one(match: re.Match[str]) -> str:
        name, operator, default = match.group(1), match.group(2) or "", match.group(3) or ""
        given = env.get(name)
        if operator == ":-" and not given:
            return default
        if operator == "-" and given is None:
            return default
        if operator.endswith("?") and not given:
            raise AssertionError(f"{name} is required: {default}")
        return given or ""

    return VARIABLE.sub(one, value)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


@pytest.fixture(scope="module")
def readme() -> str:
    """The README with its whitespace folded, so a command broken over two lines still reads."""
    return " ".join((ROOT / "README.md").read_text().split())


def published_ports(service: dict[str, Any], env: dict[str, str]) -> list[tuple[str, str]]:
    """(host address, host port) of every port the service publishes."""
    found = []
    for port in service.get("ports", []):
        if isinstance(port, dict):
            host_ip = interpolate(str(port.get("host_ip", "")), env)
            found.append((host_ip, interpolate(str(port.get("published", "")), env)))
            continue
        parts = interpolate(str(port), env).split(":")
        if len(parts) == 3:
            found.append((parts[0], parts[1]))
        else:  # "8000" or "8000:8000": every interface
            found.append(("", parts[0]))
    return found


def test_every_published_port_is_on_loopback_by_default(compose: dict[str, Any]) -> None:
    published = {
        name: published_ports(service, env={}) for name, service in compose["services"].items()
    }
    assert published["api"] == [("127.0.0.1", "8000")]
    for name, ports in published.items():
        assert all(address == "127.0.0.1" for address, _ in ports), (name, ports)
    # The database and Redis are reached over the stack's network (and `exec`), not the host.
    assert published["db"] == []
    assert published["redis"] == []


def test_bind_address_and_api_port_move_the_api_port(compose: dict[str, Any]) -> None:
    opened = published_ports(
        compose["services"]["api"], env={"BIND_ADDRESS": "0.0.0.0", "API_PORT": "18000"}
    )
    assert opened == [("0.0.0.0", "18000")]


@pytest.mark.parametrize("service", ["api", "worker"])
def test_app_services_wait_for_their_dependencies(compose: dict[str, Any], service: str) -> None:
    assert compose["services"][service]["depends_on"] == {
        "db": {"condition": "service_healthy"},
        "redis": {"condition": "service_healthy"},
        "migrate": {"condition": "service_completed_successfully"},
    }


def test_migrations_wait_for_a_healthy_database(compose: dict[str, Any]) -> None:
    assert compose["services"]["migrate"]["depends_on"] == {"db": {"condition": "service_healthy"}}
    for name in ("db", "redis"):
        assert "test" in compose["services"][name]["healthcheck"], name


def test_no_literal_secrets(compose: dict[str, Any]) -> None:
    """Secrets are `${VARIABLE...}` (from the environment or .env), and the app's URL uses the
    same password as the database it logs into."""
    db_password = compose["services"]["db"]["environment"]["POSTGRES_PASSWORD"]
    assert VARIABLE.fullmatch(db_password), db_password
    for name, service in compose["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if SECRET_NAME.search(key):
                assert VARIABLE.fullmatch(str(value)), (name, key, value)
            password = urlsplit(str(value)).password if "://" in str(value) else None
            if password is not None:
                assert password == db_password, (name, key, value)


def test_a_fresh_clone_runs_the_seed_commands(compose: dict[str, Any]) -> None:
    """No .env: the stack still starts, and the seed's psql and curl reach what it names."""
    services = compose["services"]
    db_env = {k: interpolate(str(v), {}) for k, v in services["db"]["environment"].items()}
    assert db_env["POSTGRES_PASSWORD"], "the postgres image refuses an empty password"
    app_url = urlsplit(interpolate(services["api"]["environment"]["DATABASE_URL"], {}))
    assert (app_url.username, app_url.password, app_url.hostname, app_url.path) == (
        db_env["POSTGRES_USER"], db_env["POSTGRES_PASSWORD"], "db", "/" + db_env["POSTGRES_DB"]
    )  # fmt: skip
    for command in SEED_COMMANDS:
        words = shlex.split(command)
        assert words[0] == "docker-compose"
        assert words[1] in {"up", "logs", "exec"}
        if words[1] in {"logs", "exec"}:
            assert words[-1 if words[1] == "logs" else 2] in services, command
    psql = shlex.split(SEED_COMMANDS[2])
    assert psql[psql.index("-U") + 1] == db_env["POSTGRES_USER"]
    assert psql[psql.index("-d") + 1] == db_env["POSTGRES_DB"]
    host_port = urlsplit(SEED_API).port
    assert published_ports(services["api"], env={}) == [("127.0.0.1", str(host_port))]


def test_env_example_lists_every_variable_compose_reads(compose: dict[str, Any]) -> None:
    used = set(VARIABLE.findall((ROOT / "docker-compose.yml").read_text()))
    names = {name for name, _, _ in used}
    listed = set(re.findall(r"^#? ?([A-Z][A-Z0-9_]*)=", (ROOT / ".env.example").read_text(), re.M))
    assert names <= listed, names - listed


def test_service_commands_are_the_readmes(compose: dict[str, Any], readme: str) -> None:
    for name in APP_SERVICES:
        command = " ".join(compose["services"][name]["command"])
        assert f"`{name}` runs `{command}`" in readme, command
    assert "litestar --app app.asgi:create_app database upgrade --no-prompt" in readme
    assert "`litestar --app app.asgi:create_app workers run --workers 4`" in readme


@pytest.mark.parametrize(
    ("dot_env", "api", "worker"),
    [({}, "1", "1"), ({"API_PROCESSES": "3", "WORKER_PROCESSES": "4"}, "3", "4")],
)
def test_process_counts_reach_uvicorn_and_the_worker_cli(
    compose: dict[str, Any], readme: str, dot_env: dict[str, str], api: str, worker: str
) -> None:
    """API_PROCESSES becomes uvicorn's WEB_CONCURRENCY (its --workers), WORKER_PROCESSES the
    worker CLI's --workers; both as the README says, and the rest of the api's environment
    is still the app's."""
    services = compose["services"]
    api_env = {k: interpolate(str(v), dot_env) for k, v in services["api"]["environment"].items()}
    assert api_env["WEB_CONCURRENCY"] == api
    assert set(api_env) - {"WEB_CONCURRENCY"} == set(services["worker"]["environment"])
    command = [interpolate(word, dot_env) for word in services["worker"]["command"]]
    assert command[command.index("--workers") + 1] == worker
    for name in ("API_PROCESSES", "WORKER_PROCESSES", "SESSION_SECRET"):
        assert f"`{name}`" in readme, name


def dockerfile_stages() -> dict[str, list[tuple[str, str]]]:
    """Each build stage's instructions as (INSTRUCTION, arguments), continuations joined."""
    text = re.sub(r"\\\n\s*", " ", (ROOT / "Dockerfile").read_text())
    stages: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        instruction, _, arguments = line.strip().partition(" ")
        if instruction.upper() == "FROM":
            current = stages.setdefault(arguments.split()[-1], [])
        current.append((instruction.upper(), arguments.strip()))
    return stages


def test_the_image_runs_the_api_as_compose_does(compose: dict[str, Any]) -> None:
    runtime = dockerfile_stages()["runtime"]
    assert list(dockerfile_stages())[-1] == "runtime"
    commands = [arguments for instruction, arguments in runtime if instruction == "CMD"]
    assert [yaml.safe_load(c) for c in commands] == [compose["services"]["api"]["command"]]
    assert not [i for i, _ in runtime if i == "ENTRYPOINT"], "compose's commands replace CMD"
    users = [arguments for instruction, arguments in runtime if instruction == "USER"]
    assert users
    assert users[-1].split(":")[0] not in {"0", "root"}


def test_dependencies_and_code_are_separate_layers() -> None:
    """The venv is built from the lock files alone and copied before the code, so a code
    change rebuilds only the code's layers."""
    stages = dockerfile_stages()
    builder_copies = [a for i, a in stages["builder"] if i == "COPY" and "--from" not in a]
    assert builder_copies == ["pyproject.toml uv.lock ./"]
    assert any("--no-install-project" in a for i, a in stages["builder"] if i == "RUN")
    copies = [a for i, a in stages["runtime"] if i == "COPY"]
    assert copies[0] == "--from=builder /app/.venv /app/.venv"
    assert {c.split()[0] for c in copies[1:]} == {"db", "src"}


def test_readme_uses_compose_v2_and_expanded_psql(readme: str) -> None:
    raw = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```[a-z]*\n(.*?)```", raw, flags=re.S)
    docker_lines = [line.strip() for b in blocks for line in b.splitlines() if "docker" in line]
    assert docker_lines, "the README's Docker steps are gone"
    assert all(line.startswith("docker compose ") for line in docker_lines), docker_lines
    assert (
        'docker compose exec db psql -x -U user -d app_db -c "SELECT * FROM background_jobs'
        ' ORDER BY created_at DESC LIMIT 1;"' in docker_lines
    )
    assert "docker compose logs -f worker" in docker_lines
    assert "docker compose up --build" in docker_lines


@pytest.mark.parametrize(
    ("dot_env", "open_mode"),
    [
        ({}, True),  # a fresh clone: the seed's curl needs no key (published on loopback only)
        (
            {"ADMIN_API_KEY": "bgj_Xb3k9QeZr7Lm2Pq8Vt4Wy6Ns1Dc5Fh0Jk"},
            False,
        ),  # a key in .env: checks on
        ({"AUTH_DISABLED": "false"}, False),
    ],
)
def test_the_stack_is_open_only_until_a_key_or_auth_is_configured(
    compose: dict[str, Any], dot_env: dict[str, str], open_mode: bool
) -> None:
    for name in ("api", "worker"):
        environment = compose["services"][name]["environment"]
        env = {key: interpolate(str(value), dot_env) for key, value in environment.items()}
        assert Settings.from_env(env).open_mode is open_mode, name
