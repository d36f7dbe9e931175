"""The optimizer a trial trains with: built from its name or the user's factory at the trial's
values, and read back as the trial records it (what the integrations record too)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import replace

import torch

from optuna_bs.rules.formulas import Hyperparameters
from optuna_bs.vocabulary import DEFAULTS


def _weight_decay(given: float | None, hp: Hyperparameters) -> float:
    if given is None:
        return hp.weight_decay or 0.0
    if hp.weight_decay is not None and not math.isclose(given, hp.weight_decay):
        raise ValueError(
            f"`weight_decay`={given!r} differs from hparams.weight_decay={hp.weight_decay!r}: "
            "give one (the space's weight decay, or fit's)."
        )
    return given


def optimizer_attrs(opt: torch.optim.Optimizer, hp: Hyperparameters) -> dict[str, object]:
    """What the optimizer really trains with, as trial user attrs: its name, weight decay
    (with AdamW's timescale τ_epoch) and, for the Adam family, β2 and eps.

    The param group read is the one at the trial's lr with the largest weight decay (biases
    and norms often sit in a group without decay).
    """
    groups = [g for g in opt.param_groups if math.isclose(g["lr"], hp.lr)] or opt.param_groups
    group = max(groups, key=lambda g: g.get("weight_decay", 0.0))
    wd = float(group.get("weight_decay", 0.0))
    attrs: dict[str, object] = {"optimizer": type(opt).__name__.lower(), "weight_decay": wd}
    if wd > 0:
        attrs["tau_epochs"] = replace(hp, weight_decay=wd).tau_epochs
    if "betas" in group:
        attrs["beta2"] = float(group["betas"][1])
    if "eps" in group and "betas" in group:
        attrs["eps"] = float(group["eps"])
    return attrs


def _make_optimizer(
    name: str | Callable, model: torch.nn.Module, hp: Hyperparameters, weight_decay: float
) -> torch.optim.Optimizer:
    if callable(name):
        opt = name(model.parameters(), hp)
        if not isinstance(opt, torch.optim.Optimizer):
            raise TypeError(
                "`optimizer` must return a torch.optim.Optimizer, but it returned an object "
                f"of type {type(opt).__name__!r}."
            )
        if all(not math.isclose(g["lr"], hp.lr) for g in opt.param_groups):
            warnings.warn(
                f"No param group of the optimizer has the trial's lr={hp.lr:.4g}: build it "
                "with lr=hparams.lr, or the search tunes nothing.",
                stacklevel=3,
            )
        return opt
    params = model.parameters()
    if name == "sgd":
        return torch.optim.SGD(params, lr=hp.lr, momentum=hp.momentum, weight_decay=weight_decay)
    betas = (hp.momentum, DEFAULTS["beta2"] if hp.beta2 is None else hp.beta2)
    eps = {} if hp.eps is None else {"eps": hp.eps}
    return _ADAM_FAMILY[name](params, lr=hp.lr, betas=betas, weight_decay=weight_decay, **eps)


#: How each Adam-family name of vocabulary.OPTIMIZERS is built (β1 from the momentum).
_ADAM_FAMILY = {
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "nadam": torch.optim.NAdam,
}
