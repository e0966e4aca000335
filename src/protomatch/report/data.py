"""What the match report shows, and the text formatting its figures and page share.

:class:`MatchReportData` is everything the report of one target needs, :class:`ObservedView`
the observation as it was read (before it was cut to the library's field); :data:`STRETCH_FLOOR`
is the display floor of the log stretch of every image shown (the match report's and the
evaluation's). The number formatting here keeps the figures and the HTML page quoting the same
digits. This module imports no other module of the report, so the figures
(:mod:`protomatch.report.figures`) and the page (:mod:`protomatch.report.html`) both build on it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "MATCH_COLOUR",
    "PRIOR_COLOUR",
    "STRETCH_FLOOR",
    "TRUTH_COLOUR",
    "MatchReportData",
    "ObservedView",
    "cell_text",
    "plain_number",
    "shorten",
    "verdict_phrase",
]

#: Display floor of the log stretch, relative to the image peak (four decades shown).
STRETCH_FLOOR = 1e-4

#: Colours the figures share: the matches, the library prior, the truth and the target.
MATCH_COLOUR = "#d1495b"
PRIOR_COLOUR = "0.72"
TRUTH_COLOUR = "#1b6ca8"


@dataclass(frozen=True, eq=False)
class ObservedView:
    """The observation as read, on its own pixel grid, and what says how large things are on it.

    Image coordinates are 0-based (row, column) array indices with pixel centres at whole
    numbers; rows go up (north up, east left when no WCS says otherwise).

    Attributes
    ----------
    image : ndarray, shape (H, W)
        The observation as read, float32, NaN (blanked pixels) kept.
    wcs_header : Mapping or None
        Celestial WCS keywords (an ``astropy.io.fits.Header``, or any mapping of FITS
        keywords) of ``image``; None for a plain array.
    au_per_pixel : float or None
        Physical side of one observation pixel [AU]; None when unknown (no distance).
    beam_arcsec : tuple of 3 floats or None
        (major FWHM [arcsec], minor FWHM [arcsec], position angle [deg east of north]).
    pixel_scale_arcsec : float or None
        Side of one observation pixel [arcsec].
    field_box : tuple of 3 floats or None
        (centre row, centre column, side) [observation pixels] of the square that was cut,
        resampled and compared with the library.
    """

    image: np.ndarray
    wcs_header: Mapping[str, Any] | None = None
    au_per_pixel: float | None = None
    beam_arcsec: tuple[float, float, float] | None = None
    pixel_scale_arcsec: float | None = None
    field_box: tuple[float, float, float] | None = None

    def __post_init__(self) -> None:
        if np.ndim(self.image) != 2:
            raise ValueError(f"observed image must be 2-D, got shape {np.shape(self.image)}")
        for label, value in (
            ("au_per_pixel", self.au_per_pixel),
            ("pixel_scale_arcsec", self.pixel_scale_arcsec),
        ):
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ValueError(f"{label} must be positive and finite, got {value}")


@dataclass(frozen=True, eq=False)
class MatchReportData:
    """Everything the report shows for one target (``eq=False``: it holds arrays).

    Attributes
    ----------
    target_name : str
        Name of the observation, e.g. its file name.
    target_image : ndarray, shape (H, W)
        Prepared target image, linear intensity with peak 1.
    match_images : ndarray, shape (n_show, H, W)
        Linear images of the best matches, in rank order.
    matches : DataFrame
        One row per match in rank order: ``rank, similarity, image_id, system, snapshot,
        projection, source`` and one column per parameter (physical units).
    summary : Mapping
        Summary statistics, written verbatim as ``summary.json``: at least ``parameters``,
        by parameter name ``unit``, ``matches`` and ``prior`` quantiles (``median``, ``q16``,
        ``q84``, ``q2.5``, ``q97.5``) and ``truth`` (None if unknown), as
        :func:`protomatch.matching.summary.summarise` makes them.
    param_names : tuple of str
        Parameters to show, in order.
    units : Mapping
        Unit string of each parameter ("Msun", "AU", ...).
    log_params : frozenset of str
        Parameters spanning several decades, shown on log axes.
    prior : DataFrame
        Parameters of the whole library, one column per parameter.
    truth : Mapping or None
        True parameters when the target is a library image.
    warnings, notes : tuple of str
        Messages for the reader; warnings are shown first and prominently.
    display_floor : float
        Lowest intensity shown, relative to each image's peak (above a noisy target's noise).
    matches_seen_through : str
        How the match images were altered to look like the target, e.g. "the observation's
        beam" ("" if shown as stored).
    observed : ObservedView or None
        The observation as read, for the figure of what was compared (None: not drawn).
    """

    target_name: str
    target_image: np.ndarray
    match_images: np.ndarray
    matches: pd.DataFrame
    summary: Mapping[str, Any]
    param_names: tuple[str, ...]
    units: Mapping[str, str]
    log_params: frozenset[str]
    prior: pd.DataFrame
    truth: Mapping[str, float] | None
    warnings: tuple[str, ...]
    notes: tuple[str, ...]
    display_floor: float = STRETCH_FLOOR
    matches_seen_through: str = ""
    observed: ObservedView | None = None

    def __post_init__(self) -> None:
        if not 0 < self.display_floor < 1:
            raise ValueError(f"display_floor must be in (0, 1), got {self.display_floor}")
        if np.ndim(self.target_image) != 2:
            raise ValueError(f"target_image must be 2-D, got shape {np.shape(self.target_image)}")
        if np.ndim(self.match_images) != 3:
            raise ValueError(f"match_images must be 3-D, got shape {np.shape(self.match_images)}")
        for frame, label in ((self.matches, "matches"), (self.prior, "prior")):
            missing = [name for name in self.param_names if name not in frame.columns]
            if missing:
                raise ValueError(f"{label} lacks parameter columns {missing}")
        if "similarity" not in self.matches.columns:
            raise ValueError("matches lacks a 'similarity' column")
        summarised = self.summary.get("parameters") or {}
        missing = [name for name in self.param_names if name not in summarised]
        if missing:
            raise ValueError(f"summary lacks the statistics of parameters {missing}")


def shorten(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, ending in "…" when cut.

    Parameters
    ----------
    text : str
        Any text, e.g. a file name.
    limit : int
        Largest length returned (at least 1).

    Returns
    -------
    str
        ``text`` itself if short enough.
    """
    return text if len(text) <= limit else text[: limit - 1] + "…"


def plain_number(value: Any) -> str:
    """A number with about three significant figures, as plain text.

    Parameters
    ----------
    value : Any
        An integer (shown whole), anything ``float`` accepts, or something else (shown as
        ``str``).

    Returns
    -------
    str
        "–" for None and non-finite numbers; scientific notation as ``1.23e-5`` outside
        [1e-3, 1e4).
    """
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return str(value)
    try:
        x = float(value)
    except (TypeError, ValueError):
        return "–" if value is None else str(value)
    if not math.isfinite(x):
        return "–"
    if x == 0:
        return "0"
    if 1e3 <= abs(x) < 1e4:
        return f"{x:.0f}"  # ".3g" would write 1600 as 1.6e+03
    if 1e-3 <= abs(x) < 1e3:
        return f"{x:.3g}"
    return f"{x:.2e}".replace("e+0", "e").replace("e-0", "e-").replace("e+", "e")


def cell_text(value: Any) -> str:
    """Text of a table cell: floats by :func:`plain_number`, anything else by ``str``.

    Parameters
    ----------
    value : Any
        A cell of the matches table.

    Returns
    -------
    str
        The cell's text.
    """
    if isinstance(value, (float, np.floating)):
        return plain_number(float(value))
    return str(value)


def verdict_phrase(entry: Mapping[str, Any], observations: int) -> str:
    """One parameter's verdict as a short sentence, e.g. "beats pixels_strong (...)".

    Parameters
    ----------
    entry
        One parameter of the verdict block.
    observations
        How many mock observations it was measured on.
    """
    baseline, verdict = entry["baseline"], entry["verdict"]
    unit = f" {entry['error_unit']}" if entry.get("error_unit") else ""
    errors = (
        f"median error {plain_number(entry['error'])} vs {baseline}'s "
        f"{plain_number(entry['baseline_error'])}{unit}, "
        f"prior {plain_number(entry['prior_error'])}, on {observations} mock observations"
    )
    if not entry.get("constrained", True):
        return f"no method beats the prior here ({errors})"
    if verdict == "better":
        return f"beats {baseline} ({errors})"
    if verdict == "worse":
        return f"does NOT beat {baseline}: worse ({errors})"
    return f"does not beat {baseline}: not resolved ({errors})"


def calibration_phrase(calibration: Mapping[str, Any] | None) -> str:
    """Whether a target's intervals are calibrated, and on what, as one sentence.

    Parameters
    ----------
    calibration
        The summary's ``calibration`` block (``applied`` with ``fitted_on`` and ``ranking``,
        or a ``reason``); None for a summary without one.
    """
    if not calibration or not calibration.get("applied"):
        reason = (calibration or {}).get("reason", "no calibration given")
        return (
            f"intervals NOT calibrated ({reason}): they are the matches' own quantiles, "
            "which tend to be too narrow"
        )
    return (
        f"intervals calibrated on {calibration['fitted_on']}, ranked by "
        f"{calibration['ranking']}: each 68 % / 95 % interval is widened or narrowed about "
        "the median so that it held the truth that often there"
    )
