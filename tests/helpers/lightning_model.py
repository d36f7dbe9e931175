"""A tiny LightningModule and DataModule on synthetic data, for the Lightning tests."""

from __future__ import annotations

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

N_TRAIN = 384


class Classifier(pl.LightningModule):
    def __init__(self, lr: float, momentum: float, n_features: int = 8, n_classes: int = 3):
        super().__init__()
        self.lr, self.momentum = lr, momentum
        self.net = torch.nn.Sequential(
            torch.nn.Linear(n_features, 16), torch.nn.ReLU(), torch.nn.Linear(16, n_classes)
        )

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.cross_entropy(self.net(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        error = (self.net(x).argmax(1) != y).float().mean()
        self.log("val_error", error, sync_dist=True)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr, momentum=self.momentum)


class Data(pl.LightningDataModule):
    def __init__(self, batch_size: int, seed: int = 0):
        super().__init__()
        self.batch_size = batch_size
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(N_TRAIN + 128, 8, generator=g)
        y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()
        self.train = TensorDataset(x[:N_TRAIN], y[:N_TRAIN])
        self.val = TensorDataset(x[N_TRAIN:], y[N_TRAIN:])

    def train_dataloader(self):
        return DataLoader(self.train, batch_size=self.batch_size, shuffle=True, drop_last=True)

    def val_dataloader(self):
        return DataLoader(self.val, batch_size=128)


def trainer(max_epochs: int, accumulate: int, callbacks, **kwargs) -> pl.Trainer:
    return pl.Trainer(
        max_epochs=max_epochs,
        accumulate_grad_batches=accumulate,
        callbacks=callbacks,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **kwargs,
    )
