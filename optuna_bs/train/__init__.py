"""The train room: how one trial trains. ``fit`` and its epoch loop, the training state a
checkpoint holds, the sources of batches, the metrics, the monitor that reports, prunes and
early-stops, the schedules, and one trial on several processes."""

from optuna_bs._lazy import attach

__getattr__, __dir__, __all__ = attach(
    __name__,
    {
        "FitResult": "trainer",
        "evaluate": "trainer",
        "fit": "trainer",
        "resolve_device": "trainer",
        "TrainingState": "state",
        "CheckpointPolicy": "policies",
        "DevicePath": "policies",
        "MemoryPolicy": "policies",
        "STOP_REASONS": "monitor",
        "TrialMonitor": "monitor",
        "METRICS": "metrics",
        "Metric": "metrics",
        "Datasets": "sources",
        "SCHEDULES": "schedules",
        "BatchRamp": "schedules",
        "Compose": "schedules",
        "Constant": "schedules",
        "Cosine": "schedules",
        "LrDecay": "schedules",
        "MomentumRamp": "schedules",
        "Schedule": "schedules",
        "Warmup": "schedules",
        "optimize": "distributed",
    },
    submodules=[
        "distributed",
        "metrics",
        "monitor",
        "policies",
        "schedules",
        "sources",
        "state",
        "trainer",
    ],
)
