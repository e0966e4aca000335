"""The calibration part of an evaluation's output: a table and a figure of its diagnostics.

Shared by the library and the observation evaluations; both read the ``uncalibrated``,
coverage and ``diagnostics`` entries that :func:`protomatch.evaluation.recovery.
parameter_recovery` writes per method and parameter.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from protomatch.evaluation._markdown import fmt, nan_if_none, table_row

__all__ = ["calibration_figure", "calibration_table"]

_BEFORE, _AFTER = "0.55", "#d1495b"


def calibration_table(parameters: Mapping[str, Any], method: str) -> list[str]:
    """Markdown lines: per parameter, coverage and curve distance before and after calibration.

    Parameters
    ----------
    parameters
        The metrics' ``parameters`` record (name -> ``methods`` -> scores).
    method
        The method whose calibration is shown.
    """
    lines = [
        "",
        f"Interval calibration of `{method}` (cross-fitted: each query's intervals scaled by "
        "factors fitted on the other folds of systems). Coverage of the 68 % / 95 % intervals "
        "before → after, and the largest distance of the expected-coverage curve from the "
        "diagonal; ranks in the outer fifth (0.20 when calibrated):",
        "",
        table_row(["parameter", "68 % coverage", "95 % coverage", "curve distance", "rank ends"]),
        table_row(["---", "---:", "---:", "---:", "---:"]),
    ]
    for name, record in parameters.items():
        scores = record["methods"].get(method, {})
        before = scores.get("uncalibrated")
        diagnostics = scores.get("diagnostics")
        if before is None or diagnostics is None:
            continue
        lines.append(
            table_row(
                [
                    name,
                    f"{fmt(before['coverage68'], 2)} → {fmt(scores['coverage68'], 2)}",
                    f"{fmt(before['coverage95'], 2)} → {fmt(scores['coverage95'], 2)}",
                    _change(diagnostics, "coverage_curve", "max_distance"),
                    _change(diagnostics, "rank_histogram", "edge_fraction"),
                ]
            )
        )
    return lines


def _change(diagnostics: Mapping[str, Any], where: str, key: str) -> str:
    """``before → after`` of one diagnostic number."""
    before, after = (diagnostics[s][where][key] for s in ("uncalibrated", "calibrated"))
    return f"{fmt(before, 2)} → {fmt(after, 2)}"


def calibration_figure(parameters: Mapping[str, Any], method: str, title: str) -> Figure:
    """Expected-coverage curves (top row) and rank histograms (bottom), per parameter.

    Parameters
    ----------
    parameters
        The metrics' ``parameters`` record.
    method
        The method shown (before calibration in grey, after in red).
    title
        The figure's title (what was evaluated).
    """
    names = [n for n in parameters if "diagnostics" in parameters[n]["methods"].get(method, {})]
    columns = max(1, len(names))
    fig = Figure(figsize=(2.3 * columns + 0.6, 5.4))
    axes = fig.subplots(2, columns, squeeze=False)
    for p, name in enumerate(names):
        diagnostics = parameters[name]["methods"][method]["diagnostics"]
        _curve_panel(axes[0, p], diagnostics, name)
        _rank_panel(axes[1, p], diagnostics)
    axes[0, 0].set_ylabel("fraction of truths inside", fontsize=8)
    axes[1, 0].set_ylabel("queries", fontsize=8)
    axes[0, 0].legend(fontsize=7, loc="upper left")
    fig.suptitle(
        f"{title}: expected coverage per credibility level (dashed: ideal) and rank of the "
        f"truth (flat when honest); grey before, red after calibration ({method})",
        fontsize=9,
    )
    fig.tight_layout()
    return fig


def _curve_panel(ax: Any, diagnostics: Mapping[str, Any], name: str) -> None:
    levels = diagnostics["calibrated"]["coverage_curve"]["levels"]
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    for key, colour in (("uncalibrated", _BEFORE), ("calibrated", _AFTER)):
        curve = diagnostics[key]["coverage_curve"]
        if curve["coverage"] is not None:
            ax.plot(levels, curve["coverage"], color=colour, lw=1.5, label=key)
    distance = diagnostics["calibrated"]["coverage_curve"]["max_distance"]
    ax.set_title(f"{name}\nmax distance {fmt(distance, 2)}", fontsize=8)
    ax.set(xlim=(0, 1), ylim=(0, 1))
    ax.set_xlabel("credibility level", fontsize=7.5)
    ax.tick_params(labelsize=7)


def _rank_panel(ax: Any, diagnostics: Mapping[str, Any]) -> None:
    for key, colour, offset in (("uncalibrated", _BEFORE, -0.02), ("calibrated", _AFTER, 0.02)):
        hist = diagnostics[key]["rank_histogram"]
        counts = np.asarray(hist["counts"], dtype=np.float64)
        centres = (np.arange(len(counts)) + 0.5) / len(counts) + offset
        ax.bar(centres, counts, width=0.04, color=colour)
    expected = nan_if_none(diagnostics["calibrated"]["rank_histogram"]["expected"])
    if not math.isnan(expected):
        ax.axhline(expected, color="k", ls="--", lw=0.8)
    ax.set_xlim(0, 1)
    ax.set_xlabel("rank of the truth", fontsize=7.5)
    ax.tick_params(labelsize=7)
