"""A 2-layer BERT built from a config, and random token data: nothing is downloaded."""

from __future__ import annotations

import torch
from transformers import BertConfig, BertForSequenceClassification

VOCAB, LENGTH = 64, 12


class Tokens(torch.utils.data.Dataset):
    """Random token sequences whose label is whether token 1 occurs in the first half."""

    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(2, VOCAB, (n, LENGTH), generator=g)
        flag = torch.rand(n, generator=g) < 0.5
        self.ids[flag, 2] = 1
        self.labels = flag.long()

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {
            "input_ids": self.ids[i],
            "attention_mask": torch.ones(LENGTH, dtype=torch.long),
            "labels": self.labels[i],
        }


def model_init(trial=None) -> BertForSequenceClassification:
    """The Trainer's ``model_init``: a fresh BERT, seeded, with the accumulation fix."""
    return bert()


def bert(fixed: bool = True) -> BertForSequenceClassification:
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=VOCAB,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=LENGTH,
        num_labels=2,
    )
    model = BertForSequenceClassification(config)
    # Its loss ignores num_items_in_batch: without this the Trainer scales its gradient by the
    # accumulation steps (TrialCallback refuses it).
    if fixed:
        model.accepts_loss_kwargs = False
    return model
