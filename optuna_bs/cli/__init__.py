"""The ``optuna-bs`` command: the one place that decides what the user sees.

Bad input of any kind (a study file, an argument, a storage URL) is one line on stderr and
exit status 2, with nothing written; ``--verbose`` adds the traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from collections.abc import Sequence

import optuna

from optuna_bs.errors import (
    OptunaBSError,
    disk_full,
    first_line,
    in_chain,
)
from optuna_bs.rules.registry import RULES
from optuna_bs.study.storage import DEFAULT_STORAGE

__all__ = ["main"]

_logger = logging.getLogger(__name__)


#: The environment variable a `--storage` left out is read from (how `launch` hands workers
#: their store without putting a password on a command line).
STORAGE_ENV = "OPTUNA_BS_STORAGE"


class _UsageError(OptunaBSError):
    pass


class _Parser(argparse.ArgumentParser):
    """argparse, with one-line errors, and a record of its options and subcommands (so
    ``launch`` forwards every ``run`` option derived from the parser, not from a list)."""

    def __init__(self, *args, **kwargs) -> None:
        self.options: list[argparse.Action] = []  # before argparse adds -h through it
        self.commands: dict[str, _Parser] = {}
        super().__init__(*args, **kwargs)

    def add_argument(self, *args, **kwargs) -> argparse.Action:
        action = super().add_argument(*args, **kwargs)
        self.options.append(action)
        return action

    def error(self, message: str):  # one line, not argparse's usage block
        raise _UsageError(f"{self.prog}: {message}")


#: ``run`` options that ``launch`` sets itself for each worker; it forwards all the others.
_SET_BY_LAUNCH = frozenset(
    {"help", "study_file", "storage", "study_name", "n_trials", "seed", "no_test", "quiet"}
    | {"threads"}  # each worker's share of the cores, through OMP_NUM_THREADS
)


def _forwarded_run_options(args: argparse.Namespace) -> list[str]:
    """The ``run`` options given to ``launch``, as its workers' command-line arguments.

    Derived from the ``run`` parser itself: a new ``run`` option is forwarded with no edit
    here (``launch`` must accept it too, which a test checks).
    """
    forwarded: list[str] = []
    for action in _build_parser().commands["run"].options:
        if action.dest in _SET_BY_LAUNCH or not action.option_strings:
            continue
        value = getattr(args, action.dest, action.default)
        if value is None or value == action.default:
            continue
        flag = max(action.option_strings, key=len)  # the long spelling
        forwarded += [flag] if action.nargs == 0 else [flag, str(value)]
    return forwarded


def _build_parser() -> _Parser:
    parser = _Parser(
        prog="optuna-bs",
        description="Tune batch size, learning rate and momentum together with Optuna.",
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = sub.add_parser(
        "run",
        help="create or resume a study from a study file and run its trials",
        description="Create or resume a study and run trials. Without STUDY_FILE, the embedded "
        "MNIST-1D study runs. Workers of one shared study each run this command with the same "
        "--storage and --study-name.",
    )
    launch = sub.add_parser(
        "launch",
        help="run K workers (or one per GPU) on one shared study",
        description="Start K worker processes, or one per listed GPU, on one study in a shared "
        "store (PostgreSQL, MySQL or a journal file). A worker that dies in a trial (killed, "
        "say) has that trial failed and queued again at once; launch then exits with status 2 "
        "and one line naming the worker and the trial.",
    )
    for p in (run, launch):
        p.add_argument("study_file", nargs="?", metavar="STUDY_FILE", help="a TOML study file")
        p.add_argument(
            "--storage",
            metavar="URL",
            help=f"study store (default: ${STORAGE_ENV}, then the file's, then {DEFAULT_STORAGE})",
        )
        p.add_argument("--study-name", metavar="NAME", help="study name (default: the file's)")
        p.add_argument("--timeout", type=_positive_float, metavar="S", help="stop after S seconds")
        p.add_argument("--seed", type=int, metavar="N", help="seed of sampler, splits and inits")
        p.add_argument("--device", metavar="D", help="auto, cpu, cuda or cuda:N")
        p.add_argument(
            "--max-trials",
            type=_positive_int,
            metavar="N",
            help="stop once the study holds N finished trials, counting every worker's",
        )
        p.add_argument(
            "--checkpoint-dir", metavar="DIR", help="per-epoch checkpoints (default: checkpoints)"
        )
        p.add_argument(
            "--top", type=_positive_int, default=5, metavar="K", help="rows of the results table"
        )
        p.add_argument(
            "--no-test",
            action="store_true",
            help="skip re-running the best trial on the test split",
        )
    run.add_argument("--n-trials", type=_positive_int, metavar="N", help="trials to run now")
    run.add_argument(
        "--threads",
        type=_positive_int,
        metavar="N",
        help="torch's CPU threads (default: $OMP_NUM_THREADS if set, else this machine's "
        "usable cores shared by the processes of one trial)",
    )
    launch.add_argument(
        "--n-trials", type=_positive_int, metavar="N", help="trials in all, shared by the workers"
    )
    launch.add_argument("--workers", type=_positive_int, metavar="K", help="worker processes")
    launch.add_argument(
        "--gpus",
        metavar="IDS",
        help="comma-separated GPU ids: one worker per GPU, each with its own CUDA_VISIBLE_DEVICES",
    )
    launch.add_argument(
        "--gpus-per-trial",
        type=_positive_int,
        metavar="K",
        help="train each trial on K GPUs at once (torchrun, NCCL): one worker per K GPUs of "
        "--gpus; B is the global batch",
    )
    launch.add_argument(
        "--procs-per-trial",
        type=_positive_int,
        metavar="K",
        help="train each trial on K CPU processes at once (torchrun, gloo); B is the global batch",
    )

    report = sub.add_parser(
        "report",
        help="what a study learned: lr against B, best noise scale, Pareto front, HTML report",
        description="Print each batch size's best lr and the curve lr*(B) fitted to them, the "
        "best noise scale g*, the Pareto front and the recommended configuration; write a "
        "self-contained HTML report; with --dashboard, save the figures and a note into the "
        "study for optuna-dashboard.",
    )
    report.add_argument("--study-name", metavar="NAME", required=True, help="the study")
    report.add_argument(
        "--storage", metavar="URL", help=f"study store (default {DEFAULT_STORAGE})"
    )
    report.add_argument("--out", metavar="DIR", default="reports", help="report folder")
    report.add_argument("--dashboard", action="store_true", help="save figures into the study")
    report.add_argument(
        "--batch-size", type=_positive_int, metavar="B", help="recommend a configuration at B"
    )
    report.add_argument(
        "--rule",
        metavar="RULE",
        help="a rule to move the best lr by instead of the fitted curve (default: the fitted "
        f"curve, else the study's own rule; one of {', '.join(RULES)})",
    )
    report.add_argument(
        "--noise-batch-size",
        type=_positive_float,
        metavar="B",
        help="a critical batch size you trust: where no fitted curve answers, the rule's lr "
        "bends as B nears it (McCandlish et al. 2018; Li et al. 2024 for Adam)",
    )
    report.add_argument(
        "--extrapolate",
        action="store_true",
        help="allow a batch size over 4x beyond the explored ones",
    )

    noise = sub.add_parser(
        "noise-scale",
        help="measure the task before tuning: the critical batch size, and where g falls fastest",
        description="Estimate B_simple = tr(Σ)/|G|² (McCandlish et al. 2018) from gradients at "
        "two batch sizes, and print the batch-size range it recommends for the search; for an "
        "SGD noise-scale space, also run a range test of g, as noise_scale = 'auto' does, and "
        "print the noise-scale range it recommends.",
    )
    noise.add_argument("study_file", nargs="?", metavar="STUDY_FILE", help="a TOML study file")
    noise.add_argument(
        "--batch-sizes", type=_batch_pair, metavar="SMALL,BIG", help="default 32,512 (or less)"
    )
    noise.add_argument(
        "--warmup-epochs",
        type=_non_negative_int,
        default=0,
        metavar="K",
        help="train K epochs first: the noise scale grows during training",
    )
    noise.add_argument(
        "--n-batches",
        type=_positive_int,
        default=100,
        metavar="N",
        help="big batches averaged (default 100)",
    )
    noise.add_argument("--device", metavar="D", help="auto, cpu, cuda or cuda:N")

    proxy = sub.add_parser(
        "storage-proxy",
        help="serve a study store to hundreds of workers through Optuna's gRPC proxy",
        description="Serve --storage to workers that use --storage grpc://HOST:PORT. Trials run "
        "through the proxy have no heartbeat: a dead worker's trial is not retried.",
    )
    proxy.add_argument("--storage", metavar="URL", required=True, help="the RDB behind the proxy")
    proxy.add_argument("--host", default="127.0.0.1", help="address to listen on")
    proxy.add_argument("--port", type=_positive_int, default=13000, help="port (default 13000)")

    for p in (run, launch, report, noise, proxy):
        p.add_argument("-v", "--verbose", action="store_true", help="log every trial; tracebacks")
        p.add_argument("-q", "--quiet", action="store_true", help="no progress bar and no table")
    parser.commands.update(run=run, launch=launch, report=report, noise=noise, proxy=proxy)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the exit status (0 ok, 2 bad input or a dead worker, 1 other
    failure)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = "-v" in argv or "--verbose" in argv
    try:
        args = _build_parser().parse_args(argv)
        if getattr(args, "storage", "") is None:  # a worker's store, kept off its command line
            args.storage = os.environ.get(STORAGE_ENV) or None
        _configure_logging(args.verbose, args.quiet)
        from optuna_bs.cli.commands import COMMANDS

        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print("optuna-bs: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        if isinstance(err, OptunaBSError | ValueError | TypeError):
            message = str(err)
        elif disk_full(err):  # a full disk, wherever it struck (the store, say), in one line
            message = f"no space left on a device ({first_line(err)})"
        else:
            raise
        if verbose:
            traceback.print_exc()
        print(f"optuna-bs: error: {message}", file=sys.stderr)
        return 2


def _configure_logging(verbose: bool, quiet: bool) -> None:
    level = logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("optuna_bs").setLevel(level)
    optuna.logging.set_verbosity(optuna.logging.INFO if verbose else optuna.logging.WARNING)
    if not verbose:  # Optuna's logger has a handler of its own; the others reach the root's
        for where in (logging.getLogger("optuna.study._optimize"), *logging.getLogger().handlers):
            if _drop_interrupts not in where.filters:
                where.addFilter(_drop_interrupts)


class _DropInterrupts(logging.Filter):
    """Leave out the tracebacks a Ctrl-C or a full disk causes, and Optuna's "Trial N failed"
    line after it: "optuna-bs: interrupted" or "no space left" says it in one line (the
    trial is still stored as failed; -v keeps the tracebacks). Dropped: a record whose
    exception is a ``KeyboardInterrupt`` or a full device, or was raised while one was handled
    (SQLAlchemy's "Error closing cursor" when the interrupt cut a query)."""

    def __init__(self) -> None:
        super().__init__()
        self.interrupted = False

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and (
            in_chain(record.exc_info[1], KeyboardInterrupt) or disk_full(record.exc_info[1])
        ):
            self.interrupted = True
            return False
        if self.interrupted and "failed with value" in record.getMessage():
            return False
        return True


_drop_interrupts = _DropInterrupts()


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, but got {text!r}")
    return value


def _non_negative_int(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, but got {text!r}")
    return int(text)


def _batch_pair(text: str) -> tuple[int, int]:
    parts = text.split(",")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise argparse.ArgumentTypeError(f"must be SMALL,BIG such as 32,512, but got {text!r}")
    small, big = (int(p) for p in parts)
    if not 1 <= small < big:
        raise argparse.ArgumentTypeError(f"must have 1 <= SMALL < BIG, but got {text!r}")
    return small, big


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a number > 0, but got {text!r}")
    return value
