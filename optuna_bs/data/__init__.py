"""The data room: the built-in datasets (MNIST-1D, digits, synthetic, CIFAR-10 from local
files) and models, by name."""

from optuna_bs._lazy import attach

__getattr__, __dir__, __all__ = attach(
    __name__,
    {
        "DATASETS": "datasets",
        "TASKS": "datasets",
        "Data": "datasets",
        "load_data": "datasets",
        "MODELS": "models",
        "build_model": "models",
    },
    submodules=["datasets", "models"],
)
