"""The study room: a study file becomes a running study. The config and its checks, the
prepared study with its resolved ranges, the runner, the workers that survive outages, and
the store."""

from optuna_bs._lazy import attach

__getattr__, __dir__, __all__ = attach(
    __name__,
    {
        "StudyConfig": "config",
        "load_config": "config",
        "prepare": "runner",
        "run_study": "runner",
        "DEFAULT_STORAGE": "storage",
        "make_storage": "storage",
        "mask_url": "storage",
        "launch_workers": "workers",
    },
    submodules=["auto", "config", "plan", "runner", "storage", "workers"],
)
