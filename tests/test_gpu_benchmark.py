"""benchmarks/gpu.py --quick runs anywhere (CI has no GPU): a smoke test, no result asserted."""

from __future__ import annotations

import json
import subprocess
import sys

from .conftest import REPO


def test_gpu_benchmark_quick_runs_and_writes_its_table(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "gpu.py"),
            "--quick",
            "--results-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr
    assert "fit / dataloader" in out.stdout
    result = json.loads((tmp_path / "gpu_quick.json").read_text())  # never the source tree
    assert set(result["samples_per_second"]) == {"fit", "dataloader", "on-device"}
    assert result["device"]
