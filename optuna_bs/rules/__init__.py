"""The rules room: the formulas that tie B to ϵ, momentum, Adam's betas and eps and AdamW's
weight decay, the rules that a study searches and moves by, and the effective batch.

Plain arithmetic: nothing here imports torch or Optuna. Add a rule with
:func:`register_rule` (docs/design.md §3).
"""

from optuna_bs._lazy import attach

__getattr__, __dir__, __all__ = attach(
    __name__,
    {
        "ADAM_DEFAULTS": "formulas",
        "BETA2_RANGE": "formulas",
        "OPTIMIZER_FAMILIES": "formulas",
        "Hyperparameters": "formulas",
        "beta2_for_half_life": "formulas",
        "lr_for_noise_scale": "formulas",
        "mccandlish": "formulas",
        "noise_scale": "formulas",
        "optimizer_family": "formulas",
        "surge": "formulas",
        "weight_decay_for_timescale": "formulas",
        "weight_decay_timescale": "formulas",
        "RULES": "registry",
        "Rule": "registry",
        "column_label": "registry",
        "format_value": "registry",
        "get_rule": "registry",
        "register_rule": "registry",
        "rescale": "registry",
        "BatchPlan": "batch",
        "check_effective_batch": "batch",
        "largest_divisor_at_most": "batch",
        "plan_batch": "batch",
    },
    submodules=["batch", "formulas", "registry"],
)
