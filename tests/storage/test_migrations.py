"""Migrations: one head, upgrades on SQLite and Postgres, and the models match the schema."""

from __future__ import annotations

from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import inspect

from diffbench.storage import migrate, store


def test_single_head() -> None:
    assert len(ScriptDirectory.from_config(migrate.alembic_config()).get_heads()) == 1


def test_upgrade_to_head_then_check_finds_no_drift(database_url: str) -> None:
    engine = store.open_database(database_url)
    assert {"runs", "results", "samples", "stage_timings", "alembic_version"} <= set(inspect(engine).get_table_names())
    with engine.begin() as connection:
        command.check(migrate.alembic_config(connection))  # raises if the models and the schema differ
    store.open_database(database_url).dispose()  # a second open finds head and changes nothing
    engine.dispose()
