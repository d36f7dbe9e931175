"""The ``optuna-bs`` command: the one place that decides what the user sees.

Bad input of any kind (a study file, an argument, a storage URL) is one line on stderr and
exit status 2, with nothing written; ``--verbose`` adds the traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from collections.abc import Sequence

import optuna

from optuna_bs.config import StudyConfig, load_config
from optuna_bs.errors import OptunaBSError
from optuna_bs.storage import DEFAULT_STORAGE, mask_url

__all__ = ["main"]

_logger = logging.getLogger(__name__)


class _UsageError(OptunaBSError):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, not argparse's usage block
        raise _UsageError(f"{self.prog}: {message}")


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="optuna-bs",
        description="Tune batch size, learning rate and momentum together with Optuna.",
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = sub.add_parser(
        "run",
        help="create or resume a study from a study file and run its trials",
        description="Create or resume a study and run trials. Without STUDY_FILE, the embedded "
        "MNIST-1D study runs.",
    )
    run.add_argument("study_file", nargs="?", metavar="STUDY_FILE", help="a TOML study file")
    run.add_argument("--storage", metavar="URL", help=f"study store (default {DEFAULT_STORAGE})")
    run.add_argument("--study-name", metavar="NAME", help="study name (default: the file's)")
    run.add_argument("--n-trials", type=_positive_int, metavar="N", help="trials to run now")
    run.add_argument("--timeout", type=_positive_float, metavar="S", help="stop after S seconds")
    run.add_argument("--seed", type=int, metavar="N", help="seed of sampler, splits and inits")
    run.add_argument("--device", metavar="D", help="auto, cpu, cuda or cuda:N")
    run.add_argument(
        "--top",
        type=_positive_int,
        default=5,
        metavar="K",
        help="rows of the best-trials table (default 5)",
    )
    run.add_argument(
        "--no-test", action="store_true", help="skip re-running the best trial on the test split"
    )
    for p in (run,):
        p.add_argument("-v", "--verbose", action="store_true", help="log every trial; tracebacks")
        p.add_argument("-q", "--quiet", action="store_true", help="no progress bar and no table")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the exit status (0 ok, 2 bad input, 1 other failure)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = "-v" in argv or "--verbose" in argv
    try:
        args = _build_parser().parse_args(argv)
        _configure_logging(args.verbose, args.quiet)
        return _COMMANDS[args.command](args)
    except (OptunaBSError, ValueError, TypeError) as err:
        if verbose:
            traceback.print_exc()
        print(f"optuna-bs: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("optuna-bs: interrupted", file=sys.stderr)
        return 130


def _run(args: argparse.Namespace) -> int:
    from optuna_bs.runner import evaluate_best_on_test, prepare, run_study

    config = load_config(args.study_file) if args.study_file else StudyConfig()
    prepared = prepare(
        config,
        storage=args.storage,
        study_name=args.study_name,
        seed=args.seed,
        device=args.device,
    )
    url = args.storage or config.study.storage or DEFAULT_STORAGE
    _say(
        args,
        f"study {prepared.study_name!r} in {mask_url(url)} on {prepared.device}: "
        f"{prepared.space!r}",
    )
    study = run_study(
        prepared, n_trials=args.n_trials, timeout=args.timeout, show_progress_bar=not args.quiet
    )
    test_value = None if args.no_test else evaluate_best_on_test(prepared, study)
    _report(args, study, config.train.metric, test_value)
    return 0


def _report(args, study: optuna.Study, metric: str, test_value: float | None) -> None:
    trials = study.get_trials(deepcopy=False)
    states = optuna.trial.TrialState
    complete = [t for t in trials if t.state == states.COMPLETE]
    pruned = [t for t in trials if t.state == states.PRUNED]
    reasons = {}
    for t in pruned:
        reason = t.user_attrs.get("stop_reason", "pruned")
        reasons[reason] = reasons.get(reason, 0) + 1
    detail = ", ".join(f"{n} {r}" for r, n in sorted(reasons.items()))
    if set(reasons) == {"pruned"}:
        detail = ""
    failed = sum(t.state == states.FAIL for t in trials)
    print(
        f"{len(trials)} trials: {len(complete)} complete, {len(pruned)} pruned"
        + (f" ({detail})" if detail else "")
        + (f", {failed} failed" if failed else "")
    )
    if not complete:
        print("no complete trial yet.")
        return
    if not args.quiet:
        print(format_table(sorted(complete, key=lambda t: t.value)[: args.top], metric))
    best = study.best_trial
    line = f"best trial #{best.number}: val_{metric}={best.value:.4f}"
    if test_value is not None:
        line += f", test_{metric}={test_value:.4f} (test split, best trial only)"
    print(line)


def format_table(trials: Sequence[optuna.trial.FrozenTrial], metric: str = "error") -> str:
    """A plain-text table of trials: value, B, lr, m, g, best epoch, epochs run, seconds."""
    head = ("trial", f"val_{metric}", "B", "lr", "m", "g", "best_ep", "epochs", "seconds")
    rows = [head]
    for t in trials:
        a = t.user_attrs
        rows.append(
            (
                f"#{t.number}",
                f"{t.value:.4f}",
                str(a.get("batch_size", "")),
                f"{a.get('lr', float('nan')):.3g}",
                f"{a.get('momentum', float('nan')):.3g}",
                f"{a.get('noise_scale', float('nan')):.3g}",
                str(a.get("best_epoch", "")),
                str(a.get("epochs_run", "")),
                f"{a.get('train_seconds', float('nan')):.1f}",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _say(args, message: str) -> None:
    if not args.quiet:
        print(message)


def _configure_logging(verbose: bool, quiet: bool) -> None:
    level = logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("optuna_bs").setLevel(level)
    optuna.logging.set_verbosity(optuna.logging.INFO if verbose else optuna.logging.WARNING)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, but got {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a number > 0, but got {text!r}")
    return value


_COMMANDS = {"run": _run}

if __name__ == "__main__":
    sys.exit(main())
