"""Figures and tables of the library evaluation (used by :mod:`protomatch.evaluation.library`).

Figures are drawn on Agg canvases without pyplot, so no global backend or figure registry
is touched. Tables are Markdown built from the metrics record alone, so they can be
rebuilt from any metrics.json.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from protomatch._png import plain_text
from protomatch._png import png_bytes as _png_bytes
from protomatch.evaluation._calibration_report import calibration_figure, calibration_table
from protomatch.evaluation._markdown import fmt, nan_if_none, table_row
from protomatch.report.data import STRETCH_FLOOR

_PAIRS_SHOWN = 6
_OURS = "#d1495b"
_NOMINAL = "0.35"
METHOD_LABELS = {
    "protomatch": "protomatch",
    "pixels": "raw pixels",
    "pixels_strong": "strong pixels",
    "pca": "PCA",
    "random": "random",
    "prior": "prior",
}


@dataclass(frozen=True, eq=False)
class FigureData:
    """What the figures show.

    Attributes
    ----------
    images : ndarray, shape (N, H, W)
        Linear, peak-1 store images (a memory map is fine).
    systems : ndarray, shape (N,)
        System id of each store image.
    pair_a, pair_b : ndarray, shape (B,)
        Store rows of the test pairs.
    predicted, true : ndarray, shape (B,)
        Predicted and true similarity of each test pair.
    names : tuple of str
        Parameter names.
    log10 : tuple of bool
        Whether each parameter is log-scaled.
    truth : ndarray, shape (Q, P)
        Queries' true parameters, in the error space (log10 where log-scaled).
    quantiles : ndarray, shape (Q, P, 5)
        protomatch's recovered median, q16, q84, q2.5, q97.5, same space.
    metrics : Mapping
        The metrics record (titles quote it).
    """

    images: np.ndarray
    systems: np.ndarray
    pair_a: np.ndarray
    pair_b: np.ndarray
    predicted: np.ndarray
    true: np.ndarray
    names: tuple[str, ...]
    log10: tuple[bool, ...]
    truth: np.ndarray
    quantiles: np.ndarray
    metrics: Mapping[str, Any]


@plain_text()
def render_figures(data: FigureData) -> dict[str, bytes]:
    """Draw every figure of the library evaluation.

    Parameters
    ----------
    data : FigureData
        What the figures show.

    Returns
    -------
    dict of str to bytes
        PNG bytes by file name.
    """
    figures = {
        "similarity_hexbin.png": _hexbin_figure(data),
        "similarity_errors.png": _error_figure(data),
        "recovery.png": _recovery_figure(data),
        "coverage.png": _coverage_figure(data),
        "calibration.png": calibration_figure(
            data.metrics["recovery"]["parameters"], "protomatch", "library test systems"
        ),
    }
    for name, (title, rows) in _pair_groups(data).items():
        figures[name] = _pairs_figure(data, rows, title)
    return {name: _png_bytes(fig) for name, fig in figures.items()}


# --------------------------------------------------------------------------- similarity


def _hexbin_figure(data: FigureData) -> Figure:
    s = data.metrics["similarity"]
    fig = Figure(figsize=(5.6, 5.0))
    ax = fig.add_subplot()
    cells = ax.hexbin(
        data.true, data.predicted, gridsize=36, extent=(-1, 1, -1, 1), mincnt=1, bins="log"
    )
    ax.plot([-1, 1], [-1, 1], color="k", lw=1, ls="--", label="y = x")
    ax.set(xlim=(-1.02, 1.02), ylim=(-1.02, 1.02), aspect="equal")
    ax.set_xlabel("true similarity (cosine of normalised parameters)")
    ax.set_ylabel("predicted similarity (cosine of embeddings)")
    ax.legend(loc="upper left", frameon=False)
    fig.colorbar(cells, ax=ax, shrink=0.8).set_label("pairs")
    ax.set_title(
        f"{s['n_pairs']} test pairs: MSE {fmt(s['mse'])} (trivial {fmt(s['mse_trivial'])}), "
        f"Spearman ρ {fmt(s['spearman'])}",
        fontsize=10,
    )
    fig.tight_layout()
    return fig


def _error_figure(data: FigureData) -> Figure:
    s = data.metrics["similarity"]
    hist = s["error_histogram"]
    edges, counts = np.asarray(hist["edges"]), np.asarray(hist["counts"])
    fig = Figure(figsize=(6.0, 3.8))
    ax = fig.add_subplot()
    ax.stairs(counts, edges, fill=True, color=_OURS, alpha=0.8)
    ax.axvline(0, color="k", lw=1)
    for edge in (-0.1, 0.1):
        ax.axvline(edge, color=_NOMINAL, lw=0.8, ls=":")
    ax.set_xlabel("predicted − true similarity")
    ax.set_ylabel("pairs")
    ax.set_xlim(-2, 2)
    accuracy = s["accuracy"]
    ax.set_title(
        f"errors of {s['n_pairs']} test pairs; of the {accuracy['n_pairs']} predicted in "
        f"[{accuracy['window'][0]}, {accuracy['window'][1]}], {fmt(accuracy['fraction'], 2)} "
        f"are within ±{accuracy['tolerance']}",
        fontsize=9.5,
    )
    fig.tight_layout()
    return fig


def _pair_groups(data: FigureData) -> dict[str, tuple[str, np.ndarray]]:
    """Pair indices of the most, middling and least similar pairs by predicted similarity.

    Pairs within one system are near-duplicates and pairs repeat, so only distinct pairs of
    different systems are shown (all pairs if there is none).
    """
    a, b = np.asarray(data.pair_a), np.asarray(data.pair_b)
    keep = data.systems[a] != data.systems[b]
    if not keep.any():
        keep = np.ones(len(a), bool)
    candidates = np.flatnonzero(keep)
    key = np.stack([np.minimum(a, b), np.maximum(a, b)], axis=1)[candidates]
    _, first = np.unique(key, axis=0, return_index=True)
    candidates = candidates[np.sort(first)]
    order = candidates[np.argsort(-data.predicted[candidates], kind="stable")]
    n = min(_PAIRS_SHOWN, len(order))
    middle = max(0, len(order) // 2 - n // 2)
    return {
        "pairs_most_similar.png": ("most similar test pairs (predicted)", order[:n]),
        "pairs_middling.png": ("middling test pairs (predicted)", order[middle : middle + n]),
        "pairs_least_similar.png": ("least similar test pairs (predicted)", order[::-1][:n]),
    }


def _pairs_figure(data: FigureData, pairs: np.ndarray, title: str) -> Figure:
    columns = 3
    rows = max(1, math.ceil(len(pairs) / columns))
    fig = Figure(figsize=(3.4 * columns, 2.1 * rows + 0.5), layout="constrained")
    grid = fig.subfigures(rows, columns, squeeze=False, wspace=0.04, hspace=0.04)
    style = {"cmap": "inferno", "vmin": math.log10(STRETCH_FLOOR), "vmax": 0.0, "origin": "lower"}
    for cell, pair in zip(grid.ravel(), pairs):
        axes = cell.subplots(1, 2)
        for ax, row in zip(axes, (data.pair_a[pair], data.pair_b[pair])):
            image = np.asarray(data.images[row], dtype=np.float64)
            ax.imshow(np.log10(np.maximum(image, STRETCH_FLOOR)), **style)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_xlabel(f"system {data.systems[row]}", fontsize=7.5, labelpad=2)
        cell.suptitle(
            f"predicted {data.predicted[pair]:.2f}   true {data.true[pair]:.2f}", fontsize=9.5
        )
    for cell in grid.ravel()[len(pairs) :]:
        cell.set_facecolor("white")
    fig.suptitle(f"{title}; log display stretch, 4 decades", fontsize=11)
    return fig


# --------------------------------------------------------------------------- recovery


def _recovery_figure(data: FigureData) -> Figure:
    n = len(data.names)
    columns = min(4, n)
    rows = math.ceil(n / columns)
    fig = Figure(figsize=(3.3 * columns, 3.2 * rows + 0.4))
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    recovery = data.metrics["recovery"]
    for p, (ax, name) in enumerate(zip(axes, data.names)):
        _recovery_panel(ax, data, p, recovery["parameters"][name])
        ax.set_title(name, fontsize=10)
    for ax in axes[n:]:
        ax.set_axis_off()
    fig.suptitle(
        f"parameter recovery: similarity-weighted median of the top {recovery['k']} matches "
        "(bars: 16–84 %) vs the truth",
        fontsize=11,
    )
    fig.tight_layout()
    return fig


def _recovery_panel(ax: Axes, data: FigureData, p: int, record: Mapping[str, Any]) -> None:
    log = data.log10[p]
    truth, q = data.truth[:, p], data.quantiles[:, p]
    show = (lambda v: np.power(10.0, v)) if log else (lambda v: v)
    x, median, low, high = show(truth), show(q[:, 0]), show(q[:, 1]), show(q[:, 2])
    finite = np.isfinite(x) & np.isfinite(median) & np.isfinite(low) & np.isfinite(high)
    x, median, low, high = x[finite], median[finite], low[finite], high[finite]
    yerr = np.stack([np.clip(median - low, 0, None), np.clip(high - median, 0, None)])
    ax.errorbar(
        x, median, yerr=yerr, fmt="o", ms=2.5, color=_OURS, ecolor=_OURS, elinewidth=0.5, alpha=0.35
    )
    values = np.concatenate([x, low, high]) if x.size else np.array([1.0, 10.0])
    span = (float(values.min()), float(values.max()))
    ax.plot(span, span, color="k", lw=1, ls="--")
    if log:
        ax.set_xscale("log")
        ax.set_yscale("log")
    unit = record.get("unit") or ""
    label = f" [{unit}]" if unit else ""
    ax.set_xlabel(f"true{label}", fontsize=8.5)
    ax.set_ylabel(f"recovered{label}", fontsize=8.5)
    scores = record["methods"]["protomatch"]
    error_unit = record.get("error_unit") or ""
    ax.text(
        0.03,
        0.97,
        f"error {fmt(scores['median_abs_error'], 3)} {error_unit}\n"
        f"prior {fmt(record['methods']['prior']['median_abs_error'], 3)}",
        transform=ax.transAxes,
        va="top",
        fontsize=7.5,
    )
    ax.tick_params(labelsize=7.5)


def _coverage_figure(data: FigureData) -> Figure:
    parameters = data.metrics["recovery"]["parameters"]
    names = list(parameters)
    c68 = [nan_if_none(parameters[n]["methods"]["protomatch"]["coverage68"]) for n in names]
    c95 = [nan_if_none(parameters[n]["methods"]["protomatch"]["coverage95"]) for n in names]
    x = np.arange(len(names))
    fig = Figure(figsize=(max(6.0, 1.0 * len(names) + 2), 4.0))
    ax = fig.add_subplot()
    ax.bar(x - 0.2, c68, width=0.4, color=_OURS, label="68 % interval")
    ax.bar(x + 0.2, c95, width=0.4, color="#1b6ca8", label="95 % interval")
    ax.axhline(0.68, color=_OURS, ls="--", lw=1)
    ax.axhline(0.95, color="#1b6ca8", ls="--", lw=1)
    ax.set_xticks(x, names, rotation=25, ha="right", fontsize=8.5)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("fraction of queries whose truth is inside")
    ax.legend(loc="lower right", fontsize=8.5)
    ax.set_title("interval coverage of protomatch's recovered parameters (dashed: nominal)")
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- tables


def markdown_tables(metrics: Mapping[str, Any]) -> str:
    """metrics.md: a retrieval table (methods x metrics) and a parameter-recovery table.

    Parameters
    ----------
    metrics : Mapping
        The metrics record of :func:`protomatch.evaluation.library.evaluate_model` (as in
        metrics.json).

    Returns
    -------
    str
        Markdown text.
    """
    where = metrics["evaluated_on"]
    retrieval = metrics["retrieval"]
    similarity = metrics["similarity"]
    ks = metrics["config"]["k"]
    lines = [
        f"Evaluated on {where['n_images']} images of {len(where['systems'])} "
        f"{'test-split' if where['basis'] == 'test' else 'unseen'} systems never used in "
        f"training ({where['n_queries']} as queries). Each query is ranked against library "
        "images of other systems only (its own system's projections and snapshots are "
        f"near-duplicates). Relevant: true similarity ≥ {retrieval['relevance_threshold']} "
        f"({fmt(retrieval['relevant_fraction'])} of candidates on average).",
        "",
    ]
    header = ["method", "similarity MSE", "Spearman ρ"]
    header += [f"{name}@{k}" for k in ks for name in ("precision", "nDCG")]
    lines += [table_row(header), table_row(["---"] + ["---:"] * (len(header) - 1))]
    for method, scores in retrieval["methods"].items():
        cells = [METHOD_LABELS.get(method, method), "–", "–"]
        if method == "protomatch":
            cells[1] = f"{fmt(similarity['mse'])} (trivial {fmt(similarity['mse_trivial'])})"
            cells[2] = fmt(similarity["spearman"])
        cells += [fmt(scores[f"{name}@{k}"]) for k in ks for name in ("precision", "ndcg")]
        lines.append(table_row(cells))
    recovery = metrics["recovery"]
    lines += [
        "",
        f"Parameter recovery from the top {recovery['k']} matches (median absolute error; "
        "dex for log-scaled parameters; prior: the other systems' median; oracle: the top "
        "matches by the true similarity label, what a perfect network would achieve; the "
        "last three columns are protomatch's: error over the prior's 16-84 % half-width and "
        "the coverage of its 68 % / 95 % intervals).",
        "",
    ]
    header = [
        "parameter",
        "protomatch",
        "prior",
        "raw-pixel kNN",
        "strong-pixel kNN",
        "PCA kNN",
        "oracle kNN",
        "error / prior spread",
        "68 % coverage",
        "95 % coverage",
    ]
    lines += [table_row(header), table_row(["---"] + ["---:"] * (len(header) - 1))]
    for name, record in recovery["parameters"].items():
        scores = record["methods"]
        unit = record.get("error_unit") or ""
        label = f"{name} [{unit}]" if unit else name
        cells = [label] + [
            fmt(scores[m]["median_abs_error"], 3)
            for m in ("protomatch", "prior", "pixels", "pixels_strong", "pca", "oracle")
        ]
        ours = scores["protomatch"]
        cells += [
            fmt(ours["error_over_prior_spread"], 2),
            fmt(ours["coverage68"], 2),
            fmt(ours["coverage95"], 2),
        ]
        lines.append(table_row(cells))
    lines += calibration_table(recovery["parameters"], "protomatch")
    return "\n".join(lines) + "\n"


def describe_metrics(metrics: Mapping[str, Any], out: Path) -> str:
    """A compact summary of the main numbers and the files written.

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
    where = metrics["evaluated_on"]
    s = metrics["similarity"]
    k = metrics["config"]["k"][0]
    methods = metrics["retrieval"]["methods"]
    retrieval = ", ".join(
        f"{METHOD_LABELS[m]} {fmt(v[f'precision@{k}'], 2)}/{fmt(v[f'ndcg@{k}'], 2)}"
        for m, v in methods.items()
    )
    recovery = metrics["recovery"]
    errors = ", ".join(
        f"{name} {fmt(r['methods']['protomatch']['median_abs_error'], 3)}"
        f"{' dex' if r['log10'] else ''} ({fmt(r['methods']['prior']['median_abs_error'], 3)})"
        for name, r in recovery["parameters"].items()
    )
    lines = [
        f"evaluated on {where['n_images']} images of {len(where['systems'])} {where['basis']} "
        f"systems, {where['n_queries']} queries, own system excluded",
        *(f"note: {note}" for note in where.get("notes", [])),
        f"similarity of {s['n_pairs']} pairs: MSE {fmt(s['mse'])} (trivial "
        f"{fmt(s['mse_trivial'])}), Spearman {fmt(s['spearman'])}, accuracy "
        f"{fmt(s['accuracy']['fraction'], 2)} of {s['accuracy']['n_pairs']} pairs predicted "
        f">= {s['accuracy']['window'][0]}",
        f"precision@{k}/nDCG@{k}: {retrieval}",
        f"recovery error, top {recovery['k']} (prior): {errors}",
        f"metrics: {out / 'metrics.json'}, {out / 'metrics.md'}; figures: {out}/*.png",
    ]
    return "\n".join(lines)
