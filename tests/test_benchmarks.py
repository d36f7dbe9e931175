"""Smoke test of the benchmarks: each one's ``--smoke`` mode runs end to end.

The smoke mode runs the same code as the full one (harness, arms, studies, statistics, tables,
JSON) on a tiny budget: the digits task, 2 seeds, 2 epochs, a few trials, one process. Nothing
is asserted about the results, which such a budget cannot show; what is asserted is that each
benchmark finishes, prints its tables and writes its JSON with every arm in it.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from .conftest import REPO

# script -> (JSON written, arms in it, the title of the table it prints)
BENCHMARKS = {
    "search.py": (
        "search_smoke.json",
        ["default", "independent-fixed-m", "ladder", "vanilla-tpe", "gp", "cmaes", "random"],
        "P1 digits_mlp: best known",
    ),
    "time_to_target.py": (
        "time_to_target_smoke.json",
        ["default", "independent-fixed-m", "ladder", "vanilla"],
        "P2 against the baselines",
    ),
    "pruning.py": ("pruning_smoke.json", ["pruned", "none"], "P3 goal"),
    "throughput.py": ("throughput_smoke.json", None, "P5 training samples/s"),
    "rescale.py": ("rescale_smoke.json", None, "P8: regret in test-error points"),
    "integrations.py": ("integrations_smoke.json", None, "integrations (1 repeats"),
    "import_time.py": ("import_time_smoke.json", None, "start-up time, 2 repeats"),
    "range_test.py": ("range_test_smoke.json", None, "Range test: g_steep"),
    "adam_range_test.py": ("adam_range_test_smoke.json", None, "AdamW lr range test"),
}


def _smoke(script: str, tmp_path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / script),
            "--smoke",
            "--workers",
            "1",
            "--results-dir",
            str(tmp_path),
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.slow
@pytest.mark.parametrize("script", ["search.py", "time_to_target.py"])
def test_a_search_benchmark_runs_the_arms_it_is_given(script, tmp_path):
    """``--arms`` runs a subset: the fair baseline and the ladder alone, compared seed by seed;
    and the ladder on the range test's noise scales (``ladder-auto``)."""
    run = _smoke(script, tmp_path, "--arms", "independent-fixed-m", "ladder", "ladder-auto")
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads((tmp_path / BENCHMARKS[script][0]).read_text())
    arms = ["independent-fixed-m", "ladder", "ladder-auto"]
    assert sorted({r["arm"] for r in result["runs"]}) == arms
    # The range test's range spans 15x (the study file's [0.5, 500] spans 1000x).
    for r in result["runs"]:
        if r["arm"] == "ladder-auto":
            scales = [t["noise_scale"] for t in r["trials"]]
            assert max(scales) / min(scales) <= 15 + 1e-9
    assert "against independent-fixed-m" in run.stdout or "independent-fixed-m" in run.stdout
    if script == "search.py":
        paired = result["summary"]["digits_mlp"]["paired_vs_fixed_m"]["ladder"]
        assert set(next(iter(paired.values()))) == {"wins", "ties", "losses", "p"}
    else:
        against = result["summary"]["digits_mlp"]["margins"]["0.03"]["against"]
        assert set(against) == {"ladder", "ladder-auto"}
        assert set(against["ladder"]) == {"independent-fixed-m"}


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(BENCHMARKS))
def test_benchmark_smoke_mode_runs(script, tmp_path):
    run = _smoke(script, tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    name, arms, title = BENCHMARKS[script]
    assert title in run.stdout
    result = json.loads((tmp_path / name).read_text())
    assert result["mode"] == "smoke"
    assert result["machine"]["torch"]
    assert str(REPO) not in json.dumps(result)  # no absolute path of this machine
    if arms is not None:
        assert sorted({r["arm"] for r in result["runs"]}) == sorted(arms)
        assert all(r["trials"] for r in result["runs"])
    elif script == "import_time.py":
        assert result["ratio_to_import_optuna"]["optuna-bs --help"]["median"] > 0
        assert "optuna-bs --help / import optuna =" in run.stdout
    elif script == "integrations.py":
        assert set(result) >= {"ddp", "lightning", "transformers"}
        assert result["ddp"]["max_weight_difference"] < 1e-5  # 2 ranks make B's update
        assert all(q["median"] > 0 for q in result["ddp"]["samples_per_second"].values())
        assert result["lightning"]["ratio"]["median"] > 0
    elif script == "range_test.py":
        (row,) = result["rows"]  # digits at its search B, 2 seeds
        assert (row["task"], row["batch_size"], row["search"]) == ("digits_mlp", 32, True)
        assert len(row["g_steep"]) == 2 and 0.1 < row["median"] < 1e4
        assert row["iqr"][0] <= row["median"] <= row["iqr"][1]
    elif script == "adam_range_test.py":
        (row,) = result["rows"]  # digits at its search B, 1 seed, 4 lrs of 2 epochs
        assert (row["task"], row["batch_size"], row["role"]) == ("digits_mlp", 32, "check")
        assert 1e-6 < row["lr_steep"] < 1 and len(row["medians"]) == 4
        lrs = [lr for lr, _ in row["medians"]]
        assert row["lr_star"] in lrs and row["good"][0] <= row["lr_star"] <= row["good"][1]
        low, high = row["range"]
        assert high / low == pytest.approx(30, rel=0.01)  # [lr_steep/3, 10 lr_steep]
    elif script == "rescale.py":
        cell = result["summary"]["digits_mlp"]["2x"]
        arms = {"recommend", "recommend, unbent", "today's recommend", "keep", "sqrt", "linear"}
        assert set(cell["regret_points"]) == arms and cell["batch_size"] == 128
        assert all(len(r) == 1 and math.isfinite(r[0]) for r in cell["regret_points"].values())
        assert 0 <= cell["oracle_test"] <= 1
        (tuned,) = result["tuned"]
        assert tuned["moves"]["2x"]["configs"]["recommend"]["batch_size"] == 128
        assert "P8 fit: ran on" in run.stdout
    else:
        assert set(result["summary"]) == {"mlp/B=16", "mlp/B=128", "mlp/B=1024"}
        loops = {"fit", "tensors", "dataloader", "fit-dataset", "fit-micro"}
        ratios = {"fit_vs_tensors", "fit_vs_dataloader", "fit_dataset_vs_dataloader"}
        ratios |= {"micro_vs_fit"}
        for cell in result["summary"].values():
            assert set(cell["samples_per_second"]) == loops
            assert all(cell["samples_per_second"][lo] > 0 for lo in loops)
            assert set(cell["ratio_quartiles"]) == ratios
            assert all(isinstance(cell[r], float) for r in ratios)
        for table in ("P5 (Dataset)", "P5 accumulation"):
            assert table in run.stdout


@pytest.mark.slow
def test_fault_benchmark_smoke_loses_nothing(tmp_path):
    """The fault benchmark on a PostgreSQL cluster of its own: a SIGKILL and a 10 s outage
    lose no trial, miss no budget, leave nothing RUNNING and show no password. (Its Ctrl-C
    faults are what tests/study/test_workers.py's Ctrl-C tests run: not run twice here.)"""
    run = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "faults.py"),
            "--smoke",
            "--faults",
            "sigkill",
            "outage-10",
            "--results-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Faults: what each one lost" in run.stdout
    result = json.loads((tmp_path / "faults_sigkill-outage-10_smoke.json").read_text())
    faults = result["faults"]
    assert set(faults) == {"sigkill", "outage-10"}
    assert all(not f["password_seen"] and f["running"] == 0 for f in faults.values())
    kill = faults["sigkill"]
    assert (kill["finished"], kill["off_budget"], kill["epochs_redone"]) == (3, 0, 0)
    # The server stopped for 10 s under 2 workers: the cut trials were retried and resumed
    # from their checkpoints (no epoch redone), and the study ends with its 6 trials.
    outage = faults["outage-10"]
    assert outage["failed"] >= 1 and outage["status"] == 0
    assert (outage["finished"], outage["off_budget"], outage["epochs_redone"]) == (6, 0, 0)


@pytest.mark.slow
def test_the_search_benchmark_measures_the_hypervolume_of_two_objective_studies(tmp_path):
    """``--two-objective``: studies minimise (error, seconds); the summary adds, per arm and
    checkpoint, the hypervolume against a reference common to the task's arms."""
    run = _smoke(
        "search.py", tmp_path, "--two-objective", "--arms", "independent-fixed-m", "ladder"
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "hypervolume of (val error, trial seconds)" in run.stdout
    result = json.loads((tmp_path / "search_smoke.json").read_text())
    assert all(
        t["cost"] > 0 for r in result["runs"] for t in r["trials"] if t["state"] == "complete"
    )
    hv = result["summary"]["digits_mlp"]["hypervolume"]
    assert set(hv["arms"]) == {"independent-fixed-m", "ladder"}
    ladder = hv["arms"]["ladder"]["3"]
    assert ladder["quartiles"]["median"] >= 0 and set(ladder["paired"]) >= {"wins", "p"}


def test_hypervolume_2d_is_the_dominated_area():
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        from _harness import hypervolume_2d
    finally:
        sys.path.pop(0)
    ref = (1.0, 4.0)
    assert hypervolume_2d([(0.2, 3.0), (0.4, 1.0)], ref) == pytest.approx(2.0)  # 0.8 + 1.8 - 0.6
    assert hypervolume_2d([(0.2, 3.0), (0.4, 1.0), (0.5, 2.0)], ref) == pytest.approx(2.0)
    assert hypervolume_2d([(1.5, 1.0), (0.5, 5.0)], ref) == 0.0  # beyond the reference
    assert hypervolume_2d([], ref) == 0.0
