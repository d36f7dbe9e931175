from __future__ import annotations

import re
import subprocess
import warnings

import optuna
import pytest

from optuna_bs.errors import ConfigError
from optuna_bs.report.summary import summarize
from optuna_bs.study.config import config_from_dict
from optuna_bs.study.runner import evaluate_best_on_test, open_study, prepare, run_study

from ..conftest import REPO, cli_command

FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
ATTRS = {
    "lr",
    "momentum",
    "noise_scale",
    "batch_size",
    "n_train",
    "best_epoch",
    "epochs_run",
    "n_updates",
    "train_seconds",
    "samples_per_second",
    "stop_reason",
    "metric",
}

TINY = {
    "study": {"name": "tiny", "n_trials": 4, "n_startup_trials": 2},
    "data": {"name": "synthetic", "n_samples": 300, "n_features": 8},
    "model": {"name": "mlp", "hidden": [16]},
    "space": {"batch_size": [16, 64]},
    "train": {"max_epochs": 3},
}


def test_python_api_runs_resumes_and_tests_the_best(storage_url):
    name = f"tiny-{abs(hash(storage_url)) % 10**8}-{id(storage_url)}"
    config = config_from_dict({**TINY, "study": {**TINY["study"], "name": name}})
    prepared = prepare(config, storage=storage_url)
    study = run_study(prepared)
    assert len(study.trials) == 4
    first = {t.number: (t.state, t.value, t.params) for t in study.trials}

    if storage_url is not None:  # resuming needs a persistent store
        prepared = prepare(config, storage=storage_url)
        study = run_study(prepared, n_trials=2)
        assert [t.number for t in study.trials] == list(range(6))
        again = {t.number: (t.state, t.value, t.params) for t in study.trials[:4]}
        assert again == first  # finished trials are never repeated or lost
        # The re-seeded sampler does not replay the first trials' configurations.
        assert study.trials[4].params != study.trials[0].params

    test_error = evaluate_best_on_test(prepared, study)
    assert 0.0 <= test_error <= 1.0
    assert study.user_attrs["test_error"] == test_error
    assert study.user_attrs["test_trial"] == study.best_trial.number
    assert study.metric_names == ["val_error"]
    if storage_url is not None:
        optuna.delete_study(storage=prepared.storage, study_name=name)


def test_best_trial_rerun_reproduces_its_validation_value(tmp_path):
    config = config_from_dict(TINY)
    prepared = prepare(config, storage=f"sqlite:///{tmp_path / 's.db'}")
    study = run_study(prepared, n_trials=3)
    replay = optuna.trial.FixedTrial(study.best_trial.params, number=study.best_trial.number)
    result, _ = prepared.train(replay)
    assert result.best_value == study.best_value


@pytest.mark.slow
def test_embedded_study_end_to_end_and_resume(tmp_path):
    """The README's main job: the MNIST-1D study on SQLite, then the same command again."""
    study_file = REPO / "studies" / "mnist1d_mlp.toml"
    run = subprocess.run(
        [*cli_command(), "run", str(study_file), "-q"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr
    storage = f"sqlite:///{tmp_path / 'optuna_bs.db'}"
    study = optuna.load_study(study_name="mnist1d_mlp", storage=storage)
    trials = study.trials
    assert len(trials) == 30
    assert all(t.state in FINISHED for t in trials)
    for t in trials:
        assert ATTRS <= set(t.user_attrs), t.number
        assert len(t.intermediate_values) == t.user_attrs["epochs_run"] >= 1
    assert study.best_value <= 0.40  # the published MLP reaches 68% accuracy
    assert "best trial #" in run.stdout and "test_error=" in run.stdout
    # Its report answers "what lr at another B?" from the study: a fitted curve, or one line
    # naming what the study lacks, and a recommendation from the fit or from the named rule.
    report = summarize(study, 512)
    if report.fit is None:
        assert re.search(r"explored \d batch size|beat its median trial", report.fit_reason)
        assert "\n" not in report.fit_reason and report.transfer.source == "rule"
    else:
        assert len(report.fit.batch_sizes) >= 3 and report.transfer.source == "fit"
    assert report.transfer.hparams.batch_size == 512

    rerun = subprocess.run(
        [*cli_command(), "run", str(study_file), "-q", "--n-trials", "3"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert rerun.returncode == 0, rerun.stderr
    resumed = optuna.load_study(study_name="mnist1d_mlp", storage=storage).trials
    assert [t.number for t in resumed] == list(range(33))
    for before, after in zip(trials, resumed, strict=False):
        assert (before.state, before.value, before.params) == (
            after.state,
            after.value,
            after.params,
        )


def test_no_full_collection_between_trials_on_a_cpu(monkeypatch):
    # A full gc.collect() per trial cost about 0.3 s once torch is loaded, for nothing on a
    # CPU; on a GPU the callback still collects, then empties the CUDA cache.
    import gc

    collections = []
    monkeypatch.setattr(gc, "collect", lambda *a, **k: collections.append(a) or 0)
    prepared = prepare(config_from_dict(TINY), device="cpu")
    study = run_study(prepared, n_trials=3)
    assert len(study.trials) == 3
    assert collections == []


def test_study_file_sets_the_median_pruner():
    config = config_from_dict(
        {**TINY, "study": {**TINY["study"], "pruner_warmup_epochs": 2, "pruner_startup_trials": 3}}
    )
    pruner = open_study(prepare(config)).pruner
    assert isinstance(pruner, optuna.pruners.MedianPruner)
    # Optuna keeps these private; they are what decides when a trial can be pruned.
    assert (pruner._n_startup_trials, pruner._n_warmup_steps, pruner._n_min_trials) == (3, 2, 3)


def test_a_checkpoint_outlives_a_failed_final_write_and_goes_once_committed(tmp_path):
    """The store drops out as a trial ends: its checkpoint stays for the retry, which the
    worker queues itself once the store is back (the trial was left RUNNING) and runs first;
    a trial whose end is committed leaves no checkpoint."""
    import sqlalchemy.exc

    config = config_from_dict(
        {**TINY, "study": {**TINY["study"], "checkpoint_dir": str(tmp_path / "ckpt")}}
    )
    prepared = prepare(config, storage=f"sqlite:///{tmp_path / 's.db'}")
    storage = prepared.storage
    real = storage.set_trial_state_values
    calls = {"n": 0}

    def flaky(trial_id, state, values=None):
        if state.is_finished() and calls["n"] == 0:
            calls["n"] += 1  # the first trial's end is lost with the connection
            raise sqlalchemy.exc.OperationalError("UPDATE trials", {}, Exception("server gone"))
        return real(trial_id, state, values)

    storage.set_trial_state_values = flaky
    study = run_study(prepared, n_trials=2)
    folder = prepared.checkpoints.folder
    assert folder.parent == tmp_path / "ckpt"
    states = [t.state.name for t in study.trials]
    assert states == ["FAIL", "COMPLETE", "COMPLETE"]  # nothing left RUNNING or WAITING
    retry = study.trials[1]
    assert retry.system_attrs["failed_trial"] == 0
    assert retry.user_attrs["resumed_from_trial"] == 0  # from the checkpoint that outlived it
    assert not list(folder.glob("trial_*.pt"))  # every end is committed: none is kept


def _lose_the_first_committed_end(storage) -> dict:
    """Make the store's connection drop just after the first trial's end is committed; the
    returned dict counts how often it did."""
    import sqlalchemy.exc

    real = storage.set_trial_state_values
    calls = {"n": 0}

    def committed_then_lost(trial_id, state, values=None):
        result = real(trial_id, state, values)
        if state.is_finished() and calls["n"] == 0:
            calls["n"] += 1
            raise sqlalchemy.exc.OperationalError("COMMIT", {}, Exception("connection reset"))
        return result

    storage.set_trial_state_values = committed_then_lost
    return calls


def test_a_finished_trials_orphaned_checkpoint_goes_at_the_next_run(tmp_path):
    """The connection drops just after trial 0's end is committed, so its callbacks never
    run and its checkpoint is left behind; the next run of the study finds the trial
    finished in the store and deletes the orphan, and only it."""
    config = config_from_dict(
        {**TINY, "study": {**TINY["study"], "checkpoint_dir": str(tmp_path / "ckpt")}}
    )
    url = f"sqlite:///{tmp_path / 's.db'}"
    prepared = prepare(config, storage=url)
    _lose_the_first_committed_end(prepared.storage)
    run_study(prepared, n_trials=1)
    folder = prepared.checkpoints.folder
    assert [p.name for p in folder.glob("trial_*.pt")] == ["trial_0.pt"]  # the orphan
    (folder / "trial_9.pt").write_bytes(b"")  # no such trial: not ours to judge, kept
    study = run_study(prepare(config, storage=url), n_trials=1)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    assert sorted(p.name for p in folder.glob("trial_*.pt")) == ["trial_9.pt"]


def test_the_budget_holds_when_a_committed_end_is_reported_as_an_outage(tmp_path):
    """The connection drops just after a trial's end is committed: the worker saw an error,
    but the store holds the trial finished, so it is counted once: 2 asked, 2 run, not 3."""
    prepared = prepare(config_from_dict(TINY), storage=f"sqlite:///{tmp_path / 's.db'}")
    calls = _lose_the_first_committed_end(prepared.storage)
    study = run_study(prepared, n_trials=2)
    assert calls["n"] == 1
    assert len(study.trials) == 2
    assert all(t.state.is_finished() for t in study.trials)


def _tiny(name="tiny", **study):
    return config_from_dict({**TINY, "study": {**TINY["study"], "name": name, **study}})


def _kill_trial_0(prepared, params=None):
    """Trial 0 of the study starts (with ``params``, if given; trained up to its config's
    max_epochs when ``params`` is None) and its worker dies; what the heartbeat then does:
    trial 0 is failed and a retry with its parameters is queued."""
    study = open_study(prepared)
    if params is not None:
        study.enqueue_trial(params)
    with warnings.catch_warnings():  # the store's heartbeat, unused outside study.optimize
        warnings.simplefilter("ignore", UserWarning)
        dead = study.ask()
        if params is None:
            prepared.train(dead)  # checkpointed every epoch, then the worker dies
        else:
            prepared.space.suggest(dead)  # and the worker dies before its first checkpoint
        study.tell(dead, state=optuna.trial.TrialState.FAIL)
    frozen = study.trials[0]
    study.add_trial(  # what RetryHeartbeatStaleTrialCallback queues
        optuna.trial.create_trial(
            state=optuna.trial.TrialState.WAITING,
            params=frozen.params,
            distributions=frozen.distributions,
            system_attrs={"failed_trial": 0, "retry_history": [0]},
        )
    )
    return frozen.params


def test_a_retried_trial_resumes_its_dead_trials_checkpoint(tmp_path):
    """The check of whose checkpoint it is lets a retry resume its own dead trial's."""
    url = f"sqlite:///{tmp_path / 's.db'}"
    _kill_trial_0(prepare(_tiny(), storage=url))  # at max_epochs 3
    retry = run_study(prepare(_tiny(), storage=url), n_trials=1).trials[1]
    assert retry.user_attrs["resumed_from_trial"] == 0
    assert retry.user_attrs["resumed_from_epoch"] == 3


@pytest.mark.parametrize("store", ["another file", "the same file, made anew"])
def test_a_same_name_study_in_a_new_database_does_not_resume_the_old_checkpoint(
    tmp_path, store, caplog
):
    """Study A stops after 3 epochs of its trial 0. Study B of the same name, in a new
    database, loses its trial 0 before any checkpoint: its retry starts afresh rather than
    taking A's epochs for its own (the same URL leaves the same folder: the owner tells)."""
    old = f"sqlite:///{tmp_path / 'a.db'}"
    params = _kill_trial_0(prepare(_tiny("same"), storage=old))
    (checkpoint,) = tmp_path.glob("checkpoints/*/trial_0.pt")  # study A's
    new = f"sqlite:///{tmp_path / 'b.db'}"
    if store != "another file":
        (tmp_path / "a.db").unlink()
        new = old
    prepared = prepare(_tiny("same"), storage=new)
    _kill_trial_0(prepared, params)  # A's parameters: only when trial 0 started differs
    with caplog.at_level("WARNING", logger="optuna_bs"):
        retry = run_study(prepared, n_trials=1).trials[1]
    assert retry.state == optuna.trial.TrialState.COMPLETE
    assert retry.params == params  # study A's trial 0's, but not its checkpoint
    assert "resumed_from_trial" not in retry.user_attrs
    assert retry.user_attrs["resumed_from_epoch"] == 0
    assert sorted(retry.intermediate_values) == [1, 2, 3]  # its own, trained now
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("optuna_bs")]
    if store == "another file":
        assert lines == []  # another store, another folder: nothing to refuse
    else:
        assert checkpoint.parent.name == prepared.checkpoints.folder.name  # the same folder
        (line,) = lines
        assert line.startswith("Trial 1 starts afresh: ") and str(checkpoint.name) in line


def test_names_that_read_alike_and_one_name_in_two_stores_get_their_own_checkpoints(tmp_path):
    for name, db in (("a b", "s.db"), ("a_b", "s.db"), ("a_b", "t.db")):
        config = _tiny(name, n_trials=1, keep_best_checkpoint=True)
        run_study(prepare(config, storage=f"sqlite:///{tmp_path / db}"))
    assert len(list(tmp_path.glob("checkpoints/*/trial_0.pt"))) == 3


def test_a_300_character_study_name_trains_with_checkpoints(tmp_path):
    name = "a long name: " + "x" * 287
    config = _tiny(name, n_trials=1, keep_best_checkpoint=True)
    study = run_study(prepare(config, storage=f"sqlite:///{tmp_path / 's.db'}"))
    assert study.trials[0].state == optuna.trial.TrialState.COMPLETE
    (kept,) = tmp_path.glob("checkpoints/*/trial_0.pt")
    assert len(kept.parent.name.encode()) <= 255


OWN_CODE = """
import torch

def model(input_shape, n_outputs, width=8):
    return torch.nn.Sequential(
        torch.nn.Linear(input_shape[0], width), torch.nn.ReLU(), torch.nn.Linear(width, n_outputs)
    )

def loss(outputs, targets):
    return torch.nn.functional.cross_entropy(outputs, targets)

def optimizer(params, hp):
    return torch.optim.SGD(params, lr=hp.lr, momentum=hp.momentum)
"""


def test_a_study_file_is_resolved_once_per_worker(tmp_path, monkeypatch):
    """The user's model factory, loss and optimizer are imported once for a worker's 5
    trials and the test split (a plan), not once per trial."""
    import optuna_bs.data.models
    import optuna_bs.study.plan

    (tmp_path / "own_code.py").write_text(OWN_CODE)
    monkeypatch.syspath_prepend(str(tmp_path))
    imports = {}
    for module in (optuna_bs.study.plan, optuna_bs.data.models):
        real = module.import_object

        def counted(spec, what, *, folder=None, real=real):
            imports[spec] = imports.get(spec, 0) + 1
            return real(spec, what, folder=folder)

        monkeypatch.setattr(module, "import_object", counted)
    config = config_from_dict(
        {
            **TINY,
            "model": {"name": "own_code:model", "width": 8},
            "train": {
                "max_epochs": 2,
                "loss": "own_code:loss",
                "optimizer": "own_code:optimizer",
            },
        }
    )
    prepared = prepare(config, storage=f"sqlite:///{tmp_path / 's.db'}")
    study = run_study(prepared, n_trials=5)
    assert evaluate_best_on_test(prepared, study) is not None
    assert len(study.trials) == 5
    assert study.trials[0].user_attrs["optimizer"] == "sgd"  # the factory's optimizer ran
    assert imports == {"own_code:model": 1, "own_code:loss": 1, "own_code:optimizer": 1}


def test_an_auto_range_that_shuts_out_the_optimum_widens_for_every_worker(tmp_path, monkeypatch):
    """``noise_scale = "auto"`` whose range test missed: it says [100, 1500], and the task's
    best g is 30 (a stand-in for ``fit``'s error: the wiring is what is tested here, the search
    in tests/search/test_edges.py). The best trials pile at the lower edge, the run widens it,
    later trials draw from the wider range, a second worker starts from it, and the report
    says so."""
    import math
    from types import SimpleNamespace

    def fit(model, data, hparams, **kwargs):
        return SimpleNamespace(best_value=0.1 + 0.02 * math.log(hparams.noise_scale / 30) ** 2)

    monkeypatch.setattr("optuna_bs.study.runner.fit", fit)
    monkeypatch.setattr(
        "optuna_bs.study.auto.recommend_noise_scales", lambda test: (100.0, 1500.0)
    )
    config = config_from_dict(
        {
            **TINY,
            "study": {"name": "wide", "n_trials": 20},
            "space": {"batch_size": [16, 64], "noise_scale": "auto"},
        }
    )
    url = f"sqlite:///{tmp_path / 'w.db'}"
    prepared = prepare(config, storage=url)
    assert prepared.space.noise_scale == (100.0, 1500.0)
    study = run_study(prepared)
    lows = [t.distributions["noise_scale"].low for t in study.trials]
    assert lows[0] == 100.0 and lows[-1] < 30.0  # later trials drew from the wider range
    assert lows == sorted(lows, reverse=True)
    assert study.best_params["noise_scale"] < 60.0
    stored = study.user_attrs["auto_ranges"]["noise_scale"]
    assert stored[0] <= min(lows) and stored[1] == 1500.0
    worker = prepare(config, storage=url, seed=5)  # a second worker, or a resumed run
    assert worker.space.noise_scale == tuple(stored)
    rows = summarize(study).rows()
    words = [value for item, value in rows if item == "search range"]
    assert words[0].startswith("noise_scale widened at its lower edge after ")
    assert "[100, 1500] -> [25.82, 1500]" in words[0]


def test_an_adam_lr_auto_runs_adams_range_test_and_widens_the_reference_lr(tmp_path, monkeypatch):
    """``lr = "auto"`` on an Adam space: the range test of AdamW runs on the probe model at the
    reference batch size and gives the range [lr_steep/3, 10·lr_steep], stored for later
    workers. Where the best trials pile at its lower edge (the task's best reference lr is
    set below it: a stand-in for ``fit``'s error), the range of the *reference* lr widens."""
    import math
    from types import SimpleNamespace

    from optuna_bs.measure import lr_range_test, recommend_lrs
    from optuna_bs.study.plan import make_plan

    config = config_from_dict(
        {
            **TINY,
            "study": {"name": "adam-auto", "n_trials": 20},
            "space": {
                "parameterisation": "adam-sqrt",
                "batch_size": [16, 64],
                "reference_batch_size": 32,
                "lr": "auto",
            },
            "train": {"max_epochs": 3, "optimizer": "adamw"},
        }
    )
    plan = make_plan(config, "cpu")
    test = lr_range_test(
        plan.probe_model(), plan.data, batch_size=32, optimizer="adamw", device="cpu", seed=0
    )
    expected = recommend_lrs(test)
    url = f"sqlite:///{tmp_path / 'a.db'}"
    prepared = prepare(config, storage=url)
    assert prepared.space.lr == expected  # the range test's, at B_ref = 32
    best = expected[0] / 4  # below the range: the best trials pile at its lower edge

    def fit(model, data, hparams, **kwargs):
        ref = hparams.lr * math.sqrt(32 / hparams.batch_size)  # back to B_ref (sqrt rule)
        return SimpleNamespace(best_value=0.1 + 0.02 * math.log(ref / best) ** 2)

    monkeypatch.setattr("optuna_bs.study.runner.fit", fit)
    study = run_study(prepared)
    lows = [t.distributions["reference_lr"].low for t in study.trials]
    assert lows[0] == expected[0] and lows[-1] < expected[0]
    assert study.user_attrs["range_widenings"][0]["name"] == "lr"
    stored = study.user_attrs["auto_ranges"]["lr"]
    assert stored[0] <= min(lows) and stored[1] == expected[1]
    assert prepare(config, storage=url, seed=5).space.lr == tuple(stored)  # a second worker


def test_lr_auto_needs_an_adam_rule():
    with pytest.raises(ConfigError, match="`space.lr` 'auto' runs a range test of Adam"):
        config_from_dict({**TINY, "space": {"parameterisation": "sqrt", "lr": "auto"}})
    with pytest.raises(ConfigError, match="`space.lr` .auto. runs a range test of Adam"):
        config_from_dict({**TINY, "space": {"lr": "auto"}, "train": {"optimizer": "adamw"}})
