"""diffbench's own reference engine: a diffusers pipeline behind SGLang-Diffusion's API."""

from __future__ import annotations

import sys

from diffbench.cases import Pair
from diffbench.engines.base import ServerSpec
from diffbench.engines.sglang import SGLangEngine


class ReferenceEngine(SGLangEngine):
    """`diffbench serve`: the same requests and perf dump as sglang, its models spread over its GPUs."""

    name = "diffusers"
    package = "diffusers"
    def command(self, spec: ServerSpec) -> list[str]:
        """diffbench's own Python, or (a build under test) the Python the options name, or their venv's."""
        options = spec.pair.options
        python = str(options.python) if options.python is not None else "python" if options.pip else sys.executable
        return [python, "-m", "diffbench", "serve", "--model", spec.model_path,
                "--host", spec.host, "--port", str(spec.port), *options.serve_args]

    def side_ports(self, pair: Pair) -> tuple[int, ...]:
        return ()

    def parsed_args(self, argv: list[str]) -> list[str] | None:
        return None  # diffbench's own server; its parser is tested with it
