"""Whose checkpoint it is: one folder per store and study, and the owner each file records.

A dead worker's trial is run again as a new trial, which resumes from the dead trial's last
checkpoint. Trial numbers start at 0 in every study, so a number alone does not say whose
``trial_0.pt`` it is. Here a study's checkpoints get a folder of their own
(:func:`study_folder`: its name, cut short, and a hash of its store and full name), each
checkpoint records its owner (:func:`owner_of`: the study, the trial's number, when it started
and its parameters), and a retry resumes a checkpoint only if that owner is the dead trial it
retries (:func:`resumable`). Any other (a study of the same name in a new database, say) is
left alone: the retry starts afresh, with one warning.

:class:`StudyCheckpoints` is one study's folder: where each trial saves, what a retry
resumes, and what goes once a trial has ended. The runner (for :func:`optuna_bs.fit`) and the
Lightning callback both keep their checkpoints through it.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import optuna
import torch

from optuna_bs.train.distributed import world

_logger = logging.getLogger(__name__)

#: The key of a checkpoint's owner, in fit's checkpoints and in Lightning's.
OWNER_KEY = "optuna_bs_owner"
#: How much of a study's name shows in its folder's name (a file name holds 255 bytes).
_READABLE = 64


def study_folder(root: str | Path, name: str, storage: str | None = None) -> Path:
    """The folder of study ``name``'s checkpoints under ``root``: one per store and study.

    Its name is the study's, with anything but letters, digits, ``_``, ``.`` and ``-``
    replaced and cut to 64 characters, then 12 hex digits of a hash of the store and the
    whole name: names that read alike (``a b`` and ``a_b``), or one study name in two
    stores, get two folders, and a name of any length fits a file name.

    Args:
        root: The checkpoint folder (``[study] checkpoint_dir``).
        name: The study's name.
        storage: The store's URL (``None`` where it is not known, as in the Lightning
            callback): its backend, host, port and database count, never its password.
    """
    readable = re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:_READABLE]
    key = f"{_store_identity(storage)}\n{name}".encode()
    return Path(root) / f"{readable}-{hashlib.sha256(key).hexdigest()[:12]}"


@dataclass(frozen=True)
class StudyCheckpoints:
    """One study's checkpoints: ``folder`` (:func:`study_folder`) holds ``trial_{n}{suffix}``."""

    folder: Path
    suffix: str = ".pt"

    @classmethod
    def of(
        cls, root: str | Path | None, trial: object, storage: str | None = None, **kw
    ) -> StudyCheckpoints | None:
        """The checkpoints under ``root`` of ``trial``'s study (a study's name also does);
        ``None`` without a root or a study."""
        name = trial if isinstance(trial, str) else study_name(trial)
        if root is None or name is None:
            return None
        return cls(study_folder(root, name, storage), **kw)

    def path(self, number: int) -> Path:
        """Trial ``number``'s checkpoint."""
        return self.folder / f"trial_{number}{self.suffix}"

    def resumable(self, trial: object) -> tuple[int, Path] | None:
        """What ``trial`` resumes: see :func:`resumable`."""
        return resumable(trial, self.folder, self.suffix)

    def drop(self, trial: object, *, keep_own: bool = False) -> int:
        """Delete the checkpoints of the dead trials ``trial`` retried, and its own unless
        ``keep_own``; return how many there were."""
        numbers = retried_trials(trial) + ([] if keep_own else [trial.number])
        paths = [self.path(n) for n in numbers if self.path(n).exists()]
        for path in paths:
            path.unlink(missing_ok=True)
        return len(paths)

    def drop_finished(self, study: optuna.Study, keep: int | None = None) -> int:
        """Delete the checkpoints of the trials the store holds as complete or pruned, and
        those of the dead trials they retried, but trial ``keep``'s; return how many went.
        A failed trial's stays while a retry may still resume it."""
        if not self.folder.is_dir():
            return 0
        done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
        trials = study.get_trials(deepcopy=False, states=done)
        return sum(self.drop(t, keep_own=t.number == keep) for t in trials)


def _store_identity(url: str | None) -> str:
    """What names one store: a SQLite or journal file by its absolute path, a server by its
    backend, host, port and database (whatever the driver, user or password)."""
    if url is None:
        return ""
    if "://" not in url:  # a journal file
        return str(Path(url).resolve())
    import sqlalchemy.exc
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
        port = parsed.port
    except (sqlalchemy.exc.ArgumentError, ValueError):
        return url  # hashed into the folder name, never shown
    database = parsed.database or ""
    if parsed.get_backend_name() == "sqlite" and database not in ("", ":memory:"):
        database = str(Path(database).resolve())  # one file, however the URL reaches it
    return f"{parsed.get_backend_name()}://{parsed.host or ''}:{port or ''}/{database}"


def study_name(trial: object) -> str | None:
    """The name of ``trial``'s study; ``None`` for a trial without one (``FixedTrial``).

    A trial shared by several ranks (:func:`optuna_bs.train.distributed.distributed_trial`)
    carries rank 0's answer.
    """
    shared = getattr(trial, "study_name", None)
    if isinstance(shared, str):
        return shared
    return getattr(getattr(trial, "study", None), "study_name", None)


def owner_of(trial: object) -> dict | None:
    """What ``trial``'s checkpoints record as their owner: its study's name, its number,
    when it started and its parameters; ``None`` for a trial without a study."""
    name = study_name(trial)
    return None if name is None else _fingerprint(name, trial)


def retried_owners(trial: object, numbers: list[int] | None = None) -> dict[int, dict]:
    """The owners of the dead trials that ``trial`` retries (``numbers``, by default
    :func:`retried_trials`), by number, as the store holds them."""
    shared = getattr(trial, "retried_owners", None)
    if shared is not None:
        return shared
    numbers = retried_trials(trial) if numbers is None else numbers
    name = study_name(trial)
    if not numbers or name is None:
        return {}
    dead = {t.number: t for t in trial.study.get_trials(deepcopy=False) if t.number in numbers}
    return {n: _fingerprint(name, t) for n, t in dead.items()}


def _fingerprint(name: str, trial) -> dict:
    started = trial.datetime_start
    return {
        "study": name,
        "trial": trial.number,
        "started": None if started is None else started.isoformat(),
        "params": dict(trial.params),
    }


def resumable(trial: object, folder: Path, suffix: str = ".pt") -> tuple[int, Path] | None:
    """The newest checkpoint in ``folder`` of a dead trial that ``trial`` retries, and that
    trial's number; ``None`` if there is none.

    A checkpoint whose owner is not that dead trial, as this store holds it (or that records
    none, or cannot be read), is never resumed; one line at warning level says so.
    """
    numbers = retried_trials(trial)
    if not numbers:  # a fresh trial: nothing to read
        return None
    expected = retried_owners(trial, numbers)
    refused: list[tuple[Path, dict | None, int]] = []
    found = None
    for number in reversed(numbers):
        path = StudyCheckpoints(folder, suffix).path(number)
        if not path.exists():
            continue
        recorded = read_owner(path)
        if _same_owner(recorded, expected.get(number)):
            found = (number, path)
            break
        refused.append((path, recorded, number))
    if refused and world()[0] == 0:
        path, recorded, number = refused[0]
        more = f" (and {len(refused) - 1} older)" if len(refused) > 1 else ""
        then = "starts afresh" if found is None else f"resumes {found[1]} instead"
        _logger.warning(
            "Trial %d %s: %s%s is %s, not this store's %s.",
            trial.number,
            then,
            path,
            more,
            _describe(recorded),
            _describe(expected.get(number)),
        )
    return found


def read_owner(path: Path) -> dict | None:
    """The owner that the checkpoint at ``path`` records; ``None`` if none or unreadable.

    The file is memory-mapped, so a large checkpoint's tensors are not read.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # not a torch file, cut short, or holding more than data
        return None
    recorded = state.get(OWNER_KEY) if isinstance(state, dict) else None
    return recorded if isinstance(recorded, dict) else None


def _same_owner(recorded: dict | None, expected: dict | None) -> bool:
    if recorded is None or expected is None:
        return False
    if any(recorded.get(k) != expected[k] for k in ("study", "trial", "started")):
        return False
    mine, theirs = recorded.get("params") or {}, expected["params"]
    return mine.keys() == theirs.keys() and all(_same_value(mine[k], theirs[k]) for k in theirs)


def _same_value(a: object, b: object) -> bool:
    """Equal, or two floats equal to the precision a store keeps."""
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-300)
    return a == b


def _describe(recorded: dict | None) -> str:
    if recorded is None:
        return "an unknown trial"
    return (
        f"trial {recorded.get('trial')} of study {recorded.get('study')!r} started at "
        f"{recorded.get('started')}"
    )


def retried_trials(trial: optuna.trial.BaseTrial) -> list[int]:
    """The numbers of the dead trials that ``trial`` retries, oldest first.

    ``RetryHeartbeatStaleTrialCallback`` queues a dead worker's trial again; its retry records
    the trials it replaces, whose checkpoints it can resume from. A fresh trial, a
    ``FixedTrial``, or one without a study (another rank's share of a trial) retries none.
    """
    shared = getattr(trial, "retries", None)  # one trial of several ranks (distributed)
    if shared is not None:
        return list(shared)
    study = getattr(trial, "study", None)
    if isinstance(trial, optuna.trial.FrozenTrial):
        frozen = trial
    elif study is None or isinstance(trial, optuna.trial.FixedTrial):
        return []
    else:  # Trial has no public system attrs: read them off the running FrozenTrial.
        running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
        frozen = next((t for t in running if t.number == trial.number), None)
    if frozen is None:
        return []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return list(optuna.storages.RetryHeartbeatStaleTrialCallback.retry_history(frozen))
