"""Tune an MLP on MNIST-1D with the Python API: the coupled space, the trainer, pruning.

    python examples/tune_mnist1d.py --n-trials 20

The space searches the batch size B and the SGD noise scale g = lr (N/B - 1) / (1 - m) with
momentum fixed; the learning rate follows from the rule. Swap in your own model and tensors.
"""

from __future__ import annotations

import argparse

import optuna
import torch

import optuna_bs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-trials", type=int, default=20)
    parser.add_argument("--storage", default=None, help="e.g. sqlite:///example.db")
    args = parser.parse_args()

    data = optuna_bs.load_data("mnist1d", seed=0)  # validation is split off the training data
    space = optuna_bs.BatchScalingSpace(
        n_train=data.n_train, batch_size=(16, 256), noise_scale=(1.0, 1000.0), momentum=0.9
    )

    def objective(trial: optuna.Trial) -> float:
        hparams = space.suggest(trial)  # records lr, momentum, noise_scale, ... on the trial
        torch.manual_seed(trial.number)
        model = optuna_bs.build_model("mlp", data.input_shape, data.n_outputs)
        result = optuna_bs.fit(
            model, data, hparams, trial=trial, max_epochs=15, patience=4, seed=trial.number
        )
        return result.best_value  # the best epoch's validation error

    study = optuna.create_study(
        storage=args.storage,
        direction="minimize",
        sampler=optuna.samplers.TPESampler(seed=0),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=3),
    )
    study.optimize(objective, n_trials=args.n_trials)

    best = study.best_trial
    print(
        f"best val_error {best.value:.4f} at B={best.user_attrs['batch_size']}, "
        f"lr={best.user_attrs['lr']:.3g}, g={best.user_attrs['noise_scale']:.3g}"
    )
    # "I tuned at this B; what lr at 4x the batch?" The noise-scale rule keeps g fixed.
    hp = optuna_bs.Hyperparameters(
        best.user_attrs["batch_size"],
        best.user_attrs["lr"],
        best.user_attrs["momentum"],
        data.n_train,
    )
    bigger = optuna_bs.rescale(hp, min(4 * hp.batch_size, data.n_train - 1))
    print(f"at B={bigger.batch_size} use lr={bigger.lr:.3g} (same g={bigger.noise_scale:.3g})")


if __name__ == "__main__":
    main()
