"""A model factory that behaves as a GPU would when a batch of ``limit`` or more does not fit.

Used as ``[model] name = "tests.helpers.oom_model:factory"``: the simulated CUDA out-of-memory
error is the real exception class, raised in the forward pass of a training batch.
"""

from __future__ import annotations

import torch


class _OOM(torch.nn.Module):
    def __init__(self, inner: torch.nn.Module, limit: int) -> None:
        super().__init__()
        self.inner = inner
        self.limit = limit

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and len(x) >= self.limit:
            raise torch.cuda.OutOfMemoryError(
                f"CUDA out of memory (simulated at batch {len(x)} >= {self.limit})"
            )
        return self.inner(x)


def factory(input_shape, n_outputs, limit: int = 256) -> torch.nn.Module:
    width = 1
    for d in input_shape:
        width *= d
    inner = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(width, n_outputs))
    return _OOM(inner, limit)
