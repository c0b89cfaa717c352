"""The demo command, run as a user runs it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path


def test_demo_serves_and_measures_both_tiny_models(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "diffbench", "demo", "--workdir", str(tmp_path)],
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    assert "tiny_flux_t2i_64 on diffusers" in out and "output 64x64\n" in out
    assert "tiny_wan_t2v_64 on diffusers" in out and "output 64x64x9f" in out
    assert len(re.findall(r"client latency [\d.]+ ms, server latency [\d.]+ ms \(perf_dump\)", out)) == 2
    assert out.count("4 denoise steps") == 2
    assert (tmp_path / "models" / "tiny-flux" / "model_index.json").exists()
    assert not list(tmp_path.rglob("server.pid")), "every server was stopped"
