"""A study whose trials each train on 2 processes: run under ``torchrun --nproc-per-node 2``.

``python -m torch.distributed.run --standalone --nproc-per-node 2 tests/ddp_fit.py MODE OUT
[STORAGE NAME]``. Each rank writes what it saw to ``OUT/rank{r}.json``:

* ``study``: a 2-trial study on STORAGE through :func:`optuna_bs.train.optimize`, with a
  pruner that prunes every trial at epoch 2;
* ``weights``: one fit of 1 epoch at B=64 with a fixed seed; rank 0 saves the weights to
  ``OUT/weights.pt``, to compare with one process at the same B.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import optuna
import torch
import torch.distributed as dist

import optuna_bs
from optuna_bs.train.distributed import optimize


class PruneAtEpoch(optuna.pruners.BasePruner):
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def prune(self, study, trial) -> bool:
        return trial.last_step is not None and trial.last_step >= self.epoch


def model(batch_norm: bool = True) -> torch.nn.Module:
    """A small MLP; BatchNorm, which sees each rank's share only, is left out to compare
    weights with one process."""
    torch.manual_seed(0)
    norm = torch.nn.BatchNorm1d(16) if batch_norm else torch.nn.Identity()
    return torch.nn.Sequential(
        torch.nn.Linear(8, 16), torch.nn.ReLU(), norm, torch.nn.Linear(16, 3)
    )


def main(mode: str, out: Path, storage: str | None = None, name: str = "ddp") -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.set_num_threads(1)
    data = optuna_bs.load_data("synthetic", n_samples=600, n_features=8, n_classes=3)
    seen: list[dict] = []
    if mode == "weights":
        hp = optuna_bs.Hyperparameters(64, 0.05, 0.9, n_train=data.n_train)
        net = model(batch_norm=False)
        result = optuna_bs.fit(net, data, hp, max_epochs=1, seed=3, device="cpu")
        seen.append({"n_updates": result.n_updates, "micro": result.micro_batch_size})
        if rank == 0:
            torch.save(net.state_dict(), out / "weights.pt")
    else:
        space = optuna_bs.BatchScalingSpace(n_train=data.n_train, batch_size=(32, 128))

        def objective(trial):
            hp = space.suggest(trial)
            result = optuna_bs.fit(model(), data, hp, trial=trial, max_epochs=5, device="cpu")
            seen.append({"trial": trial.number, "batch_size": hp.batch_size})
            return result.best_value

        study = None
        if rank == 0:
            study = optuna.create_study(
                storage=storage, study_name=name, pruner=PruneAtEpoch(2), load_if_exists=True
            )
            for log2_batch, g in ((5, 20.0), (6, 40.0)):  # noise scales that train
                study.enqueue_trial({"log2_batch_size": log2_batch, "noise_scale": g})

        def tracked(trial):
            try:
                return objective(trial)
            except optuna.TrialPruned as err:
                seen.append({"trial": trial.number, "pruned": str(err)})
                raise

        optimize(study, tracked, n_trials=2)
    (out / f"rank{rank}.json").write_text(json.dumps(seen))
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]), *sys.argv[3:])
