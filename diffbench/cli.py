"""The `diffbench` command line."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path
from types import FrameType

import diffbench
from deployments.trigger import add_arguments as add_trigger_arguments
from deployments.trigger import run as run_trigger
from diffbench.errors import ConfigError, DiffbenchError


def _names(value: str) -> list[str]:
    names = [name.strip() for name in value.split(",") if name.strip()]
    if not names:
        raise argparse.ArgumentTypeError("give at least one name; leave the option out for all")
    return names


def _plan(args: argparse.Namespace) -> int:
    from diffbench.config import load_matrix  # noqa: PLC0415
    from diffbench.plan import build_plan, render  # noqa: PLC0415
    from diffbench.settings import Settings  # noqa: PLC0415

    check_with = None if args.no_parse else Settings().engine_envs_dir
    rows = build_plan(load_matrix(args.config), args.cases, args.frameworks, check_with)
    print(json.dumps([row.as_dict() for row in rows], indent=2) if args.json else render(rows))
    return 0


def _serve(args: argparse.Namespace) -> int:
    # OpenMP threads that spin after each parallel region take the cores the HTTP threads need, and
    # the answer waits for the scheduler (README, "Engines"). Read when torch loads.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    # torch and diffusers load only for the commands that need them.
    import uvicorn  # noqa: PLC0415

    from diffbench.reference.app import create_app  # noqa: PLC0415
    from diffbench.reference.runner import PipelineRunner  # noqa: PLC0415

    runner = PipelineRunner(args.model, args.device, args.dtype, args.step_delay_ms / 1000)
    print(f"loaded {args.model} on {runner.device} as {runner.dtype}", flush=True)
    uvicorn.run(create_app(runner, args.model), host=args.host, port=args.port, log_level="info")
    return 0


def _tiny_model(args: argparse.Namespace) -> int:
    from diffbench.reference.tiny_models import build  # noqa: PLC0415

    print(build(args.arch, args.out))
    return 0


# Exit codes of a run a signal stopped, as a shell reports a process the signal ended.
STOPPED_EXIT = {"SIGINT": 130, "SIGTERM": 143}
EXIT_CODES = """exit codes:
  0    done; every case measured
  1    a case failed, or an error its one-line message names (error [class]: ...)
  2    an invalid configuration or command line
  130  stopped by Ctrl-C (the run is marked cancelled)
  143  stopped by SIGTERM (the run is marked cancelled)
`diffbench trigger` has its own: see `diffbench trigger --help`."""


def _on_sigterm(_signum: int, _frame: FrameType | None) -> None:
    """SIGTERM outside the flow ends the command; inside, the flow stops its run and Prefect sends it here again.

    That second time it returns, so that Prefect's TerminationSignal ends the flow call and the run
    exits like one stopped by Ctrl-C: its Prefect API stopped, one line printed.
    """
    from diffbench.launcher import stop_reason  # noqa: PLC0415

    if stop_reason() is None:
        raise SystemExit(STOPPED_EXIT["SIGTERM"])


def _run_flow(config: Path, cases: list[str] | None, frameworks: list[str] | None, label: str | None,
              database_url: str | None, compare_to: str = "latest-nightly",
              engines: dict[str, str] | None = None) -> int:
    from diffbench.settings import Settings  # noqa: PLC0415
    from diffbench.storage.store import public_url  # noqa: PLC0415

    if database_url is not None:
        public_url(database_url)  # refused before a flow run, whose parameters anyone can read, exists
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    from diffbench.prefect_api import ensure_api  # noqa: PLC0415

    signal.signal(signal.SIGTERM, _on_sigterm)
    ensure_api(Settings().state_dir)
    # Prefect is imported only here, once its API is known: the rest of the CLI works without its start-up cost.
    from diffbench.launcher import stop_reason  # noqa: PLC0415
    from flows.nightly import STOPPED, CasesFailed, diffusion_comparison  # noqa: PLC0415

    try:
        diffusion_comparison(config=str(config), cases=cases, frameworks=frameworks, label=label, trigger="manual",
                             database_url=database_url, compare_to=compare_to, engines=engines)
    except CasesFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except STOPPED:
        reason = stop_reason() or "SIGINT"
        print(f"stopped by {reason}: the run is marked cancelled, with every sample measured before the stop",
              file=sys.stderr)
        return STOPPED_EXIT[reason]
    return 0


def _run(args: argparse.Namespace) -> int:
    return _run_flow(args.config, args.cases, args.frameworks, args.label, args.database_url, args.compare_to,
                     dict(args.engine) or None)


def _demo(args: argparse.Namespace) -> int:
    from diffbench.dashboard.page import TRENDS_HEADING  # noqa: PLC0415
    from diffbench.demo import HISTORY_PAGE, configure, history_files, load_history, write_history_page  # noqa: PLC0415
    from diffbench.settings import Settings  # noqa: PLC0415
    from diffbench.storage.store import redacted  # noqa: PLC0415

    config = configure(args.workdir)
    settings = Settings()
    database_url = settings.database_url.get_secret_value()
    loaded = load_history(database_url)
    code = _run_flow(config, None, None, "demo", None)
    index = settings.dashboard_dir / "index.md"
    if index.exists():
        print("\n" + index.read_text().split(f"\n{TRENDS_HEADING}")[0])
        print(f"dashboard: {index.resolve()}")
    history, changes = write_history_page(database_url, settings.dashboard_dir / HISTORY_PAGE)
    print(f"sglang's published history ({len(history_files())} nights, {loaded} imported now): {changes} level "
          f"change(s) and breaks found; its dashboard: {history.resolve()}")
    print(f"results: {redacted(database_url)} · models and server logs: {settings.state_dir.resolve()}")
    return code


def _dashboard(args: argparse.Namespace) -> int:
    from diffbench import dashboard  # noqa: PLC0415
    from diffbench.regressions import scan  # noqa: PLC0415
    from diffbench.settings import Settings  # noqa: PLC0415
    from diffbench.storage import store  # noqa: PLC0415

    engine = store.open_database(args.database_url or Settings().database_url.get_secret_value())
    try:
        page = dashboard.build(store.results_frame(engine), args.run, scan(store.nightly_points(engine)))
    except LookupError as exc:
        print(f"error: {exc.args[0]}", file=sys.stderr)
        return 1
    try:
        print(page.write(args.out))
    except OSError as exc:
        print(f"error: cannot write the dashboard to {args.out}: {exc.strerror}", file=sys.stderr)
        return 1
    return 0


def _regressions(args: argparse.Namespace) -> int:
    from diffbench.regressions import scan  # noqa: PLC0415
    from diffbench.settings import Settings  # noqa: PLC0415
    from diffbench.storage import store  # noqa: PLC0415

    engine = store.open_database(args.database_url or Settings().database_url.get_secret_value())
    try:
        points = store.nightly_points(engine, args.case, args.framework)
    finally:
        engine.dispose()
    changes = [change for change in scan(points) if args.since is None or change.date >= args.since]
    if args.json:
        print(json.dumps([change.as_dict() for change in changes], indent=2))
        return 0
    for c in changes:
        builds = f"{c.engine_version_before or '?'} → {c.engine_version_after or '?'}"
        print(f"{c.date}  {c.kind:<11} {c.case_id}/{c.framework}: {c.before:.3f} s → {c.after:.3f} s "
              f"(×{c.ratio:.3f}, confidence {c.confidence:.2f}; {builds}; run {c.run_id})")
    print(f"{len(changes)} change(s)" if changes else "no change found")
    return 0


def _compare(args: argparse.Namespace) -> int:
    from diffbench.compare import against_nightlies, against_run, markdown  # noqa: PLC0415
    from diffbench.settings import Settings  # noqa: PLC0415
    from diffbench.storage import store  # noqa: PLC0415

    engine = store.open_database(args.database_url or Settings().database_url.get_secret_value())
    try:
        run = store.run_measured(engine, args.run)
        comparisons = (against_run(run, store.run_measured(engine, args.against)) if args.against
                       else against_nightlies(run, store.latest_nightlies(engine, args.run)))
    finally:
        engine.dispose()
    if args.json:
        print(json.dumps([c.as_dict() for c in comparisons], indent=2))
    elif args.markdown:
        print(markdown(comparisons))
    else:
        for c in comparisons:
            figures = (f"{c.baseline_median_s:.3f} s → {c.median_s:.3f} s (×{c.ratio:.3f} [{c.ratio_low:.3f}, "
                       f"{c.ratio_high:.3f}], confidence {c.confidence:.2f}; against run {c.baseline_run_id})"
                       if c.ratio is not None else f"against run {c.baseline_run_id or '—'}")
            print(f"{c.verdict:<15} {c.case_id}/{c.framework}: {figures}")
    return 0


def _build(value: str) -> tuple[str, str]:
    framework, equals, build = value.partition("=")
    if not (equals and framework and build):
        raise argparse.ArgumentTypeError(f"give FRAMEWORK=BUILD, e.g. sglang=pip:sglang==0.5.24 (got {value!r})")
    return framework, build


def _since(value: str) -> str:
    try:
        return date.fromisoformat(value).isoformat()
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {value!r}") from None


def _import_sglang(args: argparse.Namespace) -> int:
    from diffbench.settings import Settings  # noqa: PLC0415
    from diffbench.sglang_import import import_file  # noqa: PLC0415
    from diffbench.storage import store  # noqa: PLC0415

    engine = store.open_database(args.database_url or Settings().database_url.get_secret_value())
    try:
        for path in args.files:
            print(f"{path}: {'imported' if import_file(engine, path) else 'already imported, skipped'}")
    finally:
        engine.dispose()
    return 0


def _infra_up(args: argparse.Namespace) -> int:
    from deployments.infra import InfraError, LocalStack, Recorded  # noqa: PLC0415

    if recorded := Recorded.load(args.home):
        alive = recorded.alive()
        if all(alive.values()):
            print(f"already up: Prefect UI http://127.0.0.1:{recorded.port} ({', '.join(alive)}); nothing started")
            return 0
        if any(alive.values()):
            gone = ", ".join(name for name, up in alive.items() if not up)
            raise InfraError(f"the stack in {args.home} is half up ({gone} gone): `diffbench infra down --home "
                             f"{args.home}` first")
        recorded.stop(lambda line: None)  # a stack whose processes all ended: only its record is left

    stack = LocalStack(args.home, port=args.port)

    def step(what: str, action: Callable[[], object]) -> object:
        print(f"{what} …", end=" ", flush=True)
        began = time.monotonic()
        outcome = action()
        print(f"done in {time.monotonic() - began:.1f} s", flush=True)
        return outcome

    try:
        step(f"Prefect server on 127.0.0.1:{args.port}", stack.start_server)
        step("work pool 'gpu'", stack.create_pool)
        created = step("automation crash-silent-flow-runs", stack.create_automation)
        print(f"  {'created' if created else 'already there, left as it is'}")
        step("deployments nightly, adhoc, shard", stack.deploy)
        step(f"worker {args.worker!r}", lambda: stack.start_worker(args.worker))
        stack.record()
    except BaseException:
        stack.stop()  # only what this `up` started
        raise
    print(f"Prefect UI: http://127.0.0.1:{args.port}  (logs in {args.home})")
    print(f"export PREFECT_API_URL={stack.api_url}")
    print("UI runs write to DIFFBENCH_DATABASE_URL of this shell (default: .diffbench/diffbench.db) and the "
          "dashboard folder DIFFBENCH_DASHBOARD_DIR; `diffbench demo` keeps its own in .diffbench/demo")
    print(f"stop it: diffbench infra down --home {args.home}", flush=True)
    return 0


def _infra_down(args: argparse.Namespace) -> int:
    from deployments.infra import Recorded  # noqa: PLC0415

    recorded = Recorded.load(args.home)
    if recorded is None:
        print(f"no stack recorded in {args.home}: nothing to stop")
        return 0
    recorded.stop(print)
    print("down")
    return 0


def _infra_status(args: argparse.Namespace) -> int:
    from deployments.infra import Recorded  # noqa: PLC0415
    from diffbench.prefect_api import healthy  # noqa: PLC0415

    recorded = Recorded.load(args.home)
    if recorded is None:
        print(f"down: no stack recorded in {args.home}")
        return 1
    alive = recorded.alive()
    for name, up in alive.items():
        print(f"{name} (pid {recorded.processes[name][0]}): {'running' if up else 'gone'}")
    answering = healthy(recorded.api_url)
    print(f"Prefect API {recorded.api_url}: {'healthy' if answering else 'not answering'}")
    return 0 if all(alive.values()) and answering else 1


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="diffbench", description=__doc__, epilog=EXIT_CODES,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    root.add_argument("--version", action="version", version=f"diffbench {diffbench.__version__}")
    commands = root.add_subparsers(dest="command", required=True)

    plan = commands.add_parser("plan", help="validate a case matrix and show what each pair would run")
    plan.add_argument("--config", type=Path, required=True, help="case matrix, YAML or JSON")
    plan.add_argument("--cases", type=_names, help="comma-separated case ids (default: all)")
    plan.add_argument("--frameworks", type=_names, help="comma-separated frameworks (default: all)")
    plan.add_argument("--json", action="store_true", help="print JSON instead of text")
    plan.add_argument("--no-parse", action="store_true",
                      help="skip checking server arguments with each engine's own parser (in its environment)")
    plan.set_defaults(handler=_plan)

    serve = commands.add_parser("serve", help="run the reference engine (a diffusers pipeline over HTTP)")
    serve.add_argument("--model", required=True, help="diffusers pipeline folder")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    serve.add_argument("--port", type=int, default=30000, help="port to listen on (default: %(default)s)")
    serve.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                       help="where the pipeline runs (auto: cuda when there is a GPU)")
    serve.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                       help="weights and compute type (auto: bfloat16 on CUDA, float32 on CPU)")
    serve.add_argument("--step-delay-ms", type=float, default=0.0, metavar="MS",
                       help="sleep this long in every denoising step: a known slowdown, to check that a comparison "
                            "finds it (default: 0)")
    serve.set_defaults(handler=_serve)

    tiny = commands.add_parser("tiny-model", help="build a random-weight tiny pipeline, offline")
    tiny.add_argument("--arch", required=True, choices=["flux", "wan"], help="the architecture to build")
    tiny.add_argument("--out", type=Path, required=True, help="folder for the pipeline (model_index.json and parts)")
    tiny.set_defaults(handler=_tiny_model)

    run = commands.add_parser("run", help="run the comparison flow here, on this host")
    run.add_argument("--config", type=Path, required=True,
                     help="case matrix, YAML or JSON; `demo` for the demo's tiny models, built here")
    run.add_argument("--cases", type=_names, help="comma-separated case ids (default: all)")
    run.add_argument("--frameworks", type=_names, help="comma-separated frameworks (default: all)")
    run.add_argument("--label", help="shown on the dashboard, e.g. a release tag")
    run.add_argument("--database-url", help="default: DIFFBENCH_DATABASE_URL, else a local SQLite file")
    run.add_argument("--engine", type=_build, action="append", default=[], metavar="FRAMEWORK=BUILD",
                     help="run this engine build instead of the configured one, repeatable: pip:SPEC (a spec, wheel "
                          "or -r lock), image:REFERENCE or python:PATH, e.g. sglang=pip:sglang==0.5.24")
    run.add_argument("--compare-to", default="latest-nightly", metavar="RUN",
                     help="judge each result against this run id, `latest-nightly` (default: per series, the latest "
                          "nightly before this run) or `none`")
    run.set_defaults(handler=_run)

    board = commands.add_parser("dashboard", help="render the dashboard of a run (default: the latest)")
    board.add_argument("--out", type=Path, required=True, help="folder for index.md and the charts")
    board.add_argument("--run", help="run id (default: the latest)")
    board.add_argument("--database-url", help="default: DIFFBENCH_DATABASE_URL, else a local SQLite file")
    board.set_defaults(handler=_dashboard)

    imports = commands.add_parser("import-sglang", help="load sglang nightly result files as history")
    imports.add_argument("files", type=Path, nargs="+", help="sglang result files (JSON), each imported once")
    imports.add_argument("--database-url", help="default: DIFFBENCH_DATABASE_URL, else a local SQLite file")
    imports.set_defaults(handler=_import_sglang)

    changes = commands.add_parser("regressions", help="level changes in the nightly history of each series")
    changes.add_argument("--since", type=_since, help="only changes first seen on or after this date (YYYY-MM-DD)")
    changes.add_argument("--case", help="only this case id")
    changes.add_argument("--framework", help="only this framework")
    changes.add_argument("--json", action="store_true", help="print one JSON list")
    changes.add_argument("--database-url", help="default: DIFFBENCH_DATABASE_URL, else a local SQLite file")
    changes.set_defaults(handler=_regressions)

    comparing = commands.add_parser("compare", help="one run against the latest nightlies, or another run: a verdict "
                                                    "per case and framework")
    comparing.add_argument("run", help="the run id to judge")
    comparing.add_argument("--against", metavar="RUN",
                           help="the run to compare with (default: per series, the latest nightly before RUN)")
    formats = comparing.add_mutually_exclusive_group()
    formats.add_argument("--json", action="store_true", help="print one JSON list")
    formats.add_argument("--markdown", action="store_true", help="print a markdown table (job summary, PR comment)")
    comparing.add_argument("--database-url", help="default: DIFFBENCH_DATABASE_URL, else a local SQLite file")
    comparing.set_defaults(handler=_compare)

    infra = commands.add_parser("infra", help="a local Prefect server and worker, without Docker")
    infra_commands = infra.add_subparsers(dest="infra_command", required=True)
    up = infra_commands.add_parser("up", help="server, gpu pool, automation, deployments and one worker, left running")
    up.add_argument("--home", type=Path, default=Path(".diffbench/infra"), help="logs and the server's database")
    up.add_argument("--port", type=int, default=4200, help="the Prefect server's port (default: %(default)s)")
    up.add_argument("--worker", default="local-gpu-1", help="the worker's name")
    up.set_defaults(handler=_infra_up)
    down = infra_commands.add_parser("down", help="stop what `infra up` started here")
    status = infra_commands.add_parser("status", help="whether what `infra up` started runs; exit 1 if not")
    for command, handler in ((down, _infra_down), (status, _infra_status)):
        command.add_argument("--home", type=Path, default=Path(".diffbench/infra"), help="where `infra up` ran")
        command.set_defaults(handler=handler)

    triggering = commands.add_parser("trigger", help="start a deployment run through the Prefect API and follow it")
    add_trigger_arguments(triggering)
    triggering.set_defaults(handler=run_trigger)

    demo = commands.add_parser("demo", help="the whole flow on the tiny models, two reference configurations, SQLite")
    demo.add_argument("--workdir", type=Path, default=Path(".diffbench/demo"),
                      help="models, results and dashboard of the demo (default: %(default)s)")
    demo.set_defaults(handler=_demo)
    return root


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parser().parse_args(argv)
    try:
        return args.handler(args)
    except ConfigError as exc:
        print("invalid configuration:", *exc.problems, sep="\n  ", file=sys.stderr)
        return 2
    except DiffbenchError as exc:
        print(f"error [{exc.error_class}]: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return STOPPED_EXIT["SIGINT"]
