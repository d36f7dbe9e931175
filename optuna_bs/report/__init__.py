"""The report room: what a study says once it has trials. The trials read back, the
Pareto front, the lr at a new batch size learned per batch size (``transfer``), the figures,
and the HTML report and dashboard notes."""

from optuna_bs._lazy import attach

__getattr__, __dir__, __all__ = attach(
    __name__,
    {
        "analysis": "pareto_front",
        "fits": "NoiseScaleFit ScalingFit fit_noise_scale fit_scaling_rule",
        "scaling": "Transfer recommend transfer",
        "plots": "FIGURES figures",
        "summary": "Summary save_to_dashboard summarize write_report",
    },
    submodules=["optima"],
)
