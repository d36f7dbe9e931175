"""The user's own code named in a study file: data, loss and optimizer factories."""

from __future__ import annotations

import doctest
import os
import subprocess
import textwrap

import optuna
import pytest

from optuna_bs import factories
from optuna_bs.cli import main
from optuna_bs.factories import import_object

from ..conftest import cli_command

USER_CODE = '''
import torch
from torch.utils.data import TensorDataset

import optuna_bs

NOT_CALLABLE = 3


def digits_datasets(n_train=240):
    """The user's own Datasets: a (train, val) pair."""
    data = optuna_bs.load_data("digits")
    return (
        TensorDataset(data.x_train[:n_train], data.y_train[:n_train]),
        TensorDataset(data.x_val, data.y_val),
    )


def smooth_ce(outputs, targets):
    return torch.nn.functional.cross_entropy(outputs, targets, label_smoothing=0.1)


def adamw(params, hp):
    return torch.optim.AdamW(params, lr=hp.lr, betas=(hp.momentum, 0.999), weight_decay=1e-2)
'''

STUDY = """
[study]
name = "own"
n_trials = 3
n_startup_trials = 2
storage = "sqlite:///{db}"

[data]
name = "my_training:digits_datasets"
n_train = 240

[model]
name = "mlp"
hidden = [32]

[space]
parameterisation = "adam-sqrt"  # an AdamW factory: an SGD rule would be refused
batch_size = [16, 64]
reference_batch_size = 32
lr = [1e-4, 1e-2]

[train]
max_epochs = 2
loss = "my_training:smooth_ce"
optimizer = "my_training:adamw"
micro_batch_size = 8
"""


def test_doctests() -> None:
    assert doctest.testmod(factories).failed == 0


def _project(tmp_path, study=STUDY):
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "my_training.py").write_text(textwrap.dedent(USER_CODE))
    path = folder / "study.toml"
    path.write_text(study.format(db=tmp_path / "own.db"))
    return path


def test_factories_next_to_the_study_file_run_from_elsewhere_without_pythonpath(tmp_path):
    study_file = _project(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    run = subprocess.run(
        [*cli_command(), "run", str(study_file)],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    study = optuna.load_study(study_name="own", storage=f"sqlite:///{tmp_path / 'own.db'}")
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert done, run.stdout
    for t in done:
        assert t.user_attrs["n_train"] == 240  # N from len(train) of the user's Dataset
        assert t.user_attrs["micro_batch_size"] == 8
        assert t.user_attrs["accumulation_steps"] == t.user_attrs["batch_size"] // 8


@pytest.mark.parametrize(
    ("replace", "word"),
    [
        (
            ('loss = "my_training:smooth_ce"', 'loss = "my_training:NOT_CALLABLE"'),
            "'NOT_CALLABLE' must be callable",
        ),
        (
            ('loss = "my_training:smooth_ce"', 'loss = "cross_entropy"'),
            "`train.loss` must be 'package.module:function'",
        ),
        (
            ("micro_batch_size = 8", "micro_batch_size = 3"),
            "`micro_batch_size` must divide every batch size",
        ),
        (
            ('parameterisation = "adam-sqrt"', 'parameterisation = "noise-scale"'),
            "optimizer 'adamw' is Adam-family: use 'adam-sqrt'",
        ),
        (
            ('optimizer = "my_training:adamw"', 'optimizer = "no_such_module:adamw"'),
            "No module named 'no_such_module' (searched the study file's folder",
        ),
        (
            ('name = "my_training:digits_datasets"', 'name = "my_training:nothing"'),
            "has no attribute 'nothing'",
        ),
    ],
)
def test_bad_factories_are_one_line_exit_2_and_nothing_written(tmp_path, capsys, replace, word):
    study_file = _project(tmp_path, STUDY.replace(*replace))
    before = sorted(p.name for p in tmp_path.rglob("*") if "__pycache__" not in p.parts)
    assert main(["run", str(study_file)]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and word in err, err
    after = sorted(p.name for p in tmp_path.rglob("*") if "__pycache__" not in p.parts)
    assert after == before


def test_a_missing_module_names_the_fix(tmp_path):
    with pytest.raises(ValueError, match=r"searched the study file's folder .*PYTHONPATH"):
        import_object("not_here_at_all:f", "[data] name", folder=tmp_path)


def test_auto_noise_scale_on_your_own_datasets_and_loss(tmp_path, monkeypatch):
    """``noise_scale = "auto"`` runs the range test on the factory's Datasets, with the study
    file's own loss, and the study searches g in the range it recommends."""
    from optuna_bs.study import auto
    from optuna_bs.study.config import load_config

    study = (
        STUDY.replace('parameterisation = "adam-sqrt"', 'parameterisation = "noise-scale"')
        .replace("reference_batch_size = 32\nlr = [1e-4, 1e-2]", 'noise_scale = "auto"')
        .replace('optimizer = "my_training:adamw"', 'optimizer = "sgd"')
    )
    study_file = _project(tmp_path, study)
    monkeypatch.syspath_prepend(str(study_file.parent))
    losses = []
    real = auto.lr_range_test

    def spy(model, data, **kwargs):
        losses.append(kwargs["loss"].__name__)
        return real(model, data, **kwargs)

    monkeypatch.setattr(auto, "lr_range_test", spy)
    assert main(["run", str(study_file), "-q", "--no-test"]) == 0
    assert losses == ["smooth_ce"]  # the study file's loss, on the Datasets
    trials = optuna.load_study(study_name="own", storage=f"sqlite:///{tmp_path / 'own.db'}").trials
    g = trials[0].distributions["noise_scale"]
    assert g.high / g.low == pytest.approx(15, rel=0.01)
    assert all(g.low <= t.params["noise_scale"] <= g.high for t in trials)
    config = load_config(study_file)
    assert config.space.noise_scale == "auto"


def test_noise_scale_on_a_datasets_factory_says_what_it_needs(tmp_path, capsys):
    study_file = _project(tmp_path)
    assert main(["noise-scale", str(study_file)]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "in-memory tensors" in err, err


DICT_CODE = """
import torch
from torch.utils.data import Dataset

import optuna_bs


class Pixels(Dataset):
    def __init__(self, n):
        g = torch.Generator().manual_seed(n)
        self.x = torch.randn(n, 5, generator=g)
        self.y = (self.x[:, 0] > 0).long()

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return {"pixels": self.x[i], "mask": torch.ones(5), "label": self.y[i]}


def make(seed=0):
    assert seed == 7  # [data] seed reaches a factory that takes it
    val = Pixels(50)
    return optuna_bs.Datasets(Pixels(200), val, val)  # test = val: the replay must match


class KwNet(torch.nn.Module):
    def __init__(self, input_shape, n_outputs):
        super().__init__()
        assert input_shape is None and n_outputs is None  # dict inputs, classes not declared
        self.linear = torch.nn.Linear(5, 2)

    def forward(self, *, pixels, mask):
        return self.linear(pixels * mask)


def ten_ce(out, y):
    return 10 * torch.nn.functional.cross_entropy(out, y)


def returns_none(params, hp):
    return None


def raises():
    raise FileNotFoundError("no such folder: /data/images")


def broken_model(input_shape, n_outputs):
    raise RuntimeError("no weights at /models/kw.pt\\nsecond line")
"""

DICT_STUDY = """
[study]
name = "kw"
n_trials = 2
storage = "sqlite:///{db}"

[data]
name = "kw_code:make"
seed = 7

[model]
name = "kw_code:KwNet"

[space]
batch_size = [16, 32]

[train]
max_epochs = 2
metric = "loss"
loss = "kw_code:ten_ce"
"""


def _kw_project(tmp_path, study=DICT_STUDY):
    folder = tmp_path / "kw"
    folder.mkdir()
    (folder / "kw_code.py").write_text(textwrap.dedent(DICT_CODE))
    path = folder / "study.toml"
    path.write_text(study.format(db=tmp_path / "kw.db"))
    return path


def test_dict_items_and_a_keyword_model_run_from_a_study_file(tmp_path, capsys):
    assert main(["run", str(_kw_project(tmp_path))]) == 0
    out = capsys.readouterr().out
    study = optuna.load_study(study_name="kw", storage=f"sqlite:///{tmp_path / 'kw.db'}")
    best = min(t.value for t in study.trials if t.value is not None)
    test = study.user_attrs["test_loss"]
    assert "test_loss=" in out
    # The test loss is the study's own loss (10x cross-entropy), not plain cross-entropy.
    assert test == pytest.approx(best, rel=1e-5)


@pytest.mark.parametrize(
    ("replace", "word"),
    [
        (
            ("[train]", '[train]\noptimizer = "kw_code:returns_none"'),
            "must return a torch.optim.Optimizer",
        ),
        (
            ('name = "kw_code:make"', 'name = "kw_code:raises"'),
            "failed: FileNotFoundError: no such folder",
        ),
        (
            ('name = "kw_code:KwNet"', 'name = "kw_code:broken_model"'),
            "[model] Model 'kw_code:broken_model' failed: RuntimeError: no weights at",
        ),
    ],
)
def test_factories_that_fail_are_one_line_before_anything_is_written(
    tmp_path, capsys, replace, word
):
    study_file = _kw_project(tmp_path, DICT_STUDY.replace(*replace))
    assert main(["run", str(study_file)]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and word in err, err
    assert not (tmp_path / "kw.db").exists()
