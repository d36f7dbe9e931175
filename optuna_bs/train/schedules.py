"""Per-epoch schedules of batch size B, learning rate ϵ and momentum m.

Smith, Kindermans, Ying & Le (ICLR 2018): the noise scale g = ϵ (N/B − 1) / (1 − m) sets the
dynamics, so decaying ϵ by a factor and growing B by that factor follow the same g path, and
growing B takes fewer parameter updates. That holds up to B ≈ N/10; beyond it ϵ decays again.

A schedule is pure: :meth:`Schedule.at` maps an epoch and the trial's base
:class:`~optuna_bs.rules.Hyperparameters` to that epoch's hyperparameters, and the trainer
applies them (re-batching, setting each param group's lr and momentum). A schedule that
changes B or m corrects ϵ so that its g equals :class:`LrDecay`'s exactly, not only to first
order.
"""

from __future__ import annotations

import abc
import difflib
import logging
import math
import numbers
import warnings
from collections.abc import Sequence
from dataclasses import replace
from itertools import pairwise

from optuna_bs._validation import check_int, check_real
from optuna_bs.rules.formulas import Hyperparameters, largest_valid_batch, lr_for_noise_scale
from optuna_bs.vocabulary import SCHEDULES

_logger = logging.getLogger(__name__)


class Schedule(abc.ABC):
    """What each epoch trains with: a rule from an epoch and the base hyperparameters.

    Who calls what, and when:

    * The trainer calls :meth:`on_fit_start` once per fit, before its first epoch (again
      when it resumes), with the trial's base hyperparameters and ``max_epochs``. It does
      nothing by default; schedules override it to warn about a base they cannot follow.
    * The trainer calls :meth:`at` at the start of each epoch ``0 .. max_epochs - 1``
      (0-based; a resumed fit goes on with the next index) and trains that epoch with the
      result: ``n_train // batch_size`` full batches, each param group's ``lr`` and
      ``momentum`` (Adam's ``betas[0]``) set from it.
    * :meth:`at` calls :meth:`_apply`, the one method a subclass implements. It maps the
      setting an epoch would have without this schedule to the one it has with it, as a pure
      function, so that a resumed fit follows the same path and :class:`Compose` can chain.
    """

    def at(self, epoch: int, base: Hyperparameters) -> Hyperparameters:
        """Return the hyperparameters of epoch ``epoch`` (0-based) for ``base``.

        Raises:
            TypeError: If ``base`` is not a :class:`~optuna_bs.rules.Hyperparameters`.
            ValueError: If ``epoch`` is not an integer >= 0.
        """
        epoch = check_int("epoch", epoch, low=0)
        if not isinstance(base, Hyperparameters):
            raise TypeError(f"`base` must be a Hyperparameters, but got base={base!r}.")
        return self._apply(epoch, base)

    @abc.abstractmethod
    def _apply(self, epoch: int, setting: Hyperparameters) -> Hyperparameters:
        """Return ``setting`` as this schedule changes it at ``epoch``."""

    def on_fit_start(self, base: Hyperparameters, max_epochs: int) -> None:
        """Hook called once before the first epoch; warns about what the user can fix."""
        return None

    #: ``True`` when :meth:`lr_factor` changes ϵ within an epoch, update by update.
    per_step = False

    def lr_factor(self, t: float) -> float:
        """Hook: the factor on the epoch's ϵ at training time ``t``, in epochs (1.0 here).

        A per-step schedule (``per_step = True``) is asked before every update, with
        ``t = epoch + (i + ½) / updates_per_epoch`` for update ``i`` of the epoch (its midpoint,
        so neither the first warm-up update nor the last cosine one is at a factor of 0), so
        the factor moves with time, not with the count of updates, even when B changes. The
        recorded ``epoch_lr`` is the epoch's ϵ before this factor.
        """
        return 1.0

    def path(self, base: Hyperparameters, max_epochs: int) -> list[Hyperparameters]:
        """Return the setting of every epoch ``0 .. max_epochs - 1``."""
        return [self.at(e, base) for e in range(check_int("max_epochs", max_epochs, low=1))]

    def then(self, other: Schedule) -> Compose:
        """Chain ``other`` after this schedule, e.g. ``Warmup(5).then(BatchRamp([30], 5))``."""
        return Compose(self, other)


class Constant(Schedule):
    """The base hyperparameters in every epoch."""

    def _apply(self, epoch: int, setting: Hyperparameters) -> Hyperparameters:
        return setting

    def __repr__(self) -> str:
        return "Constant()"


class LrDecay(Schedule):
    """Step decay, the baseline: ϵ is divided by ``factor`` at each milestone.

    Args:
        milestones: Epoch indices (0-based, >= 1, non-decreasing; a repeated one applies
            twice) from which one more division applies.
        factor: The divisor, > 1; g falls by it at each milestone.

    Example:
        >>> hp = Hyperparameters(batch_size=32, lr=0.1, momentum=0.9, n_train=4000)
        >>> [round(s.lr, 6) for s in LrDecay([1, 2], factor=5).path(hp, 3)]
        [0.1, 0.02, 0.004]
    """

    def __init__(self, milestones: Sequence[int], factor: float) -> None:
        self.milestones = tuple(int(m) for m in _check_steps(milestones, integer=True))
        self.factor = check_real("factor", factor, 1.0, low_open=True)

    def _count(self, epoch: int) -> int:
        return sum(1 for m in self.milestones if m <= epoch)

    def _apply(self, epoch: int, setting: Hyperparameters) -> Hyperparameters:
        return replace(setting, lr=setting.lr / self.factor ** self._count(epoch))

    def on_fit_start(self, base: Hyperparameters, max_epochs: int) -> None:
        late = [m for m in self.milestones if m >= check_int("max_epochs", max_epochs, low=1)]
        if late:
            msg = f"`milestones` {late} are never reached in max_epochs={max_epochs} epochs."
            warnings.warn(f"{msg} Milestones are 0-based epoch indices.", stacklevel=2)

    def _repr_args(self) -> str:
        return f"milestones={list(self.milestones)}, factor={self.factor:g}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._repr_args()})"


class BatchRamp(LrDecay):
    """Grow B by ``factor`` at each milestone instead of decaying ϵ, along LrDecay's g.

    After k milestones B is ``floor(B₀ · factor^k)``, capped at ``min(N // 10,
    max_batch_size)`` and never below B₀. ϵ is then set so that g equals :class:`LrDecay`'s
    exactly: it stays within a few percent of ϵ₀ while B grows (N/B − 1 is not quite ∝ 1/B),
    and once B is capped it takes the rest of the decay, as :class:`LrDecay` does.

    Args:
        milestones: Epoch indices, as for :class:`LrDecay`.
        factor: The growth of B, and the fall of g, per milestone, > 1.
        max_batch_size: The largest B that fits, e.g. in GPU memory; ``None``: N // 10.

    Example:
        >>> hp = Hyperparameters(batch_size=32, lr=0.1, momentum=0.9, n_train=4000)
        >>> [s.batch_size for s in BatchRamp([1, 2, 3], factor=5).path(hp, 4)]
        [32, 160, 400, 400]
    """

    def __init__(
        self, milestones: Sequence[int], factor: float, *, max_batch_size: int | None = None
    ) -> None:
        super().__init__(milestones, factor)
        if max_batch_size is not None:
            max_batch_size = check_int("max_batch_size", max_batch_size, low=1)
        self.max_batch_size = max_batch_size

    def _momentum(self, epoch: int, momentum: float) -> float:
        return momentum

    def _apply(self, epoch: int, setting: Hyperparameters) -> Hyperparameters:
        decay, m0, n = self.factor ** self._count(epoch), setting.momentum, setting.n_train
        m = self._momentum(epoch, m0)
        if decay == 1.0 and m == m0:
            return setting
        # Smith et al. 2018, §5: B ∝ 1/(g (1 − m)) at a fixed ϵ, to first order in B/N
        ideal = setting.batch_size * decay * (1.0 - m0) / (1.0 - m)
        cap = max(self._cap(n), setting.batch_size)
        # floor with a relative slack, so that 32 · 5.0² is 800 and not 799
        b = min(max(math.floor(ideal * (1.0 + 1e-12)), setting.batch_size), cap)
        if b == setting.batch_size and m == m0:  # capped from the start: exactly LrDecay
            return replace(setting, lr=setting.lr / decay)
        # ϵ = g (1 − m) / (N/B − 1) (Smith et al. 2018): exactly LrDecay's g at this epoch
        lr = lr_for_noise_scale(setting.noise_scale / decay, b, n, m)
        return replace(setting, batch_size=b, momentum=m, lr=lr)

    def _cap(self, n_train: int) -> int:
        # Smith et al. 2018: growing B instead of decaying ϵ is validated up to about N/10
        return max(1, min(int(largest_valid_batch(n_train)), self.max_batch_size or n_train))

    def on_fit_start(self, base: Hyperparameters, max_epochs: int) -> None:
        super().on_fit_start(base, max_epochs)
        cap = self._cap(base.n_train)
        if base.batch_size >= cap:
            msg = (
                f"batch_size={base.batch_size} is at or above the ramp's cap min(n_train // 10,"
                f" max_batch_size) = {cap}: B cannot grow, so the ramp decays the learning rate"
                " like 'lr-decay'. Start from a smaller batch size."
            )
            warnings.warn(msg, stacklevel=2)

    def _repr_args(self) -> str:
        return f"{super()._repr_args()}, max_batch_size={self.max_batch_size}"


class MomentumRamp(BatchRamp):
    """Raise m at each milestone and grow B with it (B ∝ 1/(1 − m)), along LrDecay's g.

    Raising m alone *raises* g = ϵ (N/B − 1)/(1 − m), so m can follow a falling g only
    together with B. After k milestones 1 − m is ``(1 − m₀) / momentum_factor^k``, held at
    ``max_momentum`` (a base m above it is kept), and B is ``floor(B₀ · factor^k · (1 − m₀)
    / (1 − m))``, capped as in :class:`BatchRamp`; ϵ is set so that g equals
    :class:`LrDecay`'s exactly. B grows faster than under :class:`BatchRamp`, for fewer
    updates; a higher m costs some accuracy (Smith et al. 2018, §5.2).

    Args:
        milestones: Epoch indices, as for :class:`LrDecay`.
        factor: The fall of g per milestone, > 1.
        momentum_factor: The fall of 1 − m per milestone, > 1; ``None`` for ``factor``.
        max_momentum: The highest m, in (0, 1).
        max_batch_size: As for :class:`BatchRamp`.

    Example:
        >>> hp = Hyperparameters(batch_size=16, lr=0.1, momentum=0.9, n_train=50_000)
        >>> [(s.batch_size, round(s.momentum, 3)) for s in MomentumRamp([1], 2).path(hp, 2)]
        [(16, 0.9), (64, 0.95)]
    """

    def __init__(
        self,
        milestones: Sequence[int],
        factor: float,
        *,
        momentum_factor: float | None = None,
        max_momentum: float = 0.99,
        max_batch_size: int | None = None,
    ) -> None:
        super().__init__(milestones, factor, max_batch_size=max_batch_size)
        if momentum_factor is not None:
            momentum_factor = check_real("momentum_factor", momentum_factor, 1.0, low_open=True)
        self.momentum_factor = self.factor if momentum_factor is None else momentum_factor
        self.max_momentum = check_real(
            "max_momentum", max_momentum, 0.0, 1.0, low_open=True, high_open=True
        )

    def _momentum(self, epoch: int, momentum: float) -> float:
        k = self._count(epoch)
        if k == 0 or momentum >= self.max_momentum:
            return momentum
        return min(1.0 - (1.0 - momentum) / self.momentum_factor**k, self.max_momentum)

    def _repr_args(self) -> str:
        return (
            f"{super()._repr_args()}, momentum_factor={self.momentum_factor:g}, "
            f"max_momentum={self.max_momentum:g}"
        )


class Warmup(Schedule):
    """Linear warm-up of ϵ over the first ``epochs`` epochs (Goyal et al. 2017, §2.2).

    Epoch e < ``epochs`` (0-based) trains at ϵ (e + 1) / (epochs + 1); from epoch ``epochs``
    on, at the full ϵ. With ``per_step=True`` ϵ rises linearly update by update instead, to
    reach its value at the end of epoch ``epochs`` (Goyal's warm-up is per iteration). Chain
    it with :meth:`Schedule.then` or :class:`Compose`.

    Args:
        epochs: The number of warm-up epochs, >= 1.
        per_step: Ramp per update rather than per epoch.

    Example:
        >>> hp = Hyperparameters(batch_size=32, lr=0.4, momentum=0.9, n_train=4000)
        >>> [round(s.lr, 6) for s in Warmup(3).then(LrDecay([4], 2)).path(hp, 5)]
        [0.1, 0.2, 0.3, 0.4, 0.2]
    """

    def __init__(self, epochs: int, *, per_step: bool = False) -> None:
        self.epochs = check_int("epochs", epochs, low=1)
        self.per_step = bool(per_step)

    def lr_factor(self, t: float) -> float:
        return min(1.0, t / self.epochs) if self.per_step else 1.0

    def _apply(self, epoch: int, setting: Hyperparameters) -> Hyperparameters:
        if epoch >= self.epochs or self.per_step:
            return setting
        return replace(setting, lr=setting.lr * (epoch + 1) / (self.epochs + 1))

    def on_fit_start(self, base: Hyperparameters, max_epochs: int) -> None:
        if self.epochs >= check_int("max_epochs", max_epochs, low=1):
            msg = f"Warmup({self.epochs}) lasts the whole run of max_epochs={max_epochs}"
            warnings.warn(f"{msg}, so ϵ never reaches its value: use fewer epochs.", stacklevel=2)

    def __repr__(self) -> str:
        return f"Warmup({self.epochs}{', per_step=True' if self.per_step else ''})"


class Cosine(Schedule):
    """Cosine decay of ϵ over the whole run (Loshchilov & Hutter 2017), update by update.

    At training time t (in epochs) of a run of T = ``max_epochs`` epochs, ϵ is multiplied by
    ``min_factor + (1 − min_factor) · ½ (1 + cos(π t / T))``.

    Args:
        min_factor: The factor at the end of the run, in [0, 1).

    Example:
        >>> c = Cosine()
        >>> c.on_fit_start(Hyperparameters(32, 0.1, 0.9, 4000), 10)
        >>> [round(c.lr_factor(t), 3) for t in (0, 5, 10)]
        [1.0, 0.5, 0.0]
    """

    per_step = True

    def __init__(self, min_factor: float = 0.0) -> None:
        self.min_factor = check_real("min_factor", min_factor, 0.0, 1.0, high_open=True)
        self.max_epochs: int | None = None

    def on_fit_start(self, base: Hyperparameters, max_epochs: int) -> None:
        self.max_epochs = check_int("max_epochs", max_epochs, low=1)

    def lr_factor(self, t: float) -> float:
        if self.max_epochs is None:
            raise RuntimeError("Cosine.lr_factor needs on_fit_start(base, max_epochs) first.")
        frac = min(1.0, t / self.max_epochs)
        return self.min_factor + (1 - self.min_factor) * 0.5 * (1 + math.cos(math.pi * frac))

    def _apply(self, epoch: int, setting: Hyperparameters) -> Hyperparameters:
        return setting

    def __repr__(self) -> str:
        return f"Cosine(min_factor={self.min_factor:g})"


class Compose(Schedule):
    """Schedules applied in order, each to the setting the one before gave.

    Example:
        >>> hp = Hyperparameters(batch_size=32, lr=0.2, momentum=0.9, n_train=4000)
        >>> s = Compose(Warmup(1), BatchRamp([2], 2)).at(2, hp)
        >>> s.batch_size, round(s.noise_scale, 6)
        (64, 124.0)
    """

    def __init__(self, *schedules: Schedule) -> None:
        for s in schedules:
            if not isinstance(s, Schedule):
                raise TypeError(f"`schedules` must be Schedule objects, but got {s!r}.")
        self.schedules = schedules

    def _apply(self, epoch: int, setting: Hyperparameters) -> Hyperparameters:
        for s in self.schedules:
            setting = s._apply(epoch, setting)
        return setting

    @property
    def per_step(self) -> bool:
        return any(s.per_step for s in self.schedules)

    def lr_factor(self, t: float) -> float:
        return math.prod(s.lr_factor(t) for s in self.schedules)

    def on_fit_start(self, base: Hyperparameters, max_epochs: int) -> None:
        for s in self.schedules:
            s.on_fit_start(base, max_epochs)
        _logger.debug("%r starts from %r for %d epochs.", self, base, max_epochs)

    def __repr__(self) -> str:
        return f"Compose({', '.join(map(repr, self.schedules))})"


def make_schedule(
    name: str,
    *,
    max_epochs: int,
    milestones: Sequence[float] = (0.5, 0.75),
    factor: float = 5.0,
    max_batch_size: int | None = None,
    warmup_epochs: int = 0,
    warmup_per_step: bool = False,
    momentum_factor: float | None = None,
    max_momentum: float = 0.99,
) -> Schedule:
    """Build a schedule from a study file's ``[train]`` values.

    A milestone fraction f becomes epoch ``max(1, floor(f · max_epochs))``. Arguments that
    the named schedule does not use are ignored, so one set serves a categorical search.

    Args:
        name: One of :data:`SCHEDULES`.
        max_epochs: The length of the run, >= 1.
        milestones: Fractions of ``max_epochs`` in (0, 1), increasing.
        factor: The fall of g per milestone, > 1 (Smith et al. 2018 used 5).
        max_batch_size: The largest B that fits, for the ramps.
        warmup_epochs: Epochs of linear warm-up chained before the schedule, >= 0.
        warmup_per_step: Ramp the warm-up update by update instead of epoch by epoch.
        momentum_factor: See :class:`MomentumRamp`.
        max_momentum: See :class:`MomentumRamp`.

    Returns:
        The schedule; a :class:`Compose` after a :class:`Warmup` when ``warmup_epochs > 0``.

    Raises:
        TypeError: If an argument has the wrong type.
        ValueError: If an argument has a bad value or ``name`` is unknown.

    Example:
        >>> make_schedule("batch-ramp", max_epochs=20, warmup_epochs=2)
        Compose(Warmup(2), BatchRamp(milestones=[10, 15], factor=5, max_batch_size=None))
    """
    if not isinstance(name, str) or name not in SCHEDULES:
        close = difflib.get_close_matches(str(name), SCHEDULES, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"`schedule` must be one of {SCHEDULES}, but got {name!r}.{hint}")
    max_epochs = check_int("max_epochs", max_epochs, low=1)
    warmup_epochs = check_int("warmup_epochs", warmup_epochs, low=0)
    fractions = _check_steps(milestones, integer=False)
    epochs = [max(1, math.floor(f * max_epochs + 1e-9)) for f in fractions]
    momentum = {"momentum_factor": momentum_factor, "max_momentum": max_momentum}
    # All are built, so that every value is checked, even one that this name ignores.
    schedule = {
        "constant": Constant(),
        "lr-decay": LrDecay(epochs, factor),
        "batch-ramp": BatchRamp(epochs, factor, max_batch_size=max_batch_size),
        "momentum-ramp": MomentumRamp(epochs, factor, max_batch_size=max_batch_size, **momentum),
        "cosine": Cosine(),
    }[name]
    if not warmup_epochs:
        return schedule
    return Warmup(warmup_epochs, per_step=warmup_per_step).then(schedule)


def epoch_attrs(path: Sequence[Hyperparameters]) -> dict[str, list]:
    """The trial user attrs of a run's path: each epoch's B, ϵ, m and g as lists.

    Example:
        >>> epoch_attrs([Hyperparameters(32, 0.1, 0.9, 4000)])["epoch_batch_size"]
        [32]
    """
    if not path:
        return {}
    names = ("batch_size", "lr", "momentum", "noise_scale")
    return {f"epoch_{n}": [getattr(h, n) for h in path] for n in names}


def count_updates(schedule: Schedule, base: Hyperparameters, max_epochs: int) -> int:
    """Return the parameter updates of a whole run, ``Σₑ n_train // Bₑ`` (full batches only).

    Example:
        >>> hp = Hyperparameters(batch_size=32, lr=0.1, momentum=0.9, n_train=4000)
        >>> count_updates(LrDecay([1], 5), hp, 2), count_updates(BatchRamp([1], 5), hp, 2)
        (250, 150)
    """
    return sum(s.n_train // s.batch_size for s in schedule.path(base, max_epochs))


def _check_steps(values: object, *, integer: bool) -> Sequence[float]:
    """Check milestones: epochs >= 1, non-decreasing, or fractions in (0, 1), increasing."""
    what = "integer epochs >= 1, non-decreasing" if integer else "fractions in (0, 1), increasing"
    if isinstance(values, str) or not isinstance(values, Sequence):
        raise TypeError(f"`milestones` must be a sequence of {what}, but got {values!r}.")
    kind = numbers.Integral if integer else numbers.Real
    ok = all(isinstance(v, kind) and not isinstance(v, bool) for v in values) and (
        all(v >= 1 for v in values) and all(a <= b for a, b in pairwise(values))
        if integer
        else all(0 < v < 1 for v in values) and all(a < b for a, b in pairwise(values))
    )
    if not ok:
        raise ValueError(f"`milestones` must be {what}, but got milestones={list(values)!r}.")
    return values
