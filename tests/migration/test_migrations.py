"""The Alembic migrations are the only way the schema is made: they must match the models."""

from __future__ import annotations

import os
import subprocess
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, inspect
from sqlalchemy.ext.asyncio import create_async_engine

from app.config import Settings
from app.db.models import BackgroundJob
from app.ops.partition_ranges import is_partition
from tests.support import APP, ROOT, VENV_BIN, Servers, create_database, drop_database, migrate


def _not_a_partition(name: str | None, type_: str, parent_names: Any) -> bool:
    return not (type_ == "table" and name is not None and is_partition(name))


def _diff(connection: Connection) -> list[Any]:
    # advanced-alchemy names Alembic's version table `alembic_versions`.
    context = MigrationContext.configure(
        connection,
        opts={"version_table": "alembic_versions", "include_name": _not_a_partition},
    )
    return list(compare_metadata(context, BackgroundJob.metadata))


async def test_the_migrated_schema_matches_the_models(database_url: str) -> None:
    engine = create_async_engine(Settings.from_env({"DATABASE_URL": database_url}).database_url)
    async with engine.connect() as connection:
        assert await connection.run_sync(_diff) == []
    await engine.dispose()


def test_there_is_one_head() -> None:
    config = Config()
    config.set_main_option("script_location", str(ROOT / "db" / "migrations"))
    assert len(ScriptDirectory.from_config(config).get_heads()) == 1


async def test_downgrade_to_base_and_upgrade_again(servers: Servers) -> None:
    name = create_database(servers)
    url = servers.database_url(name)
    try:
        migrate(url)
        subprocess.run(
            [str(VENV_BIN / "litestar"), "--app", APP, "database", "downgrade", "base",
             "--no-prompt"],
            check=True, capture_output=True, cwd=ROOT, env={**os.environ, "DATABASE_URL": url},
        )  # fmt: skip
        engine = create_async_engine(Settings.from_env({"DATABASE_URL": url}).database_url)
        async with engine.connect() as connection:
            tables = await connection.run_sync(lambda c: inspect(c).get_table_names())
        assert "background_jobs" not in tables
        migrate(url)
        async with engine.connect() as connection:
            assert await connection.run_sync(_diff) == []
        await engine.dispose()
    finally:
        drop_database(servers, name)
