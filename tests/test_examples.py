"""The examples in examples/ run as a user would run them."""

from __future__ import annotations

import subprocess
import sys

import pytest

from .conftest import REPO


@pytest.mark.parametrize(
    ("script", "args"),
    [
        ("tune_mnist1d.py", ["--n-trials", "2"]),
        ("own_training_loop.py", ["--n-trials", "2", "--max-epochs", "2"]),
    ],
)
def test_example_runs(script, args, tmp_path):
    out = subprocess.run(
        [sys.executable, str(REPO / "examples" / script), *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert "best val_error" in out.stdout
