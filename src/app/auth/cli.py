"""`litestar --app app.asgi:create_app keys create|list|revoke`: API keys from a shell.

The commands work on DATABASE_URL, like `litestar database upgrade`, so the first admin key
can be made before any key exists. `keys create` prints the key alone on stdout (for
`KEY=$(...)`) and what it made on stderr; the key is not shown again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Protocol, TypeVar
from uuid import UUID

import click
from litestar.plugins import CLIPluginProtocol

from app.auth.keys import ApiKeyService, KeyScopeError, UnknownKeyError
from app.auth.roles import CLI, Role

if TYPE_CHECKING:
    from advanced_alchemy.extensions.litestar import SQLAlchemyAsyncConfig
    from sqlalchemy.ext.asyncio import AsyncSession

T = TypeVar("T")


class _Run(Protocol):
    """Runs one piece of work with a key service on DATABASE_URL, then closes the engine."""

    def __call__(self, work: Callable[[ApiKeyService], Awaitable[T]], /) -> T: ...


class KeysCli(CLIPluginProtocol):
    """Adds the `keys` command group to the Litestar CLI."""

    def __init__(self, database: SQLAlchemyAsyncConfig) -> None:
        self.database = database

    def on_cli_init(self, cli: click.Group) -> None:
        cli.add_command(keys_group(self._run))

    def _run(self, work: Callable[[ApiKeyService], Awaitable[T]]) -> T:
        async def main() -> T:
            sessions: Callable[[], AsyncSession] = self.database.create_session_maker()
            try:
                async with sessions() as session:
                    return await work(ApiKeyService(session))
            finally:
                await self.database.get_engine().dispose()

        return asyncio.run(main())


def keys_group(run: _Run) -> click.Group:
    @click.group(name="keys")
    def keys() -> None:
        """Create, list and revoke API keys (docs/security.md)."""

    @keys.command(name="create")
    @click.option("--role", "role", type=click.Choice([r.value for r in Role]), required=True)
    @click.option("--project-id", type=click.UUID, default=None, help="Scope the key to a project.")
    @click.option(
        "--name", default="created with the CLI", show_default=True, help="What it is for."
    )
    def create(role: str, project_id: UUID | None, name: str) -> None:
        """Create a key and print it once."""
        try:
            created = run(
                lambda service: service.create_key(
                    role=Role(role), name=name, project_id=project_id, actor=CLI
                )
            )
        except KeyScopeError as exc:
            raise click.ClickException(str(exc)) from None
        scope = f", project {created.row.project_id}" if created.row.project_id else ""
        click.echo(
            f"created {created.row.role} key {created.row.prefix} (id {created.row.id}{scope}); "
            "it is shown once, store it now:",
            err=True,
        )
        click.echo(created.plaintext)

    @keys.command(name="list")
    def list_keys() -> None:
        """Every key (never its secret), newest first."""
        rows = run(lambda service: service.list_keys())
        for row in rows:
            state = f"revoked {row.revoked_at:%Y-%m-%d %H:%M}" if row.revoked_at else "active"
            used = f"{row.last_used_at:%Y-%m-%d %H:%M}" if row.last_used_at else "never"
            click.echo(
                f"{row.id}  {row.prefix}  {row.role:<8}  project={row.project_id or '-'}  "
                f"used={used}  {state}  {row.name}"
            )

    @keys.command(name="revoke")
    @click.argument("key_id", type=click.UUID)
    def revoke(key_id: UUID) -> None:
        """Revoke a key by its id (see `keys list`)."""
        try:
            row = run(lambda service: service.revoke(key_id, actor=CLI))
        except UnknownKeyError as exc:
            raise click.ClickException(str(exc)) from None
        click.echo(f"revoked key {row.prefix} ({row.id})")

    return keys
