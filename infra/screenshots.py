"""Screenshots of what a user sees: a run's page and its artifacts in the Prefect UI, and the demo's dashboards.

Brings up a local stack (`diffbench infra up`), runs the `adhoc` deployment with its defaults (the demo's tiny
models) through the trigger, runs `diffbench demo`, and photographs the pages with headless Chromium (Debian's
`chromium` package). The dashboards are markdown; they are rendered to HTML first.

Run: .venv/bin/python infra/screenshots.py [--out infra/screenshots] [--work /tmp/diffbench-screenshots]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import markdown

from diffbench.launcher import free_port

PROJECT = Path(__file__).resolve().parents[1]
WIDTH = 1440
PAGE = """<!doctype html><meta charset="utf-8"><style>
body {{font: 14px/1.45 system-ui, sans-serif; margin: 24px 32px; max-width: 1380px}}
table {{border-collapse: collapse; margin: 8px 0 16px}} th, td {{border: 1px solid #ccc; padding: 3px 7px}}
th {{background: #f3f3f3}} img {{max-width: 900px; display: block}} code {{background: #f3f3f3}}
</style>{body}"""


def diffbench(*args: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run([sys.executable, "-m", "diffbench", *args], capture_output=True, text=True, check=True,
                          cwd=PROJECT, env=env)
    return done.stdout


def shoot(url: str, path: Path, height: int = 1200) -> None:
    """A window of `url`, `height` pixels tall, after its scripts had 15 s (of virtual time) to render."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        raise SystemExit("needs Debian's chromium: apt-get install chromium")
    subprocess.run([browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--window-size={WIDTH},{height}", "--virtual-time-budget=15000", f"--screenshot={path}", url],
                   capture_output=True, check=True, timeout=120)
    print(f"{path}  ({url})")


def rendered(index: Path) -> Path:
    """The dashboard's markdown as an HTML page beside it, its charts linked as they are."""
    html = index.with_suffix(".html")
    html.write_text(PAGE.format(body=markdown.markdown(index.read_text(), extensions=["tables"])))
    return html


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=PROJECT / "infra" / "screenshots")
    parser.add_argument("--work", type=Path, default=Path("/tmp/diffbench-screenshots"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    home, port = args.work / "infra", free_port()
    env = os.environ | {"DIFFBENCH_STATE_DIR": str(args.work / "state"),
                        "DIFFBENCH_DATABASE_URL": f"sqlite:///{args.work / 'results.db'}",
                        "DIFFBENCH_DASHBOARD_DIR": str(args.work / "dashboard")}
    diffbench("infra", "up", "--home", str(home), "--port", str(port), env=env)
    ui, api = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port}/api"
    try:
        trigger_env = env | {"PREFECT_API_URL": api}
        subprocess.run([sys.executable, str(PROJECT / "deployments" / "trigger.py"), "diffusion-comparison/adhoc",
                        "--param", "label=screenshots", "--poll", "2"], env=trigger_env, check=True, cwd=PROJECT)
        [run] = httpx.post(f"{api}/flow_runs/filter", json={"flow_runs": {"name": {"any_": ["adhoc-screenshots"]}},
                                                             "limit": 1}).json()
        shoot(f"{ui}/runs/flow-run/{run['id']}", args.out / "run-page.png")
        shoot(f"{ui}/artifacts", args.out / "artifacts.png")
        artifacts = httpx.post(f"{api}/artifacts/filter", json={"artifacts": {"flow_run_id": {"any_": [run["id"]]}}})
        table = next(a for a in artifacts.json() if a["type"] == "table")
        shoot(f"{ui}/artifacts/artifact/{table['id']}", args.out / "table-artifact.png")
        shoot(f"{ui}/deployments", args.out / "deployments.png")
    finally:
        diffbench("infra", "down", "--home", str(home), env=env)
    demo = args.work / "demo"
    diffbench("demo", "--workdir", str(demo))
    shoot(rendered(demo / "dashboard" / "index.md").as_uri(), args.out / "demo-dashboard.png", 3000)
    shoot(rendered(demo / "dashboard" / "sglang-history" / "index.md").as_uri(), args.out / "demo-history.png", 3000)
    print(json.dumps({"run": run["name"], "artifacts": [a["key"] for a in artifacts.json()]}))


if __name__ == "__main__":
    main()
