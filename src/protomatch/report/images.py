"""Image panels of the match report: the target beside its best matches, and the residual.

The target is shown as it was compared (on the library's grid), the matches as they were
compared (through the target's beam when it has one), all at the same log stretch relative to
each image's peak; below the target, target minus the best match, each over its peak. Drawn
on an Agg canvas without pyplot. Used by :mod:`protomatch.report.figures` only.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from protomatch.report.data import (
    STRETCH_FLOOR,
    TRUTH_COLOUR,
    MatchReportData,
    cell_text,
    plain_number,
    shorten,
)

__all__ = ["matches_figure", "residual"]


def _log_stretch(image: np.ndarray, floor: float = STRETCH_FLOOR) -> np.ndarray:
    """log10 of the image relative to its peak, floored at ``floor``; shape kept."""
    image = np.nan_to_num(np.asarray(image, dtype=np.float64), nan=0.0)
    peak = image.max()
    scaled = image / peak if peak > 0 else np.zeros_like(image)
    return np.log10(np.maximum(scaled, floor))


def _peak_normalised(image: np.ndarray) -> np.ndarray:
    """The image over its peak, NaN as 0, float64; all zeros if it has no positive peak."""
    image = np.nan_to_num(np.asarray(image, dtype=np.float64), nan=0.0)
    peak = image.max()
    return image / peak if peak > 0 else np.zeros_like(image)


def residual(target: np.ndarray, match: np.ndarray) -> np.ndarray:
    """Target minus a match, each over its own peak, as the two were compared.

    Parameters
    ----------
    target, match : ndarray, shape (H, W)
        Linear images on the same grid.

    Returns
    -------
    ndarray, shape (H, W)
        ``target / max(target) - match / max(match)`` (NaN as 0), float64.
    """
    return _peak_normalised(target) - _peak_normalised(match)


def _matches_layout(n_images: int) -> tuple[Figure, np.ndarray, float]:
    """Figure and a 2-row grid of axes: column 0 target over residual, then the matches."""
    n_rows = 2 if n_images else 1
    n_cols = 1 + math.ceil(n_images / 2)
    width = max(2.15 * n_cols + 1.0, 5.5)  # inches; 1 inch on the right for the colour bar
    height = 2.75 * n_rows + 0.6
    fig = Figure(figsize=(width, height))
    fig.subplots_adjust(
        left=0.01,
        right=1 - 1.0 / width,
        top=1 - 0.7 / height,
        bottom=0.75 / height,
        wspace=0.06,
        hspace=0.42,
    )
    return fig, fig.subplots(n_rows, n_cols, squeeze=False), width


def _frame(ax: Axes, colour: str) -> None:
    for spine in ax.spines.values():
        spine.set_edgecolor(colour)
        spine.set_linewidth(4)


def _residual_panel(ax: Axes, data: MatchReportData, best: np.ndarray) -> None:
    """Target minus the best match (peak-normalised), diverging colours, symmetric limits."""
    diff = residual(data.target_image, best)
    limit = max(float(np.abs(diff).max()), 1e-6)
    shown = ax.imshow(diff, origin="lower", cmap="RdBu_r", vmin=-limit, vmax=limit)
    rms = float(np.sqrt(np.mean(diff**2)))
    ax.set_title(f"target − #1   rms {plain_number(rms)}", fontsize=10)
    cax = ax.inset_axes((0.1, -0.1, 0.8, 0.05))
    bar = ax.figure.colorbar(shown, cax=cax, orientation="horizontal")
    bar.ax.tick_params(labelsize=7)
    bar.set_label("I / I$_{peak}$ difference", fontsize=7.5, labelpad=1, parse_math=True)


def _match_caption(top: pd.DataFrame, k: int) -> tuple[str, str]:
    """Title (rank, similarity) and the system / snapshot / projection line of match ``k``."""
    row = top.iloc[k]
    rank = cell_text(row["rank"]) if "rank" in top else str(k + 1)
    where = "  ".join(
        f"{short} {cell_text(row[col])}"
        for short, col in (("sys", "system"), ("snap", "snapshot"), ("proj", "projection"))
        if col in top
    )
    return f"#{rank}  s={float(row['similarity']):.3f}", where


def matches_figure(data: MatchReportData) -> Figure:
    """The target and its residual (column 0) beside the best matches, same log stretch.

    Parameters
    ----------
    data : MatchReportData
        Its ``target_image``, ``match_images``, ``matches`` (rank, similarity, system,
        snapshot, projection), ``display_floor`` and ``matches_seen_through``.

    Returns
    -------
    Figure
        Two rows when there are matches (target over target − best match), one otherwise.
    """
    images = np.asarray(data.match_images)[: len(data.matches)]
    fig, grid, width = _matches_layout(len(images))
    floor = data.display_floor
    style = {"cmap": "inferno", "vmin": math.log10(floor), "vmax": 0.0}
    target_ax = grid[0, 0]
    shown = target_ax.imshow(_log_stretch(data.target_image, floor), origin="lower", **style)
    target_ax.set_title("target", fontsize=11, fontweight="bold", color=TRUTH_COLOUR)
    target_ax.text(
        0.5,
        -0.07,
        shorten(data.target_name, 28),
        transform=target_ax.transAxes,
        ha="center",
        va="top",
        fontsize=7.5,
    )
    _frame(target_ax, TRUTH_COLOUR)
    match_axes = list(grid[:, 1:].ravel())
    top = data.matches.head(len(images))
    for k, (ax, image) in enumerate(zip(match_axes, images)):
        ax.imshow(_log_stretch(image, floor), origin="lower", **style)
        title, where = _match_caption(top, k)
        ax.set_title(title, fontsize=10)
        ax.text(0.5, -0.07, where, transform=ax.transAxes, ha="center", va="top", fontsize=7.5)
    if len(images):
        _residual_panel(grid[1, 0], data, images[0])
    for ax in grid.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in match_axes[len(images) :]:
        ax.set_axis_off()
    cax = fig.add_axes((1 - 0.8 / width, 0.15, 0.15 / width, 0.6))
    fig.colorbar(shown, cax=cax).set_label("log$_{10}$ I / I$_{peak}$", fontsize=9, parse_math=True)
    shown_text = f"best {len(images)} matches" if len(images) else "no matches to show"
    if data.matches_seen_through and len(images):
        shown_text += f", seen through {data.matches_seen_through}"
    fig.suptitle(f"{shorten(data.target_name, 70)}: {shown_text}", fontsize=12)
    return fig
