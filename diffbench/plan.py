"""What a run would do, per (case, framework), before anything is started."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from diffbench.cases import DockerLauncher, Pair
from diffbench.config import CaseMatrix
from diffbench.engines import ENGINES, ServerSpec
from diffbench.engines.environments import existing_environment
from diffbench.engines.parsing import parser_problems
from diffbench.errors import EnvironmentFailed
from diffbench.groups import server_groups

PLAN_PORT = 30000


@dataclass(frozen=True)
class PlanRow:
    """One (case, framework) as it would be launched and asked."""

    case: str
    framework: str
    engine: str | None
    runnable: bool
    num_gpus: int
    config_hash: str | None = None
    argv: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    endpoint: str | None = None
    request: dict[str, Any] = field(default_factory=dict)
    container: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def container_spec(pair: Pair) -> dict[str, Any] | None:
    """What a docker-launched server's container gets, as far as it is known before launch."""
    launcher = pair.options.launcher
    if not isinstance(launcher, DockerLauncher):
        return None
    return {
        "image": launcher.reference,
        "gpus": f"{pair.num_gpus}, by device_requests for the GPU ids assigned at launch",
        "mounts": [f"{pair.model} (model cache, read-only)", "the case's work folder (perf dumps)",
                   *launcher.volumes],
        "network": "host" if launcher.network == "host" else f"127.0.0.1:{PLAN_PORT} -> {PLAN_PORT}/tcp",
        "shm_size": launcher.shm_size,
        "env": launcher.env,
    }


def _shape_notes(matrix: CaseMatrix, pair: Pair) -> list[str]:
    """A case without a size leaves it to each engine, and their defaults differ (sglang: 1024x1024, 96 frames)."""
    case = pair.case
    others = {p.framework for p in matrix.pairs if p.case.id == case.id} - {pair.framework}
    missing = [name for name, value in (("size", case.size), ("num_frames", case.num_frames if case.is_video else 1))
               if value is None]
    if not others or not missing:
        return []
    return [f"no {' or '.join(missing)}: each engine uses its own default, not like for like"]


def _gpu_notes(matrix: CaseMatrix) -> dict[tuple[str, str], list[str]]:
    """Flag frameworks of one case that get different GPU counts: an unfair comparison."""
    notes: dict[tuple[str, str], list[str]] = {}
    for case in matrix.matrix.cases:
        counts = {p.framework: p.num_gpus for p in matrix.pairs if p.case.id == case.id}
        if len(set(counts.values())) > 1:
            spelled = ", ".join(f"{fw} {n}" for fw, n in counts.items())
            for framework in counts:
                notes[(case.id, framework)] = [f"GPU counts differ within this case ({spelled}): not like for like"]
    return notes


def _parser_notes(pairs: list[Pair], rows: list[PlanRow], envs_dir: Path) -> list[PlanRow]:
    """Run each engine's own CLI parser over its rows' argv, in its own environment; note what it refuses."""
    by_environment: dict[str, list[tuple[Pair, PlanRow]]] = {}
    refused: set[int] = set()
    for pair, row in zip(pairs, rows, strict=True):
        in_image = isinstance(pair.options.launcher, DockerLauncher)
        if ENGINES[pair.engine]().parsed_args(row.argv) is not None and not in_image:
            key = f"{pair.engine} {pair.options.python} {pair.options.pip}"
            by_environment.setdefault(key, []).append((pair, row))
    for members in by_environment.values():
        pair, first_row = members[0]
        engine = ENGINES[pair.engine]()
        try:
            environment = existing_environment(pair.options, envs_dir)
            if environment is None:
                raise EnvironmentFailed("its pip: environment is not built yet (the first run builds it)")
            argvs = [engine.parsed_args(row.argv) or [] for _, row in members]
            problems = parser_problems(pair.engine, environment, first_row.argv[0], argvs)
        except EnvironmentFailed as exc:
            for _, row in members:
                row.notes.append(f"serve args not checked: {exc}")
            continue
        for (_, row), problem in zip(members, problems, strict=True):
            if problem:
                row.notes.append(f"{pair.engine}'s own parser refuses the server arguments: {problem}")
                refused.add(id(row))
    return [replace(row, runnable=False) if id(row) in refused else row for row in rows]


def build_plan(
    matrix: CaseMatrix, cases: list[str] | None = None, frameworks: list[str] | None = None,
    check_with: Path | None = None,
) -> list[PlanRow]:
    """Rows for the selected pairs, plus one row per (case, framework) kept but not run, with why.

    With `check_with` (the folder of engine venvs), each engine's own parser checks its argv.
    """
    gpu_notes = _gpu_notes(matrix)
    rows = []
    pairs = matrix.select(cases, frameworks)
    # As launched: one server per group, its argv and environment covering every case it serves.
    served_with = {id(p): group.pairs for group in server_groups(pairs) for p in group.pairs}
    for pair in pairs:
        engine = ENGINES[pair.engine]()
        group = (pair, *(p for p in served_with[id(pair)] if p is not pair))
        spec = ServerSpec(pair, pair.bind_host, PLAN_PORT, pair.model, group=group)
        case = pair.case
        request = {
            "task": case.task, "size": case.size, "num_inference_steps": case.num_inference_steps,
            "num_frames": case.num_frames, "fps": case.fps, "guidance_scale": case.guidance_scale,
            "seed": case.seed, "warmup_requests": engine.warmup_requests(pair),
            "measurement_repeats": pair.measurement_repeats,
            "input_image": (matrix.matrix.test_image_url or "generated") if case.needs_image else None,
            "extra": pair.request_extra or None,
        }
        rows.append(PlanRow(
            case=case.id, framework=pair.framework, engine=pair.engine, runnable=True, num_gpus=pair.num_gpus,
            config_hash=pair.config_hash, argv=engine.command(spec), env=engine.environment(spec),
            endpoint=engine.endpoint(pair), request={k: v for k, v in request.items() if v is not None},
            container=container_spec(pair),
            notes=gpu_notes.get((case.id, pair.framework), []) + _shape_notes(matrix, pair) + engine.plan_notes(pair),
        ))
    if check_with is not None:
        rows = _parser_notes(pairs, rows, check_with)
    for case_id, framework, why in matrix.not_run(cases, frameworks):
        case = next(c for c in matrix.matrix.cases if c.id == case_id)
        note = (f"no adapter for {framework!r} (have: {', '.join(sorted(ENGINES))}): kept, not run"
                if why.error_class == "no_adapter" else f"{why.message}: kept, not run")
        rows.append(PlanRow(
            case=case_id, framework=framework, engine=None, runnable=False,
            num_gpus=case.frameworks[framework].get("num_gpus", case.num_gpus), notes=[note],
        ))
    return rows


def render(rows: list[PlanRow]) -> str:
    """A plain-text plan, one block per (case, framework)."""
    blocks = []
    for row in rows:
        engine = f" ({row.engine})" if row.engine not in (None, row.framework) else ""
        lines = [f"{row.case} / {row.framework}{engine}" + ("" if row.runnable else "  [NOT RUN]")]
        if row.runnable:
            lines += [
                f"  config hash  {row.config_hash}",
                f"  gpus         {row.num_gpus}",
                f"  argv         {' '.join(row.argv)}",
                f"  env          {' '.join(f'{k}={v}' for k, v in row.env.items()) or '-'}",
                f"  endpoint     {row.endpoint}",
                f"  request      {', '.join(f'{k}={v}' for k, v in row.request.items())}",
            ]
            if row.container:
                lines.append(f"  container    {', '.join(f'{k}={v}' for k, v in row.container.items())}")
        lines += [f"  note         {note}" for note in row.notes]
        blocks.append("\n".join(lines))
    runnable = sum(row.runnable for row in rows)
    blocks.append(f"{runnable} runnable pair(s), {len(rows) - runnable} not run; "
                  f"argv shows port {PLAN_PORT}, the launcher picks a free one")
    return "\n\n".join(blocks)
