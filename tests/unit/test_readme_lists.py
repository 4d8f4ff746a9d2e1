"""What the README and `.env.example` list is what the code has: every variable
`Settings.from_env` reads, and every endpoint of the app, each once."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path

from app.asgi import create_app
from app.config import Settings

ROOT = Path(__file__).resolve().parents[2]
ENV_LINE = re.compile(r"^#? ?([A-Z][A-Z0-9_]*)=(.*)$")
# Where `.env.example` turns from the app's settings to docker compose's own variables.
COMPOSE_PART = "# docker compose (docker-compose.yml) reads the variables below"
# Endpoints outside the OpenAPI schema: Prometheus' text, SAQ's UI, the docs themselves.
NOT_IN_THE_SCHEMA = {"GET /metrics", "/saq", "GET /schema"}


class RecordingEnvironment(Mapping[str, str]):
    """An empty environment that remembers every name it was asked for."""

    def __init__(self) -> None:
        self.asked: set[str] = set()

    def __getitem__(self, name: str) -> str:
        self.asked.add(name)
        raise KeyError(name)

    def __contains__(self, name: object) -> bool:
        self.asked.add(str(name))
        return False

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


def variables_read() -> set[str]:
    environment = RecordingEnvironment()
    assert Settings.from_env(environment) == Settings.from_env({})
    return environment.asked


def readme_section(title: str) -> str:
    readme = (ROOT / "README.md").read_text()
    return readme.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def first_cells(section: str) -> list[str]:
    """The first cell of each row of the section's tables (headers and rules left out)."""
    rows = [line for line in section.splitlines() if line.startswith("| ")]
    return [row.split(" | ", 1)[0].removeprefix("| ") for row in rows if "---" not in row][1:]


def test_the_readme_configuration_table_lists_every_variable_once() -> None:
    names = [
        match.group(1)
        for cell in first_cells(readme_section("Configuration"))
        if (match := re.fullmatch(r"`([A-Z][A-Z0-9_]*)`", cell))
    ]
    assert [name for name, seen in Counter(names).items() if seen > 1] == []
    assert set(names) == variables_read()


def test_env_example_lists_every_variable_with_its_default() -> None:
    settings_part = (ROOT / ".env.example").read_text().split(COMPOSE_PART, 1)[0]
    lines = [m for line in settings_part.splitlines() if (m := ENV_LINE.match(line))]
    names = [match.group(1) for match in lines]
    assert [name for name, seen in Counter(names).items() if seen > 1] == []
    assert set(names) == variables_read()
    # The file says so: each value given (uncommented) is the default.
    given = {m.group(1): m.group(2) for m in lines if not m.group(0).startswith("#")}
    assert Settings.from_env(given) == Settings.from_env({})


def readme_endpoints() -> list[str]:
    """ "METHOD /path" of each endpoint the README's API table names (a row may name two)."""
    found = []
    for cell in first_cells(readme_section("API")):
        for method, path in re.findall(r"`(?:(GET|POST|PUT|PATCH|DELETE) )?(/[^`?]*)[^`]*`", cell):
            found.append(f"{method} {path}" if method else path)
    return found


def test_the_readme_api_table_names_every_endpoint_once() -> None:
    schema = create_app(Settings.from_env({})).openapi_schema.to_schema()
    in_schema = {
        f"{method.upper()} {path}" for path, item in schema["paths"].items() for method in item
    }
    listed = readme_endpoints()
    assert [name for name, seen in Counter(listed).items() if seen > 1] == []
    assert set(listed) == in_schema | NOT_IN_THE_SCHEMA
