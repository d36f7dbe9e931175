"""The study room: a study file becomes a running study. The config and its checks, the
prepared study with its resolved ranges, the runner, the workers that survive outages, and
the store."""

from optuna_bs._lazy import attach

__getattr__, __dir__, __all__ = attach(
    __name__,
    {
        "config": "StudyConfig load_config",
        "runner": "prepare run_study",
        "storage": "DEFAULT_STORAGE make_storage mask_url",
        "workers": "launch_workers",
    },
    submodules=["auto", "plan"],
)
