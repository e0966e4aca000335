"""Cut a square field from an image: around the source's brightest point or the centre."""

from __future__ import annotations

import math

import numpy as np

from protomatch.optics.beam import FWHM_PER_SIGMA

__all__ = ["source_position", "square_field"]


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
