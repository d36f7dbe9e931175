"""What ``optuna-bs report`` produces: a summary table, an HTML report, figures in the dashboard.

* :func:`summarize`: everything a study learned (:mod:`optuna_bs.report.analysis`) as one
  :class:`Summary`, with text and markdown tables.
* :func:`write_report`: a self-contained HTML file of the figures and the summary table.
* :func:`save_to_dashboard`: the figures and a markdown note, saved into the study so that
  optuna-dashboard shows them.
"""

from __future__ import annotations

import html
import logging
import re
import statistics
import warnings
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import optuna

from optuna_bs._validation import check_fraction
from optuna_bs.report._figure import INSTALL_HINT
from optuna_bs.report.analysis import (
    PARETO_COSTS,
    ParetoPoint,
    TrialPoint,
    complete_points,
    objective_name,
    pareto_front,
    rule_for,
    study_rule,
    why_no_points,
)
from optuna_bs.report.fits import NoiseScaleFit, ScalingFit, fit_noise_scale, fit_scaling_rule
from optuna_bs.report.plots import _try, figures
from optuna_bs.report.scaling import Transfer, transfer
from optuna_bs.rules.formulas import Hyperparameters, largest_valid_batch
from optuna_bs.rules.registry import column_label, format_value
from optuna_bs.search.edges import best_at_edges
from optuna_bs.search.ladder import ladder_outcome

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Summary:
    """What a study learned, as plain data: what ``optuna-bs report`` prints and writes.

    ``rule`` and ``family`` are the study's rule and optimizer family (or the ``--rule``
    given); ``columns`` the values its tables show (no g for the Adam family).
    ``fit`` (ϵ*(B) from the per-batch-size optima) and ``noise`` (g*, SGD only) are ``None``
    when they cannot be fitted, and ``fit_reason``/``noise_reason`` then say why.
    ``good_batch_sizes`` are the explored batch sizes whose best error is within
    ``tolerance`` (relative) of the study's best and at most N/10, where the rules hold:
    the recommended range. ``transfer`` is the configuration at ``batch_size`` (the best
    trial's when ``None``) and where it comes from; ``warnings`` holds what it warned.
    """

    study_name: str
    metric: str
    rule: str
    family: str | None
    columns: tuple[str, ...]
    n_trials: int
    n_complete: int
    n_pruned: int
    fit: ScalingFit | None
    fit_reason: str | None
    noise: NoiseScaleFit | None
    noise_reason: str | None
    best: TrialPoint | None
    good_batch_sizes: tuple[int, ...]
    tolerance: float
    batch_size: int | None
    transfer: Transfer | None
    warnings: tuple[str, ...]
    pareto_seconds: tuple[ParetoPoint, ...]
    pareto_updates: tuple[ParetoPoint, ...]
    # Why a front is empty, in words, by cost (None where it is not).
    pareto_reasons: dict[str, str | None] = field(default_factory=dict)
    # What a ladder study (sampler = "ladder") found, in words; None for other samplers.
    ladder: str | None = None
    # Each searched range whose best trial lies at an edge, and each widening, in words.
    edges: tuple[str, ...] = ()

    @property
    def recommendation(self) -> Hyperparameters | None:
        """The configuration at ``batch_size``."""
        return None if self.transfer is None else self.transfer.hparams

    def rows(self) -> list[tuple[str, str]]:
        """(item, value) rows of the summary table."""
        optimizer = {"adam": ", Adam family", "sgd": ", SGD"}.get(self.family, "")
        rows = [
            ("study", f"{self.study_name} ({self.metric})"),
            ("rule", f"{self.rule}{optimizer}"),
            ("trials", f"{self.n_trials}: {self.n_complete} complete, {self.n_pruned} pruned"),
        ]
        f, g, b, t = self.fit, self.noise, self.best, self.transfer
        if f is None:
            rows.append(("lr against B", f"not fitted: {self.fit_reason}"))
        else:
            rows.append(("lr against B", f.describe()))
            optima = ", ".join(
                f"B={o.batch_size}: {o.lr:.3g}" + ("" if o.counted else " (not counted)")
                for o in f.optima
            )
            rows.append(("best lr per batch size", optima))
        if self.family != "adam":  # g means nothing for Adam (docs/design.md §3)
            if g is None:
                rows.append(("best noise scale g*", f"not fitted: {self.noise_reason}"))
            else:
                ci = f"{g.best_noise_scale:.3g} ({g.low:.3g}..{g.high:.3g})"
                rows.append((f"best noise scale g* ({round(100 * g.confidence)}% CI)", ci))
        if b is not None:
            where = f"B={b.batch_size}, {self.describe(b.hparams())}"
            rows.append(("best trial", f"#{b.number}: {self.metric}={b.error:.4f} at {where}"))
        if self.good_batch_sizes:
            sizes = ", ".join(map(str, self.good_batch_sizes))
            why = f"best {self.metric} within {self.tolerance:.0%} of the best, B <= N/10"
            rows.append(("recommended batch sizes", f"{sizes} ({why})"))
        if self.ladder is not None:
            rows.append(("batch ladder", self.ladder))
        if t is not None:
            r = t.hparams
            what = f"{self.describe(r)} ({t.describe()})"
            rows.append((f"recommendation at B={r.batch_size}", what))
        rows += [("search range", w) for w in self.edges]
        return rows + [("warning", w) for w in self.warnings]

    def describe(self, hp: Hyperparameters) -> str:
        """``hp``'s values in this study's columns, e.g. "lr=0.01, beta1=0.9, ..."."""
        return ", ".join(
            f"{column_label(c, self.family)}={format_value(c, v, 4)}"
            for c in self.columns
            if (v := getattr(hp, c)) is not None
        )

    def pareto_rows(self, cost: str) -> list[tuple[str, ...]]:
        """Header and rows of the Pareto front over ``cost`` (one of :data:`PARETO_COSTS`)."""
        front = self.pareto_seconds if cost == "train_seconds" else self.pareto_updates
        head = ("trial", self.metric, cost, "B", "lr")
        if not front:
            why = self.pareto_reasons.get(cost) or "no trial is on it."
            return [head, ("-", f"empty: {why}", "", "", "")]
        return [head] + [
            (f"#{p.number}", f"{p.error:.4f}", f"{p.cost:.4g}", str(p.batch_size), f"{p.lr:.4g}")
            for p in front
        ]

    def to_text(self) -> str:
        """The summary and both Pareto fronts as aligned plain-text tables."""
        blocks = [_align(self.rows(), header=False)]
        for cost in PARETO_COSTS:
            blocks.append(
                f"Pareto front, {self.metric} vs {cost}:\n" + _align(self.pareto_rows(cost))
            )
        return "\n\n".join(blocks)

    def to_markdown(self) -> str:
        """The summary as markdown, for an optuna-dashboard note."""
        lines = ["## optuna-bs report", "", "| | |", "| --- | --- |"]
        lines += [f"| {k} | {v} |" for k, v in self.rows()]
        for cost in PARETO_COSTS:
            head, *rows = self.pareto_rows(cost)
            lines += ["", f"### Pareto front, {self.metric} vs {cost}", ""]
            lines += ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
            lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines) + "\n"


def summarize(
    study: optuna.Study,
    batch_size: int | None = None,
    *,
    rule: str | None = None,
    extrapolate: bool = False,
    noise_batch_size: float | None = None,
    tolerance: float = 0.05,
    **fit_options,
) -> Summary:
    """Fit, front and recommendation of a study in one :class:`Summary`; never raises on a
    study with too few trials (the summary says what is missing instead).

    Args:
        study: A finished study.
        batch_size: The batch size to recommend hyperparameters for; ``None`` for the best
            trial's own.
        rule: A rule to move the best lr by instead of the fitted curve; ``None``: the
            fitted curve where there is one, else the study's own rule.
        extrapolate: Allow a recommendation far beyond the explored batch sizes.
        noise_batch_size: The critical batch size, where measured (``optuna-bs
            noise-scale``): the recommendation's lr bends as B nears it.
        tolerance: Relative margin on the best error that makes a batch size "good".
        **fit_options: Passed to :func:`~optuna_bs.report.fit_scaling_rule` and
            :func:`~optuna_bs.report.fit_noise_scale` (``tolerance`` of the per-B optima,
            ``n_bootstrap``, ``confidence``, ``seed``).
    """
    check_fraction("tolerance", tolerance, closed=True)
    trials = study.get_trials(deepcopy=False)
    state = optuna.trial.TrialState
    points = complete_points(study)
    family = study_rule(study)[1]
    rule_obj = rule_for(study, rule)  # an unknown --rule is one clear error
    fit, fit_reason = _try(partial(fit_scaling_rule, **fit_options), study)
    noise, noise_reason = _try(partial(fit_noise_scale, **fit_options), study)
    best = min(points, key=lambda p: p.error) if points else None
    moved, caught = None, []
    good: list[int] = []
    if best is not None:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            moved = transfer(
                study,
                batch_size,
                rule,
                extrapolate=extrapolate,
                noise_batch_size=noise_batch_size,
                fit=fit,
                **{k: v for k, v in fit_options.items() if k == "tolerance"},
            )
        # A best of 0 has no 5% of its own: the margin is then 5% of the median trial's.
        scale = abs(best.error) or statistics.median(p.error for p in points)
        limit = best.error + tolerance * scale
        top = largest_valid_batch(best.n_train)
        good = sorted({p.batch_size for p in points if p.error <= limit and p.batch_size <= top})
    return Summary(
        study_name=study.study_name,
        metric=objective_name(study),
        rule=rule_obj.name,
        family=family,
        columns=rule_obj.columns(family),
        n_trials=len(trials),
        n_complete=sum(t.state == state.COMPLETE for t in trials),
        n_pruned=sum(t.state == state.PRUNED for t in trials),
        fit=fit,
        fit_reason=fit_reason,
        noise=noise,
        noise_reason=noise_reason,
        best=best,
        good_batch_sizes=tuple(good),
        tolerance=tolerance,
        batch_size=batch_size,
        transfer=moved,
        warnings=tuple(str(w.message) for w in caught),
        pareto_seconds=tuple(pareto_front(study, "train_seconds")),
        pareto_updates=tuple(pareto_front(study, "n_updates")),
        pareto_reasons={c: why_no_points(study, c) for c in PARETO_COSTS},
        ladder=ladder_outcome(study),
        edges=tuple(best_at_edges(study)),
    )


def _align(rows, *, header: bool = True) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    if header:
        lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


_CSS = """body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.5em}h2{font-size:1.1em;margin:.2em 0}.row{display:flex;flex-wrap:wrap;gap:2em}
table{border-collapse:collapse;margin:.5em 0;font-size:.9em}td,th{border:1px solid #ccc;
padding:3px 8px;text-align:left}th{background:#f3f3f3}
.figures{display:grid;grid-template-columns:repeat(2,minmax(0,1fr));gap:1em}
@media (max-width:1100px){.figures{grid-template-columns:minmax(0,1fr)}}"""


def _html_table(rows) -> str:
    cells = []
    for i, row in enumerate(rows):
        tag = "th" if i == 0 else "td"
        cells.append("<tr>" + "".join(f"<{tag}>{html.escape(c)}</{tag}>" for c in row) + "</tr>")
    return "<table>" + "".join(cells) + "</table>"


def write_report(
    study: optuna.Study,
    out_dir: str | Path,
    *,
    batch_size: int | None = None,
    summary: Summary | None = None,
) -> Path:
    """Write ``report-<study name>.html`` into ``out_dir``: summary tables and every figure.

    The file is self-contained: plotly.js is inlined once, so it opens offline.

    Args:
        study: A finished study.
        out_dir: The folder to write to; created if missing.
        batch_size: The batch size of the recommendation (see :func:`summarize`).
        summary: A summary already made by :func:`summarize`, to avoid fitting twice.

    Returns:
        The path of the HTML file.
    """
    summary = summary or summarize(study, batch_size)
    figs = figures(study, fit=summary.fit, noise=summary.noise)
    tables = [f"<div>{_html_table([('item', 'value'), *summary.rows()])}</div>"]
    for cost in PARETO_COSTS:
        title = f"Pareto front, {summary.metric} vs {cost}"
        tables.append(
            f"<div><h2>{html.escape(title)}</h2>{_html_table(summary.pareto_rows(cost))}</div>"
        )
    divs = [
        fig.to_html(
            full_html=False,
            include_plotlyjs=i == 0,  # inlined once, so the file opens offline; others reuse it
            div_id=f"figure-{name}",
            default_height="480px",
            config={"displaylogo": False},
        )
        for i, (name, fig) in enumerate(figs.items())
    ]
    parts = [
        f"<h1>optuna-bs report: {html.escape(study.study_name)}</h1>",
        f'<div class="row">{"".join(tables)}</div>',
        f'<div class="figures">{"".join(f"<div>{d}</div>" for d in divs)}</div>',
    ]
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>optuna-bs report: {html.escape(study.study_name)}</title>"
        f"<style>{_CSS}</style></head><body>\n" + "\n".join(parts) + "\n</body></html>\n"
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", study.study_name).strip("_") or "study"
    path = out / f"report-{slug}.html"
    path.write_text(page, encoding="utf-8")
    _logger.info("wrote report of study %r to %s", study.study_name, path)
    return path


def save_to_dashboard(
    study: optuna.Study,
    *,
    batch_size: int | None = None,
    summary: Summary | None = None,
) -> list[str]:
    """Save the figures and a markdown note into the study, for optuna-dashboard to show.

    The graph ids are fixed (``optuna-bs-<figure>``), so saving again replaces the figures
    instead of adding copies. The note is the summary (:meth:`Summary.to_markdown`). The
    study's metric names are set when they are unset, so the dashboard labels its axes.

    Args:
        study: A finished study in the store that optuna-dashboard reads.
        batch_size: The batch size of the recommendation (see :func:`summarize`).
        summary: A summary already made by :func:`summarize`, to avoid fitting twice.

    Returns:
        The graph object ids saved.

    Raises:
        ImportError: If optuna-dashboard or plotly is not installed.
    """
    try:
        import optuna_dashboard
    except ImportError as err:
        raise ImportError(
            f"saving to optuna-dashboard needs optuna-dashboard: {INSTALL_HINT}"
        ) from err
    if study.metric_names is None:
        names = [objective_name(study), "train_seconds"][: len(study.directions)]
        names += [f"objective_{i}" for i in range(len(names), len(study.directions))]
        with warnings.catch_warnings():  # experimental in Optuna, and what the dashboard reads
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(names)
    summary = summary or summarize(study, batch_size)
    ids = [
        optuna_dashboard.save_plotly_graph_object(study, fig, graph_object_id=f"optuna-bs-{name}")
        for name, fig in figures(study, fit=summary.fit, noise=summary.noise).items()
    ]
    optuna_dashboard.save_note(study, summary.to_markdown())
    _logger.info("saved %d figures and a note into study %r", len(ids), study.study_name)
    return ids
