"""Tune a Hugging Face Trainer's batch size, learning rate, Adam betas and weight decay together.

    python examples/hf_trainer.py --n-trials 6

A 2-layer BERT built from a config (nothing is downloaded) learns whether a marker token sits
in a random sequence. ``hp_space`` maps the coupled Adam space (Malladi's square-root rule,
AdamW's weight decay as its timescale τ) onto ``TrainingArguments``: the per-device batch and
gradient accumulation that make B, the learning rate, β1, β2, eps and the weight decay.
``TrialCallback`` reports each epoch's ``eval_loss``, prunes, early-stops and records what
``optuna-bs report`` reads.
"""

from __future__ import annotations

import argparse

import torch
from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments

import optuna_bs
from optuna_bs.integrations.transformers import TrialCallback, hp_space

VOCAB, LENGTH = 64, 16


class MarkedTokens(torch.utils.data.Dataset):
    """Random token sequences; the label says whether the marker token 1 occurs in them."""

    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(2, VOCAB, (n, LENGTH), generator=g)
        self.labels = (torch.rand(n, generator=g) < 0.5).long()
        where = torch.randint(0, LENGTH, (n,), generator=g)
        self.ids[self.labels.bool(), where[self.labels.bool()]] = 1

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "labels": self.labels[i]}


def model_init(trial=None) -> BertForSequenceClassification:
    config = BertConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=LENGTH,
        num_labels=2,
    )
    model = BertForSequenceClassification(config)
    # Its loss ignores num_items_in_batch; without this the Trainer would scale its gradient by
    # gradient_accumulation_steps, and the update would not be the one at B (TrialCallback
    # refuses such a model).
    model.accepts_loss_kwargs = False
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-trials", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--max-micro-batch", type=int, default=32, help="what one device holds")
    parser.add_argument("--storage", default="sqlite:///hf_trainer.db")
    args = parser.parse_args()

    train, val = MarkedTokens(1024, seed=0), MarkedTokens(256, seed=1)
    space = optuna_bs.BatchScalingSpace(
        "adam-sqrt",
        n_train=len(train),
        batch_size=(16, 128),
        lr=(1e-3, 1e-2),
        reference_batch_size=32,
        optimizer="adamw",
        tau_epochs=(5.0, 500.0),
    )
    search = hp_space(space, max_micro_batch=args.max_micro_batch)
    callback = TrialCallback(search, metric="eval_loss", patience=2)
    trainer = Trainer(
        model_init=model_init,
        args=TrainingArguments(
            output_dir="hf_trainer_runs",
            eval_strategy="epoch",  # one report per epoch: comparable across batch sizes
            logging_strategy="epoch",
            num_train_epochs=args.epochs,
            save_strategy="no",
            report_to="none",
            use_cpu=True,
            disable_tqdm=True,
            log_level="error",
        ),
        train_dataset=train,
        eval_dataset=val,
        callbacks=[callback],
    )
    best = trainer.hyperparameter_search(
        backend="optuna",
        hp_space=search,
        compute_objective=callback.compute_objective,  # the best epoch's eval_loss
        n_trials=args.n_trials,
        direction="minimize",
        storage=args.storage,
        study_name="hf-trainer",
        load_if_exists=True,
    )
    print(f"best run: {best.run_id}, eval_loss {best.objective:.4f}, {best.hyperparameters}")
    import optuna

    study = optuna.load_study(study_name="hf-trainer", storage=args.storage)
    print(optuna_bs.summarize(study).to_text())
    print(f"report: {optuna_bs.write_report(study, 'reports')}")


if __name__ == "__main__":
    main()
