"""Cut a square field from an image, or resample it onto the library's grid, around a point."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from protomatch.optics.beam import FWHM_PER_SIGMA

__all__ = ["coverage_field", "resample_field", "source_position", "square_field"]

# Degrees of a synthetic sky per AU: small enough that the TAN projection of a library field
# is flat to better than 1e-6, so resampling between two such grids is a pure rescaling.
_DEGREES_PER_AU = 1e-6


def source_position(image: np.ndarray, smoothing_fwhm_px: float) -> tuple[float, float]:
    """(row, column) of the brightest point of ``image`` smoothed by a Gaussian of that FWHM.

    Blank (NaN) pixels count as 0. Smoothing on the beam's scale keeps a single noise
    spike from outshining a faint, extended source.

    Parameters
    ----------
    image
        (H, W) image; NaN and infinite pixels count as 0.
    smoothing_fwhm_px
        FWHM of the Gaussian smoothing [pixels of ``image``], e.g. the beam's major axis.

    Returns
    -------
    tuple of float
        (row, column) 0-based pixel indices of the smoothed image's maximum.
    """
    from scipy.ndimage import gaussian_filter

    filled = np.nan_to_num(np.asarray(image, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    sigma = smoothing_fwhm_px / FWHM_PER_SIGMA
    smooth = gaussian_filter(filled, sigma, mode="constant")
    row, column = np.unravel_index(int(np.argmax(smooth)), smooth.shape)
    return float(row), float(column)


def square_field(
    image: np.ndarray, side: float, centre: tuple[float, float] | None = None
) -> np.ndarray:
    """Cut a square of ``side`` pixels around ``centre``, NaN beyond the image's edges.

    Parameters
    ----------
    image
        (H, W) image.
    side
        Side of the square [pixels], rounded to an integer of at least 1.
    centre
        (row, column) of the square's centre; None: the image centre.

    Returns
    -------
    numpy.ndarray
        (side, side) float32; pixels outside the image are NaN (later filled with 0).
    """
    n = max(1, round(side))
    height, width = image.shape
    out = np.full((n, n), np.nan, dtype=np.float32)
    top, left = (height - n) // 2, (width - n) // 2
    if centre is not None:
        top, left = (math.floor(c - (n - 1) / 2 + 0.5) for c in centre)
    src_rows = slice(max(top, 0), min(top + n, height))
    src_cols = slice(max(left, 0), min(left + n, width))
    dst_rows = slice(src_rows.start - top, src_rows.stop - top)
    dst_cols = slice(src_cols.start - left, src_cols.stop - left)
    out[dst_rows, dst_cols] = image[src_rows, src_cols]
    return out


def resample_field(
    image: np.ndarray,
    au_per_pixel: float,
    centre: tuple[float, float],
    size: int,
    target_au_per_pixel: float,
) -> np.ndarray:
    """Resample the ``size`` x ``size`` field of ``target_au_per_pixel`` around ``centre``.

    Flux-conserving: each output pixel is the overlap-weighted mean of the input pixels it
    covers (``reproject.reproject_exact``), so the field is placed to a fraction of a pixel
    and its side in AU is exact, unlike a cut at whole input pixels followed by a resize
    (``bench/bench_resample.py`` measures both).

    Parameters
    ----------
    image
        (H, W) surface brightness; NaN pixels count as 0.
    au_per_pixel
        The image's pixel side [AU].
    centre
        (row, column) of the field's centre in ``image``'s pixels, fractional allowed.
    size
        Side of the output [pixels].
    target_au_per_pixel
        Output pixel side [AU].

    Returns
    -------
    numpy.ndarray
        (size, size) float32; NaN where the field lies wholly beyond the image's edges.
    """
    out, footprint = _reprojected(image, au_per_pixel, centre, size, target_au_per_pixel)
    out[footprint <= 0] = np.nan
    return out.astype(np.float32)


def coverage_field(
    image: np.ndarray,
    au_per_pixel: float,
    centre: tuple[float, float],
    size: int,
    target_au_per_pixel: float,
) -> np.ndarray:
    """Fraction of each pixel of :func:`resample_field`'s output covered by finite pixels.

    Parameters
    ----------
    image, au_per_pixel, centre, size, target_au_per_pixel
        As for :func:`resample_field`.

    Returns
    -------
    numpy.ndarray
        (size, size) float64 in [0, 1]: 0 beyond the image's edges and over blank (NaN)
        pixels, 1 where finite pixels cover the output pixel wholly.
    """
    finite = np.isfinite(np.asarray(image)).astype(np.float64)
    mean, footprint = _reprojected(finite, au_per_pixel, centre, size, target_au_per_pixel)
    return np.clip(np.nan_to_num(mean, nan=0.0) * footprint, 0.0, 1.0)


def _reprojected(
    image: np.ndarray,
    au_per_pixel: float,
    centre: tuple[float, float],
    size: int,
    target_au_per_pixel: float,
) -> tuple[np.ndarray, np.ndarray]:
    """reproject_exact's (mean over the covered part, covered fraction) of each output pixel."""
    from reproject import reproject_exact

    half = size * target_au_per_pixel / au_per_pixel / 2 + 2
    top = max(0, math.floor(centre[0] - half))
    left = max(0, math.floor(centre[1] - half))
    cut = image[top : math.ceil(centre[0] + half) + 1, left : math.ceil(centre[1] + half) + 1]
    if cut.size == 0:
        return np.full((size, size), np.nan), np.zeros((size, size))
    filled = np.nan_to_num(np.asarray(cut, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    source = _flat_sky(cut.shape, au_per_pixel, (centre[0] - top, centre[1] - left))
    middle = (size - 1) / 2
    target = _flat_sky((size, size), target_au_per_pixel, (middle, middle))
    out, footprint = reproject_exact(
        (filled, source), target, shape_out=(size, size), parallel=False
    )
    return out, footprint


def _flat_sky(shape: tuple[int, ...], au_per_pixel: float, centre: tuple[float, float]) -> Any:
    """A TAN WCS of ``au_per_pixel`` whose reference point is at (row, column) ``centre``."""
    from astropy.wcs import WCS

    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [0.0, 0.0]
    wcs.wcs.crpix = [centre[1] + 1, centre[0] + 1]
    step = au_per_pixel * _DEGREES_PER_AU
    wcs.wcs.cdelt = [-step, step]
    wcs.pixel_shape = (shape[1], shape[0])
    return wcs
