"""Figures and tables of the observation evaluation.

Used by :mod:`protomatch.evaluation.observations`. Tables are built from the metrics record
alone, so they can be rebuilt from metrics.json. Figures are drawn on Agg canvases without
pyplot (no global backend state).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from protomatch._png import plain_text
from protomatch._png import png_bytes as _png_bytes
from protomatch.evaluation import recovery as R
from protomatch.evaluation._calibration_report import calibration_figure, calibration_table
from protomatch.evaluation._markdown import fmt, nan_if_none, table_row

_OURS = "#d1495b"
#: Methods shown in the coverage chart besides the best protomatch variant.
_COVERAGE_METHODS = ("protomatch", "protomatch_beam", "pixels", "pixels_beam", "prior")
_COLOURS = ("#d1495b", "#edae49", "#f4d58d", "#66a182", "#2e4057", "0.6")


# --------------------------------------------------------------------------- tables


def markdown_tables(metrics: Mapping[str, Any]) -> str:
    """metrics.md: the README table (best variant vs prior and pixel kNN) and the full tables.

    Parameters
    ----------
    metrics : Mapping
        The metrics record of :func:`protomatch.evaluation.observations.evaluate_observations`
        (as in metrics.json).

    Returns
    -------
    str
        Markdown text.
    """
    best, parameters = metrics["best_protomatch"], metrics["parameters"]
    obs = metrics["observations"]
    lines = [
        f"{obs['n']} mock observations (beam, noise, own pixel scale; {obs['with_beam']} with "
        f"a beam), top {metrics['k']} matches in a library of {metrics['library']['n_images']} "
        f"images. Error: median absolute error of the similarity-weighted median (dex for "
        f"log-scaled parameters). protomatch = best variant, `{best}`.",
        "",
        table_row(
            [
                "parameter",
                "protomatch",
                "prior",
                "pixel kNN (beam)",
                "strong pixels",
                "68 % coverage",
            ]
        ),
        table_row(["---", "---:", "---:", "---:", "---:", "---:"]),
    ]
    for name, record in parameters.items():
        methods = record["methods"]
        unit = f" {record['error_unit']}" if record["error_unit"] else ""
        lines.append(
            table_row(
                [
                    name,
                    fmt(methods[best]["median_abs_error"]) + unit,
                    fmt(methods["prior"]["median_abs_error"]),
                    fmt(methods.get("pixels_beam", {}).get("median_abs_error")),
                    fmt(methods.get("pixels_strong", {}).get("median_abs_error")),
                    fmt(methods[best]["coverage68"], 2),
                ]
            )
        )
    lines += ["", "All methods: error / 68 % coverage / 95 % coverage.", ""]
    methods = list(metrics["methods"])
    lines += [table_row(["parameter", *methods]), table_row(["---", *["---:"] * len(methods)])]
    for name, record in parameters.items():
        cells = [
            f"{fmt(s['median_abs_error'])} / {fmt(s['coverage68'], 2)} / {fmt(s['coverage95'], 2)}"
            for s in (record["methods"][m] for m in methods)
        ]
        lines.append(table_row([name, *cells]))
    lines += calibration_table(parameters, best)
    lines += _mean_error_table(metrics, methods, best)
    lines += _verdict_table(metrics, best)
    lines += _condition_tables(metrics)
    return "\n".join(lines) + "\n"


def _mean_error_table(metrics: Mapping[str, Any], methods: list[str], best: str) -> list[str]:
    """Each method's mean error / prior spread, its bootstrap interval and the paired one."""
    bootstrap = metrics.get("bootstrap") or {}
    intervals, differences = bootstrap.get("interval", {}), bootstrap.get("difference", {})

    def span(bounds: Any) -> str:
        return f"[{fmt(bounds[0])}, {fmt(bounds[1])}]" if bounds else "–"

    lines = [
        "",
        "Mean error / prior spread over the parameters, with 95 % bootstrap intervals over the "
        f"observations ({bootstrap.get('draws', 0)} draws) of it and of `{best}` minus it, "
        "paired (negative: protomatch better; an interval that holds 0 is not resolved):",
        "",
        table_row(["method", "mean error / prior spread", "95 % interval", f"{best} − method"]),
        table_row(["---", "---:", "---:", "---:"]),
    ]
    for method in methods:
        lines.append(
            table_row(
                [
                    method,
                    fmt(mean_relative_error(metrics, method)),
                    span(intervals.get(method)),
                    span(differences.get(method)),
                ]
            )
        )
    return lines


def strongest_baseline(metrics: Mapping[str, Any]) -> str:
    """The evaluated method other than protomatch's with the lowest mean error / prior spread."""
    return min(_baselines(metrics), key=lambda m: mean_relative_error(metrics, m))


def _baselines(metrics: Mapping[str, Any]) -> list[str]:
    """The evaluated methods that are neither protomatch's nor the prior."""
    return [m for m in metrics["methods"] if not m.startswith("protomatch") and m != "prior"]


def parameter_verdicts(metrics: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Per parameter, whether the best protomatch variant beats the strongest baseline *on it*.

    The strongest baseline of a parameter is the baseline (not protomatch, not the prior) with
    the lowest median error on that parameter. Its verdict, "better" / "worse" / "not
    resolved", comes from the paired 95 % bootstrap interval of protomatch's error / prior
    spread minus the baseline's. ``constrained`` says whether any evaluated method's error
    is below the prior's. Empty when the metrics carry no bootstrap or no baseline.

    Returns
    -------
    dict
        name -> {``baseline``, ``verdict``, ``interval``, ``error``, ``baseline_error``,
        ``prior_error``, ``error_unit``, ``constrained``}.
    """
    best = metrics["best_protomatch"]
    differences = (metrics.get("bootstrap") or {}).get("parameter_difference", {})
    baselines = [m for m in _baselines(metrics) if m in differences]
    if not baselines:
        return {}
    verdicts = {}
    for p, (name, record) in enumerate(metrics["parameters"].items()):
        errors = {m: r["median_abs_error"] for m, r in record["methods"].items()}
        baseline = min(baselines, key=lambda m: _finite_or_inf(errors[m]))
        interval = differences[baseline][p]
        prior = errors.get("prior", float("nan"))
        verdicts[name] = {
            "baseline": baseline,
            "verdict": R.verdict(interval),
            "interval": interval,
            "error": errors[best],
            "baseline_error": errors[baseline],
            "prior_error": prior,
            "error_unit": record.get("error_unit", ""),
            "constrained": any(
                _finite_or_inf(e) < _finite_or_inf(prior) for m, e in errors.items() if m != "prior"
            ),
        }
    return verdicts


def _finite_or_inf(value: Any) -> float:
    number = nan_if_none(value)
    return number if np.isfinite(number) else float("inf")


def verdict_block(metrics: Mapping[str, Any]) -> dict[str, Any] | None:
    """metrics.json's ``verdict``: what ``protomatch match --evaluation`` carries into reports."""
    verdicts = parameter_verdicts(metrics)
    if not verdicts:
        return None
    return {
        "method": metrics["best_protomatch"],
        "observations": metrics["observations"]["n"],
        "observations_path": metrics["observations"]["path"],
        "rule": "per parameter, protomatch's median error against the baseline with the "
        "lowest median error on it; verdict from the paired 95 % bootstrap interval",
        "parameters": verdicts,
    }


def _verdict_table(metrics: Mapping[str, Any], best: str) -> list[str]:
    """Per parameter, the strongest baseline on it, the paired interval and the verdict."""
    verdicts = parameter_verdicts(metrics)
    if not verdicts:
        return []
    lines = [
        "",
        f"Per parameter against the strongest baseline on that parameter (lowest median "
        f"error): 95 % paired bootstrap interval of `{best}`'s error / prior spread minus its, "
        "and the verdict. A parameter no method constrains better than the prior is marked.",
        "",
        table_row(["parameter", "strongest baseline", f"{best} − it", "verdict"]),
        table_row(["---", "---", "---:", "---"]),
    ]
    for name, v in verdicts.items():
        low, high = v["interval"]
        verdict = v["verdict"] if v["constrained"] else f"{v['verdict']} (not constrained)"
        lines.append(table_row([name, v["baseline"], f"[{fmt(low)}, {fmt(high)}]", verdict]))
    return lines


def _condition_tables(metrics: Mapping[str, Any]) -> list[str]:
    """Mean error / prior spread (68 % coverage) per third of each observing condition."""
    lines: list[str] = []
    methods = list(metrics["methods"])
    for column, condition in metrics.get("by_condition", {}).items():
        lines += [
            "",
            f"By {condition['label']}: mean error / prior spread "
            "(mean 68 % coverage) over the parameters, per third of the observations.",
            "",
        ]
        lines += [
            table_row([column, "n", *methods]),
            table_row(["---", "---:", *["---:"] * len(methods)]),
        ]
        for part in condition["parts"]:
            low, high = part["range"]
            cells = [
                f"{fmt(part['methods'][m]['error_over_prior_spread'], 2)} "
                f"({fmt(part['methods'][m]['coverage68'], 2)})"
                for m in methods
            ]
            lines.append(table_row([f"{low:.3g}-{high:.3g}", str(part["n"]), *cells]))
    return lines


def mean_relative_error(metrics: Mapping[str, Any], method: str) -> float:
    """Mean over parameters of the method's error divided by the prior's spread.

    Parameters
    ----------
    metrics : Mapping
        The metrics record (as in metrics.json).
    method : str
        One of its evaluated methods.

    Returns
    -------
    float
        Over the parameters with a finite ratio; NaN if there is none.
    """
    values = [
        r["methods"][method]["error_over_prior_spread"] for r in metrics["parameters"].values()
    ]
    finite = [float(v) for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan


def describe(metrics: Mapping[str, Any], out: Path) -> str:
    """A compact summary for the command line.

    Parameters
    ----------
    metrics : Mapping
        The metrics record (as in metrics.json).
    out : Path
        The output folder.

    Returns
    -------
    str
        A few lines of text.
    """
    best = metrics["best_protomatch"]
    errors = ", ".join(
        f"{name} {fmt(r['methods'][best]['median_abs_error'])} "
        f"(prior {fmt(r['methods']['prior']['median_abs_error'])})"
        for name, r in metrics["parameters"].items()
    )
    ranking = ", ".join(
        f"{m} {fmt(mean_relative_error(metrics, m), 2)}" for m in metrics["methods"]
    )
    return "\n".join(
        [
            f"{metrics['observations']['n']} observations, top {metrics['k']} matches; "
            f"best protomatch variant: {best}",
            f"errors (best variant vs prior): {errors}",
            f"mean error / prior spread: {ranking}",
            *_verdict_line(metrics),
            f"metrics: {out / 'metrics.json'}, {out / 'metrics.md'}; figures: {out}/*.png",
        ]
    )


# --------------------------------------------------------------------------- figures


@plain_text()
def render_figures(
    metrics: Mapping[str, Any],
    truth: pd.DataFrame,
    estimates: Mapping[str, np.ndarray],
    names: Sequence[str],
    log10: Sequence[bool],
) -> dict[str, bytes]:
    """Draw the recovery scatter of the best variant and the coverage bars.

    Parameters
    ----------
    metrics : Mapping
        The metrics record (as in metrics.json).
    truth : DataFrame
        The truth table, one row per observation, one column per parameter (physical
        units).
    estimates : Mapping of str to ndarray, shape (Q, P, 5)
        Recovered quantiles per method, in the error space (log10 where log-scaled).
    names : sequence of str
        The P parameters, in the order of ``estimates``.
    log10 : sequence of bool
        Whether each parameter is log-scaled.

    Returns
    -------
    dict of str to bytes
        PNG bytes by file name.
    """
    best = metrics["best_protomatch"]
    figures = {
        "recovery.png": _recovery_figure(metrics, truth, estimates[best], names, log10),
        "coverage.png": _coverage_figure(metrics),
        "calibration.png": calibration_figure(
            metrics["parameters"], best, f"{metrics['observations']['n']} mock observations"
        ),
    }
    return {name: _png_bytes(fig) for name, fig in figures.items()}


def _recovery_figure(
    metrics: Mapping[str, Any],
    truth: pd.DataFrame,
    quantiles: np.ndarray,
    names: Sequence[str],
    log10: Sequence[bool],
) -> Figure:
    columns = min(4, len(names))
    rows = math.ceil(len(names) / columns)
    fig = Figure(figsize=(3.3 * columns, 3.2 * rows + 0.4))
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    for p, (ax, name) in enumerate(zip(axes, names)):
        record = metrics["parameters"][name]
        show = (lambda v: np.power(10.0, v)) if log10[p] else (lambda v: v)
        x = truth[name].to_numpy(dtype=np.float64)
        median, low, high = (show(quantiles[:, p, i]) for i in range(3))
        yerr = np.stack([np.clip(median - low, 0, None), np.clip(high - median, 0, None)])
        ax.errorbar(x, median, yerr=yerr, fmt="o", ms=3, color=_OURS, elinewidth=0.6, alpha=0.6)
        span = np.concatenate([x, low, high])
        span = span[np.isfinite(span) & ((span > 0) if log10[p] else True)]
        if span.size:
            ax.plot([span.min(), span.max()], [span.min(), span.max()], "k--", lw=1)
        prior = show(np.array(metrics["parameters"][name]["prior_median"]))
        ax.axhline(float(prior), color="0.5", lw=0.8, ls=":")
        if log10[p]:
            ax.set(xscale="log", yscale="log")
        unit = f" [{record['unit']}]" if record["unit"] else ""
        ax.set_xlabel(f"true{unit}", fontsize=8.5)
        ax.set_ylabel(f"recovered{unit}", fontsize=8.5)
        best = record["methods"][metrics["best_protomatch"]]
        ax.set_title(
            f"{name}: error {fmt(best['median_abs_error'])} "
            f"(prior {fmt(record['methods']['prior']['median_abs_error'])})",
            fontsize=8.5,
        )
        ax.tick_params(labelsize=7.5)
    for ax in axes[len(names) :]:
        ax.set_axis_off()
    fig.suptitle(
        f"mock observations: {metrics['best_protomatch']}, weighted median of the top "
        f"{metrics['k']} (bars 16–84 %, dotted: prior median)",
        fontsize=10,
    )
    fig.tight_layout()
    return fig


def _coverage_figure(metrics: Mapping[str, Any]) -> Figure:
    best = metrics["best_protomatch"]
    evaluated = metrics["methods"]
    methods = [best, *(m for m in _COVERAGE_METHODS if m != best and m in evaluated)]
    names = list(metrics["parameters"])
    x = np.arange(len(names))
    width = 0.8 / len(methods)
    fig = Figure(figsize=(max(7.0, 1.2 * len(names) + 2), 6.0))
    axes = fig.subplots(2, 1, sharex=True)
    for ax, key, nominal in ((axes[0], "coverage68", 0.68), (axes[1], "coverage95", 0.95)):
        for i, (method, colour) in enumerate(zip(methods, _COLOURS)):
            values = [nan_if_none(metrics["parameters"][n]["methods"][method][key]) for n in names]
            ax.bar(
                x + (i - (len(methods) - 1) / 2) * width, values, width, color=colour, label=method
            )
        ax.axhline(nominal, color="k", ls="--", lw=1)
        ax.set_ylim(0, 1.05)
        ax.set_ylabel(f"{key[-2:]} % interval coverage", fontsize=9)
    axes[0].legend(fontsize=7.5, ncol=3, loc="lower right")
    axes[1].set_xticks(x, names, rotation=20, ha="right", fontsize=8.5)
    axes[0].set_title("fraction of observations whose truth lies in the interval (dashed: nominal)")
    fig.tight_layout()
    return fig


def _verdict_line(metrics: Mapping[str, Any]) -> list[str]:
    verdicts = parameter_verdicts(metrics)
    if not verdicts:
        return []
    listed = ", ".join(f"{name} {v['verdict']} ({v['baseline']})" for name, v in verdicts.items())
    return [f"vs the strongest baseline on each parameter: {listed}"]
