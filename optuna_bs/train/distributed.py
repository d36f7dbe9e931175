"""One trial across several processes.

**One trial across K processes** (``torchrun --nproc-per-node K``, gloo on CPUs, NCCL on
GPUs). Rank 0 owns the Optuna trial; every rank gets a
``optuna_integration.TorchDistributedTrial``, which broadcasts rank 0's suggestions, reports
and pruning verdicts, so every rank trains the same hyperparameters and stops at the same
epoch::

    import torch.distributed as dist
    import optuna_bs
    from optuna_bs.train.distributed import optimize

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
from typing import TYPE_CHECKING, Any

import optuna

if TYPE_CHECKING:
    from optuna.study import Study
    from optuna.trial import BaseTrial, FrozenTrial

_logger = logging.getLogger(__name__)

INSTALL_HINT = 'pip install "optuna-bs[distributed]"'


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


def distributed_trial(trial: BaseTrial | None) -> BaseTrial:
    """``trial`` (on rank 0; ``None`` on the others) as one trial shared by every rank.

    The shared trial is an ``optuna_integration.TorchDistributedTrial`` that also knows its
    study's name (``study_name``) and the dead trials it retries (``retries``, with their
    owners as ``retried_owners``), from rank 0's study, so every rank resumes from the same
    checkpoint, after the same check of whose it is (:mod:`optuna_bs.train._checkpoints`).

    Raises:
        ImportError: If optuna-integration is not installed.
        ValueError: If rank 0 has no trial, or another rank has one.
    """
    import warnings

    from optuna_bs.train._checkpoints import retried_owners, retried_trials, study_name

    try:
        from optuna_integration import TorchDistributedTrial
    except ImportError as err:
        raise ImportError(
            f"One trial across several processes needs optuna-integration: {INSTALL_HINT}"
        ) from err
    with warnings.catch_warnings():  # TorchDistributedTrial is marked experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        shared = TorchDistributedTrial(trial)
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
    kw = {"n_trials": n_trials, "timeout": timeout, "callbacks": callbacks, "catch": catch}
    if size == 1:
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # under torchrun, but not joined
            raise RuntimeError(
                f"WORLD_SIZE={os.environ['WORLD_SIZE']}, but torch.distributed is not "
                "initialized: call optuna_bs.train.distributed.init_from_env() first, or every "
                "rank runs a study of its own."
            )
        if study is None:
            raise ValueError("`study` must be the study: this is the only process.")
        study.optimize(objective, **kw)
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
            study.optimize(lead(objective), gc_after_trial=True, **kw)
        finally:
            release()
    finally:
        # The last trial's garbage can hold the process group (its DistributedDataParallel,
        # its collectives); collected after the caller's destroy_process_group, it aborts
        # the process at exit ("terminate called without an active exception": 4 of 18
        # two-rank studies before, 0 of 18 after).
        gc.collect()
