"""Migrations: one head, upgrades on SQLite and Postgres, and the models match the schema."""

from __future__ import annotations

import hashlib
import json

from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text

from diffbench.storage import migrate, store

from factories import make_result, make_run


def test_single_head() -> None:
    assert len(ScriptDirectory.from_config(migrate.alembic_config()).get_heads()) == 1


def test_upgrade_to_head_then_check_finds_no_drift(database_url: str) -> None:
    engine = store.open_database(database_url)
    assert {"runs", "results", "samples", "stage_timings", "alembic_version"} <= set(inspect(engine).get_table_names())
    with engine.begin() as connection:
        command.check(migrate.alembic_config(connection))  # raises if the models and the schema differ
    store.open_database(database_url).dispose()  # a second open finds head and changes nothing
    engine.dispose()


def test_a_new_engine_build_stays_in_its_series_and_a_config_change_starts_one() -> None:
    old = make_result(image_digest="sha256:" + "1" * 64, engine_version="0.5.4")
    assert make_result(image_digest="sha256:" + "2" * 64, engine_version="0.5.5").series_key == old.series_key
    assert make_result(config_hash="c" * 16, image_digest=old.image_digest).series_key != old.series_key
    assert make_result(hardware="NVIDIA H200").series_key != old.series_key


def test_0004_recomputes_the_keys_of_results_stored_with_an_image_in_them(database_url: str) -> None:
    engine = store.open_database(database_url)
    store.save_run(engine, make_run())
    result = make_result(image_digest="sha256:" + "1" * 64)
    store.save_result(engine, "r1", result)
    digest_key = hashlib.sha256(json.dumps([result.config_hash, result.engine, result.hardware, result.methodology,
                                            result.image_digest]).encode()).hexdigest()[:16]
    with engine.begin() as connection:
        command.downgrade(migrate.alembic_config(connection), "0003")  # the key as 0003 stored it, image and all
        assert connection.execute(text("SELECT series_key FROM results")).scalar_one() == digest_key
    store.open_database(database_url).dispose()
    with engine.connect() as connection:
        assert connection.execute(text("SELECT series_key FROM results")).scalar_one() == result.series_key
    engine.dispose()
