"""Tune a Lightning module's batch size and learning rate together, with pruning.

    python examples/lightning_digits.py --n-trials 12

Your LightningModule and DataModule stay as they are; the trial gives them B, lr and momentum.
``batch_settings`` splits B into the DataModule's per-device batch and the Trainer's
``accumulate_grad_batches`` (so B can exceed what one device holds), with the Trainer's
``limit_train_batches`` that keeps every update a whole B, and ``TrialCallback``
reports each validation epoch, prunes, early-stops, checks that the Trainer really trains at
B, and records what ``optuna-bs report`` reads.

For DDP, run it under ``torchrun --nproc-per-node 2`` with ``--ddp``: rank 0 owns the study
and every rank trains each trial (``optuna_bs.train.optimize``).
"""

from __future__ import annotations

import argparse
import logging

import lightning.pytorch as pl
import optuna
import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import optuna_bs
from optuna_bs.integrations.lightning import TrialCallback, batch_settings
from optuna_bs.train.distributed import init_from_env, optimize


class DigitsModule(pl.LightningModule):
    def __init__(self, lr: float, momentum: float) -> None:
        super().__init__()
        self.lr, self.momentum = lr, momentum
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self.net(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_error", (self.net(x).argmax(1) != y).float().mean(), sync_dist=True)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr, momentum=self.momentum)


class DigitsData(pl.LightningDataModule):
    def __init__(self, batch_size: int) -> None:
        super().__init__()
        self.batch_size = batch_size
        digits = load_digits()
        x = torch.tensor(digits.data, dtype=torch.float32) / 16.0
        y = torch.tensor(digits.target)
        # Validation comes from the training data; a test split would be kept apart.
        self.train_set, self.val_set = (
            TensorDataset(x[:1400], y[:1400]),
            TensorDataset(x[1400:], y[1400:]),
        )

    def train_dataloader(self):
        # Full batches of exactly B: the noise scale and the rules assume them.
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True, drop_last=True)

    def val_dataloader(self):
        return DataLoader(self.val_set, batch_size=256)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-trials", type=int, default=12)
    parser.add_argument("--max-epochs", type=int, default=10)
    parser.add_argument("--max-micro-batch", type=int, default=64, help="what one device holds")
    parser.add_argument("--storage", default="sqlite:///lightning_digits.db")
    parser.add_argument("--ddp", action="store_true", help="under torchrun: DDP on every rank")
    args = parser.parse_args()
    logging.getLogger("lightning").setLevel(logging.WARNING)

    rank, world_size = 0, 1
    if args.ddp:
        rank, world_size = init_from_env()
    space = optuna_bs.BatchScalingSpace(n_train=1400, batch_size=(16, 256), momentum=0.9)

    def objective(trial) -> float:
        hp = space.suggest(trial)
        plan = batch_settings(hp, max_micro_batch=args.max_micro_batch, world_size=world_size)
        # chance_value="auto": a run collapsed to guessing the commonest digit ends "diverged".
        callback = TrialCallback(trial, hp, patience=3, checkpoint_dir="lightning_checkpoints")
        trainer = pl.Trainer(
            max_epochs=args.max_epochs,
            accumulate_grad_batches=plan["accumulate_grad_batches"],
            limit_train_batches=plan["limit_train_batches"],  # n_train // B whole updates
            callbacks=[callback],
            accelerator="cpu",
            devices=world_size,
            strategy="ddp" if args.ddp else "auto",
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        torch.manual_seed(trial.number)
        trainer.fit(
            DigitsModule(hp.lr, hp.momentum),
            datamodule=DigitsData(plan["batch_size"]),
            ckpt_path=callback.ckpt_path,  # a retried trial resumes from its dead trial's
        )
        return callback.result()  # the best epoch's value; raises TrialPruned if pruned

    study = None
    if rank == 0:
        study = optuna.create_study(
            study_name="lightning-digits",
            storage=args.storage,
            load_if_exists=True,
            pruner=optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=2),
            sampler=optuna.samplers.TPESampler(seed=0),
        )
    if args.ddp:
        optimize(study, objective, n_trials=args.n_trials)
    else:
        study.optimize(objective, n_trials=args.n_trials)
    if rank == 0:
        print(optuna_bs.summarize(study).to_text())
        print(f"report: {optuna_bs.write_report(study, 'reports')}")


if __name__ == "__main__":
    main()
