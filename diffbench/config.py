"""Loading a case matrix file, with one message per problem naming file, case and field."""

from __future__ import annotations

import difflib
import json
import os
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from diffbench.cases import Matrix, Pair, resolve
from diffbench.engines import ENGINES
from diffbench.engines.environments import FILE_OPTIONS
from diffbench.errors import ConfigError
from diffbench.redaction import carries_credentials

LOCAL_PREFIXES = ("/", "./", "../", "~")
BUILD_KINDS = ("pip", "image", "python")


@dataclass(frozen=True)
class NotRun:
    """Why a (case, framework) of the file is kept but never measured."""

    error_class: str
    message: str


@dataclass(frozen=True)
class CaseMatrix:
    """A validated matrix: its resolved (case, framework) pairs, and those kept but not run, with why."""

    path: Path
    matrix: Matrix
    pairs: tuple[Pair, ...]
    unsupported: dict[tuple[str, str], NotRun]

    def select(self, cases: list[str] | None = None, frameworks: list[str] | None = None) -> list[Pair]:
        """The pairs of the named cases and frameworks (all when None), in file order."""
        problems = []
        known_cases = [case.id for case in self.matrix.cases]
        known_frameworks = sorted({pair.framework for pair in self.pairs} | {fw for _, fw in self.unsupported})
        for wanted, known, what in ((cases, known_cases, "case"), (frameworks, known_frameworks, "framework")):
            problems += [f"{self.path.name}: no {what} {name!r}; known: {', '.join(known)}"
                         for name in wanted or [] if name not in known]
        if problems:
            raise ConfigError(problems)
        return [p for p in self.pairs
                if (cases is None or p.case.id in cases) and (frameworks is None or p.framework in frameworks)]

    def not_run(self, cases: list[str] | None = None,
                frameworks: list[str] | None = None) -> list[tuple[str, str, NotRun]]:
        """The (case, framework, why) of the selection that are kept but not run: reported, never measured."""
        return [(case_id, fw, why) for (case_id, fw), why in self.unsupported.items()
                if (cases is None or case_id in cases) and (frameworks is None or fw in frameworks)]


def _describe(error: dict[str, Any]) -> str:
    kind, ctx, value = error["type"], error.get("ctx", {}), error.get("input")
    described = {
        "greater_than": lambda: f"must be > {ctx.get('gt')} (got {value!r})",
        "greater_than_equal": lambda: f"must be >= {ctx.get('ge')} (got {value!r})",
        "literal_error": lambda: f"must be one of {ctx.get('expected')} (got {value!r})",
        "extra_forbidden": lambda: "unknown key",
        "missing": lambda: "required",
        "too_short": lambda: "must not be empty",
        "value_error": lambda: error["msg"].removeprefix("Value error, "),
        "multiple_of": lambda: f"must be a multiple of {ctx.get('multiple_of')} (got {value!r})",
        "less_than_equal": lambda: f"must be <= {ctx.get('le')} (got {value!r})",
        "int_type": lambda: f"must be a whole number (got {value!r})",
    }.get(kind)
    return described() if described else f"{error['msg']} (got {value!r})"


def _problem(file: str, raw_cases: list[Any], loc: tuple[Any, ...], message: str) -> str:
    """`file: case 'id': field.path: message`; the case is named by id, else by position."""
    if len(loc) >= 2 and loc[0] == "cases" and isinstance(loc[1], int):
        raw = raw_cases[loc[1]] if loc[1] < len(raw_cases) else {}
        name = raw.get("id") if isinstance(raw, dict) else None
        where = f"case {name!r}" if name else f"case #{loc[1] + 1}"
        field = ".".join(map(str, loc[2:])) or "(case)"
        return f"{file}: {where}: {field}: {message}"
    return f"{file}: {'.'.join(map(str, loc)) or '(top level)'}: {message}"


def _parse(path: Path) -> Any:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror}"]) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{path.name}: not UTF-8 text (byte {exc.start}): save it as UTF-8"]) from exc
    try:
        return json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ConfigError([f"{path.name}: not valid {path.suffix.lstrip('.').upper() or 'YAML'}: {exc}"]) from exc


def _localised(value: Any, base: Path) -> Any:
    """A relative local path made absolute against the config's folder; anything else unchanged."""
    if isinstance(value, str) and value.startswith(LOCAL_PREFIXES):
        # Not resolved: a symlink's own name can matter (sglang picks its native FLUX pipeline by "flux.1").
        return os.path.abspath(base / Path(value).expanduser())
    return value


def _pip_paths(args: list[str], base: Path) -> list[str]:
    """pip arguments with their files (`-r`/`-c` values, local wheels) made absolute against the config's folder."""
    absolute = [os.path.abspath(base / Path(a).expanduser()) for a in args]
    resolved = []
    for index, arg in enumerate(args):
        name, eq, value = arg.partition("=")
        if eq and name in FILE_OPTIONS:
            resolved += [name, os.path.abspath(base / Path(value).expanduser())]
        elif (index and args[index - 1] in FILE_OPTIONS) or (arg.endswith(".whl") and "://" not in arg):
            resolved.append(absolute[index])
        else:
            resolved.append(arg)
    return resolved


def _resolve_paths(data: dict[str, Any], base: Path) -> None:
    data["test_image_url"] = _localised(data.get("test_image_url"), base)
    for case in data.get("cases") or []:
        if isinstance(case, dict):
            case["model"] = _localised(case.get("model"), base)
            for options in (case.get("frameworks") or {}).values():
                if not isinstance(options, dict):
                    continue
                for key in ("model", "python", "python_bin", "comfy_root"):
                    if key in options:
                        options[key] = _localised(options[key], base)
                if isinstance(options.get("pip"), str):
                    options["pip"] = shlex.split(options["pip"])
                if isinstance(options.get("pip"), list) and all(isinstance(a, str) for a in options["pip"]):
                    options["pip"] = _pip_paths(options["pip"], base)


def build_options(framework: str, build: str) -> dict[str, Any]:
    """The framework options an engine build sets: `pip:SPEC` (specs, wheel paths or URLs, `-r lock`),
    `image:REFERENCE` or `python:PATH`; a bare wheel or `name==version` is a pip spec. Paths are
    taken from the current folder."""
    if carries_credentials(build):
        raise ConfigError([f"engines: {framework}: the build carries a credential, and run parameters are shown to "
                           "anyone who can read the run; give the worker the index's credentials instead (uv's "
                           "UV_INDEX_URL or a netrc file in its environment)"])
    kind, colon, value = build.partition(":")
    if not (colon and kind in BUILD_KINDS and value.strip()):
        if not (build.endswith(".whl") or "==" in build):
            raise ConfigError([f"engines: {framework}: {build!r} is not a build; give pip:SPEC (a spec, wheel or "
                               "-r lock), image:REFERENCE or python:PATH"])
        kind, value = "pip", build
    value = value.strip()
    if kind == "pip":
        return {"pip": _pip_paths(shlex.split(value), Path.cwd())}
    if kind == "python":
        return {"python": os.path.abspath(Path(value).expanduser())}
    return {"launcher": {"type": "docker", "image": value}}


def _apply_builds(data: dict[str, Any], builds: dict[str, str], file: str) -> None:
    """Each framework in `builds` runs that build in every case: it replaces where the engine comes from."""
    cases = [c for c in data.get("cases") or [] if isinstance(c, dict)]
    frameworks = {fw for case in cases for fw in case.get("frameworks") or {}}
    unknown = [f"engines: {fw}: no case of {file} runs it; its frameworks: {', '.join(sorted(frameworks))}"
               for fw in builds if fw not in frameworks]
    if unknown:
        raise ConfigError(unknown)
    for framework, build in builds.items():
        environment = build_options(framework, build)
        for case in cases:
            options = (case.get("frameworks") or {}).get(framework)
            if not isinstance(options, dict):
                continue
            launcher = options.get("launcher")
            kept_launcher = {k: v for k, v in launcher.items() if k != "digest"} if (
                isinstance(launcher, dict) and launcher.get("type") == "docker" and "launcher" in environment) else {}
            for key in ("pip", "python", "launcher"):
                options.pop(key, None)
            options.update(environment)
            if kept_launcher:  # a new image keeps the mounts, network and environment configured for the old one
                options["launcher"] = kept_launcher | environment["launcher"]


def load_matrix(path: Path | str, builds: dict[str, str] | None = None) -> CaseMatrix:
    """Read and validate a case matrix (YAML or JSON); raise ConfigError listing every problem.

    `builds` (framework → build, see `build_options`) replaces where those frameworks' engines come from.
    """
    path = Path(path)
    data = _parse(path)
    if not isinstance(data, dict):
        raise ConfigError([f"{path.name}: (top level): must be a mapping with a 'cases' list"])
    _resolve_paths(data, path.parent)
    if builds:
        _apply_builds(data, builds, path.name)
    raw_cases = data.get("cases") if isinstance(data.get("cases"), list) else []
    problems: list[str] = []
    seen: set[str] = set()
    for index, raw in enumerate(raw_cases):
        case_id = raw.get("id") if isinstance(raw, dict) else None
        if case_id in seen:
            problems.append(_problem(path.name, raw_cases, ("cases", index, "id"), f"duplicate case id {case_id!r}"))
        seen.add(case_id)
    try:
        matrix = Matrix.model_validate(data)
    except ValidationError as exc:
        problems += [_problem(path.name, raw_cases, tuple(e["loc"]), _describe(e)) for e in exc.errors()]
        raise ConfigError(problems) from exc
    pairs: list[Pair] = []
    unsupported: dict[tuple[str, str], NotRun] = {}
    for index, case in enumerate(matrix.cases):
        for framework, raw_options in case.frameworks.items():
            loc = ("cases", index, "frameworks", framework)
            engine = ENGINES.get(raw_options.get("engine") or framework)
            if engine is None and "engine" in raw_options:
                have = ", ".join(sorted(ENGINES))
                problems.append(_problem(path.name, raw_cases, (*loc, "engine"),
                                         f"no engine {raw_options['engine']!r}; have: {have}"))
                continue
            if engine is None and framework not in matrix.not_run:
                near = difflib.get_close_matches(framework, list(ENGINES), n=1)
                hint = f"did you mean {near[0]!r}? " if near else ""
                problems.append(_problem(path.name, raw_cases, loc, f"no adapter for {framework!r}; {hint}have: "
                                         f"{', '.join(sorted(ENGINES))} (list it under not_run to keep it unrun)"))
                continue
            if engine is None:
                unsupported[(case.id, framework)] = NotRun("no_adapter", f"diffbench has no adapter for {framework}")
                continue
            try:
                options = engine.options.model_validate(raw_options)
            except ValidationError as exc:
                problems += [_problem(path.name, raw_cases, loc + tuple(e["loc"]), _describe(e)) for e in exc.errors()]
                continue
            pair = resolve(matrix, case, framework, options)
            if reason := engine().not_run_reason(pair):
                unsupported[(case.id, framework)] = NotRun("unsupported", reason)
                continue
            problems += [_problem(path.name, raw_cases, (*loc, name), f"{framework}: {message}")
                         for name, message in engine().option_problems(pair)]
            if problem := engine().gpu_problem(pair):
                field = loc + ("num_gpus",) if options.num_gpus else ("cases", index, "num_gpus")
                problems.append(_problem(path.name, raw_cases, field, f"{framework}: {problem}"))
            pairs.append(pair)
    frameworks = {fw for case in matrix.cases for fw in case.frameworks}
    if matrix.baseline is not None and matrix.baseline not in frameworks:
        problems.append(f"{path.name}: baseline: no case runs framework {matrix.baseline!r}")
    if problems:
        raise ConfigError(problems)
    return CaseMatrix(path, matrix, tuple(pairs), unsupported)
