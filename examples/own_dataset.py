"""Tune your own Dataset, model, loss and AdamW through ``optuna_bs.fit``.

    python examples/own_dataset.py --n-trials 12

Everything that is yours stays plain PyTorch: a ``Dataset`` of 8x8 digit images, a small 2-D
CNN, label-smoothing cross-entropy, AdamW with weight decay, gradient clipping, and a linear
warm-up then cosine decay that move the learning rate every update. ``fit`` builds the
DataLoader for each trial's batch size B (full batches of exactly B, seeded), prunes and
early-stops on validation error, keeps B through gradient accumulation if memory runs out,
and records on every trial what ``optuna-bs report`` reads.

The space is Malladi's square-root rule for Adam (``adam-sqrt``): ϵ = ϵ_ref · √(B / B_ref),
with β1 and β2 rescaled alike, so the search explores B and one reference learning rate.
"""

from __future__ import annotations

import argparse

import optuna
import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import Dataset, random_split

import optuna_bs


class Digits(Dataset):
    """scikit-learn's 1797 digits as (1, 8, 8) float images and int64 labels."""

    def __init__(self) -> None:
        digits = load_digits()
        self.images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
        self.labels = torch.tensor(digits.target, dtype=torch.int64)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[i], self.labels[i]


def cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(128, 10),
    )


def smooth_cross_entropy(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(outputs, targets, label_smoothing=0.1)


def adamw(params, hp: optuna_bs.Hyperparameters) -> torch.optim.Optimizer:
    # The trial's lr, betas, eps and weight decay: the rule has set them for this batch size.
    return torch.optim.AdamW(
        params,
        lr=hp.lr,
        betas=(hp.momentum, hp.beta2),
        eps=hp.eps,
        weight_decay=hp.weight_decay,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-trials", type=int, default=12)
    parser.add_argument("--max-epochs", type=int, default=8)
    parser.add_argument("--storage", default="sqlite:///own_dataset.db")
    args = parser.parse_args()

    # The validation split comes from the training data; the test split is kept apart.
    train, val, test = random_split(Digits(), [1150, 287, 360], torch.Generator().manual_seed(0))
    data = optuna_bs.Datasets(train, val, test)
    space = optuna_bs.BatchScalingSpace(
        "adam-sqrt",
        n_train=data.n_train,
        batch_size=(16, 256),
        lr=(1e-4, 3e-2),
        reference_batch_size=64,
        tau_epochs=(1.0, 300.0),  # AdamW's weight decay as its timescale B / (lr λ N)
        optimizer="adamw",  # an SGD rule would be refused
    )

    def objective(trial: optuna.Trial) -> float:
        hp = space.suggest(trial)
        torch.manual_seed(trial.number)
        result = optuna_bs.fit(
            cnn(),
            data,
            hp,
            trial=trial,
            max_epochs=args.max_epochs,
            patience=3,
            loss_fn=smooth_cross_entropy,
            optimizer=adamw,
            max_grad_norm=1.0,
            schedule=optuna_bs.Warmup(1, per_step=True).then(optuna_bs.Cosine()),
            seed=trial.number,
        )
        return result.best_value

    study = optuna.create_study(
        study_name="own-dataset",
        storage=args.storage,
        load_if_exists=True,
        pruner=optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=2),
        sampler=optuna.samplers.TPESampler(seed=0),
    )
    study.optimize(objective, n_trials=args.n_trials)

    best = study.best_trial
    print(
        f"best val_error {best.value:.4f} at B={best.user_attrs['batch_size']}, "
        f"lr={best.user_attrs['lr']:.3g} (trial #{best.number})"
    )
    print(optuna_bs.summarize(study).to_text())
    print(f"report: {optuna_bs.write_report(study, 'reports')}")


if __name__ == "__main__":
    main()
