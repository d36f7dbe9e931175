"""The effective batch: the statistical batch of one update that the rules are about::

    B = per-device batch × accumulation steps × world size

:func:`plan_batch` splits a trial's B into the per-device batch and the accumulation that a
memory limit allows, and :func:`check_effective_batch` refuses a training set-up whose product
is not B. ``fit``, the Lightning callback and the Hugging Face ``hp_space`` all use these two.
Plain arithmetic: no torch, no Optuna.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BatchPlan:
    """How one update of B samples is made: ``per_device`` × ``accumulation`` × ``world_size``.

    Example:
        >>> plan_batch(256, max_micro_batch=48, world_size=2)
        BatchPlan(per_device=32, accumulation=4, world_size=2)
    """

    per_device: int
    accumulation: int
    world_size: int = 1

    @property
    def batch_size(self) -> int:
        """The effective batch B."""
        return self.per_device * self.accumulation * self.world_size

    @property
    def attrs(self) -> dict[str, int]:
        """The plan as the user attrs a trial records."""
        return {
            "micro_batch_size": self.per_device,
            "accumulation_steps": self.accumulation,
            "world_size": self.world_size,
        }


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"`{name}` must be an integer >= 1, but got {name}={value!r}.")
    return value


def plan_batch(
    batch_size: int, max_micro_batch: int | None = None, world_size: int = 1
) -> BatchPlan:
    """Split B into the largest per-device batch that fits ``max_micro_batch``, and the
    accumulation steps that make up the rest.

    Args:
        batch_size: The trial's effective batch B.
        max_micro_batch: The largest batch one device holds in memory; ``None`` for B/K.
        world_size: The number of processes K that train one update together.

    Returns:
        A :class:`BatchPlan` whose product is ``batch_size``: the per-device batch is the
        largest divisor of B/K that is at most ``max_micro_batch``.

    Raises:
        ValueError: If an argument is not a positive integer, or K does not divide B.
    """
    batch_size = _positive_int("batch_size", batch_size)
    world_size = _positive_int("world_size", world_size)
    if batch_size % world_size:
        raise ValueError(
            f"`batch_size` must be a multiple of the world size {world_size} (each process "
            f"takes an equal share of every batch), but got batch_size={batch_size}."
        )
    local = batch_size // world_size
    cap = local if max_micro_batch is None else _positive_int("max_micro_batch", max_micro_batch)
    per_device = largest_divisor_at_most(local, cap)
    return BatchPlan(per_device, local // per_device, world_size)


def largest_divisor_at_most(batch_size: int, cap: int) -> int:
    """The largest divisor of ``batch_size`` that is at most ``cap``: the micro-batch that
    divides a batch into equal parts (``fit``'s out-of-memory halving uses it too).

    Example:
        >>> largest_divisor_at_most(96, 40)
        32
    """
    b = min(cap, batch_size)
    while batch_size % b:
        b -= 1
    return b


def check_effective_batch(
    batch_size: int, per_device: int, accumulation: int, world_size: int
) -> BatchPlan:
    """Make sure a training set-up updates at the trial's B.

    Raises:
        ValueError: If per-device batch × accumulation × world size is not ``batch_size``; the
            message names all three and the set-up that would be.
    """
    plan = BatchPlan(per_device, accumulation, world_size)
    if plan.batch_size != batch_size:
        hint = ""
        if batch_size % world_size == 0:
            fix = plan_batch(batch_size, per_device, world_size)
            hint = (
                f"; for B={batch_size} use per-device batch {fix.per_device} with accumulation "
                f"{fix.accumulation}"
            )
        if world_size > 1:
            hint += f" (plan_batch(..., world_size={world_size}))"
        raise ValueError(
            f"The effective batch is per-device batch {per_device} x accumulation "
            f"{accumulation} x world size {world_size} = {plan.batch_size}, but the trial's "
            f"batch_size is {batch_size}: the tuned learning rate would be applied at the "
            f"wrong batch size{hint} (optuna_bs.rules.plan_batch)."
        )
    return plan
