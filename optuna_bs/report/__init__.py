"""The report room: what a study says once it has trials. The trials read back, the
Pareto front, the lr at a new batch size learned per batch size (``transfer``), the figures,
and the HTML report and dashboard notes."""

from optuna_bs._lazy import attach

__getattr__, __dir__, __all__ = attach(
    __name__,
    {
        "pareto_front": "analysis",
        "NoiseScaleFit": "fits",
        "ScalingFit": "fits",
        "Transfer": "scaling",
        "fit_noise_scale": "fits",
        "fit_scaling_rule": "fits",
        "recommend": "scaling",
        "transfer": "scaling",
        "FIGURES": "plots",
        "figures": "plots",
        "Summary": "summary",
        "save_to_dashboard": "summary",
        "summarize": "summary",
        "write_report": "summary",
    },
    submodules=["analysis", "fits", "optima", "plots", "scaling", "summary"],
)
