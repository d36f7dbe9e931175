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


def readme_snippet(name: str) -> str:
    """The code block under ``<!-- snippet: NAME ...-->`` in the README, as written."""
    readme = (REPO / "README.md").read_text()
    found = re.search(
        rf"<!-- snippet: {re.escape(name)} [^>]*-->\n```python\n(.*?)```", readme, re.S
    )
    assert found, f"the README has no snippet {name!r}"
    return found.group(1)


@pytest.mark.slow
def test_readme_lightning_snippet_runs_as_written_with_accumulation():
    """The README's Lightning snippet, run verbatim with a user's module, data and space: a
    study of 20 trials, every update a whole B, some of them accumulated."""
    import optuna

    import optuna_bs

    from .helpers.lightning_model import N_TRAIN, Classifier, Data

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    torch_seed = 0
    namespace = {
        "space": optuna_bs.BatchScalingSpace(
            n_train=N_TRAIN, batch_size=(64, 128), noise_scale=(5, 50)
        ),
        "MyModule": Classifier,
        "MyData": lambda batch_size: Data(batch_size, seed=torch_seed),
    }
    exec(compile(readme_snippet("lightning"), "README.md:lightning", "exec"), namespace)
    study = namespace["study"]
    trials = study.get_trials(deepcopy=False)
    assert len(trials) == 20
    states = {t.state for t in trials}
    assert states <= {optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED}
    accumulated = [t for t in trials if t.user_attrs["accumulation_steps"] > 1]
    assert accumulated, "no trial accumulated micro-batches"
    for t in accumulated:
        b = t.user_attrs["batch_size"]
        assert t.user_attrs["micro_batch_size"] * t.user_attrs["accumulation_steps"] == b
        # every update a whole B: N // B updates per epoch, as fit counts them
        assert t.user_attrs["n_updates"] == t.user_attrs["epochs_run"] * (N_TRAIN // b)
    assert study.best_value < 0.5


@pytest.mark.slow
def test_readme_transformers_snippets_run_as_written_with_accumulation():
    """The README's HF Trainer snippets, run verbatim with a user's BERT, data and
    ``TrainingArguments``: a 20-trial search in ``bert.db``, some trials accumulating, then the
    best run retrained at the batch, accumulation and lr its trial trained at."""
    import optuna
    from transformers import TrainingArguments

    from .helpers.hf_model import Tokens, model_init

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    namespace = {
        "train": Tokens(192, seed=0),
        "val": Tokens(64, seed=1),
        "make_model": model_init,
        "args": TrainingArguments(
            "bert",
            eval_strategy="epoch",
            num_train_epochs=2,
            save_strategy="no",
            report_to=[],
            disable_tqdm=True,
            use_cpu=True,
        ),
    }
    exec(compile(readme_snippet("transformers"), "README.md:transformers", "exec"), namespace)
    study = optuna.load_study(study_name="bert", storage="sqlite:///bert.db")
    trials = study.get_trials(deepcopy=False)
    assert len(trials) == 20
    states = {t.state for t in trials}
    assert states <= {optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED}
    assert any(t.user_attrs["accumulation_steps"] > 1 for t in trials)

    exec(compile(readme_snippet("transformers-retrain"), "README.md:retrain", "exec"), namespace)
    final, best = namespace["final"], study.best_trial
    args = final.args
    attrs = best.user_attrs
    assert (
        args.per_device_train_batch_size * args.gradient_accumulation_steps
        == (attrs["batch_size"])
    )
    assert args.learning_rate == pytest.approx(attrs["lr"])
    assert final.state.global_step > 0
