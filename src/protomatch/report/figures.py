"""Figures of the match report: parameter histograms and the corner plot; all figures by name.

Drawn on Agg canvases without pyplot, so no global backend or figure registry is touched and
nothing needs closing (the corner plot is drawn by the ``corner`` package onto a figure made
here). The target beside its matches is drawn by :mod:`protomatch.report.images`, the
observation as read by :mod:`protomatch.report.observed`. Used by
:mod:`protomatch.report.html` only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import corner  # type: ignore[import-untyped]
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from protomatch._png import plain_text
from protomatch._png import png_bytes as _png_bytes
from protomatch._quantiles import system_weights
from protomatch.report.data import (
    MATCH_COLOUR,
    PRIOR_COLOUR,
    TRUTH_COLOUR,
    MatchReportData,
    plain_number,
    shorten,
)
from protomatch.report.images import matches_figure
from protomatch.report.observed import observation_figure

__all__ = ["parameter_stats", "render_figures"]

_N_BINS = 30


@plain_text()
def render_figures(data: MatchReportData) -> dict[str, bytes]:
    """Draw the report's figures.

    Parameters
    ----------
    data : MatchReportData
        What the report shows.

    Returns
    -------
    dict of str to bytes
        PNG bytes by file name: ``matches.png``, ``parameters.png``, ``corner.png`` and, when
        ``data.observed`` is given, ``observation.png``.
    """
    figures = {
        "matches.png": matches_figure(data),
        "parameters.png": _parameters_figure(data),
        "corner.png": _corner_figure(data),
    }
    if data.observed is not None:
        figures["observation.png"] = observation_figure(
            data.observed, data.display_floor, data.target_name
        )
    return {name: _png_bytes(fig) for name, fig in figures.items()}


# --------------------------------------------------------------------------- statistics


def _finite(values: Any) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    return array[np.isfinite(array)]


def _match_weights(matches: pd.DataFrame) -> np.ndarray:
    """The summary's weight per match: similarity over its system's count (or uniform)."""
    weights = np.clip(np.nan_to_num(matches["similarity"].to_numpy(np.float64)), 0.0, None)
    if "system" in matches.columns:
        weights = system_weights(weights, matches["system"].astype(str).to_numpy())
    return weights if weights.sum() > 0 else np.ones_like(weights)


def parameter_stats(data: MatchReportData, name: str) -> dict[str, Any]:
    """The summary's statistics of one parameter, as the report shows them.

    Parameters
    ----------
    data : MatchReportData
        What the report shows; its summary holds the statistics of every parameter.
    name : str
        One of ``data.param_names``.

    Returns
    -------
    dict
        ``matches`` and ``prior`` (quantiles by name: ``median``, ``q16``, ...; physical
        units), ``truth`` (float, or None if unknown or not finite), ``unit`` and
        ``constraint`` (the summary's, see :func:`protomatch.matching.summary.constraint`;
        None when the summary has none).
    """
    given = data.summary["parameters"][name]
    truth = given["truth"]
    return {
        "matches": dict(given["matches"]),
        "prior": dict(given["prior"]),
        "truth": None if truth is None or not np.isfinite(truth) else float(truth),
        "unit": given["unit"],
        "constraint": given.get("constraint"),
    }


# --------------------------------------------------------------------------- figures


def _label(data: MatchReportData, name: str) -> str:
    unit = data.units.get(name, "")
    return f"{name} [{unit}]" if unit else name


def _positive_on_log(values: np.ndarray, log: bool) -> tuple[np.ndarray, int]:
    """Finite values, and for a log axis only the positive ones; also the number dropped."""
    values = _finite(values)
    if not log:
        return values, 0
    keep = values > 0
    return values[keep], int((~keep).sum())


def _span(values: Sequence[np.ndarray], log: bool) -> tuple[float, float]:
    """A non-degenerate (low, high) range covering every array (positive if ``log``)."""
    joined = np.concatenate([np.ravel(v) for v in values]) if values else np.empty(0)
    if joined.size == 0:
        return (0.1, 10.0) if log else (0.0, 1.0)
    low, high = float(joined.min()), float(joined.max())
    if log:
        low, high = math.log10(low), math.log10(high)
    if high - low < 1e-12 * max(1.0, abs(low)):
        pad = 0.3 if log else max(abs(low) * 0.1, 1e-12 if low else 1.0)
        low, high = low - pad, high + pad
    return (10**low, 10**high) if log else (low, high)


def _edges(span: tuple[float, float], log: bool, n_bins: int = _N_BINS) -> np.ndarray:
    low, high = span
    return np.geomspace(low, high, n_bins + 1) if log else np.linspace(low, high, n_bins + 1)


def _density(
    values: np.ndarray, weights: np.ndarray | None, edges: np.ndarray, log: bool
) -> np.ndarray:
    """Histogram normalised to unit area; per dex of the parameter on a log axis."""
    x, bins = (np.log10(values), np.log10(edges)) if log else (values, edges)
    counts, _ = np.histogram(x, bins=bins, weights=weights)
    total = counts.sum()
    return counts / (total * np.diff(bins)) if total > 0 else counts.astype(np.float64)


def _parameter_panel(ax: Axes, data: MatchReportData, name: str) -> None:
    stats = parameter_stats(data, name)
    raw = data.matches[name].to_numpy(np.float64)
    # a log axis needs positive values; with none at all, fall back to a linear axis
    log = name in data.log_params and bool((_finite(data.prior[name]) > 0).any() or (raw > 0).any())
    prior, prior_dropped = _positive_on_log(data.prior[name].to_numpy(), log)
    keep = np.isfinite(raw) & (raw > 0 if log else True)
    matched, match_weights = raw[keep], _match_weights(data.matches)[keep]
    edges = _edges(_span([prior, matched], log), log)
    if prior.size:
        ax.stairs(
            _density(prior, None, edges, log),
            edges,
            fill=True,
            color=PRIOR_COLOUR,
            label="library prior",
        )
    if matched.size:
        dens = _density(matched, match_weights, edges, log)
        ax.stairs(dens, edges, fill=True, color=MATCH_COLOUR, alpha=0.35, label="matches")
        ax.stairs(dens, edges, color=MATCH_COLOUR, linewidth=1.4)
    med, q16, q84 = (stats["matches"].get(k) for k in ("median", "q16", "q84"))
    if _drawable(q16, log) and _drawable(q84, log):
        ax.axvspan(q16, q84, color=MATCH_COLOUR, alpha=0.12, lw=0, label="matches 16–84%")
    if _drawable(med, log):
        ax.axvline(med, color=MATCH_COLOUR, lw=2, label="matches median")
    if _drawable(stats["truth"], log):
        ax.axvline(stats["truth"], color=TRUTH_COLOUR, lw=2, ls="--", label="truth")
    if log:
        ax.set_xscale("log")
    dropped = prior_dropped + int((np.isfinite(raw) & ~keep).sum())
    if dropped:
        ax.text(
            0.98,
            0.97,
            f"{dropped} values ≤ 0 not shown",
            transform=ax.transAxes,
            ha="right",
            va="top",
            fontsize=7,
            color="0.3",
        )
    ax.set_xlabel(_label(data, name), fontsize=9)
    ax.set_ylabel("density per dex" if log else "density", fontsize=8)
    ax.set_yticks([])
    ax.tick_params(labelsize=8)
    unit = f" {stats['unit']}" if stats["unit"] else ""
    ax.set_title(
        f"{name}\nmedian {plain_number(med)}  [{plain_number(q16)}, {plain_number(q84)}]{unit}",
        fontsize=9,
    )


def _drawable(value: Any, log: bool) -> bool:
    return value is not None and np.isfinite(value) and (value > 0 or not log)


def _parameters_figure(data: MatchReportData) -> Figure:
    n = max(len(data.param_names), 1)
    n_cols = min(4, n)
    n_rows = math.ceil(n / n_cols)
    fig = Figure(figsize=(3.6 * n_cols, 2.9 * n_rows + 0.6), layout="constrained")
    axes = fig.subplots(n_rows, n_cols, squeeze=False).ravel()
    for ax, name in zip(axes, data.param_names):
        _parameter_panel(ax, data, name)
    legend: dict[str, Any] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(label, handle)
    handles, labels = list(legend.values()), list(legend)
    if data.param_names and len(axes) > len(data.param_names):
        spare = axes[len(data.param_names)]
        spare.set_axis_off()
        spare.legend(handles, labels, loc="center", fontsize=10, frameon=False)
    else:
        fig.legend(handles, labels, loc="outside lower center", ncols=len(labels), fontsize=9)
    for ax in axes[len(data.param_names) + 1 :]:
        ax.set_axis_off()
    fig.suptitle(
        f"{shorten(data.target_name, 70)}: parameters of the {len(data.matches)} "
        "matches (weighted by similarity, each system once) over the library",
        fontsize=11,
    )
    return fig


#: Contour levels of the corner plot's 2-D panels: mass enclosed within 1 and 2 sigma of a
#: 2-D Gaussian.
_CORNER_LEVELS = (1 - math.exp(-0.5), 1 - math.exp(-2.0))
_CORNER_BINS = 20
#: Fewest matches whose 2-D density is drawn as contours (fewer: points only).
_MIN_CONTOUR_MATCHES = 30


def _corner_column(
    data: MatchReportData, name: str
) -> tuple[np.ndarray, np.ndarray, float | None, str]:
    """One corner axis: (matches (n,), prior (N,), truth, label), log10 values if log.

    A log parameter with no positive value at all is kept linear; values <= 0 on a log10
    axis become NaN.
    """
    matched = data.matches[name].to_numpy(np.float64)
    prior = data.prior[name].to_numpy(np.float64)
    truth = parameter_stats(data, name)["truth"]
    unit = data.units.get(name, "")
    label = f"{name}\n[{unit}]" if unit else name
    if name in data.log_params and ((matched > 0).any() or (prior > 0).any()):
        matched, prior = _log10_or_nan(matched), _log10_or_nan(prior)
        truth = math.log10(truth) if truth is not None and truth > 0 else None
        label = f"log\u2081\u2080 {label}"  # log with a subscript 10, no mathtext
    return matched, prior, truth, label


def _log10_or_nan(values: np.ndarray) -> np.ndarray:
    positive = values > 0
    return np.where(positive, np.log10(np.where(positive, values, 1.0)), np.nan)


def _finite_rows(table: np.ndarray) -> np.ndarray:
    """Mask (n,) of the rows of a (n, K) table with every value finite."""
    return np.isfinite(table).all(axis=1)


def _enough_rows(
    table: np.ndarray, weights: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Rows repeated until there are at least as many as columns, weights shared out.

    ``corner`` refuses fewer samples than dimensions; repeating each row r times with 1/r of
    its weight leaves every weighted histogram unchanged.
    """
    n, dims = table.shape
    repeats = math.ceil(dims / n) if n < dims else 1
    if repeats == 1:
        return table, weights
    shared = None if weights is None else np.repeat(weights / repeats, repeats)
    return np.repeat(table, repeats, axis=0), shared


def _corner_message(text: str) -> Figure:
    fig = Figure(figsize=(6, 2))
    fig.text(0.5, 0.5, text, ha="center", va="center", fontsize=14)
    return fig


def _corner_figure(data: MatchReportData) -> Figure:
    """Pairs of parameters: matches (red, weighted per system) over the library prior (grey).

    Log parameters are drawn as log10 values on linear axes, which keeps the small panels'
    ticks readable (a log axis spanning less than a decade has no labelled major tick).
    """
    names = data.param_names
    if data.matches.empty or not names:
        return _corner_message("no matches to show")
    columns = [_corner_column(data, name) for name in names]
    matched = np.column_stack([c[0] for c in columns])
    prior = np.column_stack([c[1] for c in columns])
    keep, prior_keep = _finite_rows(matched), _finite_rows(prior)
    if not keep.any():
        return _corner_message("no match has a value of every parameter to show")
    matched, weights = matched[keep], _match_weights(data.matches)[keep]
    weights = weights if weights.sum() > 0 else np.ones_like(weights)
    prior = prior[prior_keep]
    truths = [c[2] for c in columns]
    spans = [
        _span([matched[:, j], prior[:, j], _finite([t] if t is not None else [])], False)
        for j, t in enumerate(truths)
    ]
    ranges = [(low - 0.04 * (high - low), high + 0.04 * (high - low)) for low, high in spans]
    labels = [c[3] for c in columns]
    side = 1.75 * len(names) + 1.2
    fig = Figure(figsize=(side, side))
    common = {
        "range": ranges,
        "bins": _CORNER_BINS,
        "labels": labels,
        "label_kwargs": {"fontsize": 9},
        "max_n_ticks": 3,
        "smooth": 1.0,
        "levels": _CORNER_LEVELS,
        "plot_density": False,
        "no_fill_contours": True,
        "quiet": True,
    }
    if len(prior):
        table, _ = _enough_rows(prior, None)
        corner.corner(
            table,
            fig=fig,
            color=PRIOR_COLOUR,
            plot_datapoints=False,
            hist_kwargs={"density": True, "histtype": "stepfilled", "color": PRIOR_COLOUR},
            **common,
        )
    table, shared = _enough_rows(matched, weights)
    corner.corner(
        table,
        fig=fig,
        weights=shared,
        color=MATCH_COLOUR,
        plot_datapoints=True,
        plot_contours=len(matched) >= _MIN_CONTOUR_MATCHES,
        data_kwargs={"alpha": 0.55, "ms": 3.0},
        hist_kwargs={"density": True, "histtype": "step", "linewidth": 1.6},
        # corner cannot draw truths on a single panel: _corner_diagonals does it then
        truths=truths if len(names) > 1 and any(t is not None for t in truths) else None,
        truth_color=TRUTH_COLOUR,
        **common,
    )
    fig.subplots_adjust(left=0.1, bottom=0.1, right=0.98, top=0.98)  # room for 2-line labels
    _corner_diagonals(fig, data, truths)
    _corner_legend(fig, data, len(matched), len(data.matches) - len(matched), truths)
    return fig


def _corner_diagonals(fig: Figure, data: MatchReportData, truths: list[float | None]) -> None:
    """Finish the 1-D panels: matches' median, heights fitting both histograms, lone truth.

    corner draws the truths itself except on a single panel, which gets its truth here.
    """
    n = len(data.param_names)
    axes = np.asarray(fig.axes).reshape(n, n)
    if n == 1 and truths[0] is not None:
        axes[0, 0].axvline(truths[0], color=TRUTH_COLOUR)
    for j, name in enumerate(data.param_names):
        ax = axes[j, j]
        median = parameter_stats(data, name)["matches"].get("median")
        if name in data.log_params and median is not None:
            median = math.log10(median) if median > 0 else None
        if median is not None and np.isfinite(median):
            ax.axvline(median, color=MATCH_COLOUR, lw=1.2, ls=":")
        heights = [p.get_path().vertices[:, 1].max() for p in ax.patches if len(p.get_path())]
        top = max((h for h in heights if np.isfinite(h)), default=1.0)
        ax.set_ylim(0.0, 1.08 * top if top > 0 else 1.0)


def _corner_legend(
    fig: Figure, data: MatchReportData, n_shown: int, n_dropped: int, truths: list[float | None]
) -> None:
    lines = [
        (f"{shorten(data.target_name, 40)}: {n_shown} matches", "black"),
        ("red: matches, weighted by similarity, each system once (dotted: median)", MATCH_COLOUR),
        ("grey: the library (prior); contours hold 39 % and 86 %", "0.45"),
    ]
    if any(t is not None for t in truths):
        lines.append(("blue: truth", TRUTH_COLOUR))
    if n_dropped:
        lines.append((f"{n_dropped} matches with a value ≤ 0 on a log axis not shown", "0.3"))
    for k, (text, colour) in enumerate(lines):
        fig.text(0.55, 0.95 - 0.03 * k, text, color=colour, fontsize=11, va="top")
