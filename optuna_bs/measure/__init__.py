"""The measure room: what is measured before a study. The critical batch size B_simple
(McCandlish et al. 2018) and the learning-rate range test that centres the range of the noise
scale (SGD) or of the lr (Adam)."""

from optuna_bs._lazy import attach

__getattr__, __dir__, __all__ = attach(
    __name__,
    {
        "NoiseScaleEstimate": "noise",
        "RangeTest": "range_test",
        "estimate_noise_scale": "noise",
        "lr_range_test": "range_test",
        "recommend_batch_sizes": "noise",
        "recommend_lrs": "range_test",
        "recommend_noise_scales": "range_test",
    },
    submodules=["noise", "range_test"],
)
