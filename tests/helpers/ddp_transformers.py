"""``Trainer.hyperparameter_search`` with each trial trained by 2 CPU processes (gloo).

``python -m torch.distributed.run --standalone --nproc-per-node 2 tests/ddp_transformers.py OUT
STORAGE NAME``: 2 trials, a pruner that prunes trial 1 at its second epoch, and each rank's
epochs written to ``OUT/rank{r}.json``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import optuna
import torch
from transformers import Trainer, TrainerCallback, TrainingArguments

import optuna_bs
from optuna_bs.integrations.transformers import TrialCallback, hp_space
from tests.helpers.hf_model import Tokens, model_init


class PruneSecond(optuna.pruners.BasePruner):
    def prune(self, study, trial) -> bool:
        return trial.number == 1 and (trial.last_step or 0) >= 2


def main(out: Path, storage: str, name: str) -> None:
    torch.set_num_threads(1)
    train, val = Tokens(256, 0), Tokens(64, 1)
    space = optuna_bs.BatchScalingSpace(
        "adam-sqrt",
        n_train=len(train),
        batch_size=(32, 64),
        lr=(1e-3, 1e-2),
        reference_batch_size=32,
        optimizer="adamw",
    )
    search = hp_space(space, max_micro_batch=16)  # world size 2, from torchrun's WORLD_SIZE
    callback = TrialCallback(search, patience=5)
    args = TrainingArguments(
        output_dir=str(out / "runs"),
        eval_strategy="epoch",
        logging_strategy="epoch",
        num_train_epochs=4,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        log_level="error",
    )
    trainer = Trainer(
        model_init=model_init,
        args=args,
        train_dataset=train,
        eval_dataset=val,
        callbacks=[callback],
    )
    epochs: list[int] = []  # each trial's epochs on this rank (rank 0 raises for the pruned)

    class Count(TrainerCallback):
        def on_train_end(self, args, state, control, **kwargs):
            epochs.append(round(state.epoch))

    trainer.add_callback(Count())
    trainer.hyperparameter_search(
        backend="optuna",
        hp_space=search,
        compute_objective=callback.compute_objective,
        n_trials=2,
        direction="minimize",
        storage=storage,
        study_name=name,
        pruner=PruneSecond(),
    )
    rank = args.process_index
    (out / f"rank{rank}.json").write_text(json.dumps(epochs))


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2], sys.argv[3])
