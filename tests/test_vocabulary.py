"""One vocabulary: every choice list and shared default has one home, and nothing copies it."""

from __future__ import annotations

import dataclasses
import inspect
import subprocess
import sys

import optuna
import pytest

import optuna_bs
from optuna_bs import vocabulary
from optuna_bs.search import space
from optuna_bs.study import config
from optuna_bs.train import _accelerate, metrics, monitor, policies, schedules, trainer
from optuna_bs.vocabulary import DEFAULTS, OPTIMIZERS, metric_name

from .conftest import cli_command

# Each list of the vocabulary, and every module that must hold that very object.
SHARED = {
    "METRICS": (metrics, trainer),
    "OPTIMIZERS": (trainer,),
    "PRECISIONS": (policies, config),
    "AUGMENTATIONS": (_accelerate,),
    "SCHEDULES": (schedules, config, optuna_bs),
    "SAMPLERS": (config,),
    "PRUNERS": (config,),
    "SECOND_OBJECTIVES": (config,),
    "OOM_POLICIES": (trainer, config),
    "DIRECTIONS": (monitor,),
    "STOP_REASONS": (monitor, optuna_bs),
    "RUN_ATTRS": (monitor,),
}


@pytest.mark.parametrize("name", sorted(SHARED))
def test_every_module_holds_the_vocabularys_own_list(name):
    """A module that retypes a list (even with the same words) fails here: it would drift."""
    words = getattr(vocabulary, name)
    for module in SHARED[name]:
        assert getattr(module, name) is words, f"{module.__name__}.{name} is a copy"


def test_the_study_file_choices_are_the_vocabularys_lists():
    """Each key's declared choices (its ``Constraint``) are a vocabulary list itself."""
    seen = 0
    for section in (config.StudySection, config.TrainSection, config.SpaceSection):
        for key, rule in config.constraints(section).items():
            if rule.choices is not None:
                seen += 1
                words = [getattr(vocabulary, n) for n in vocabulary.__all__]
                assert any(rule.choices is w for w in words), (section.__name__, key)
    assert seen == 7  # sampler, pruner, metric, optimizer, precision, augment, on_oom


def _defaults(fn) -> dict:
    return {
        k: p.default
        for k, p in inspect.signature(fn).parameters.items()
        if p.default is not inspect.Parameter.empty
    }


# What each front takes from DEFAULTS (the space's optimizer=None means "not named").
FIT_KEYS = ("max_epochs", "patience", "metric", "optimizer", "precision", "augment", "on_oom")
SPACE_KEYS = ("batch_size", "noise_scale", "momentum", "lr", "reference_batch_size")
SPACE_KEYS += ("beta2", "eps")


def test_python_api_and_study_file_defaults_are_one_value_each():
    # fit's own keywords, and those of its groups (the device path, the memory policy).
    fit = {
        **_defaults(optuna_bs.fit),
        **_defaults(optuna_bs.DevicePath),
        **_defaults(optuna_bs.MemoryPolicy),
    }
    space_ = _defaults(space.BatchScalingSpace.__init__)
    sections = {
        **{f.name: f.default for f in dataclasses.fields(config.SpaceSection)},
        **{f.name: f.default for f in dataclasses.fields(config.TrainSection)},
    }
    assert set(FIT_KEYS + SPACE_KEYS) == set(DEFAULTS)
    for key in FIT_KEYS:
        assert fit[key] == DEFAULTS[key], f"fit's default {key!r} drifted"
        assert sections[key] == DEFAULTS[key], f"the study file's default {key!r} drifted"
    for key in SPACE_KEYS:
        assert space_[key] == DEFAULTS[key], f"BatchScalingSpace's default {key!r} drifted"
        assert sections[key] == DEFAULTS[key], f"the study file's default {key!r} drifted"


def test_metric_names_are_built_one_way():
    assert [metric_name(m) for m in vocabulary.METRICS] == ["val_error", "val_loss"]
    with pytest.raises(ValueError, match="`metric` must be one of error, loss"):
        metric_name("accuracy")


def test_the_vocabulary_loads_no_torch_and_no_optuna():
    code = "import sys, optuna_bs.vocabulary; assert not {'torch', 'optuna'} & set(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True)


# --- a choice added in one place is accepted everywhere ------------------------------------

NADAM_STUDY = """
[study]
n_trials = 1
pruner = "none"
[data]
name = "synthetic"
n_samples = 200
n_features = 6
[model]
name = "mlp"
hidden = [8]
[space]
parameterisation = "adam-sqrt"
batch_size = 32
reference_batch_size = 32
lr = [1e-3, 1e-2]
[train]
max_epochs = 2
optimizer = "nadam"
"""


def test_an_optimizer_added_to_the_vocabulary_is_accepted_by_the_api_cli_and_study_files(
    tmp_path,
):
    """NAdam was added in the vocabulary and where it is built, nowhere else."""
    assert "nadam" in OPTIMIZERS
    data = optuna_bs.load_data("synthetic", n_samples=200, n_features=6)
    hp = optuna_bs.Hyperparameters(32, 1e-3, 0.9, n_train=data.n_train, beta2=0.99)
    trial = optuna.create_study().ask()
    model = optuna_bs.build_model("mlp", data.input_shape, data.n_outputs, hidden=[8])
    optuna_bs.fit(model, data, hp, trial=trial, max_epochs=1, optimizer="nadam")
    assert trial.user_attrs["optimizer"] == "nadam" and trial.user_attrs["beta2"] == 0.99
    study_file = tmp_path / "nadam.toml"
    study_file.write_text(NADAM_STUDY)
    assert optuna_bs.load_config(study_file).train.optimizer == "nadam"
    run = subprocess.run(
        [
            *cli_command(),
            "run",
            str(study_file),
            "--no-test",
            "-q",
            "--storage",
            f"sqlite:///{tmp_path / 'n.db'}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    (done,) = optuna.load_study(
        study_name="mnist1d_mlp", storage=f"sqlite:///{tmp_path / 'n.db'}"
    ).trials
    assert done.user_attrs["optimizer"] == "nadam"
    # And the SGD rules refuse it as an Adam-family optimizer, by the same family table.
    bad = tmp_path / "bad.toml"
    bad.write_text(NADAM_STUDY.replace('parameterisation = "adam-sqrt"', ""))
    run = subprocess.run(
        [*cli_command(), "run", str(bad), "--storage", f"sqlite:///{tmp_path / 'b.db'}"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert run.returncode == 2 and "adam-sqrt" in run.stderr


def test_every_user_attr_a_trial_gets_is_in_the_schema(tmp_path):
    """A study file's trial (with a schedule, so the per-epoch path too) writes only keys of
    vocabulary.USER_ATTRS: a new key must be named there. (The Lightning and HF tests hold
    their trials to the same schema.)"""
    study_file = tmp_path / "schema.toml"
    study_file.write_text(
        NADAM_STUDY.replace('optimizer = "nadam"', 'optimizer = "nadam"\nschedule = "cosine"')
    )
    url = f"sqlite:///{tmp_path / 's.db'}"
    run = subprocess.run(
        [*cli_command(), "run", str(study_file), "--no-test", "-q", "--storage", url],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    (trial,) = optuna.load_study(study_name="mnist1d_mlp", storage=url).trials
    assert {"epoch_lr", "stop_reason", "world_size", "beta2"} <= set(trial.user_attrs)
    assert set(trial.user_attrs) <= set(vocabulary.USER_ATTRS), sorted(
        set(trial.user_attrs) - set(vocabulary.USER_ATTRS)
    )
