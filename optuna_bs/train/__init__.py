"""The train room: how one trial trains. ``fit`` and its epoch loop, the training state a
checkpoint holds, the sources of batches, the metrics, the monitor that reports, prunes and
early-stops, the schedules, and one trial on several processes."""

from optuna_bs._lazy import attach

__getattr__, __dir__, __all__ = attach(
    __name__,
    {
        "trainer": "FitResult evaluate fit resolve_device",
        "state": "TrainingState",
        "policies": "CheckpointPolicy DevicePath MemoryPolicy",
        "monitor": "STOP_REASONS TrialMonitor",
        "metrics": "METRICS Metric",
        "sources": "Datasets",
        "schedules": (
            "SCHEDULES BatchRamp Compose Constant Cosine LrDecay MomentumRamp Schedule Warmup"
        ),
        "distributed": "optimize",
    },
)
