"""A Lightning study whose trials each train with DDP on 2 CPU processes (gloo).

``python -m torch.distributed.run --standalone --nproc-per-node 2 tests/ddp_lightning.py OUT
STORAGE NAME``: 2 trials through :func:`optuna_bs.train.optimize`, a pruner that prunes
every trial at epoch 2, and each rank's epochs written to ``OUT/rank{r}.json``.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import optuna
import torch
import torch.distributed as dist

import optuna_bs
from optuna_bs.integrations.lightning import TrialCallback, batch_settings
from optuna_bs.train.distributed import optimize
from tests.helpers.lightning_model import N_TRAIN, Classifier, Data, trainer


class PruneAtEpoch(optuna.pruners.BasePruner):
    def prune(self, study, trial) -> bool:
        return trial.last_step is not None and trial.last_step >= 2


def main(out: Path, storage: str, name: str) -> None:
    logging.getLogger("lightning").setLevel(logging.ERROR)
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.set_num_threads(1)
    space = optuna_bs.BatchScalingSpace(n_train=N_TRAIN, batch_size=(32, 64))
    seen: list[dict] = []

    def objective(trial):
        hp = space.suggest(trial)
        plan = batch_settings(hp, max_micro_batch=16, world_size=2)
        callback = TrialCallback(trial, hp, patience=5)
        accumulate, limit = plan["accumulate_grad_batches"], plan["limit_train_batches"]
        run = trainer(
            5, accumulate, [callback], strategy="ddp", devices=2, limit_train_batches=limit
        )
        run.fit(Classifier(hp.lr, hp.momentum), datamodule=Data(plan["batch_size"]))
        seen.append(
            {
                "trial": trial.number,
                "epochs": callback.monitor.epoch_,
                "lightning_epoch": run.current_epoch,
                "pruned": callback.pruned_ is not None,
            }
        )
        return callback.result()

    study = None
    if rank == 0:
        study = optuna.create_study(storage=storage, study_name=name, pruner=PruneAtEpoch())
        for log2_batch, g in ((5, 20.0), (6, 40.0)):  # noise scales that train
            study.enqueue_trial({"log2_batch_size": log2_batch, "noise_scale": g})
    optimize(study, objective, n_trials=2)
    (out / f"rank{rank}.json").write_text(json.dumps(seen))
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2], sys.argv[3])
