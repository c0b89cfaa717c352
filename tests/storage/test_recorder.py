"""Nothing measured is lost: a database that stops mid-run gets everything once it is back."""

from __future__ import annotations

from pathlib import Path

from diffbench.storage import store
from diffbench.storage.recorder import Recorder

from factories import make_result, make_run


def test_postgres_stopping_mid_run_spools_then_writes_in_order(throwaway_postgres, tmp_path: Path) -> None:
    recorder = Recorder(throwaway_postgres.url, tmp_path / "spool")
    assert recorder.open_run(make_run())
    assert recorder.record("r1", make_result("flux"))

    throwaway_postgres.stop()
    assert not recorder.record("r1", make_result("wan"))
    assert not recorder.record("r1", make_result("qwen", error_class="server_exit"))
    assert not recorder.finish("r1", "failed", {"sglang": "0.5.4"})
    assert len(recorder.spool.pending()) == 3

    throwaway_postgres.start()
    assert recorder.record("r1", make_result("ltx"))  # the first write that works replays the spool first
    assert recorder.spool.pending() == []
    engine = recorder.engine()
    assert store.counts(engine)["results"] == 4
    frame = store.results_frame(engine)
    assert sorted(frame["case_id"]) == ["flux", "ltx", "qwen", "wan"]
    assert frame["run_status"].unique().tolist() == ["failed"]
    recorder.close()


def test_database_down_from_the_start(tmp_path: Path) -> None:
    recorder = Recorder("postgresql+psycopg://bench@127.0.0.1:1/results", tmp_path / "spool")
    assert not recorder.open_run(make_run())
    assert not recorder.record("r1", make_result())
    later = Recorder(f"sqlite:///{tmp_path / 'results.db'}", tmp_path / "spool")
    assert later.flush() == 2  # a later run on a reachable database takes over the spool
    assert store.counts(later.engine())["results"] == 1
    later.close()
