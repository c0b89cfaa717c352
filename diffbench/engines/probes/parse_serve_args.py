"""Parse server argv with the engine's own CLI parser; run with the engine's Python, never imported.

Usage: `<engine python> parse_serve_args.py sglang|vllm-omni < argvs.json`, where argvs.json is a
JSON list of argv lists without the program (`--model-path M ...` for sglang, `serve M --omni ...`
for vllm). Prints a JSON list: null where the engine accepts the argv, else its complaint.
"""

import argparse
import contextlib
import io
import json
import os
import sys


def sglang_parser() -> "callable":
    from sglang.multimodal_gen.runtime.entrypoints.cli.serve import add_multimodal_gen_serve_args

    def parse(argv: list) -> None:
        # As sglang/cli/serve.py::_run_diffusion builds it; ServerArgs is not built, it would load the model config.
        parser = argparse.ArgumentParser(prog="sglang serve")
        add_multimodal_gen_serve_args(parser)
        _, rest = parser.parse_known_args(argv)
        if rest:
            raise ValueError(f"unrecognized arguments: {' '.join(rest)}")

    return parse


def vllm_omni_parser() -> "callable":
    # Importing vllm on a machine without a GPU needs its CPU platform; parsing is the same on every platform.
    os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")
    from vllm.utils.argparse_utils import FlexibleArgumentParser
    from vllm_omni.entrypoints.cli.serve import OmniServeCommand

    def parse(argv: list) -> None:
        root = FlexibleArgumentParser(prog="vllm")
        OmniServeCommand().subparser_init(root.add_subparsers(dest="subparser"))
        root.parse_args(argv)

    return parse


def main() -> None:
    parse = {"sglang": sglang_parser, "vllm-omni": vllm_omni_parser}[sys.argv[1]]()
    problems = []
    for argv in json.load(sys.stdin):
        errors = io.StringIO()
        try:
            with contextlib.redirect_stderr(errors), contextlib.redirect_stdout(io.StringIO()):
                parse(argv)
            problems.append(None)
        except SystemExit:
            lines = [line for line in errors.getvalue().splitlines() if line.strip()]
            problems.append(lines[-1] if lines else "rejected (exit 2)")
        except Exception as exc:  # noqa: BLE001 - any refusal is the answer
            problems.append(f"{type(exc).__name__}: {exc}")
    print(json.dumps(problems))


if __name__ == "__main__":
    main()
