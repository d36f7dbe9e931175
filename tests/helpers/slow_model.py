"""A model factory for worker tests: an MLP whose training steps take a known time.

Used as ``[model] name = "tests.helpers.slow_model:factory"`` so that a trial lasts long enough
to be killed in the middle. ``SLOW_STUDY`` is the study file of such trials (8 epochs of 6 steps
of 30 ms, a 1 s heartbeat), and ``LADDER_STUDY`` a batch ladder of them, shared by the worker
tests and ``benchmarks/faults.py``.
"""

from __future__ import annotations

import time

import torch


class _Slow(torch.nn.Module):
    def __init__(
        self, inner: torch.nn.Module, seconds: float, per_sample: float, learns: bool
    ) -> None:
        super().__init__()
        self.inner = inner
        self.seconds = seconds
        self.per_sample = per_sample
        self.learns = learns

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            time.sleep(self.seconds + self.per_sample * len(x))
        out = self.inner(x)
        return out if self.learns else 0.0 * out


def factory(
    input_shape,
    n_outputs,
    seconds_per_step: float = 0.02,
    seconds_per_sample: float = 0.0,
    learns: bool = True,
) -> torch.nn.Module:
    """The MLP, sleeping ``seconds_per_step`` a training step plus ``seconds_per_sample`` a
    sample (so that an epoch takes as long at any batch size). With ``learns = false`` its
    logits are 0: every trial ends with the same error, whatever its B and lr."""
    inner = torch.nn.Sequential(
        torch.nn.Flatten(),
        torch.nn.Linear(input_shape[0], 16),
        torch.nn.ReLU(),
        torch.nn.Linear(16, n_outputs),
    )
    return _Slow(inner, seconds_per_step, seconds_per_sample, learns)


#: A study of 8-epoch trials whose steps take 30 ms each, with a 1 s heartbeat.
SLOW_STUDY = """
[study]
n_trials = 5
pruner = "none"
heartbeat_interval = 1
[data]
name = "synthetic"
n_samples = 300
n_features = 6
[model]
name = "tests.helpers.slow_model:factory"
seconds_per_step = 0.03
[space]
batch_size = 32
noise_scale = [5.0, 50.0]
[train]
max_epochs = 8
patience = 0
"""

#: A batch ladder (``sampler = "ladder"``) whose trials all end with one error (the model's
#: logits are 0), so that every rung keeps it, and whose epochs take 0.4 s at any B (4 a
#: trial, a 1 s heartbeat): g searched at B = 32, then the rungs B = 64 and B = 128.
LADDER_STUDY = """
[study]
pruner = "none"
sampler = "ladder"
heartbeat_interval = 1
[data]
name = "synthetic"
n_samples = 300
n_features = 6
[model]
name = "tests.helpers.slow_model:factory"
seconds_per_step = 0.0
seconds_per_sample = 0.002
learns = false
[space]
batch_size = [16, 128]
noise_scale = [5.0, 50.0]
[train]
max_epochs = 4
patience = 0
"""
