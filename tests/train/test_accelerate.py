"""The device path: precision, channels-last, on-device augmentation, OOM-aware batch sizes,
CIFAR-10 and ResNet-18 — on the CPU here, and on a GPU where there is one (marked ``gpu``)."""

from __future__ import annotations

import gc
import pickle

import numpy as np
import optuna
import pytest
import torch

from optuna_bs.data.datasets import load_data
from optuna_bs.data.models import build_model
from optuna_bs.rules.formulas import Hyperparameters
from optuna_bs.study.config import config_from_dict
from optuna_bs.study.runner import prepare, run_study
from optuna_bs.train._accelerate import Accelerator, crop_flip
from optuna_bs.train.policies import DevicePath
from optuna_bs.train.trainer import fit

CUDA = torch.cuda.is_available()
needs_gpu = pytest.mark.skipif(not CUDA, reason="needs CUDA: this machine has no GPU")


@pytest.fixture(scope="module")
def data():
    return load_data("synthetic", n_samples=400, n_features=10)


def _mlp(data):
    torch.manual_seed(0)
    return build_model("mlp", data.input_shape, data.n_outputs, hidden=(32,))


def _hp(data, b=32):
    return Hyperparameters(b, 0.1, 0.9, data.n_train)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_trains_on_the_cpu(data, precision):
    result = fit(
        _mlp(data), data, _hp(data), max_epochs=3, seed=0, device=DevicePath("cpu", precision)
    )
    assert result.best_value < 0.2


def test_bf16_autocast_really_computes_in_bf16():
    accel = Accelerator(torch.device("cpu"), precision="bf16")
    layer = torch.nn.Linear(4, 4)
    with accel.autocast():
        out = layer(torch.randn(2, 4))
    assert out.dtype == torch.bfloat16
    assert Accelerator(torch.device("cpu"), precision="fp16").scaler is not None
    assert Accelerator(torch.device("cpu"), precision="bf16").scaler is None


def test_unknown_precision_and_augment_are_rejected(data):
    with pytest.raises(ValueError, match="`precision` must be one of fp32, bf16, fp16"):
        fit(_mlp(data), data, _hp(data), max_epochs=1, device=DevicePath(precision="fp8"))
    with pytest.raises(ValueError, match="`augment`"):
        fit(_mlp(data), data, _hp(data), max_epochs=1, augment="mixup")


def test_crop_flip_moves_and_mirrors_pixels():
    torch.manual_seed(0)
    x = torch.arange(8 * 3 * 6 * 6, dtype=torch.float32).reshape(8, 3, 6, 6) + 1
    out = crop_flip(x, padding=2)
    assert out.shape == x.shape
    assert not torch.equal(out, x)  # 8 samples: some shifted or flipped
    for i in range(8):
        # Every output is a (possibly mirrored) shift of its own input, zeros padding in.
        kept = out[i][out[i] != 0]
        assert set(kept.tolist()) <= set(x[i].flatten().tolist())
    assert torch.equal(crop_flip(x, padding=0).abs().sum(), x.sum())


def _fake_cifar(root, n=20, seed=0):
    """A CIFAR-10 folder in the standard format: 5 train batches and a test batch."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        batch = {
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            b"labels": list(rng.integers(0, 10, n)),
            b"batch_label": name.encode(),
        }
        with (root / name).open("wb") as f:
            pickle.dump(batch, f)
    return root


def test_cifar10_reader_and_resnet18_on_a_fake_folder(tmp_path):
    _fake_cifar(tmp_path / "cifar-10-batches-py")
    data = load_data("cifar10", root=str(tmp_path))  # the parent folder works too
    assert data.input_shape == (3, 32, 32)
    assert data.n_train + len(data.x_val) == 100 and len(data.x_test) == 20
    assert abs(float(data.x_train.mean())) < 0.2  # normalised with training statistics
    model = build_model("resnet18", data.input_shape, 10, width=8)
    result = fit(
        model,
        data,
        Hyperparameters(16, 0.05, 0.9, data.n_train),
        max_epochs=1,
        augment="crop-flip",
        device=DevicePath("cpu", precision="bf16", channels_last=True),
    )
    assert result.epochs_run == 1 and 0 <= result.best_value <= 1


def test_cifar10_refuses_a_pickle_that_is_not_data(tmp_path):
    root = _fake_cifar(tmp_path / "c")

    class Evil:
        def __reduce__(self):
            return (print, ("code ran",))

    with (root / "test_batch").open("wb") as f:
        pickle.dump({b"data": Evil(), b"labels": []}, f)
    with pytest.raises(ValueError, match="test_batch is not a CIFAR-10 python batch"):
        load_data("cifar10", root=str(root))


def test_missing_cifar_folder_is_one_line_that_says_where(tmp_path, capsys):
    from optuna_bs.cli import main

    study = tmp_path / "s.toml"
    study.write_text(
        f'[data]\nname = "cifar10"\nroot = "{tmp_path / "nowhere"}"\n[model]\nname = "resnet18"\n'
    )
    assert main(["run", str(study)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not exist" in err and "cifar-10-python" in err
    assert not (tmp_path / "optuna_bs.db").exists()


def test_unknown_precision_in_a_study_file_is_exit_2(tmp_path, capsys):
    from optuna_bs.cli import main

    study = tmp_path / "s.toml"
    study.write_text('[train]\nprecision = "fp8"\n')
    assert main(["run", str(study)]) == 2
    assert "`train.precision` must be one of" in capsys.readouterr().err


def test_out_of_memory_batch_sizes_are_never_proposed_again(tmp_path):
    """Under on_oom = "prune" a simulated OOM at B >= 256 ends the trial "oom"; the next 20
    trials stay below 256."""
    config = config_from_dict(
        {
            "study": {"n_trials": 20, "pruner": "none", "n_startup_trials": 5},
            "data": {"name": "synthetic", "n_samples": 2000, "n_features": 4},
            "model": {"name": "tests.helpers.oom_model:factory", "limit": 256},
            "space": {"batch_size": [16, 1024]},
            "train": {"max_epochs": 1, "on_oom": "prune"},
        }
    )
    prepared = prepare(config, storage=f"sqlite:///{tmp_path / 's.db'}")
    from optuna_bs.study.runner import open_study

    open_study(prepared).enqueue_trial({"log2_batch_size": 8, "noise_scale": 50.0})
    study = run_study(prepared, n_trials=21)
    first, *rest = study.trials
    assert first.user_attrs["batch_size"] == 256
    assert first.state == optuna.trial.TrialState.PRUNED
    assert first.user_attrs["stop_reason"] == "oom"
    assert len(rest) == 20
    assert all(t.user_attrs["batch_size"] < 256 for t in rest)
    assert all(t.user_attrs.get("stop_reason") != "oom" for t in rest)


@pytest.mark.gpu
@needs_gpu
def test_gpu_bf16_training(data):
    result = fit(_mlp(data), data, _hp(data), max_epochs=3, device=DevicePath("cuda", "bf16"))
    assert result.best_value < 0.2


@pytest.mark.gpu
@needs_gpu
def test_gpu_oom_with_a_huge_batch():
    big = load_data("synthetic", n_samples=5000, n_features=8)
    model = torch.nn.Sequential(
        torch.nn.Linear(8, 2**16),
        torch.nn.ReLU(),
        torch.nn.Linear(2**16, 2**16),
        torch.nn.Linear(2**16, 2),
    )
    study = optuna.create_study()
    trial = study.ask()
    free = torch.cuda.mem_get_info()[0]
    # Activations of 2**16 floats per sample: a batch this large cannot fit.
    batch = min(big.n_train - 1, int(free // (2**16 * 4)) + 1)
    with pytest.raises(optuna.TrialPruned, match="oom"):
        fit(
            model,
            big,
            Hyperparameters(batch, 0.01, 0.9, big.n_train),
            trial=trial,
            max_epochs=1,
            device="cuda",
        )
    assert trial.user_attrs["stop_reason"] == "oom"


@pytest.mark.gpu
@needs_gpu
def test_gpu_memory_is_released_between_trials(tmp_path, data):
    config = config_from_dict(
        {
            "study": {"n_trials": 10},
            "data": {"name": "synthetic", "n_samples": 2000},
            "model": {"hidden": [512, 512]},
            "train": {"max_epochs": 2, "device": "cuda"},
        }
    )
    prepared = prepare(config, storage=f"sqlite:///{tmp_path / 's.db'}")
    gc.collect()
    torch.cuda.empty_cache()
    before = torch.cuda.memory_reserved()
    run_study(prepared)
    assert torch.cuda.memory_reserved() - before < 64 * 2**20


def test_cifar10_study_file_loads_and_asks_for_its_data(tmp_path):
    from optuna_bs.errors import ConfigError
    from optuna_bs.study.config import load_config

    from ..conftest import REPO

    config = load_config(REPO / "studies" / "cifar10_resnet18.toml")
    assert config.model.name == "resnet18" and config.train.precision == "bf16"
    assert config.study.pruner == "hyperband" and config.space.parameterisation == "noise-scale"
    with pytest.raises(ConfigError, match="cifar-10-python"):
        prepare(config)  # run from an empty folder: the data is not there


def test_compiled_model_trains_and_checkpoints_the_plain_one(data, tmp_path):
    model = _mlp(data)
    ckpt = tmp_path / "c.pt"
    result = fit(
        model,
        data,
        _hp(data),
        max_epochs=2,
        device=DevicePath("cpu", compile=True),
        seed=0,
        checkpoint=ckpt,
    )
    assert result.best_value < 0.3
    # The checkpoint holds the model's own keys, not torch.compile's wrapper's.
    keys = torch.load(ckpt, weights_only=True)["model"].keys()
    assert not any(k.startswith("_orig_mod") for k in keys)
    model.load_state_dict(torch.load(ckpt, weights_only=True)["model"])
