"""The rules room: the formulas that tie B to ϵ, momentum, Adam's betas and eps and AdamW's
weight decay, the rules that a study searches and moves by, and the effective batch.

Plain arithmetic: nothing here imports torch or Optuna. Add a rule with
:func:`register_rule` (docs/design.md §3).
"""

from optuna_bs._lazy import attach

__getattr__, __dir__, __all__ = attach(
    __name__,
    {
        "formulas": (
            "ADAM_DEFAULTS BETA2_RANGE OPTIMIZER_FAMILIES Hyperparameters beta2_for_half_life "
            "lr_for_noise_scale mccandlish noise_scale optimizer_family surge "
            "weight_decay_for_timescale weight_decay_timescale"
        ),
        "registry": "RULES Rule column_label format_value get_rule register_rule rescale",
        "batch": "BatchPlan check_effective_batch largest_divisor_at_most plan_batch",
    },
)
