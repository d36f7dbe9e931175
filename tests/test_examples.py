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
        ("lightning_digits.py", ["--n-trials", "3", "--max-epochs", "2"], "vs n_updates:"),
        ("hf_trainer.py", ["--n-trials", "2", "--epochs", "2"], "vs n_updates:"),
        (
            "torchrun_fit.py",
            ["--n-trials", "3", "--max-epochs", "2"],
            "on 2 processes",  # under torchrun: the global B, trained by 2 ranks
        ),
    ],
)
def test_example_runs(script, args, expected, tmp_path):
    command = [sys.executable]
    if script.startswith("torchrun"):
        command += ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    out = subprocess.run(
        [*command, str(REPO / "examples" / script), *args],
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
