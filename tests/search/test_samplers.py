"""The batch ladder: g* first at one batch size, then the largest B that keeps its error."""

from __future__ import annotations

import copy
import math
import os
import re
import signal
import subprocess
import threading
import time
import uuid
import warnings

import optuna
import pytest

import optuna_bs
from optuna_bs.search.ladder import BatchLadderSampler, ladder_outcome
from optuna_bs.study.storage import make_storage
from optuna_bs.study.workers import WORKER_ENV

from ..conftest import _server_url, cli_command
from ..helpers.slow_model import LADDER_STUDY
from ..study.test_workers import (
    _delete,
    _env,
    _name,
    _study_file,
    _trials,
    _trials_so_far,
    _wait_for,
)

COMPLETE, FAIL = optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL
N_TRAIN = 3200
G_STAR = 40.0


def _error_of_g(g: float) -> float:
    """A synthetic task whose error depends on the noise scale alone, best at G_STAR."""
    return 0.2 + 0.02 * math.log(g / G_STAR) ** 2


def _study(sampler, storage=None):
    return optuna.create_study(sampler=sampler, storage=storage)


def _objective(space, critical_batch=None, seen=None):
    def objective(trial):
        hp = space.suggest(trial)
        if seen is not None:
            seen.append((trial.number, hp))
        error = _error_of_g(hp.noise_scale)
        if critical_batch is not None and hp.batch_size > critical_batch:
            error += 0.1  # past the critical batch size, a larger batch costs error
        return error

    return objective


def test_it_reaches_the_largest_batch_at_g_star_within_its_budget():
    space = optuna_bs.BatchScalingSpace(n_train=N_TRAIN, batch_size=(16, 256))
    sampler = BatchLadderSampler(seed=0, n_search=6, tolerance=0.02)
    study = _study(sampler)
    seen = []
    study.optimize(_objective(space, seen=seen), n_trials=8)  # 6 to search g, 2 rungs
    batches = [hp.batch_size for _, hp in seen]
    assert batches[:6] == [64] * 6  # the search: the middle power of two of 16..256
    assert batches[6:] == [128, 256]  # the climb, one trial per rung, up to the top
    best = min(t.value for t in study.trials[:6])
    top = study.trials[7]
    assert top.value <= best + 0.02  # it kept the error
    assert G_STAR / 2 < top.user_attrs["noise_scale"] < G_STAR * 2
    # ϵ follows g from B: at a fixed g, doubling B about doubles the lr
    lr = {hp.batch_size: hp.lr for _, hp in seen[6:]}
    assert lr[256] / lr[128] == pytest.approx((N_TRAIN / 128 - 1) / (N_TRAIN / 256 - 1))
    phases = [t.system_attrs["ladder"]["phase"] for t in study.trials]
    assert phases == ["search"] * 6 + ["climb"] * 2
    plan = sampler.plan(study)
    assert plan["phase"] == "refine" and (plan["searched"], plan["held"]) == (6, 8)
    # The report says it in words (optuna-bs report's "batch ladder" row).
    words = ladder_outcome(study)
    assert words.startswith("g searched at B=64 (6 trials); at g*=")
    assert "B=128 " in words and "B=256 " in words and words.endswith("up to B=256")
    rows = dict(optuna_bs.summarize(study).rows())
    assert rows["batch ladder"] == words
    assert ladder_outcome(optuna.create_study()) is None  # not a ladder study: no row


@pytest.mark.parametrize("centre", [True, False])
def test_first_at_centre_puts_the_first_search_trial_at_the_ranges_log_centre(centre):
    space = optuna_bs.BatchScalingSpace(
        n_train=N_TRAIN, batch_size=(16, 256), noise_scale=(8, 200)
    )
    study = _study(BatchLadderSampler(seed=0, first_at_centre=centre))
    seen = []
    study.optimize(_objective(space, seen=seen), n_trials=3)
    scales = [hp.noise_scale for _, hp in seen]
    assert (scales[0] == pytest.approx(40.0)) is centre  # sqrt(8 * 200)
    assert len(set(scales)) == 3  # the rest of the search draws as before


def test_the_climb_stops_where_the_error_degrades_and_tpe_refines():
    space = optuna_bs.BatchScalingSpace(n_train=N_TRAIN, batch_size=(16, 512))
    sampler = BatchLadderSampler(seed=1, n_search=5, search_batch_size=32, tolerance=0.02)
    study = _study(sampler)
    seen = []
    study.optimize(_objective(space, critical_batch=64, seen=seen), n_trials=12)
    climb = [
        hp.batch_size
        for n, hp in seen
        if study.trials[n].system_attrs["ladder"]["phase"] == "climb"
    ]
    assert climb == [64, 128]  # 64 holds; 128 costs 10 points and ends the climb: no 256
    phases = [t.system_attrs["ladder"]["phase"] for t in study.trials]
    assert phases[7:] == ["refine"] * 5
    assert sampler.plan(study)["held"] == 6  # B = 64: the fastest batch that keeps g*'s error
    assert ladder_outcome(study).endswith("up to B=64")  # the report says what the plan does


def test_max_batch_size_tops_the_ladder():
    space = optuna_bs.BatchScalingSpace(n_train=N_TRAIN, batch_size=(16, 512))
    sampler = BatchLadderSampler(seed=2, n_search=4, max_batch_size=200)
    study = _study(sampler)
    seen = []
    study.optimize(_objective(space, seen=seen), n_trials=7)
    assert [hp.batch_size for _, hp in seen[:4]] == [64] * 4
    climbs = [t for t in study.trials if t.system_attrs["ladder"]["phase"] == "climb"]
    assert [t.user_attrs["batch_size"] for t in climbs] == [128]  # 64 searched; 256 > 200


def test_a_searched_momentum_is_held_while_climbing_and_opened_in_the_refinement():
    space = optuna_bs.BatchScalingSpace(
        n_train=N_TRAIN, batch_size=(16, 256), momentum=(0.0, 0.99)
    )
    sampler = BatchLadderSampler(seed=3, n_search=4, momentum=0.9)
    study = _study(sampler)
    study.optimize(_objective(space), n_trials=20)
    by_phase = {}
    for t in study.trials:
        by_phase.setdefault(t.system_attrs["ladder"]["phase"], []).append(t.params["momentum"])
    assert set(by_phase["search"]) == {0.9} and set(by_phase["climb"]) == {0.9}
    assert len(set(by_phase["refine"])) > 1  # TPE searches m once g* is known


def test_two_workers_keep_to_static_distributions_and_climb_each_rung_once(tmp_path):
    """Two threads on one SQLite study: the same names and ranges in every trial, values inside
    them, no rung trained twice and no more search trials than asked for."""
    url = f"sqlite:///{tmp_path / 'ladder.db'}"
    space = optuna_bs.BatchScalingSpace(n_train=N_TRAIN, batch_size=(16, 512))
    study = optuna.create_study(study_name="ladder", storage=url)
    workers = []
    for seed in (10, 11):
        worker = optuna.load_study(
            study_name="ladder", storage=url, sampler=BatchLadderSampler(seed=seed, n_search=4)
        )
        workers.append(
            threading.Thread(
                target=worker.optimize, args=(_objective(space),), kwargs={"n_trials": 8}
            )
        )
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    trials = study.trials
    assert len(trials) == 16 and all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    first = trials[0].distributions
    assert set(first) == {"log2_batch_size", "noise_scale"}
    for t in trials:
        assert t.distributions == first
        assert all(
            first[name]._contains(first[name].to_internal_repr(v)) for name, v in t.params.items()
        )
    phases = [t.system_attrs["ladder"] for t in trials]
    assert sum(p["phase"] == "search" for p in phases) == 4
    rungs = [p["rung"] for p in phases if p["phase"] == "climb"]
    assert len(rungs) == len(set(rungs)) and rungs  # each rung once, by whichever worker


def test_a_retried_trial_keeps_its_place_on_the_ladder():
    space = optuna_bs.BatchScalingSpace(n_train=N_TRAIN, batch_size=(16, 256))
    study = _study(BatchLadderSampler(seed=4, n_search=2))
    study.optimize(_objective(space), n_trials=3)  # 2 search trials, then rung 128
    rung = study.trials[2]
    study.enqueue_trial(rung.params)  # as the heartbeat's retry does, with its system attrs
    waiting = study.get_trials(states=(optuna.trial.TrialState.WAITING,))[0]
    study._storage.set_trial_system_attr(waiting._trial_id, "ladder", rung.system_attrs["ladder"])
    study.optimize(_objective(space), n_trials=1)
    assert study.trials[3].system_attrs["ladder"] == rung.system_attrs["ladder"]
    assert rung.system_attrs["ladder"]["rung"] == 7
    study.enqueue_trial({"log2_batch_size": 4, "noise_scale": 10.0})  # a user's own
    study.optimize(_objective(space), n_trials=1)
    assert study.trials[4].system_attrs["ladder"] == {"phase": "fixed"}


def _retry(study, dead):
    """What the heartbeat does to a dead worker's trial: Optuna's retry callback queues it again,
    with its params and system attrs (``failed_trial``, ``retry_history``, ``ladder``)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.RetryHeartbeatStaleTrialCallback()(study, copy.deepcopy(dead))


@pytest.mark.parametrize("drawn", [True, False], ids=["after-drawing", "before-drawing"])
def test_a_dead_rungs_retry_keeps_its_rung_b_and_g_and_the_climb_goes_past_it(drawn):
    space = optuna_bs.BatchScalingSpace(n_train=N_TRAIN, batch_size=(16, 256))
    sampler = BatchLadderSampler(seed=5, n_search=3)
    study = _study(sampler)
    study.optimize(_objective(space), n_trials=3)  # the search, at B=64

    def killed(trial):  # the worker of rung B=128 dies, after drawing its values or before
        if drawn:
            space.suggest(trial)
        raise RuntimeError("SIGKILL")

    study.optimize(killed, n_trials=1, catch=(RuntimeError,))
    dead = study.trials[3]
    assert dead.state == FAIL and dead.system_attrs["ladder"]["rung"] == 7
    _retry(study, dead)
    seen = []
    study.optimize(_objective(space, seen=seen), n_trials=2)  # the retry, then the next rung
    retry = study.trials[4]
    assert retry.system_attrs["failed_trial"] == 3
    assert retry.system_attrs["ladder"] == dead.system_attrs["ladder"]
    g_star = dead.system_attrs["ladder"]["g_star"]
    assert seen[0][1].batch_size == 128 and seen[0][1].noise_scale == pytest.approx(g_star)
    assert seen[1][1].batch_size == 256  # the climb went on past the retried rung
    assert sampler.plan(study)["held"] == 8  # every rung kept g*'s error: B = 256
    words = ladder_outcome(study)
    assert "B=128 " in words and "(retried)" in words and words.endswith("up to B=256")


def test_a_rung_that_failed_is_tried_again_and_a_miss_only_after_three_tries():
    """No heartbeat to retry it (a run stopped with Ctrl-C, then resumed): the next trial
    takes the failed rung again, at the same B and g*; a rung failing every time ends the climb."""
    space = optuna_bs.BatchScalingSpace(n_train=N_TRAIN, batch_size=(16, 256))
    sampler = BatchLadderSampler(seed=6, n_search=3)
    study = _study(sampler)
    study.optimize(_objective(space), n_trials=3)

    def stopped(trial):
        space.suggest(trial)
        raise RuntimeError("interrupted")

    study.optimize(stopped, n_trials=3, catch=(RuntimeError,))
    labels = [t.system_attrs["ladder"] for t in study.trials[3:]]
    assert [label["rung"] for label in labels] == [7, 7, 7]
    assert len({label["g_star"] for label in labels}) == 1
    plan = sampler.plan(study)
    assert plan["phase"] == "refine" and plan["held"] == 6  # three failures: a miss


def test_workers_climb_at_one_g_star_fixed_by_the_whole_search(storage_url):
    """Three workers (threads, each with its own sampler) on one study whose search trials end
    one by one: the climb waits for the whole search (the workers that come early refine), and
    every rung, whichever worker plans it, is at the one g* of all the search's trials."""
    space = optuna_bs.BatchScalingSpace(n_train=N_TRAIN, batch_size=(16, 512))
    storage = make_storage(storage_url) if storage_url else optuna.storages.InMemoryStorage()
    name = f"g-star-{uuid.uuid4().hex[:8]}"
    study = optuna.create_study(study_name=name, storage=storage)

    def objective(trial):
        hp = space.suggest(trial)
        if trial.number < 6:
            time.sleep(0.1 * (trial.number + 1))  # the search's 6 trials end one by one
        return _error_of_g(hp.noise_scale)

    def work(seed):
        sampler = BatchLadderSampler(seed=seed, n_search=6)
        worker = optuna.load_study(study_name=name, storage=storage, sampler=sampler)
        worker.optimize(objective, n_trials=8)

    workers = [threading.Thread(target=work, args=(seed,)) for seed in (20, 21, 22)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    trials = study.get_trials()
    search = [t for t in trials if t.system_attrs["ladder"]["phase"] == "search"]
    climb = [t for t in trials if t.system_attrs["ladder"]["phase"] == "climb"]
    assert len(search) == 6 and climb
    assert all(t.number > s.number for t in climb for s in search)
    ranked = sorted(search, key=lambda t: t.value)[:2]  # top_fraction 0.34 of 6 trials
    g_star = math.sqrt(ranked[0].params["noise_scale"] * ranked[1].params["noise_scale"])
    g_stars = [t.system_attrs["ladder"]["g_star"] for t in climb]
    assert g_stars == [pytest.approx(g_star)] * len(climb)
    assert all(t.params["noise_scale"] == pytest.approx(g_star) for t in climb)
    assert f"at g*={g_star:.3g}: " in ladder_outcome(study)
    if storage_url and "sqlite" not in storage_url:
        optuna.delete_study(study_name=name, storage=storage)


@pytest.mark.slow
def test_a_rung_whose_worker_is_sigkilled_is_retried_and_the_climb_goes_past_it(tmp_path):
    """3 worker processes on PostgreSQL (``LADDER_STUDY``: every rung keeps the error); the
    worker of rung B=64 is SIGKILLed after its first epoch. The heartbeat fails that trial and
    queues it again; the retry is rung B=64 at g*, and the climb goes on to B=128. Nothing is
    left RUNNING."""
    url = _server_url("OPTUNA_BS_TEST_POSTGRES_URL")
    name = _name()
    study_file = _study_file(tmp_path, LADDER_STUDY)
    args = ["run", study_file, "--storage", url, "--study-name", name, "--n-trials", 6]
    workers = [
        subprocess.Popen(
            [*cli_command(), *map(str, args), "-q", "--no-test"],
            cwd=tmp_path,
            env={**_env(), WORKER_ENV: f"w{i}"},  # each trial records its worker's pid
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(3)
    ]
    storage = make_storage(url)

    def rung_64_trained_an_epoch():
        for t in _trials_so_far(storage, name, states=(optuna.trial.TrialState.RUNNING,)):
            if t.system_attrs.get("ladder", {}).get("rung") == 6 and t.intermediate_values:
                return t
        return None

    dead = _wait_for(rung_64_trained_an_epoch, timeout=120, what="rung B=64's first epoch")
    os.kill(dead.system_attrs["worker"]["pid"], signal.SIGKILL)
    for worker in workers:
        _, err = worker.communicate(timeout=300)
        assert worker.returncode in (0, -signal.SIGKILL), f"{worker.returncode}: {err[-3000:]}"
    trials = _trials(url, name)
    assert not [t.number for t in trials if t.state == optuna.trial.TrialState.RUNNING]
    assert trials[dead.number].state == FAIL
    (retry,) = [t for t in trials if t.system_attrs.get("failed_trial") == dead.number]
    assert retry.state == COMPLETE
    assert retry.system_attrs["ladder"] == dead.system_attrs["ladder"]
    assert retry.params == dead.params and retry.user_attrs["batch_size"] == 64
    rungs = {t.system_attrs["ladder"].get("rung") for t in trials if t.state == COMPLETE}
    assert {6, 7} <= rungs
    study = optuna.load_study(study_name=name, storage=storage)
    assert BatchLadderSampler().plan(study)["held"] == 7  # B=128: past the killed rung
    assert ladder_outcome(study).endswith("up to B=128")
    _delete(url, name)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_search": 0}, "`n_search` must be"),
        ({"tolerance": -0.1}, "`tolerance` must be >= 0"),
        ({"momentum": 1.0}, "`momentum` must be in [0, 1)"),
        ({"top_fraction": 0.0}, "`top_fraction` must be in (0, 1]"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        BatchLadderSampler(**kwargs)
