from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from optuna_bs.errors import ConfigError, OptunaBSError
from optuna_bs.study.config import (
    DataSection,
    ModelSection,
    SpaceSection,
    StudyConfig,
    StudySection,
    TrainSection,
    config_from_dict,
    config_to_dict,
    load_config,
)

STUDIES = Path(__file__).parents[2] / "studies"


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "study.toml"
    path.write_text(text)
    return path


def test_config_error_is_a_value_error_of_our_own():
    assert issubclass(ConfigError, ValueError)
    assert issubclass(ConfigError, OptunaBSError)


def test_embedded_default_equals_the_mnist1d_mlp_study_file():
    assert load_config(STUDIES / "mnist1d_mlp.toml") == StudyConfig()


def test_the_other_study_files_load():
    digits = load_config(STUDIES / "digits_mlp.toml")
    assert digits.data.name == "digits"
    assert digits.model.options == {"hidden": [128]}
    assert digits.space.batch_size == (8, 128)
    assert digits.train.max_epochs == 30

    cnn = load_config(STUDIES / "mnist1d_cnn.toml")
    assert cnn.model.name == "cnn1d"
    assert cnn.model.options == {"channels": 32}
    assert cnn.train.max_epochs == 20


def test_load_config_accepts_a_str_path(tmp_path):
    path = _write(tmp_path, "[train]\nmax_epochs = 5\n")
    assert load_config(str(path)).train.max_epochs == 5


def test_values_parse_into_the_right_types(tmp_path):
    path = _write(
        tmp_path,
        """
[study]
name = "s"
n_trials = 7
timeout = 60
sampler = "random"
pruner = "hyperband"
storage = "sqlite:///x.db"

[data]
name = "synthetic"
val_fraction = 0.25
n_samples = 300
task = "classification"

[model]
name = "mlp"
hidden = [16, 8]
dropout = 0.1

[space]
parameterisation = "independent"
batch_size = [16, 64]
noise_scale = [2, 20]
momentum = [0.5, 0.95]
lr = [1e-3, 0.5]
beta2 = 0.99
eps = 1e-6
tau_epochs = [1, 100]

[train]
max_epochs = 3
patience = 2
metric = "loss"
optimizer = "adamw"
""",
    )
    config = load_config(path)
    assert config.study == StudySection(
        name="s",
        n_trials=7,
        timeout=60,
        sampler="random",
        pruner="hyperband",
        storage="sqlite:///x.db",
    )
    # Keys a data set or a model knows go, as given, into the section's options.
    assert config.data == DataSection(
        name="synthetic",
        val_fraction=0.25,
        options={"n_samples": 300, "task": "classification"},
    )
    assert config.model == ModelSection(name="mlp", options={"hidden": [16, 8], "dropout": 0.1})
    # [low, high] lists become tuples; a single number stays a number.
    assert config.space.batch_size == (16, 64)
    assert isinstance(config.space.batch_size, tuple)
    assert config.space.noise_scale == (2, 20)
    assert config.space.momentum == (0.5, 0.95)
    assert config.space.lr == (1e-3, 0.5)
    assert (config.space.beta2, config.space.eps, config.space.tau_epochs) == (
        0.99,
        1e-6,
        (1, 100),
    )
    assert config.train == TrainSection(max_epochs=3, patience=2, metric="loss", optimizer="adamw")


def test_fixed_batch_size_and_momentum_stay_scalars(tmp_path):
    config = load_config(_write(tmp_path, "[space]\nbatch_size = 32\nmomentum = 0\n"))
    assert config.space.batch_size == 32
    assert config.space.momentum == 0
    assert config.space.noise_scale == SpaceSection().noise_scale  # defaults fill the rest


def test_empty_file_gives_the_default(tmp_path):
    assert load_config(_write(tmp_path, "# nothing\n")) == StudyConfig()


@pytest.mark.parametrize(
    ("text", "match"),
    [
        # Unknown section, with the closest one suggested and the allowed ones listed.
        ("[studdy]\nn_trials = 3\n", r"unknown section \[studdy\]; did you mean 'study'\?"),
        ("[optimizer]\nlr = 1\n", r"unknown section \[optimizer\]\. Allowed: study, data"),
        ("study = 3\n", r"`study` must be a \[study\] table"),
        # A typo'd key names the key and suggests the closest valid one.
        ("[train]\nmax_epoch = 3\n", r"unknown key `train\.max_epoch`; did you mean 'max_epochs'"),
        ("[study]\nn_trial = 3\n", r"`study\.n_trial`; did you mean 'n_trials'"),
        ("[space]\nbatchsize = [16, 32]\n", r"`space\.batchsize`; did you mean 'batch_size'"),
        ("[data]\noptions = 1\n", r"unknown key `data\.options`"),
        # Wrong types.
        ('[study]\nn_trials = "30"\n', r"`study\.n_trials` must be an integer, but got '30'"),
        ("[train]\nmax_epochs = 2.5\n", r"`train\.max_epochs` must be an integer, but got 2\.5"),
        ("[study]\nseed = true\n", r"`study\.seed` must be an integer, but got True"),
        ("[study]\ntimeout = true\n", r"`study\.timeout` must be .*number, but got True"),
        ("[train]\ndevice = 0\n", r"`train\.device` must be a string, but got 0"),
        ("[space]\nnoise_scale = 5.0\n", r"`space\.noise_scale` must be a \[low, high\] pair"),
        # A pair of the wrong length, or not of numbers.
        ("[space]\nlr = [0.1]\n", r"`space\.lr` must be a \[low, high\] pair of numbers"),
        ("[space]\nbatch_size = [16, 32, 64]\n", r"`space\.batch_size` must be a \[low, high\]"),
        ('[space]\nnoise_scale = [1, "x"]\n', r"`space\.noise_scale` must be a \[low, high\]"),
        ("[space]\nmomentum = [true, 0.9]\n", r"`space\.momentum` must be a \[low, high\]"),
        # Choices, with the closest one suggested.
        (
            '[study]\nsampler = "tpee"\n',
            r"`study\.sampler` must be one of 'tpe'.*did you mean 'tpe'",
        ),
        ('[study]\nsampler = "grid"\n', r"`study\.sampler` must be one of .*but got 'grid'\.$"),
        ('[study]\npruner = "medain"\n', r"`study\.pruner` must be one of .*'median'"),
        ('[train]\nmetric = "accuracy"\n', r"`train\.metric` must be one of 'error', 'loss'"),
        ('[train]\noptimizer = "adagrad"\n', r"`train\.optimizer` must be one of 'sgd'"),
        # Values out of range.
        ("[study]\nn_trials = 0\n", r"`study\.n_trials` must be >= 1, but got 0"),
        ("[study]\ntimeout = -5\n", r"`study\.timeout` must be > 0 seconds, but got -5"),
        (
            "[study]\npruner_startup_trials = 0\n",
            r"`study\.pruner_startup_trials` must be >= 1, but got 0",
        ),
        ("[study]\ntimeout = 0\n", r"`study\.timeout` must be > 0 seconds, but got 0"),
        ("[train]\nmax_epochs = 0\n", r"`train\.max_epochs` must be >= 1"),
        ("[train]\npatience = -1\n", r"`train\.patience` must be >= 0"),
        (
            "[train]\nweight_decay = 0.1\n",
            r"`train\.weight_decay` has moved to \[space\] weight_decay \(or tau_epochs\)",
        ),
        ("[train]\nmin_delta = nan\n", r"`train\.min_delta` must be >= 0, but got nan"),
        (
            "[data]\nval_fraction = 1.5\n",
            r"`data\.val_fraction` must be in \(0, 1\), but got 1\.5",
        ),
        ("[data]\nval_fraction = 0\n", r"`data\.val_fraction` must be in \(0, 1\), but got 0"),
    ],
)
def test_bad_study_file_names_the_file_and_the_key(tmp_path, text, match):
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError, match=match) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith("study.toml: ")
    assert "\n" not in message


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match=r"study file '.*nope\.toml' does not exist"):
        load_config(tmp_path / "nope.toml")


def test_a_folder_is_not_a_study_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot be read"):
        load_config(tmp_path)


@pytest.mark.parametrize("text", ["[study\n", "[study]\nn_trials = \n", "[train]\nmax_epochs 3\n"])
def test_invalid_toml(tmp_path, text):
    with pytest.raises(ConfigError, match=r"study file '.*study\.toml' is not valid TOML: .*line"):
        load_config(_write(tmp_path, text))


def test_config_from_dict_names_its_source():
    with pytest.raises(ConfigError, match=r"^study config: unknown key `train\.epochs`"):
        config_from_dict({"train": {"epochs": 3}})
    with pytest.raises(ConfigError, match=r"^mine: `space\.lr` must be"):
        config_from_dict({"space": {"lr": 0.1}}, source="mine")


def test_config_from_dict_builds_the_same_config_as_the_file():
    raw = {
        "study": {"name": "tiny", "n_trials": 2},
        "data": {"name": "synthetic", "n_samples": 300},
        "model": {"name": "mlp", "hidden": [16]},
        "space": {"batch_size": [16, 32]},
        "train": {"max_epochs": 2},
    }
    config = config_from_dict(raw)
    assert config.study.n_trials == 2
    assert config.data.options == {"n_samples": 300}
    assert config.model.options == {"hidden": [16]}
    assert config.space.batch_size == (16, 32)
    # The dict given is not changed.
    assert raw["space"]["batch_size"] == [16, 32]


def test_config_to_dict_is_plain_and_complete():
    out = config_to_dict(StudyConfig())
    assert set(out) == {"study", "data", "model", "space", "train"}
    assert out["space"]["batch_size"] == [16, 256]  # tuples back to lists
    assert out["train"]["max_epochs"] == 15
    assert "options" not in out["data"] and "options" not in out["model"]


_EVERYTHING = StudyConfig(
    study=StudySection(name="x", timeout=30.0, storage="sqlite:///x.db", sampler="gp"),
    data=DataSection(name="synthetic", val_fraction=0.3, options={"n_samples": 500}),
    model=ModelSection(name="mlp", options={"hidden": [8, 8], "dropout": 0.2}),
    space=SpaceSection(parameterisation="power", batch_size=64, momentum=(0.8, 0.99), alpha=0.75),
    train=TrainSection(patience=None, metric="loss", optimizer="adam"),
)


@pytest.mark.parametrize("source", ["default", "digits_mlp", "mnist1d_cnn", "everything"])
def test_config_dict_round_trip(source):
    if source == "default":
        config = StudyConfig()
    elif source == "everything":
        config = _EVERYTHING
    else:
        config = load_config(STUDIES / f"{source}.toml")
    assert config_from_dict(config_to_dict(config)) == config


def test_patience_zero_turns_early_stopping_off(tmp_path):
    from optuna_bs.study.runner import prepare

    config = config_from_dict(
        {
            "data": {"name": "synthetic", "n_samples": 200, "n_features": 4},
            "model": {"hidden": [8]},
            "space": {"batch_size": [16, 32]},
            "train": {"patience": 0, "max_epochs": 6},
        }
    )
    assert config.train.patience == 0
    prepared = prepare(config, storage=f"sqlite:///{tmp_path / 's.db'}")
    # A tiny noise scale (lr ~ 1e-7) leaves the error flat: patience 1 would stop at epoch 2.
    frozen = optuna.trial.FixedTrial({"log2_batch_size": 4, "noise_scale": 1.0})
    result, _ = prepared.train(frozen)
    assert len(set(result.history)) < len(result.history)
    assert result.epochs_run == 6


@pytest.mark.parametrize(
    ("objectives", "match"),
    [
        ('["val_error", "accuracy"]', "must be \\[metric\\] or \\[metric, cost\\]"),
        ('["train_seconds"]', "must be \\[metric\\]"),
        ('["val_loss", "n_updates"]', "must start with the tuned metric 'val_error'"),
        ('"val_error"', "must be a \\[low, high\\] pair"),
    ],
)
def test_bad_objectives(tmp_path, objectives, match):
    path = tmp_path / "s.toml"
    path.write_text(f"[study]\nobjectives = {objectives}\n")
    with pytest.raises(ConfigError, match=match):
        load_config(path)


def test_cmaes_cannot_take_two_objectives(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text('[study]\nsampler = "cmaes"\nobjectives = ["val_error", "n_updates"]\n')
    with pytest.raises(ConfigError, match="cmaes"):
        load_config(path)


def test_the_schedule_vocabulary_is_the_schedules_module_s():
    from optuna_bs.train.schedules import SCHEDULES

    for name in SCHEDULES:
        assert config_from_dict({"train": {"schedule": name}}).train.schedule == name
    cfg = config_from_dict(
        {
            "train": {
                "schedule": "cosine",
                "warmup_per_step": True,
                "warmup_epochs": 1,
                "micro_batch_size": 8,
                "on_oom": "prune",
                "max_grad_norm": 1.0,
            }
        }
    )
    assert (cfg.train.micro_batch_size, cfg.train.on_oom) == (8, "prune")
    with pytest.raises(ConfigError, match="`train.on_oom` must be one of"):
        config_from_dict({"train": {"on_oom": "halve"}})
    with pytest.raises(ConfigError, match="`train.micro_batch_size` must be an integer >= 1"):
        config_from_dict({"train": {"micro_batch_size": "half"}})
