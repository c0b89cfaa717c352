"""`diffbench demo`: the whole flow on embedded defaults (reference engine, tiny models, SQLite)."""

from __future__ import annotations

import os
import shutil
from importlib import resources
from pathlib import Path

TINY_MODELS = {"tiny-flux": "flux", "tiny-wan": "wan"}
# sglang's published nightly results, 2026-03-19 → 06-30: the demo's history of trends, breaks and changes.
HISTORY_PAGE = "sglang-history"
# The `config` that names the demo matrix: what a run needs no hub, no GPU and no file for.
DEMO_CONFIG = "demo"


def prepare(workdir: Path) -> Path:
    """Build the tiny models (once) and place the demo matrix next to them; return its path."""
    from diffbench.reference import tiny_models  # noqa: PLC0415 - torch is only needed here

    workdir.mkdir(parents=True, exist_ok=True)
    for name, arch in TINY_MODELS.items():
        if not (workdir / "models" / name / "model_index.json").exists():
            print(f"building tiny {arch} model in {workdir / 'models' / name}", flush=True)
            tiny_models.build(arch, workdir / "models" / name)  # type: ignore[arg-type]
    config = workdir / "demo.yaml"
    with resources.as_file(resources.files("diffbench.defaults") / "demo.yaml") as source:
        shutil.copyfile(source, config)
    return config


def history_files() -> list[Path]:
    """sglang's nightly result files that diffbench ships, oldest first."""
    return sorted(Path(str(resources.files("diffbench.defaults") / "sglang_history")).glob("*.json"))


def load_history(database_url: str) -> int:
    """Import sglang's shipped history into the demo's database (each file once); how many files were new."""
    from diffbench.sglang_import import import_file  # noqa: PLC0415
    from diffbench.storage import store  # noqa: PLC0415

    engine = store.open_database(database_url)
    try:
        return sum(import_file(engine, path) for path in history_files())
    finally:
        engine.dispose()


def write_history_page(database_url: str, out: Path) -> tuple[Path, int]:
    """The dashboard of sglang's latest imported night, with its trends, breaks and detected changes, in `out`;
    its index and how many changes the detector found in the whole history."""
    from diffbench import dashboard  # noqa: PLC0415
    from diffbench.regressions import scan  # noqa: PLC0415
    from diffbench.sglang_import import SOURCE  # noqa: PLC0415
    from diffbench.storage import store  # noqa: PLC0415

    engine = store.open_database(database_url)
    try:
        frame, changes = store.results_frame(engine), scan(store.nightly_points(engine))
    finally:
        engine.dispose()
    imported = frame[frame["source"] == SOURCE].sort_values("started_at")
    return dashboard.build(frame, str(imported["run_id"].iloc[-1]), changes).write(out), len(changes)


def environment(workdir: Path) -> dict[str, str]:
    """Settings that keep everything the demo writes inside `workdir`, on SQLite."""
    workdir = workdir.resolve()
    return {
        "DIFFBENCH_STATE_DIR": str(workdir),
        "DIFFBENCH_DATABASE_URL": f"sqlite:///{workdir / 'diffbench.db'}",
        "DIFFBENCH_DASHBOARD_DIR": str(workdir / "dashboard"),
    }


def configure(workdir: Path) -> Path:
    """Prepare the demo and point this process's settings at its folder; return the matrix path."""
    os.environ.update(environment(workdir))
    return prepare(workdir)


def matrix_path(config: str, state_dir: Path) -> Path:
    """The case matrix `config` names: a file, or the demo's, prepared under `state_dir`."""
    return prepare(state_dir / "demo") if config == DEMO_CONFIG else Path(config)
