"""Bringing a database to the newest schema with Alembic; run by the code when needed."""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine


def alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", "diffbench:migrations")
    # Dated file names keep the history readable, as in Prefect's migrations.
    config.set_main_option("file_template", "%%(year)d_%%(month).2d_%%(day).2d_%%(rev)s_%%(slug)s")
    config.attributes["connection"] = connection
    return config


def head() -> str:
    return ScriptDirectory.from_config(alembic_config()).get_current_head() or ""


def upgrade(engine: Engine) -> None:
    """Upgrade to head unless the database is already there."""
    with engine.begin() as connection:
        if MigrationContext.configure(connection).get_current_revision() == head():
            return
        command.upgrade(alembic_config(connection), "head")
