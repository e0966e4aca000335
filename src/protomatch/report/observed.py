"""The figure of the observation as read: its own grid, beam, physical scale, compared field.

``observation.png`` shows what the match started from, before the library's field was cut
out of it: the observation on its own pixels (on the sky when it has a celestial WCS), its
beam as an ellipse in a corner, a scale bar in AU when the distance is known, and the square
that was compared outlined. Drawn on an Agg canvas without pyplot. Used by
:mod:`protomatch.report.figures` only.
"""

from __future__ import annotations

import logging
import math
import textwrap
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Ellipse, Rectangle

from protomatch.library.fits_header import sky_per_pixel
from protomatch.optics.orientation import array_position_angle
from protomatch.report.data import ObservedView, plain_number, shorten

__all__ = ["beam_ellipse_px", "observation_figure", "scale_bar_au"]

log = logging.getLogger(__name__)

#: Lengths a scale bar may have [AU], smallest first.
SCALE_BAR_LENGTHS_AU = (10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0)
_BOX_COLOUR = "#33d1ff"
_CAPTION_CHARACTERS = 95  # a line of 8.5-point text across the 6.6-inch figure


def beam_ellipse_px(
    beam_arcsec: tuple[float, float, float],
    pixel_scale_arcsec: float,
    sky_per_pixel_arcsec: tuple[tuple[float, float], ...] | None = None,
) -> tuple[float, float, float]:
    """A beam as a matplotlib ellipse on an image drawn with ``origin="lower"``.

    Parameters
    ----------
    beam_arcsec : tuple of 3 floats
        (major FWHM [arcsec], minor FWHM [arcsec], position angle [deg east of north]); a
        minor axis larger than the major one swaps them (the angle turns by 90°).
    pixel_scale_arcsec : float
        Side of one pixel [arcsec].
    sky_per_pixel_arcsec : tuple or None
        ((east per column, east per row), (north per column, north per row)) [arcsec] from
        the celestial WCS; None: north up, east left, so the position angle turns
        counter-clockwise from up.

    Returns
    -------
    tuple of 3 floats
        (width [px] = major FWHM, height [px] = minor FWHM, angle [deg] of the major axis
        counter-clockwise from the +column axis), as ``Ellipse(xy, width, height, angle)``
        takes them.
    """
    major, minor, pa = (float(v) for v in beam_arcsec)
    if minor > major:
        major, minor, pa = minor, major, pa + 90.0
    # array angle: from +row (up) through -column (left), i.e. counter-clockwise from up
    up_angle = array_position_angle(sky_per_pixel_arcsec, pa)
    angle = (90.0 + up_angle) % 180.0
    return major / pixel_scale_arcsec, minor / pixel_scale_arcsec, angle


def scale_bar_au(field_width_au: float) -> float | None:
    """A round scale-bar length for a field of the given width.

    Parameters
    ----------
    field_width_au : float
        Width of the image [AU].

    Returns
    -------
    float or None
        The longest of :data:`SCALE_BAR_LENGTHS_AU` not longer than 30 % of the field;
        the shortest one if it fits in 80 % of the field; otherwise None.
    """
    if not math.isfinite(field_width_au) or field_width_au <= 0:
        return None
    fitting = [length for length in SCALE_BAR_LENGTHS_AU if length <= 0.3 * field_width_au]
    if fitting:
        return fitting[-1]
    shortest = SCALE_BAR_LENGTHS_AU[0]
    return shortest if shortest <= 0.8 * field_width_au else None


def observation_figure(view: ObservedView, floor: float, name: str) -> Figure:
    """The observation as read, log stretch above ``floor`` of its peak.

    Parameters
    ----------
    view : ObservedView
        The observation and its scales.
    floor : float
        Lowest intensity shown, relative to the peak, in (0, 1) (the report's display floor).
    name : str
        The target's name, for the title.

    Returns
    -------
    Figure
        WCS axes when ``view.wcs_header`` holds a usable celestial WCS, pixel axes otherwise;
        blanked (NaN) pixels in light grey.
    """
    wcs = _celestial_wcs(view.wcs_header)
    fig = Figure(figsize=(6.6, 5.8), layout="constrained")
    ax: Axes = fig.add_subplot(projection=wcs) if wcs is not None else fig.add_subplot()
    cmap = matplotlib.colormaps["inferno"].with_extremes(bad="0.82")
    shown = ax.imshow(
        _log_stretch_blanked(view.image, floor),
        origin="lower",
        cmap=cmap,
        vmin=math.log10(floor),
        vmax=0.0,
    )
    n_rows, n_columns = np.shape(view.image)
    ax.set_xlim(-0.5, n_columns - 0.5)  # patches outside the image must not widen the view
    ax.set_ylim(-0.5, n_rows - 0.5)
    if wcs is None:
        ax.set_xlabel("column [px]")
        ax.set_ylabel("row [px]")
    else:
        _label_sky_axes(ax, wcs)
    fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.03).set_label(
        "log$_{10}$ I / I$_{peak}$", parse_math=True
    )
    scale = view.pixel_scale_arcsec or _wcs_pixel_scale(wcs)
    captions = [
        _draw_beam(ax, view, scale, name),
        _draw_scale_bar(ax, view),
        _draw_field_box(ax, view),
    ]
    fig.suptitle(f"{shorten(name, 60)}: the observation as read", fontsize=12)
    if scale:
        captions.insert(0, f"pixel {plain_number(scale)}″")
    # A caption line per fact, wrapped: the figure's width must hold each of them.
    lines = [textwrap.fill(c, _CAPTION_CHARACTERS) for c in captions if c]
    fig.supxlabel("\n".join(lines), fontsize=8.5, color="0.25")
    return fig


def _label_sky_axes(ax: Any, wcs: Any) -> None:
    """Axis labels of WCSAxes (``ax.coords``) from the WCS's celestial axis types."""
    ax.coords[0].set_axislabel("right ascension" if wcs.wcs.lngtyp == "RA" else "longitude")
    ax.coords[1].set_axislabel("declination" if wcs.wcs.lattyp == "DEC" else "latitude")


def _log_stretch_blanked(image: np.ndarray, floor: float) -> np.ndarray:
    """log10 of the image over its finite peak, floored at ``floor``; NaN stays NaN."""
    image = np.asarray(image, dtype=np.float64)
    finite = np.isfinite(image)
    peak = float(image[finite].max()) if finite.any() else 0.0
    scaled = image / peak if peak > 0 else np.where(finite, 0.0, np.nan)
    with np.errstate(invalid="ignore"):
        return np.where(finite, np.log10(np.maximum(scaled, floor)), np.nan)


def _celestial_wcs(header: Mapping[str, Any] | None) -> Any:
    """The 2-D celestial WCS of ``header``, or None (none given, or unusable)."""
    if header is None:
        return None
    from astropy.utils.exceptions import AstropyWarning
    from astropy.wcs import WCS

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", AstropyWarning)
            celestial = WCS(_fits_header(header)).celestial
            if celestial.naxis != 2 or not celestial.has_celestial:
                return None
            celestial.pixel_scale_matrix  # noqa: B018 - fails here on a broken WCS
            return celestial
    except Exception as exc:  # the figure falls back to pixel axes
        log.warning("observation figure: drawing pixel axes, unreadable WCS (%s)", exc)
        return None


def _fits_header(header: Mapping[str, Any]) -> Any:
    """``header`` as an ``astropy.io.fits.Header`` (converted from a plain mapping)."""
    from astropy.io import fits

    return header if isinstance(header, fits.Header) else fits.Header(dict(header))


def _wcs_pixel_scale(wcs: Any) -> float | None:
    """Geometric-mean pixel side of a celestial WCS [arcsec], or None."""
    if wcs is None:
        return None
    matrix = np.asarray(wcs.pixel_scale_matrix, dtype=np.float64) * 3600.0
    side = math.sqrt(abs(float(np.linalg.det(matrix))))
    return side if math.isfinite(side) and side > 0 else None


def _corner_anchor(ax: Axes, fraction_x: float, fraction_y: float) -> tuple[float, float]:
    """Pixel position at the given fractions of the displayed image's width and height."""
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    return x0 + fraction_x * (x1 - x0), y0 + fraction_y * (y1 - y0)


def _draw_beam(ax: Axes, view: ObservedView, scale: float | None, name: str) -> str:
    """The beam ellipse in the lower-left corner; returns its caption ("" if not drawn)."""
    if view.beam_arcsec is None or not scale:
        return ""
    orientation = None
    if view.wcs_header is not None:  # None when the WCS is unusable: north up, east left
        orientation = sky_per_pixel(Path(name), _fits_header(view.wcs_header))
    width, height, angle = beam_ellipse_px(view.beam_arcsec, scale, orientation)
    height_px = view.image.shape[0]
    margin = max(0.06 * height_px, 0.6 * width)
    x0, y0 = ax.get_xlim()[0], ax.get_ylim()[0]
    ax.add_patch(
        Ellipse(
            (x0 + margin, y0 + margin),
            width,
            height,
            angle=angle,
            facecolor="white",
            edgecolor="black",
            alpha=0.85,
            lw=1.0,
            label="beam",
        )
    )
    major, minor, pa = view.beam_arcsec
    return f"beam {plain_number(major)}″ × {plain_number(minor)}″, PA {plain_number(pa)}°"


def _draw_scale_bar(ax: Axes, view: ObservedView) -> str:
    """A scale bar in AU in the lower-right corner; returns its caption ("" if not drawn)."""
    if view.au_per_pixel is None:
        return "no distance: no AU scale"
    width_px = view.image.shape[1]
    length_au = scale_bar_au(width_px * view.au_per_pixel)
    if length_au is None:
        return ""
    length_px = length_au / view.au_per_pixel
    x_end, y = _corner_anchor(ax, 0.94, 0.07)
    ax.plot([x_end - length_px, x_end], [y, y], color="white", lw=3, solid_capstyle="butt")
    ax.text(
        x_end - length_px / 2,
        y + 0.02 * view.image.shape[0],
        f"{length_au:g} AU",
        color="white",
        ha="center",
        va="bottom",
        fontsize=10,
        fontweight="bold",
    )
    return f"{plain_number(view.au_per_pixel)} AU per pixel"


def _draw_field_box(ax: Axes, view: ObservedView) -> str:
    """The compared square, dashed; returns its caption ("" if not drawn)."""
    if view.field_box is None:
        return ""
    row, column, side = (float(v) for v in view.field_box)
    caption, drawn = _field_caption(view.image.shape, row, column, side)
    if not drawn:
        return caption
    ax.add_patch(
        Rectangle(
            (column - side / 2, row - side / 2),
            side,
            side,
            fill=False,
            edgecolor=_BOX_COLOUR,
            lw=1.6,
            ls="--",
            label="compared field",
        )
    )
    ax.text(
        column - side / 2,
        row + side / 2,
        " compared",
        color=_BOX_COLOUR,
        ha="left",
        va="bottom",
        fontsize=9,
        clip_on=True,
    )
    return caption


def _field_caption(
    shape: tuple[int, ...], row: float, column: float, side: float
) -> tuple[str, bool]:
    """The caption of the compared square, and whether to draw it (not when it holds the image)."""
    height, width = shape[-2:]
    top, bottom = row - side / 2, row + side / 2
    left, right = column - side / 2, column + side / 2
    if top <= -0.5 and left <= -0.5 and bottom >= height - 0.5 and right >= width - 0.5:
        caption = (
            f"the {plain_number(side)}-pixel square compared is larger than this image: "
            "blank (0) beyond its edges"
        )
        return caption, False
    inside = top >= -0.5 and left >= -0.5 and bottom <= height - 0.5 and right <= width - 0.5
    beyond = "" if inside else ", blank (0) beyond the image's edges"
    return f"dashed: the {plain_number(side)}-pixel square compared{beyond}", True
