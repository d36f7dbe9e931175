"""Bring your own training loop: TrialMonitor reports, prunes, early-stops and records.

    python examples/own_training_loop.py --n-trials 10

Everything here is plain PyTorch (a DataLoader, an optimizer, a loop); optuna-bs adds the space
and the monitor. The ``with`` block records, however the trial ends, what ``optuna-bs report``
reads (best epoch, epochs run, stop reason, updates, seconds, samples/s), so the script ends
with the full report: the fitted rule, the best noise scale and both Pareto fronts.
"""

from __future__ import annotations

import argparse

import optuna
import torch
from torch.utils.data import DataLoader, TensorDataset

import optuna_bs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-trials", type=int, default=10)
    parser.add_argument("--max-epochs", type=int, default=10)
    parser.add_argument("--storage", default="sqlite:///own_loop.db")
    args = parser.parse_args()

    data = optuna_bs.load_data("digits")
    space = optuna_bs.BatchScalingSpace(
        n_train=data.n_train, batch_size=(8, 128), noise_scale=(0.5, 500.0)
    )

    def objective(trial: optuna.Trial) -> float:
        hp = space.suggest(trial)
        model = torch.nn.Sequential(
            torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10)
        )
        opt = torch.optim.SGD(model.parameters(), lr=hp.lr, momentum=hp.momentum)
        loader = DataLoader(
            TensorDataset(data.x_train, data.y_train),
            batch_size=hp.batch_size,
            shuffle=True,
            drop_last=True,
        )

        with optuna_bs.TrialMonitor(trial, patience=3) as monitor:  # 1: records every end
            for _ in range(args.max_epochs):
                model.train()
                for x, y in loader:
                    opt.zero_grad()
                    torch.nn.functional.cross_entropy(model(x), y).backward()
                    opt.step()
                model.eval()
                with torch.no_grad():
                    val_error = (model(data.x_val).argmax(1) != data.y_val).float().mean().item()
                # 2: report, prune, early-stop; the epoch's updates and samples for the report
                if monitor.step(
                    val_error, updates=len(loader), samples=len(loader) * hp.batch_size
                ):
                    break
        return monitor.best_value_  # 3: the best epoch's error

    study = optuna.create_study(
        study_name="own-loop",
        storage=args.storage,
        load_if_exists=True,
        pruner=optuna.pruners.MedianPruner(n_startup_trials=3),
    )
    study.optimize(objective, n_trials=args.n_trials)
    print(optuna_bs.summarize(study).to_text())
    print(f"report: {optuna_bs.write_report(study, 'reports')}")


if __name__ == "__main__":
    main()
