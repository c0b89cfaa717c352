"""Where an engine lives: the worker's own PATH, a given Python environment, or a venv built from pip specs.

Engines pin conflicting dependencies (sglang and vllm-omni disagree on transformers, diffusers
and cache-dit), so each gets an environment of its own and never shares diffbench's. A venv
built from `pip` is made once with uv, under a folder named by the hash of its specs (and of
the contents of any `-r`/`-c` file they name), and reused by every later run.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from diffbench.cases import FrameworkOptions
from diffbench.errors import EnvironmentFailed
from diffbench.redaction import masked

COMPLETE_MARKER = ".diffbench-environment.json"
# Compiled at install: uv does not by default, and a server importing torch, transformers and its
# engine from source starts about twice as slowly (sglang on CPU: 35 s against 60-99 s).
INSTALL_FLAGS = ("--compile-bytecode",)
FILE_OPTIONS = ("-r", "--requirement", "-c", "--constraint")
# Its frozen package list (`name==version`, sorted), hashed: a worker whose stack moved says so.
PACKAGES_SCRIPT = (
    "import hashlib, importlib.metadata as m\n"
    "listed = sorted({f\"{d.metadata['Name'].lower()}=={d.version}\" for d in m.distributions()})\n"
    "print(hashlib.sha256('\\n'.join(listed).encode()).hexdigest()[:16])"
)
VERSION_TIMEOUT_S = 60
INSTALL_LOG_TAIL = 3000
# The version, and the commit when the package was installed from a VCS checkout (PEP 610's direct_url.json).
VERSION_SCRIPT = (
    "import importlib.metadata as m, json, sys\n"
    "try:\n    d = m.distribution(sys.argv[1])\nexcept m.PackageNotFoundError:\n    sys.exit()\n"
    "vcs = json.loads(d.read_text('direct_url.json') or '{}').get('vcs_info', {})\n"
    "print(d.version + (f\" (commit {vcs['commit_id'][:12]})\" if vcs.get('commit_id') else ''))"
)


@dataclass(frozen=True)
class EngineEnvironment:
    """The Python an engine runs with; None means whatever the worker's PATH finds.

    `built_s` is how long building it took in this run (0 when it was already there).
    """

    python: Path | None = None
    built_s: float = 0.0

    @property
    def bin_dir(self) -> Path | None:
        return self.python.parent if self.python else None

    def argv(self, argv: list[str]) -> list[str]:
        """`argv` with its program taken from this environment when it names one by bare name."""
        if self.bin_dir is None or os.sep in argv[0]:
            return argv
        return [str(self.bin_dir / argv[0]), *argv[1:]]

    def variables(self) -> dict[str, str]:
        """PATH and VIRTUAL_ENV for a server of this environment, so its own subprocesses find it too."""
        if self.bin_dir is None:
            return {}
        return {"PATH": f"{self.bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
                "VIRTUAL_ENV": str(self.bin_dir.parent)}

    def version(self, package: str | None, program: str) -> str | None:
        """`package`'s version in the Python that runs `program` here; None if it is not installed."""
        return self._ask(program, VERSION_SCRIPT, package) if package is not None else None

    def packages_sha256(self, program: str) -> str | None:
        """A hash of every package and version in the Python that runs `program`: it changes when anything does."""
        return self._ask(program, PACKAGES_SCRIPT)

    def _ask(self, program: str, script: str, *args: str) -> str | None:
        """What `script` prints, run by the Python that runs `program` here; None when it cannot say."""
        python = self.python or interpreter_of(program)
        if python is None:
            return None
        try:
            done = subprocess.run([str(python), "-c", script, *args], capture_output=True, text=True,
                                  timeout=VERSION_TIMEOUT_S, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() or None


def interpreter_of(program: str) -> Path | None:
    """The Python a console script on PATH runs with, from its `#!` line."""
    if os.sep in program:
        return Path(program) if Path(program).name.startswith("python") else None
    found = shutil.which(program)
    if found is None:
        return None
    try:
        with open(found, "rb") as script:
            first = script.readline(4096)
    except OSError:
        return None
    if not first.startswith(b"#!"):
        return None
    interpreter = first[2:].decode(errors="replace").split()
    return Path(interpreter[0]) if interpreter and "python" in Path(interpreter[0]).name else None


def environment_key(pip: list[str]) -> str:
    """Names a venv by what goes into it: the specs, how, and our Python's version.

    A `-r`/`-c` file or a local wheel counts by its content, not its path, so the same lock in
    another clone finds the same venv, and an edited lock or a rebuilt wheel gets a new one.
    """
    named = []
    for index, arg in enumerate(pip):
        option, eq, value = arg.partition("=")
        if eq and option in FILE_OPTIONS:
            named += [option, _content_hash(value)]
        elif (index and pip[index - 1] in FILE_OPTIONS) or (arg.endswith(".whl") and "://" not in arg):
            named.append(_content_hash(arg))
        else:
            named.append(arg)
    return hashlib.sha256(json.dumps([named, INSTALL_FLAGS, sys.version_info[:2]]).encode()).hexdigest()[:16]


def _content_hash(path: str) -> str:
    try:
        content = Path(path).expanduser().read_bytes()
    except OSError as exc:
        raise EnvironmentFailed(f"pip: cannot read {path}: {exc.strerror}") from exc
    return f"sha256:{hashlib.sha256(content).hexdigest()}"


def uv_binary() -> str:
    """The uv that came with diffbench, else the one on PATH."""
    try:
        from uv import find_uv_bin
    except ImportError:
        found = shutil.which("uv")
        if found is None:
            raise EnvironmentFailed("pip environments need uv: `pip install uv`") from None
        return found
    return find_uv_bin()


def _run(argv: list[str], what: str, log_path: Path) -> None:
    with open(log_path, "a") as log:
        log.write(f"$ {masked(' '.join(argv))}\n")
        log.flush()
        done = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, check=False)
    if done.returncode != 0:
        tail = masked(log_path.read_text(errors="replace")[-INSTALL_LOG_TAIL:])
        raise EnvironmentFailed(f"{masked(what)} failed with exit code {done.returncode} (log: {log_path}):\n{tail}")


def build_venv(pip: list[str], envs_dir: Path) -> EngineEnvironment:
    """The venv holding `pip`'s packages, built with uv if it is not there yet; one builder at a time."""
    key = environment_key(pip)
    venv = envs_dir / key
    python = venv / "bin" / "python"
    envs_dir.mkdir(parents=True, exist_ok=True)
    with open(envs_dir / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another run on this host may be building the same one
        if (venv / COMPLETE_MARKER).exists():
            return EngineEnvironment(python)
        started = time.monotonic()
        shutil.rmtree(venv, ignore_errors=True)  # a build that died half-way
        log_path = envs_dir / f"{key}.log"
        log_path.write_text("")
        uv = uv_binary()
        _run([uv, "venv", "--quiet", "--python", sys.executable, str(venv)], "creating the venv", log_path)
        _run([uv, "pip", "install", "--python", str(python), *INSTALL_FLAGS, *pip], f"uv pip install {' '.join(pip)}",
             log_path)
        (venv / COMPLETE_MARKER).write_text(json.dumps({"pip": [masked(arg) for arg in pip],
                                                         "built_s": time.monotonic() - started}))
        return EngineEnvironment(python, time.monotonic() - started)


def existing_environment(options: FrameworkOptions, envs_dir: Path) -> EngineEnvironment | None:
    """The environment `options` names if it is already there (a pip venv is not built); else None."""
    if options.pip:
        python = envs_dir / environment_key(options.pip) / "bin" / "python"
        return EngineEnvironment(python) if (python.parent.parent / COMPLETE_MARKER).exists() else None
    return prepare(options, envs_dir)


def prepare(options: FrameworkOptions, envs_dir: Path) -> EngineEnvironment:
    """The environment `options` names, built first when it is a pip spec."""
    if options.pip:
        return build_venv(options.pip, envs_dir)
    if options.python is not None:
        if not os.access(options.python, os.X_OK):
            raise EnvironmentFailed(f"python: {options.python} is not an executable interpreter")
        return EngineEnvironment(options.python)
    return EngineEnvironment()
