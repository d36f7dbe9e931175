"""The examples in examples/ run as a user would run them."""

from __future__ import annotations

import subprocess
import sys

import pytest

from .conftest import REPO


@pytest.mark.parametrize(
    ("script", "args", "expected"),
    [
        ("tune_mnist1d.py", ["--n-trials", "2"], "best val_error"),
        ("own_training_loop.py", ["--n-trials", "3", "--max-epochs", "2"], "vs n_updates:"),
        ("own_dataset.py", ["--n-trials", "3", "--max-epochs", "2"], "vs n_updates:"),
    ],
)
def test_example_runs(script, args, expected, tmp_path):
    out = subprocess.run(
        [sys.executable, str(REPO / "examples" / script), *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert expected in out.stdout
    if expected == "vs n_updates:":  # the full report: both fronts hold a trial, and the page
        for cost in ("train_seconds", "n_updates"):
            assert out.stdout.split(f"vs {cost}:")[1].splitlines()[3].startswith("#")
        assert list((tmp_path / "reports").glob("report-*.html"))
