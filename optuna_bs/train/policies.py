"""``fit``'s grouped keywords: the device path, the checkpoint policy and the memory policy.

The simple call stays simple, a string each (``device="cuda"``, ``checkpoint="run.pt"``); the
groups hold what belongs together, as accelerate's ``DataLoaderConfiguration`` does::

    optuna_bs.fit(model, data, hp, trial=trial,
                  device=DevicePath("cuda", precision="bf16", channels_last=True),
                  checkpoint=CheckpointPolicy("run.pt", resume_from="dead_trial.pt"),
                  memory=MemoryPolicy(micro_batch_size=64, on_oom="prune"))

Each group checks its values when it is made. The flat keywords of earlier releases
(``precision=``, ``resume_from=``, ``micro_batch_size=``, ...) still work for one release,
with a ``FutureWarning`` that names the group they belong to.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optuna_bs._validation import check_choice, check_int
from optuna_bs.vocabulary import DEFAULTS, OOM_POLICIES, PRECISIONS


@dataclass(frozen=True)
class DevicePath:
    """Where and how a batch is computed.

    Args:
        device: ``"auto"`` (CUDA where there is one), ``"cpu"``, ``"cuda"``, ``"cuda:N"``, or
            a ``torch.device``.
        precision: ``"fp32"``, or autocast to ``"bf16"`` or ``"fp16"`` (with a GradScaler).
        channels_last: NHWC memory format for image models.
        compile: ``torch.compile`` the model.
        cudnn_benchmark: Let cuDNN choose convolution algorithms for the fixed shapes.
    """

    device: Any = "auto"
    precision: str = DEFAULTS["precision"]
    channels_last: bool = False
    compile: bool = False
    cudnn_benchmark: bool = False

    def __post_init__(self) -> None:
        check_choice("precision", self.precision, PRECISIONS)
        for name in ("channels_last", "compile", "cudnn_benchmark"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"`{name}` must be a bool, but got {getattr(self, name)!r}.")


@dataclass(frozen=True)
class CheckpointPolicy:
    """What a run saves, and what it starts from.

    Args:
        path: A file to save the whole training state to at the end of every epoch, replaced
            atomically. With a trial it records whose it is (the study, the trial's number,
            start and parameters), which a retry checks before resuming it.
        resume_from: A checkpoint (of this run, or of a dead worker's trial) to go on from,
            at the epoch after the saved one.
    """

    path: str | Path | None = None
    resume_from: str | Path | None = None


@dataclass(frozen=True)
class MemoryPolicy:
    """How an update of B fits in memory. B, and so the tuned learning rate, never changes.

    Args:
        micro_batch_size: ``"auto"`` (start at B; halve on out of memory) or a b that divides
            B: each update accumulates B/b micro-batches (BatchNorm sees b). Under
            ``torch.distributed`` b is per rank and divides B/K.
        on_oom: ``"accumulate"``: on a CUDA out-of-memory error halve b and redo the update;
            only a failure at b = 1 ends the trial with ``"oom"``. ``"prune"``: end it at once
            (and let ``OOMAwareSampler`` cap later batch sizes).
        eval_batch_size: The validation batch (default 4096 for tensors, max(B, 256) for
            Datasets, at most 2b with a set ``micro_batch_size``); halved on out of memory.
    """

    micro_batch_size: int | str = "auto"
    on_oom: str = DEFAULTS["on_oom"]
    eval_batch_size: int | None = None

    def __post_init__(self) -> None:
        micro = self.micro_batch_size
        if micro != "auto" and (
            isinstance(micro, bool) or not isinstance(micro, int) or micro < 1
        ):
            raise ValueError(
                f"`micro_batch_size` must be 'auto' or an integer >= 1, but got {micro!r}."
            )
        check_choice("on_oom", self.on_oom, OOM_POLICIES)
        if self.eval_batch_size is not None:
            check_int("eval_batch_size", self.eval_batch_size, low=1)


#: fit's flat keywords of earlier releases, and the group each now belongs to.
_MOVED = {
    **dict.fromkeys(("precision", "channels_last", "compile", "cudnn_benchmark"), "device"),
    "resume_from": "checkpoint",
    **dict.fromkeys(("micro_batch_size", "on_oom", "eval_batch_size"), "memory"),
}


def grouped(
    device: Any, checkpoint: Any, memory: MemoryPolicy | None, moved: dict[str, Any]
) -> tuple[DevicePath, CheckpointPolicy, MemoryPolicy]:
    """``fit``'s three groups, from its keywords and the flat ones of earlier releases
    (``moved``: each folded into its group, with a ``FutureWarning``).

    Raises:
        TypeError: For a keyword ``fit`` never had, or a group of the wrong type.
    """
    if not isinstance(checkpoint, CheckpointPolicy):
        checkpoint = CheckpointPolicy(checkpoint)
    groups = {
        "device": device if isinstance(device, DevicePath) else DevicePath(device),
        "checkpoint": checkpoint,
        "memory": MemoryPolicy() if memory is None else memory,
    }
    if not isinstance(groups["memory"], MemoryPolicy):
        raise TypeError(f"`memory` must be a MemoryPolicy or None, but got {memory!r}.")
    for key, value in moved.items():
        if key not in _MOVED:
            raise TypeError(f"fit() got an unexpected keyword argument {key!r}")
        group = _MOVED[key]
        warnings.warn(
            f"fit({key}=...) is deprecated and goes in the next release: give "
            f"{group}={type(groups[group]).__name__}(..., {key}=...).",
            FutureWarning,
            stacklevel=3,
        )
        groups[group] = dataclasses.replace(groups[group], **{key: value})
    return groups["device"], groups["checkpoint"], groups["memory"]
