"""Server argv checked by the engine's own CLI parser, in the engine's own environment, before launch."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from diffbench.engines.environments import EngineEnvironment, interpreter_of
from diffbench.errors import EnvironmentFailed

PROBE = Path(__file__).parent / "probes" / "parse_serve_args.py"
PARSE_TIMEOUT_S = 600


def parser_problems(framework: str, environment: EngineEnvironment, program: str,
                    argvs: list[list[str]]) -> list[str | None]:
    """For each argv (without the program), None if the engine's parser takes it, else its complaint.

    Raises EnvironmentFailed, saying why, when nothing could be checked.
    """
    python = environment.python or interpreter_of(program)
    if python is None:
        raise EnvironmentFailed(f"no {framework} environment here (give python: or pip:, or put {program} on PATH)")
    try:
        done = subprocess.run([str(python), str(PROBE), framework], input=json.dumps(argvs), capture_output=True,
                              text=True, timeout=PARSE_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise EnvironmentFailed(f"{framework}'s parser did not answer in {python}: {exc}") from exc
    try:
        problems = json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        tail = done.stderr.strip().splitlines()[-1:] or ["no output"]
        raise EnvironmentFailed(f"{framework}'s parser could not run in {python}: {tail[0]}") from None
    return problems
