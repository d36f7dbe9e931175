"""The search room: what a trial samples. The coupled space of a rule, the ladder sampler
that climbs B at a fixed noise scale, and the sampler that steps past out-of-memory batch
sizes."""

from optuna_bs._lazy import attach

__getattr__, __dir__, __all__ = attach(
    __name__,
    {
        "space": "BatchScalingSpace OOMAwareSampler",
        "ladder": "BatchLadderSampler ladder_outcome",
        "edges": "RangeWidening",
    },
)
