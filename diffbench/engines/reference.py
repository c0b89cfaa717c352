"""diffbench's own reference engine: a diffusers pipeline behind SGLang-Diffusion's API."""

from __future__ import annotations

import sys

from pydantic import model_validator

from diffbench.cases import FrameworkOptions, Pair
from diffbench.engines.base import ServerSpec
from diffbench.engines.sglang import SGLangEngine


class ReferenceOptions(FrameworkOptions):
    """The reference engine is diffbench itself: it runs with diffbench's own Python."""

    @model_validator(mode="after")
    def _runs_with_diffbench(self) -> ReferenceOptions:
        if self.python is not None or self.pip is not None:
            raise ValueError("the diffusers reference engine runs with diffbench's own Python: no python: or pip:")
        return self


class ReferenceEngine(SGLangEngine):
    """`diffbench serve`: the same requests and perf dump as sglang, its models spread over its GPUs."""

    name = "diffusers"
    package = "diffusers"
    options = ReferenceOptions

    def command(self, spec: ServerSpec) -> list[str]:
        return [sys.executable, "-m", "diffbench", "serve", "--model", spec.model_path,
                "--host", spec.host, "--port", str(spec.port), *spec.pair.options.serve_args]

    def side_ports(self, pair: Pair) -> tuple[int, ...]:
        return ()

    def parsed_args(self, argv: list[str]) -> list[str] | None:
        return None  # diffbench's own server; its parser is tested with it
