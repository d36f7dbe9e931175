"""Samplers that know the scaling rule: the noise scale first, then the largest B that keeps it.

:class:`BatchLadderSampler` (``sampler = "ladder"`` in a study file) looks for the *fastest
good configuration* of a ``"noise-scale"`` space. At a fixed noise scale g the reachable error
barely moves with B (docs/design.md §1), while a larger batch trains an epoch faster, up to the
critical batch size. So it

1. **searches g at one batch size** (``search_batch_size``, by default the middle power of two
   of the range): a 1-D search, where a few trials go a long way;
2. **climbs the batch ladder at g\\***: B doubles, ϵ follows from g, one trial per rung, for as
   long as a rung's error stays within ``tolerance`` of the best error found (a rung that is
   pruned or diverges ends the climb, and so does the top of the batch range: with
   ``batch_size = "auto"`` that is the critical batch size B_simple, and ``max_batch_size``
   caps it too);
3. **refines** with its base sampler (TPE) over the whole space, every trial so far included;
   a momentum range in the space opens here, and since the space searches g itself, a new m
   keeps g* in place (B ∝ 1/(1 − m)).

The sampler keeps no state of its own: each trial's phase is derived from the study's trials
(each records it in the system attr ``ladder``), so it works with the study's pruner, across
workers and on resuming. A trial is planned from the trials numbered before it (waiting the
milliseconds another worker may need to record one), so workers agree: a rung in flight counts
as climbed. It proposes values of the space's static distributions. The plan is the study's,
not that of whichever trial finished first:

* g\\* is fixed, and stored in the study, once the whole search has finished (until then extra
  workers refine): every rung of the climb is at that g\\*.
* A dead worker's trial, run again by the heartbeat's retry, keeps its place (a rung at its B
  and g\\*, or a search trial). A rung whose trials all failed is not a miss: it is tried again,
  up to ``_RUNG_TRIES`` times.
"""

from __future__ import annotations

import datetime
import logging
import math
import statistics
import time
from collections.abc import Sequence

import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState

from optuna_bs._validation import check_int, check_real
from optuna_bs.search.edges import _FINISHED, finished_points, pile_at_edge

_logger = logging.getLogger(__name__)

# The system attr holding a trial's phase (and its rung's batch), and the study's g*.
_ATTR = "ladder"
_SEARCH, _CLIMB, _REFINE = "search", "climb", "refine"
#: How long a trial waits for the plans of the trials created just before it (other workers').
_WAIT_SECONDS = 2.0
#: How many trials of one rung may fail before the climb counts it as a miss.
_RUNG_TRIES = 3
_IN_FLIGHT = (TrialState.RUNNING, TrialState.WAITING)


def middle_log2(low: int, high: int) -> int:
    """The middle power of two of ``2**low`` .. ``2**high`` (rounded down): where the ladder
    searches g, and where ``noise_scale = "auto"`` runs its range test (one home for both)."""
    return (low + high) // 2


class BatchLadderSampler(optuna.samplers.BaseSampler):
    """Find g* at one batch size, then the largest batch that keeps its error.

    Args:
        base: The sampler of the search's noise scale and of the refining phase; Optuna's
            ``TPESampler`` by default.
        n_search: Trials that search g at ``search_batch_size`` before the climb.
        search_batch_size: The batch size of the search; by default the middle power of two
            of the space's range (rounded down).
        tolerance: How much worse than the best error a rung may be and still count as good,
            in the units of the study's first objective (0.02: 2 points of error).
        max_batch_size: The top of the ladder, below the range's own top: the critical batch
            size, beyond which a larger batch saves no steps.
        momentum: The momentum of the search and the climb when the space searches it.
        top_fraction: g* is the median g, on a log scale, of this fraction of the best search
            trials (at least one): one lucky trial does not decide it.
        first_at_centre: The first search trial takes the centre of g's range (on a log
            scale) instead of a random draw: with ``noise_scale = "auto"`` that is near the
            range test's g_steep.
        probe_edges: While the search's best trials pile at an edge of g's range
            (:func:`~optuna_bs.search.edges.pile_at_edge`), the search goes on, up to
            ``n_search`` more trials, before the climb: for a range that widens at its edges
            (:class:`~optuna_bs.search.edges.RangeWidening`), so that the search probes past
            the old edge before g* is fixed.
        seed: Seeds the default base sampler.
        batch_param, scale_param, momentum_param: The parameter names of
            :class:`~optuna_bs.BatchScalingSpace`.

    Example:
        >>> sampler = BatchLadderSampler(seed=0, n_search=6, tolerance=0.02)
    """

    def __init__(
        self,
        base: optuna.samplers.BaseSampler | None = None,
        *,
        n_search: int = 6,
        search_batch_size: int | None = None,
        tolerance: float = 0.02,
        max_batch_size: int | None = None,
        momentum: float = 0.9,
        top_fraction: float = 0.34,
        first_at_centre: bool = False,
        probe_edges: bool = False,
        seed: int | None = None,
        batch_param: str = "log2_batch_size",
        scale_param: str = "noise_scale",
        momentum_param: str = "momentum",
    ) -> None:
        check_int("n_search", n_search, 1)
        if search_batch_size is not None:
            check_int("search_batch_size", search_batch_size, 1)
        if max_batch_size is not None:
            check_int("max_batch_size", max_batch_size, 1)
        if not check_real("tolerance", tolerance) >= 0:
            raise ValueError(f"`tolerance` must be >= 0, but got tolerance={tolerance!r}.")
        if not 0 <= check_real("momentum", momentum) < 1:
            raise ValueError(f"`momentum` must be in [0, 1), but got momentum={momentum!r}.")
        if not 0 < check_real("top_fraction", top_fraction) <= 1:
            raise ValueError(
                f"`top_fraction` must be in (0, 1], but got top_fraction={top_fraction!r}."
            )
        self.base = base or optuna.samplers.TPESampler(seed=seed, n_startup_trials=10)
        # The search is 1-D and short: TPE models it after 3 random draws, not 10.
        self._search = optuna.samplers.TPESampler(seed=seed, n_startup_trials=3)
        self.n_search = n_search
        self.search_batch_size = search_batch_size
        self.tolerance = float(tolerance)
        self.max_batch_size = max_batch_size
        self.momentum = float(momentum)
        self.top_fraction = float(top_fraction)
        self.first_at_centre = bool(first_at_centre)
        self.probe_edges = bool(probe_edges)
        self.batch_param = batch_param
        self.scale_param = scale_param
        self.momentum_param = momentum_param
        self._plans: dict[int, dict] = {}  # trial id -> plan, for the trials this process runs
        self._announced = False  # the climb's outcome is logged once

    # --- the plan ----------------------------------------------------------------------------

    def plan(self, study: optuna.Study, number: int | None = None) -> dict:
        """What the next trial does, from the study's trials: its phase, and in the climb, its
        batch size's log2 and the noise scale g*.

        With ``number``, the plan of trial ``number``, from the trials numbered before it
        (and their retries) only: so two workers that plan at once agree (the later trial sees
        the earlier one's rung, in flight, and takes the next).

        Returns:
            ``{"phase": "search", "log2_batch_size": k}``,
            ``{"phase": "climb", "log2_batch_size": k, "noise_scale": g}`` or
            ``{"phase": "refine"}``; once the climb is over, the refinement's plan also holds
            ``g_star`` and the log2 of the batch size searched (``searched``) and of the
            largest that kept the error (``held``).
        """
        trials = study.get_trials(deepcopy=False)
        if number is not None:
            trials = [t for t in trials if _origin(t) < number]
        search = _search_slots(trials)
        batch = _distribution(trials, self.batch_param)  # None: the first trials, no range yet
        k_search = None if batch is None else self._search_log2(batch)
        if batch is None or len(search) < self.n_search or self._probes_edge(search):
            return {"phase": _SEARCH, self.batch_param: k_search, "index": len(search)}
        g_star = self._fixed_g_star(study, search)
        if g_star is None:  # the search is still running (many workers): nothing to climb on
            return {"phase": _REFINE}
        top = batch.high
        if self.max_batch_size is not None:
            top = min(top, math.floor(math.log2(self.max_batch_size)))
        k, held = _climb(_rungs(trials), k_search, top, _best(search), self.tolerance)
        if k is not None:
            return {"phase": _CLIMB, self.batch_param: k, self.scale_param: g_star}
        return {"phase": _REFINE, "g_star": g_star, "held": held, "searched": k_search}

    def _fixed_g_star(self, study: optuna.Study, search: dict[int, list[FrozenTrial]]):
        """g*, once the search has finished: stored in the study by the first worker to see it
        finished, and read back by every other (``None`` before).

        Every worker computes the same value from the finished search; storing it keeps it for
        the rest of the study, whatever finishes later (a search trial's late retry, say).
        """
        storage, study_id = study._storage, study._study_id
        stored = storage.get_study_system_attrs(study_id).get(_ATTR)
        if stored is not None:
            return stored["g_star"]
        attempts = [t for slot in search.values() for t in slot]
        done = [t for t in attempts if t.state == TrialState.COMPLETE and t.values]
        if not done or any(t.state in _IN_FLIGHT for t in attempts):
            return None
        ranked = sorted(done, key=lambda t: t.values[0])
        top = ranked[: max(1, round(self.top_fraction * len(ranked)))]
        g_star = math.exp(statistics.median(math.log(t.params[self.scale_param]) for t in top))
        storage.set_study_system_attr(study_id, _ATTR, {"g_star": g_star})
        return storage.get_study_system_attrs(study_id)[_ATTR]["g_star"]

    def _probes_edge(self, search: dict[int, list[FrozenTrial]]) -> bool:
        """Whether the search goes on past ``n_search`` trials: it probes edges, has room
        left, and its best trials pile at an edge of the range its latest trial drew from."""
        if not self.probe_edges or len(search) >= 2 * self.n_search:
            return False
        attempts = sorted((t for slot in search.values() for t in slot), key=lambda t: t.number)
        drawn = [t for t in attempts if self.scale_param in t.distributions]
        if not drawn:
            return False
        dist = drawn[-1].distributions[self.scale_param]
        points = finished_points(drawn, self.scale_param)
        return pile_at_edge(points, dist.low, dist.high, log=dist.log) is not None

    def _search_log2(self, batch: optuna.distributions.IntDistribution) -> int:
        if self.search_batch_size is None:
            return middle_log2(batch.low, batch.high)
        k = round(math.log2(self.search_batch_size))
        return min(max(k, batch.low), batch.high)

    # --- Optuna's sampler interface ----------------------------------------------------------

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.base.before_trial(study, trial)
        if "fixed_params" in trial.system_attrs:
            # Enqueued by a user, or the retry of such a trial: its values are set already.
            if _ATTR not in trial.system_attrs:
                study._storage.set_trial_system_attr(trial._trial_id, _ATTR, {"phase": "fixed"})
            return
        if _ATTR in trial.system_attrs:
            # The heartbeat's retry of a dead worker's trial: Optuna copies the dead trial's
            # system attrs, its place on the ladder included. It keeps that place, and any
            # value the dead trial had not drawn yet comes from that place's plan.
            self._plans[trial._trial_id] = self._replan(trial)
            _logger.info(
                "ladder: trial %d retries trial %s (%s).",
                trial.number,
                trial.system_attrs.get("failed_trial", "?"),
                trial.system_attrs[_ATTR].get("phase"),
            )
            return
        self._wait_for_earlier_plans(study, trial)
        plan = self.plan(study, trial.number)
        if "held" in plan and not self._announced:
            self._announced = True
            _logger.info(
                "ladder: g*=%.3g, searched at B=%d, keeps its error (within %g) up to B=%d; "
                "TPE refines from trial %d.",
                plan["g_star"],
                2 ** plan["searched"],
                self.tolerance,
                2 ** plan["held"],
                trial.number,
            )
        record = {"phase": plan["phase"]}
        if plan["phase"] == _CLIMB:
            record.update(
                rung=plan[self.batch_param],
                g_star=plan[self.scale_param],
                tolerance=self.tolerance,
            )
            _logger.info(
                "ladder: trial %d climbs to B=%d at g*=%.3g.",
                trial.number,
                2 ** plan[self.batch_param],
                plan[self.scale_param],
            )
        study._storage.set_trial_system_attr(trial._trial_id, _ATTR, record)
        self._plans[trial._trial_id] = plan

    def _replan(self, trial: FrozenTrial) -> dict:
        """The plan of a trial that records its place on the ladder already (a retry)."""
        record = trial.system_attrs[_ATTR]
        if record.get("phase") == _CLIMB:
            return {
                "phase": _CLIMB,
                self.batch_param: record["rung"],
                self.scale_param: record["g_star"],
            }
        if record.get("phase") == _SEARCH:
            return {"phase": _SEARCH, self.batch_param: trial.params.get(self.batch_param)}
        return {"phase": _REFINE}

    def _wait_for_earlier_plans(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """Wait (a few milliseconds, at most ``_WAIT_SECONDS``) until every trial created just
        before this one has recorded its plan: another worker may be planning it right now."""
        deadline = time.monotonic() + _WAIT_SECONDS
        while time.monotonic() < deadline:
            now = datetime.datetime.now()
            pending = [
                t
                for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                if t.number < trial.number
                and _ATTR not in t.system_attrs
                and t.datetime_start is not None
                and (now - t.datetime_start).total_seconds() < _WAIT_SECONDS
            ]
            if not pending:
                return
            time.sleep(0.01)

    def infer_relative_search_space(
        self, study: optuna.Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        if self._plan_of(trial)["phase"] != _REFINE:
            return {}
        return self.base.infer_relative_search_space(study, trial)

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict:
        if self._plan_of(trial)["phase"] != _REFINE:
            return {}
        return self.base.sample_relative(study, trial, search_space)

    def sample_independent(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ):
        plan = self._plan_of(trial)
        if plan["phase"] == _REFINE:
            return self.base.sample_independent(study, trial, param_name, param_distribution)
        if param_name == self.batch_param:
            k = plan[self.batch_param]
            return self._search_log2(param_distribution) if k is None else k
        if param_name == self.scale_param and plan["phase"] == _CLIMB:
            return _clip(plan[self.scale_param], param_distribution)
        if param_name == self.momentum_param:
            return _clip(self.momentum, param_distribution)
        if param_name == self.scale_param and self.first_at_centre and plan.get("index") == 0:
            return math.sqrt(param_distribution.low * param_distribution.high)
        # The search's g (and any other parameter) from the 1-D search's own TPE, which reads
        # the search trials only: they are the only trials yet.
        return self._search.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        self._plans.pop(trial._trial_id, None)
        self.base.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.base.reseed_rng()
        self._search.reseed_rng()

    def _plan_of(self, trial: FrozenTrial) -> dict:
        # A trial not planned here (an enqueued one) is left to the base sampler.
        return self._plans.get(trial._trial_id, {"phase": _REFINE})


def _holds(trial: FrozenTrial, best: float, tolerance: float) -> bool:
    """Whether a finished rung kept the error: complete, and within ``tolerance`` of ``best``."""
    return (
        trial.state == TrialState.COMPLETE
        and bool(trial.values)
        and math.isfinite(trial.values[0])
        and trial.values[0] <= best + tolerance
    )


def _origin(trial: FrozenTrial) -> int:
    """The number of the trial that ``trial`` retries (the first of a chain of retries), or its
    own: ``RetryHeartbeatStaleTrialCallback`` records it as the system attr ``failed_trial``."""
    return trial.system_attrs.get("failed_trial", trial.number)


def _phase(trial: FrozenTrial) -> dict:
    return trial.system_attrs.get(_ATTR) or {}


def _search_slots(trials: Sequence[FrozenTrial]) -> dict[int, list[FrozenTrial]]:
    """The search's trials, a dead one's retries with it: the attempts of each search trial."""
    slots: dict[int, list[FrozenTrial]] = {}
    for trial in trials:
        if _phase(trial).get("phase") == _SEARCH:
            slots.setdefault(_origin(trial), []).append(trial)
    return slots


def _rungs(trials: Sequence[FrozenTrial]) -> dict[int, list[FrozenTrial]]:
    """The climb's trials by rung (log2 of B), in the order they were created."""
    rungs: dict[int, list[FrozenTrial]] = {}
    for trial in sorted(trials, key=lambda t: t.number):
        label = _phase(trial)
        if label.get("phase") == _CLIMB and "rung" in label:
            rungs.setdefault(label["rung"], []).append(trial)
    return rungs


def _best(search: dict[int, list[FrozenTrial]]) -> float:
    """The best error of the search's complete trials."""
    values = [
        t.values[0]
        for slot in search.values()
        for t in slot
        if t.state == TrialState.COMPLETE and t.values
    ]
    return min(values, default=math.inf)


def _climb(
    rungs: dict[int, list[FrozenTrial]], searched: int, top: int, best: float, tolerance: float
) -> tuple[int | None, int]:
    """Walk up the ladder from the rung above ``searched`` to ``top``.

    A rung is decided by its first finished trial: kept within ``tolerance`` of ``best``, the
    climb goes on; missed (worse, pruned, diverged), it ends. A rung in flight (running, or a
    retry waiting) is passed over. A rung with no finished trial and none in flight (never
    tried, or each try failed: a dead worker, a stopped run) is the one to try next, unless it
    failed ``_RUNG_TRIES`` times: then it counts as a miss.

    Returns:
        The rung to try next (``None`` once the climb is over), and the highest rung kept.
    """
    held = searched
    for k in range(searched + 1, top + 1):
        attempts = rungs.get(k, [])
        finished = [t for t in attempts if t.state in _FINISHED]
        if finished:
            if not _holds(finished[0], best, tolerance):
                return None, held
            held = k
        elif not any(t.state in _IN_FLIGHT for t in attempts):
            return (k if len(attempts) < _RUNG_TRIES else None), held
    return None, held


def _distribution(trials: Sequence[FrozenTrial], name: str):
    """The distribution of ``name`` in the study's trials (static: any trial's will do)."""
    return next((t.distributions[name] for t in trials if name in t.distributions), None)


def _clip(value: float, distribution: BaseDistribution) -> float:
    return min(max(value, distribution.low), distribution.high)


def ladder_outcome(study: optuna.Study) -> str | None:
    """What a ladder study found, in words (``None`` if no :class:`BatchLadderSampler` ran
    it), read as the sampler reads the climb: "g searched at B=64 (6 trials); at g*=12.1:
    B=128 0.113, B=256 0.12, B=512 0.122; keeps the error (within 0.02 of 0.122) up to B=512".
    """
    trials = study.get_trials(deepcopy=False)
    search = _search_slots(trials)
    if not search:
        return None
    batch = {t.user_attrs.get("batch_size") for slot in search.values() for t in slot} - {None}
    where = f"B={min(batch)}" if len(batch) == 1 else "one batch size"
    words = f"g searched at {where} ({len(search)} trials)"
    rungs = _rungs(trials)
    if not rungs:
        return words + "; no climb yet"
    best = _best(search)
    tolerance = _phase(next(iter(rungs.values()))[0]).get("tolerance", 0.0)
    # Every rung records the g* it climbed at: the study's one g*, or (a study planned by an
    # older version, which took g* from a partial search) each rung's own, shown by the rung.
    g_stars = {k: _phase(tries[0]).get("g_star") for k, tries in rungs.items()}
    one_g = next(iter(g_stars.values())) if len(set(g_stars.values())) == 1 else None
    steps = []
    for k, attempts in sorted(rungs.items()):
        finished = [t for t in attempts if t.state in _FINISHED]
        shown = attempts[-1] if not finished else finished[0]
        value = f"{shown.values[0]:.4g}" if shown.values else shown.state.name.lower()
        retried = " (retried)" if finished and shown is not attempts[0] else ""
        own = f" at g*={g_stars[k]:.3g}" if one_g is None and g_stars[k] is not None else ""
        steps.append(f"B={2**k}{own} {value}{retried}")
    searched = min(rungs) - 1
    _, held = _climb(rungs, searched, max(rungs), best, tolerance)
    at = f"at g*={one_g:.3g}: " if one_g is not None else ""
    return (
        f"{words}; {at}{', '.join(steps)}; keeps the error (within {tolerance:g} of {best:.4g}) "
        f"up to B={2**held}"
    )
