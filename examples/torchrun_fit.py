"""One trial trained by several processes at once: ``fit`` under torchrun.

    torchrun --nproc-per-node 2 examples/torchrun_fit.py --n-trials 8

Rank 0 owns the study; every rank trains each trial with the same hyperparameters
(``optuna_bs.train.optimize``). B is the *global* batch: each of the K ranks trains on
its B/K share of every batch and ``DistributedDataParallel`` averages their gradients, so the
update, the tuned learning rate and the recorded noise scale are those of B. Pruning and early
stopping stop every rank at the same epoch. Gloo on CPUs; on GPUs use NCCL (``init_from_env``
chooses) or ``optuna-bs launch --gpus 0,1,2,3 --gpus-per-trial 2`` with a study file.
"""

from __future__ import annotations

import argparse

import optuna
import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import TensorDataset, random_split

import optuna_bs
from optuna_bs.train.distributed import init_from_env, optimize


def mlp() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-trials", type=int, default=8)
    parser.add_argument("--max-epochs", type=int, default=8)
    parser.add_argument("--storage", default="sqlite:///torchrun_fit.db")
    args = parser.parse_args()

    rank, world_size = init_from_env()  # gloo here; NCCL where CUDA is
    torch.set_num_threads(1)
    digits = load_digits()
    full = TensorDataset(
        torch.tensor(digits.data, dtype=torch.float32) / 16.0, torch.tensor(digits.target)
    )
    train, val, test = random_split(full, [1150, 287, 360], torch.Generator().manual_seed(0))
    data = optuna_bs.Datasets(train, val, test)
    # B must be a multiple of the world size: each rank takes an equal share.
    space = optuna_bs.BatchScalingSpace(n_train=data.n_train, batch_size=(16, 256))

    def objective(trial) -> float:  # a TorchDistributedTrial, the same on every rank
        hp = space.suggest(trial)
        torch.manual_seed(trial.number)
        result = optuna_bs.fit(
            mlp(), data, hp, trial=trial, max_epochs=args.max_epochs, patience=3, device="cpu"
        )
        return result.best_value

    study = None
    if rank == 0:
        study = optuna.create_study(
            study_name="torchrun-fit",
            storage=args.storage,
            load_if_exists=True,
            pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=2),
            sampler=optuna.samplers.TPESampler(seed=0),
        )
    optimize(study, objective, n_trials=args.n_trials)
    if rank == 0:
        best = study.best_trial
        print(
            f"best val_error {best.value:.4f} at global B={best.user_attrs['batch_size']} on "
            f"{best.user_attrs['world_size']} processes, lr={best.user_attrs['lr']:.3g}"
        )
        print(optuna_bs.summarize(study).to_text())


if __name__ == "__main__":
    main()
