"""Figures of the match report: the target beside its matches, parameter histograms, corner.

Drawn on Agg canvases without pyplot, so no global backend or figure registry is touched and
nothing needs closing. Used by :mod:`protomatch.report.html` only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, NullFormatter

from protomatch._png import png_bytes as _png_bytes
from protomatch._quantiles import weighted_quantiles
from protomatch.report.data import (
    STRETCH_FLOOR,
    MatchReportData,
    cell_text,
    plain_number,
    shorten,
)

__all__ = ["parameter_stats", "render_figures"]

_N_BINS = 30
_MATCH_COLOUR = "#d1495b"
_PRIOR_COLOUR = "0.72"
_TRUTH_COLOUR = "#1b6ca8"


def render_figures(data: MatchReportData) -> dict[str, bytes]:
    """Draw the report's three figures.

    Parameters
    ----------
    data : MatchReportData
        What the report shows.

    Returns
    -------
    dict of str to bytes
        PNG bytes of ``matches.png``, ``parameters.png`` and ``corner.png``, by file name.
    """
    makers = {
        "matches.png": _matches_figure,
        "parameters.png": _parameters_figure,
        "corner.png": _corner_figure,
    }
    return {name: _png_bytes(make(data)) for name, make in makers.items()}


# --------------------------------------------------------------------------- statistics


def _finite(values: Any) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    return array[np.isfinite(array)]


def _match_weights(matches: pd.DataFrame) -> np.ndarray:
    """Similarity clipped at 0 as a weight per match; uniform if no match is positive."""
    weights = np.clip(np.nan_to_num(matches["similarity"].to_numpy(np.float64)), 0.0, None)
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
        units), ``truth`` (float, or None if unknown or not finite) and ``unit``.
    """
    given = data.summary["parameters"][name]
    truth = given["truth"]
    return {
        "matches": dict(given["matches"]),
        "prior": dict(given["prior"]),
        "truth": None if truth is None or not np.isfinite(truth) else float(truth),
        "unit": given["unit"],
    }


# --------------------------------------------------------------------------- figures


def _log_stretch(image: np.ndarray, floor: float = STRETCH_FLOOR) -> np.ndarray:
    """log10 of the image relative to its peak, floored at ``floor``; shape kept."""
    image = np.nan_to_num(np.asarray(image, dtype=np.float64), nan=0.0)
    peak = image.max()
    scaled = image / peak if peak > 0 else np.zeros_like(image)
    return np.log10(np.maximum(scaled, floor))


def _label(data: MatchReportData, name: str) -> str:
    unit = data.units.get(name, "")
    return f"{name} [{unit}]" if unit else name


def _matches_figure(data: MatchReportData) -> Figure:
    images = np.asarray(data.match_images)[: len(data.matches)]
    n_panels = 1 + len(images)
    n_rows = 1 if n_panels <= 4 else 2
    n_cols = math.ceil(n_panels / n_rows)
    width = max(2.15 * n_cols + 1.0, 5.5)  # inches; 1 inch on the right for the colour bar
    height = 2.55 * n_rows + 0.6
    fig = Figure(figsize=(width, height))
    fig.subplots_adjust(
        left=0.01,
        right=1 - 1.0 / width,
        top=1 - 0.7 / height,
        bottom=0.3 / height,
        wspace=0.06,
        hspace=0.32,
    )
    axes = fig.subplots(n_rows, n_cols, squeeze=False).ravel()
    floor = data.display_floor
    style = {"cmap": "inferno", "vmin": math.log10(floor), "vmax": 0.0}
    shown = axes[0].imshow(_log_stretch(data.target_image, floor), origin="lower", **style)
    axes[0].set_title("target", fontsize=11, fontweight="bold", color=_TRUTH_COLOUR)
    axes[0].text(
        0.5,
        -0.07,
        shorten(data.target_name, 28),
        transform=axes[0].transAxes,
        ha="center",
        va="top",
        fontsize=7.5,
    )
    for spine in axes[0].spines.values():
        spine.set_edgecolor(_TRUTH_COLOUR)
        spine.set_linewidth(4)
    top = data.matches.head(len(images))
    labels = {c: top[c].tolist() for c in ("rank", "system", "snapshot", "projection") if c in top}
    for k, (ax, image) in enumerate(zip(axes[1:], images)):
        ax.imshow(_log_stretch(image, floor), origin="lower", **style)
        rank = cell_text(labels["rank"][k]) if "rank" in labels else str(k + 1)
        ax.set_title(f"#{rank}  s={float(top['similarity'].iloc[k]):.3f}", fontsize=10)
        where = "  ".join(
            f"{short} {cell_text(labels[col][k])}"
            for short, col in (("sys", "system"), ("snap", "snapshot"), ("proj", "projection"))
            if col in labels
        )
        ax.text(0.5, -0.07, where, transform=ax.transAxes, ha="center", va="top", fontsize=7.5)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axes[n_panels:]:
        ax.set_axis_off()
    cax = fig.add_axes((1 - 0.8 / width, 0.15, 0.15 / width, 0.6))
    fig.colorbar(shown, cax=cax).set_label("log$_{10}$ I / I$_{peak}$", fontsize=9)
    shown_text = f"best {len(images)} matches" if len(images) else "no matches to show"
    if data.matches_seen_through and len(images):
        shown_text += f", seen through {data.matches_seen_through}"
    fig.suptitle(f"{shorten(data.target_name, 70)}: {shown_text}", fontsize=12)
    return fig


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
            color=_PRIOR_COLOUR,
            label="library prior",
        )
    if matched.size:
        dens = _density(matched, match_weights, edges, log)
        ax.stairs(dens, edges, fill=True, color=_MATCH_COLOUR, alpha=0.35, label="matches")
        ax.stairs(dens, edges, color=_MATCH_COLOUR, linewidth=1.4)
    med, q16, q84 = (stats["matches"].get(k) for k in ("median", "q16", "q84"))
    if _drawable(q16, log) and _drawable(q84, log):
        ax.axvspan(q16, q84, color=_MATCH_COLOUR, alpha=0.12, lw=0, label="matches 16–84%")
    if _drawable(med, log):
        ax.axvline(med, color=_MATCH_COLOUR, lw=2, label="matches median")
    if _drawable(stats["truth"], log):
        ax.axvline(stats["truth"], color=_TRUTH_COLOUR, lw=2, ls="--", label="truth")
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
        "matches (weighted by similarity) over the library",
        fontsize=11,
    )
    return fig


def _corner_figure(data: MatchReportData) -> Figure:
    """Lower triangle: matches coloured by similarity; diagonal: weighted 1-D densities.

    Log parameters are drawn as log10 values on linear axes, which keeps the small panels'
    ticks readable (a log axis spanning less than a decade has no labelled major tick).
    """
    names = data.param_names
    n = len(names)
    if data.matches.empty or n == 0:
        fig = Figure(figsize=(6, 2))
        fig.text(0.5, 0.5, "no matches to show", ha="center", va="center", fontsize=14)
        return fig
    table = data.matches.iloc[np.argsort(data.matches["similarity"].to_numpy(np.float64))]
    similarity = table["similarity"].to_numpy(np.float64)  # ascending: best drawn last
    weights = _match_weights(table)
    axis = {name: _corner_axis(data, table, name) for name in names}
    fig = Figure(figsize=(1.7 * n + 1.0, 1.7 * n + 0.8))
    fig.subplots_adjust(left=0.1, right=0.97, bottom=0.11, top=0.95, wspace=0.1, hspace=0.1)
    axes = fig.subplots(n, n, squeeze=False)
    scatter = None
    for i, y_name in enumerate(names):
        for j, x_name in enumerate(names):
            ax = axes[i, j]
            if j > i:
                ax.set_axis_off()
                continue
            x, x_span, x_truth, _ = axis[x_name]
            if i == j:
                _corner_diagonal(ax, x, weights, x_span, x_truth)
            else:
                y, y_span, y_truth, _ = axis[y_name]
                scatter = ax.scatter(
                    x,
                    y,
                    c=similarity,
                    s=float(np.clip(900 / len(x), 5, 36)),
                    cmap="viridis",
                    vmin=similarity.min(),
                    vmax=similarity.max(),
                    edgecolors="none",
                )
                _corner_truth(ax, x_truth, y_truth)
                ax.set_ylim(*y_span)
            ax.set_xlim(*x_span)
            _corner_ticks(ax, i, j, n, axis[x_name][3], axis[y_name][3])
    if scatter is not None:
        cax = fig.add_axes((0.6, 0.86, 0.3, 0.018))
        fig.colorbar(scatter, cax=cax, orientation="horizontal").set_label("similarity")
    fig.text(0.6, 0.79, "——  weighted median", color=_MATCH_COLOUR, fontsize=11)
    if any(entry[2] is not None for entry in axis.values()):
        fig.text(0.6, 0.75, "- - -  truth", color=_TRUTH_COLOUR, fontsize=11)
    fig.text(
        0.6,
        0.93,
        f"{shorten(data.target_name, 40)}\n{len(table)} matches",
        fontsize=12,
        va="bottom",
    )
    return fig


def _corner_axis(
    data: MatchReportData, table: pd.DataFrame, name: str
) -> tuple[np.ndarray, tuple[float, float], float | None, str]:
    """(values, span, truth, label) of one corner axis; log10 of positive values if log."""
    values = table[name].to_numpy(np.float64)
    truth = parameter_stats(data, name)["truth"]
    unit = data.units.get(name, "")
    label = f"{name}\n[{unit}]" if unit else name
    if name in data.log_params and (values > 0).any():
        with np.errstate(divide="ignore", invalid="ignore"):
            values = np.where(values > 0, np.log10(np.where(values > 0, values, 1.0)), np.nan)
        truth = math.log10(truth) if truth is not None and truth > 0 else None
        label = f"log$_{{10}}$ {label}"
    low, high = _span([_finite(values)], False)
    margin = 0.05 * (high - low)
    return values, (low - margin, high + margin), truth, label


def _corner_diagonal(
    ax: Axes,
    x: np.ndarray,
    weights: np.ndarray,
    span: tuple[float, float],
    truth: float | None,
) -> None:
    """Weighted density of one parameter (values ``x``, (n,)) and its weighted median."""
    keep = np.isfinite(x)
    edges = _edges(span, False, n_bins=int(np.clip(2 * np.sqrt(keep.sum()), 6, _N_BINS)))
    if keep.any():
        dens = _density(x[keep], weights[keep], edges, False)
        ax.stairs(dens, edges, fill=True, color=_MATCH_COLOUR, alpha=0.35)
        ax.stairs(dens, edges, color=_MATCH_COLOUR, linewidth=1.2)
        if weights[keep].sum() > 0:  # no median of matches that all weigh nothing
            median = weighted_quantiles(x[keep], weights[keep], (0.5,))[0]
            ax.axvline(float(median), color=_MATCH_COLOUR)
    if truth is not None:
        ax.axvline(truth, color=_TRUTH_COLOUR, lw=1.5, ls="--")
    ax.set_yticks([])


def _corner_truth(ax: Axes, tx: float | None, ty: float | None) -> None:
    if tx is not None:
        ax.axvline(tx, color=_TRUTH_COLOUR, lw=1, ls="--")
    if ty is not None:
        ax.axhline(ty, color=_TRUTH_COLOUR, lw=1, ls="--")
    if tx is not None and ty is not None:
        ax.plot([tx], [ty], marker="s", color=_TRUTH_COLOUR, ms=5)


def _corner_ticks(ax: Axes, i: int, j: int, n: int, x_label: str, y_label: str) -> None:
    ax.tick_params(labelsize=7.5)
    ax.xaxis.set_major_locator(MaxNLocator(4, prune="both"))
    if i != j:
        ax.yaxis.set_major_locator(MaxNLocator(3))
    if i == n - 1:
        ax.set_xlabel(x_label, fontsize=9)
        for label in ax.get_xticklabels():
            label.set_rotation(35)
            label.set_horizontalalignment("right")
    else:
        ax.xaxis.set_major_formatter(NullFormatter())
    if j == 0 and i > 0:
        ax.set_ylabel(y_label, fontsize=9)
    elif i != j:
        ax.yaxis.set_major_formatter(NullFormatter())
