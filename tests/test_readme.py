"""The README's examples are run, so they cannot drift from the code."""

from __future__ import annotations

import doctest
import re
import sys

import pytest

from .conftest import REPO


def test_readme_doctests():
    result = doctest.testfile(
        str(REPO / "README.md"), module_relative=False, optionflags=doctest.ELLIPSIS
    )
    assert result.attempted >= 5
    assert result.failed == 0


def test_readme_test_command_is_what_ci_runs():
    readme = (REPO / "README.md").read_text()
    ci = (REPO / ".ci" / "run").read_text()
    install = re.search(r'pip install -e "\.\[[a-z,]+\]"', readme).group(0)
    assert install in ci
    assert "pip install torch==2.13.0" in readme and "pip install torch==2.13.0" in ci
    assert "python -m pytest -q" in readme and ci.rstrip().endswith("python -m pytest -q")


def test_readme_example_output_is_the_clis_own_layout_and_the_rules_values():
    """The main job's output in the README (written by ``benchmarks/readme_output.py``, which
    runs the study) is in the CLI's layout, character for character: its rows, read back as
    trials and printed by ``format_table``, give the block back. Every row's g is the rule's
    g of its lr, B and m on the study's N, and the trial count is the study file's."""
    from optuna.trial import FrozenTrial, TrialState

    from optuna_bs import noise_scale
    from optuna_bs.cli.commands import format_table
    from optuna_bs.study.config import load_config

    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        from readme_output import readme_block  # the script that writes the block finds it
    finally:
        sys.path.pop(0)

    lines = readme_block((REPO / "README.md").read_text()).group(1).splitlines()
    counts = re.fullmatch(r"(\d+) trials: (\d+) complete, (\d+) pruned", lines[0])
    n_trials = load_config(REPO / "studies" / "mnist1d_mlp.toml").study.n_trials
    assert int(counts.group(1)) == n_trials == int(counts.group(2)) + int(counts.group(3))
    assert re.fullmatch(r"best trial #\d+: val_error=0\.\d{4}, test_error=0\.\d{4} .*", lines[-1])
    table = lines[1:-1]
    trials = []
    for row in table[2:]:
        number, value, b, lr, m, g, best, epochs, seconds = row.split()
        attrs = {
            "batch_size": int(b),
            "lr": float(lr),
            "momentum": float(m),
            "noise_scale": float(g),
            "best_epoch": int(best),
            "epochs_run": int(epochs),
            "train_seconds": float(seconds),
        }
        assert noise_scale(float(lr), int(b), 3200, float(m)) == pytest.approx(float(g), rel=0.01)
        trials.append(
            FrozenTrial(
                number=int(number.lstrip("#")),
                state=TrialState.COMPLETE,
                value=float(value),
                datetime_start=None,
                datetime_complete=None,
                params={},
                distributions={},
                user_attrs=attrs,
                system_attrs={},
                intermediate_values={},
                trial_id=0,
            )
        )
    assert len(trials) == 5  # the five best, as the CLI shows them
    assert format_table(trials, "error") == "\n".join(table)
