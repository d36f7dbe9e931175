"""Pins the default search space: a change to it must be deliberate, and backed by P1/P2.

BENCHMARKS.md holds the measurements behind the default (the P1 regret tables and every
variant tried). If you change a value below, change it here too and say in BENCHMARKS.md which
measurement moved you.
"""

from __future__ import annotations

import optuna
import pytest

from optuna_bs import BatchScalingSpace, StudyConfig, load_config
from optuna_bs.study.config import SpaceSection, StudySection

from ..conftest import REPO

# The embedded default (studies/mnist1d_mlp.toml): B in 2^[4, 8], log g in [1, 1000], m = 0.9.
DEFAULT_SPACE = SpaceSection(
    parameterisation="noise-scale",
    batch_size=(16, 256),
    noise_scale=(1.0, 1000.0),
    momentum=0.9,
)
STUDY_SPACES = {
    "mnist1d_mlp.toml": DEFAULT_SPACE,
    "mnist1d_cnn.toml": DEFAULT_SPACE,
    "digits_mlp.toml": SpaceSection(batch_size=(8, 128), noise_scale=(0.5, 500.0)),
}


def test_embedded_default_space_is_pinned():
    assert StudyConfig().space == DEFAULT_SPACE


def test_embedded_default_search_settings_are_pinned():
    study = StudyConfig().study
    assert (study.sampler, study.n_startup_trials) == ("tpe", 10)
    assert (study.pruner, study.pruner_warmup_epochs, study.pruner_startup_trials) == (
        "median",
        3,
        5,
    )
    assert study == StudySection()


@pytest.mark.parametrize("name", sorted(STUDY_SPACES))
def test_ready_study_files_search_the_pinned_space(name):
    assert load_config(REPO / "studies" / name).space == STUDY_SPACES[name]


def test_default_space_samples_batch_and_noise_scale_only():
    cfg = StudyConfig().space
    space = BatchScalingSpace(
        cfg.parameterisation,
        n_train=3200,
        batch_size=cfg.batch_size,
        noise_scale=cfg.noise_scale,
        momentum=cfg.momentum,
    )
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    trial = study.ask()
    hp = space.suggest(trial)
    assert trial.distributions == {
        "log2_batch_size": optuna.distributions.IntDistribution(4, 8),
        "noise_scale": optuna.distributions.FloatDistribution(1.0, 1000.0, log=True),
    }
    assert hp.momentum == 0.9


def test_batch_scaling_space_defaults_to_noise_scale():
    space = BatchScalingSpace(n_train=3200)
    assert space.parameterisation == "noise-scale"
    assert (space.noise_scale, space.momentum) == ((1.0, 1000.0), 0.9)
