"""The measure room: what is measured before a study. The critical batch size B_simple
(McCandlish et al. 2018) and the learning-rate range test that centres the range of the noise
scale (SGD) or of the lr (Adam)."""

from optuna_bs._lazy import attach

__getattr__, __dir__, __all__ = attach(
    __name__,
    {
        "noise": "NoiseScaleEstimate estimate_noise_scale recommend_batch_sizes",
        "range_test": "RangeTest lr_range_test recommend_lrs recommend_noise_scales",
    },
)
