"""The effective batch, and one trial across several processes.

**The effective batch.** The scaling rules are about the statistical batch of one update::

    B = per-device batch × accumulation steps × world size

:func:`plan_batch` splits a trial's B into the per-device batch and the accumulation that a
memory limit allows, and :func:`check_effective_batch` refuses a training set-up whose product
is not B. ``fit``, the Lightning callback and the Hugging Face ``hp_space`` all use these two.

**One trial across K processes** (``torchrun --nproc-per-node K``, gloo on CPUs, NCCL on
GPUs). Rank 0 owns the Optuna trial; every rank gets a
``optuna_integration.TorchDistributedTrial``, which broadcasts rank 0's suggestions, reports
and pruning verdicts, so every rank trains the same hyperparameters and stops at the same
epoch::

    import torch.distributed as dist
    import optuna_bs
    from optuna_bs.distributed import optimize

    dist.init_process_group("gloo")
    space = optuna_bs.BatchScalingSpace(n_train=len(train))

    def objective(trial):  # a TorchDistributedTrial, on every rank
        hp = space.suggest(trial)
        return optuna_bs.fit(make_model(), (train, val), hp, trial=trial).best_value

    study = optuna.load_study(...) if dist.get_rank() == 0 else None
    optimize(study, objective, n_trials=20)

B is the *global* batch: ``fit`` trains each rank on its B/K share of every batch and averages
the gradients (``DistributedDataParallel``), so the update is the one of a single process at
B, and the recorded noise scale is that of B.
"""

from __future__ import annotations

import atexit
import gc
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import optuna

if TYPE_CHECKING:
    from optuna.study import Study
    from optuna.trial import BaseTrial, FrozenTrial

__all__ = [
    "BatchPlan",
    "plan_batch",
    "largest_divisor_at_most",
    "check_effective_batch",
    "world",
    "broadcast",
    "distributed_trial",
    "is_distributed_trial",
    "init_from_env",
    "leave_at_exit",
    "lead",
    "follow",
    "release",
    "optimize",
    "INSTALL_HINT",
]

_logger = logging.getLogger(__name__)

INSTALL_HINT = 'pip install "optuna-bs[distributed]"'


# --- the effective batch -----------------------------------------------------------------------


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
        fix = None
        if batch_size % world_size == 0:
            fix = plan_batch(batch_size, per_device, world_size)
        hint = (
            f"; for B={batch_size} use per-device batch {fix.per_device} with accumulation "
            f"{fix.accumulation}"
            if fix is not None
            else ""
        )
        if world_size > 1:
            hint += f" (plan_batch(..., world_size={world_size}))"
        raise ValueError(
            f"The effective batch is per-device batch {per_device} x accumulation "
            f"{accumulation} x world size {world_size} = {plan.batch_size}, but the trial's "
            f"batch_size is {batch_size}: the tuned learning rate would be applied at the "
            f"wrong batch size{hint} (optuna_bs.distributed.plan_batch)."
        )
    return plan


# --- processes ---------------------------------------------------------------------------------


def world() -> tuple[int, int]:
    """``(rank, world size)`` of this process: ``(0, 1)`` outside ``torch.distributed``."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def broadcast(value: Any) -> Any:
    """Rank 0's ``value``, on every rank (the value itself outside ``torch.distributed``)."""
    rank, size = world()
    if size == 1:
        return value
    import torch.distributed as dist

    box = [value if rank == 0 else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _trial_class():
    try:
        from optuna_integration import TorchDistributedTrial
    except ImportError as err:
        raise ImportError(
            f"One trial across several processes needs optuna-integration: {INSTALL_HINT}"
        ) from err
    return TorchDistributedTrial


def distributed_trial(trial: BaseTrial | None) -> BaseTrial:
    """``trial`` (on rank 0; ``None`` on the others) as one trial shared by every rank.

    The shared trial is an ``optuna_integration.TorchDistributedTrial`` that also knows its
    study's name (``study_name``) and the dead trials it retries (``retries``, with their
    owners as ``retried_owners``), from rank 0's study, so every rank resumes from the same
    checkpoint, after the same check of whose it is (:mod:`optuna_bs._checkpoints`).

    Raises:
        ImportError: If optuna-integration is not installed.
        ValueError: If rank 0 has no trial, or another rank has one.
    """
    import warnings

    from optuna_bs._checkpoints import retried_owners, study_name
    from optuna_bs.storage import retried_trials

    with warnings.catch_warnings():  # TorchDistributedTrial is marked experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        shared = _trial_class()(trial)
    shared.retries = broadcast(None if trial is None else retried_trials(trial))
    shared.study_name = broadcast(None if trial is None else study_name(trial))
    shared.retried_owners = broadcast(None if trial is None else retried_owners(trial))
    return shared


def is_distributed_trial(trial: object) -> bool:
    """Whether ``trial`` is shared by every rank (so its reports and verdicts are too)."""
    try:
        from optuna_integration import TorchDistributedTrial
    except ImportError:
        return False
    return isinstance(trial, TorchDistributedTrial)


def init_from_env() -> tuple[int, int]:
    """Join the process group that ``torchrun`` describes in the environment, if any.

    Under ``torchrun`` (``WORLD_SIZE`` > 1) this initializes ``torch.distributed`` (NCCL
    where CUDA is there, else gloo) and gives each rank its own GPU, ``LOCAL_RANK``; at exit
    the ranks wait for each other and destroy the group.

    Returns:
        ``(rank, world size)``; ``(0, 1)`` outside ``torchrun``.
    """
    import torch
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        cuda = torch.cuda.is_available()
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if cuda else "gloo")
        leave_at_exit()
    return world()


_leaving = False


def leave_at_exit() -> None:
    """At this process's exit, collect garbage, wait for the other ranks and destroy the
    process group, whoever created it (``init_from_env``, a Lightning strategy, the Hugging
    Face Trainer). A group left to the interpreter's teardown aborts the process ("terminate
    called without an active exception") when its threads outlive it. Registered once."""
    global _leaving
    if not _leaving:
        _leaving = True
        atexit.register(_leave)


def _leave() -> None:
    """What :func:`leave_at_exit` registers."""
    import torch.distributed as dist

    gc.collect()  # a last trial's DistributedDataParallel, before the group it uses
    if dist.is_initialized():
        try:
            dist.barrier()
        except Exception:  # another rank is gone already: nothing to wait for
            pass
        dist.destroy_process_group()


def lead(objective: Callable[[BaseTrial], float]) -> Callable[[BaseTrial], float]:
    """Rank 0's objective: tell the other ranks to train the next trial, then train it with
    them. Call :func:`release` once no trial is left."""

    def shared(trial: BaseTrial) -> float:
        broadcast(True)
        try:
            return objective(distributed_trial(trial))
        except Exception as err:
            if not _lost_a_rank(err):
                raise
            # Not an Exception, so Optuna does not mark the trial FAIL: it stays RUNNING,
            # the heartbeat fails it, and its retry resumes from rank 0's checkpoint.
            raise SystemExit(
                f"optuna-bs: trial {trial.number} lost a rank ({type(err).__name__}); it is "
                "left to the heartbeat, whose retry resumes it from its checkpoint."
            ) from err

    return shared


def _lost_a_rank(err: BaseException) -> bool:
    """Whether ``err`` says another rank of the process group is gone (gloo or NCCL)."""
    import torch.distributed as dist

    if isinstance(err, dist.DistError):
        return True
    text = str(err)
    return isinstance(err, RuntimeError) and "gloo" in text and "peer" in text


def release() -> None:
    """Rank 0: no trial is left; the other ranks' :func:`follow` returns."""
    broadcast(False)


def follow(
    objective: Callable[[BaseTrial], float], catch: tuple[type[Exception], ...] = ()
) -> None:
    """A rank other than 0: train every trial rank 0 leads, until it releases them.

    Every rank collects garbage after each trial: a pruned trial's
    ``DistributedDataParallel`` otherwise outlives its process group, and aborts the process
    when the group is destroyed.
    """
    rank = world()[0]
    while broadcast(None):
        try:
            objective(distributed_trial(None))
        except optuna.TrialPruned:
            pass
        except catch as err:  # rank 0 records the failure; this rank follows on
            _logger.warning("Trial failed on rank %d: %r", rank, err)
        gc.collect()


def optimize(
    study: Study | None,
    objective: Callable[[BaseTrial], float],
    *,
    n_trials: int | None = None,
    timeout: float | None = None,
    callbacks: Sequence[Callable[[Study, FrozenTrial], None]] | None = None,
    catch: tuple[type[Exception], ...] = (),
) -> None:
    """``study.optimize`` with every rank of ``torch.distributed`` training each trial.

    Rank 0 runs ``study.optimize`` (``study`` is ``None`` on the other ranks); before each
    trial it tells the others to go on, and after the last one to stop. Every rank calls
    ``objective`` with a :func:`distributed_trial` of the same trial, so the study gets each
    trial once, however many processes train it.

    Outside ``torch.distributed`` (one process) it is ``study.optimize``, so one script runs
    under ``torchrun`` and as a plain ``python script.py``.

    Every rank collects garbage before it returns, so that the caller may destroy the
    process group at once.

    Raises:
        ValueError: If rank 0 has no study, or another rank has one.
        RuntimeError: If ``WORLD_SIZE`` says this is one of several processes, but
            ``torch.distributed`` is not initialized.
    """
    rank, size = world()
    if size == 1:
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # under torchrun, but not joined
            raise RuntimeError(
                f"WORLD_SIZE={os.environ['WORLD_SIZE']}, but torch.distributed is not "
                "initialized: call optuna_bs.distributed.init_from_env() first, or every rank "
                "runs a study of its own."
            )
        if study is None:
            raise ValueError("`study` must be the study: this is the only process.")
        # One process (a plain ``python script.py``): the study, trial by trial, as usual.
        study.optimize(
            objective, n_trials=n_trials, timeout=timeout, callbacks=callbacks, catch=catch
        )
        return
    if (rank == 0) != (study is not None):
        raise ValueError(
            f"`study` must be the study on rank 0 and None on the others, but rank {rank} got "
            f"{'None' if study is None else 'a study'}."
        )
    try:
        if rank != 0:
            follow(objective, catch)
            return
        try:
            study.optimize(
                lead(objective),
                n_trials=n_trials,
                timeout=timeout,
                callbacks=callbacks,
                catch=catch,
                gc_after_trial=True,
            )
        finally:
            release()
    finally:
        # The last trial's garbage can hold the process group (its DistributedDataParallel,
        # its collectives); collected after the caller's destroy_process_group, it aborts
        # the process at exit ("terminate called without an active exception": 4 of 18
        # two-rank studies before, 0 of 18 after).
        gc.collect()
