"""The data room: the built-in datasets (MNIST-1D, digits, synthetic, CIFAR-10 from local
files) and models, by name."""

from optuna_bs._lazy import attach

__getattr__, __dir__, __all__ = attach(
    __name__,
    {
        "datasets": "DATASETS TASKS Data load_data",
        "models": "MODELS build_model",
    },
)
