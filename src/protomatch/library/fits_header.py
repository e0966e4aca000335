"""What a FITS header says about the sky: chosen keywords, celestial WCS, pixel scale, beam.

Problems that make a value unusable (a degenerate pixel scale, a beam of size 0) are
returned as one-line descriptions for the caller to raise or note; nothing here reads files.
"""

from __future__ import annotations

import logging
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

_HEADER_KEYS = (
    "OBJECT", "TELESCOP", "INSTRUME", "DATE-OBS", "BUNIT", "BTYPE", "BMAJ", "BMIN", "BPA",
    "CTYPE1", "CTYPE2", "CUNIT1", "CUNIT2", "CDELT1", "CDELT2", "CRPIX1", "CRPIX2",
    "CRVAL1", "CRVAL2", "RADESYS", "EQUINOX", "RESTFRQ", "DISTANCE",
)  # fmt: skip


def select_header(header: Any) -> dict[str, Any]:
    """The FITS keywords protomatch reports, where present and JSON-serialisable.

    Parameters
    ----------
    header
        An ``astropy.io.fits.Header`` (or any mapping with ``get``).

    Returns
    -------
    dict
        Keyword → value for the known keywords (object, telescope, beam, WCS, units ...).
    """
    selected: dict[str, Any] = {}
    for key in _HEADER_KEYS:
        value = header.get(key)
        if isinstance(value, (bool, int, str)) or (isinstance(value, float) and np.isfinite(value)):
            selected[key] = value
    return selected


def _celestial_wcs(path: Path, header: Any) -> Any:
    """The header's 2-D celestial WCS, or None (absent, or unreadable: then a warning)."""
    from astropy.utils.exceptions import AstropyWarning
    from astropy.wcs import WCS

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", AstropyWarning)
            celestial = WCS(header).celestial
            if celestial.naxis != 2 or not celestial.has_celestial:
                return None
            celestial.pixel_scale_matrix  # noqa: B018 - fails here on a broken WCS
            return celestial
    except Exception as exc:  # metadata is optional: a broken WCS must not stop a match
        log.warning("%s: ignoring unreadable WCS (%s)", path, exc)
        return None


def celestial_header(path: Path, header: Any) -> Any:
    """The header's 2-D celestial WCS as FITS keywords (``astropy.io.fits.Header``), or None.

    Parameters
    ----------
    path
        The file, for warnings.
    header
        Its FITS header.

    Returns
    -------
    astropy.io.fits.Header or None
        Keywords of the celestial WCS alone (for drawing the image on the sky).
    """
    celestial = _celestial_wcs(path, header)
    return None if celestial is None else celestial.to_header()


def pixel_scale_arcsec(path: Path, header: Any) -> float | None:
    """Pixel side from the header's celestial WCS, arcsec.

    Parameters
    ----------
    path
        The file, for warnings.
    header
        Its FITS header.

    Returns
    -------
    float or None
        Pixel side [arcsec] (the geometric mean of the two axes for non-square pixels);
        None without a usable celestial WCS.
    """
    from astropy.wcs.utils import proj_plane_pixel_scales

    celestial = _celestial_wcs(path, header)
    if celestial is None:
        return None
    scales = np.abs(proj_plane_pixel_scales(celestial)) * 3600.0
    if not np.all(np.isfinite(scales)) or np.any(scales <= 0):
        return None
    if not np.isclose(scales[0], scales[1], rtol=1e-3):
        log.warning("%s: non-square pixels %s arcsec; using their geometric mean", path, scales)
    return float(np.sqrt(scales[0] * scales[1]))


def sky_per_pixel(path: Path, header: Any) -> tuple[tuple[float, float], ...] | None:
    """The sky offset of one pixel step along each array axis, from the celestial WCS.

    The WCS's linear part (CDELT with PC, or CD), rows ordered longitude (east) then
    latitude (north): it says how the array is turned and mirrored on the sky.

    Parameters
    ----------
    path
        The file, for warnings.
    header
        Its FITS header.

    Returns
    -------
    tuple or None
        ((east per column, east per row), (north per column, north per row)) [arcsec];
        None without a usable, non-singular celestial WCS.
    """
    celestial = _celestial_wcs(path, header)
    if celestial is None:
        return None
    matrix = np.asarray(celestial.pixel_scale_matrix, dtype=np.float64) * 3600.0
    matrix = matrix[[celestial.wcs.lng, celestial.wcs.lat]]
    if not np.all(np.isfinite(matrix)) or np.linalg.det(matrix) == 0:
        return None
    return tuple((float(row[0]), float(row[1])) for row in matrix)


_CELESTIAL_PREFIXES = ("RA", "DEC", "GLON", "GLAT", "ELON", "ELAT")


def wcs_scale_problem(header: Any) -> str | None:
    """What makes a celestial WCS's pixel scale unusable, or None.

    Without ``CDELTi`` or a ``CD`` matrix a FITS reader assumes 1 degree per pixel; a scale of
    0 is degenerate. Both are refused rather than read as a scale.

    Parameters
    ----------
    header
        A FITS header.

    Returns
    -------
    str or None
        The problem, naming the keyword; None when the scale keywords look usable or the
        header has no celestial axes at all (then the scale is simply unknown).
    """
    axes = [
        i
        for i in range(1, int(header.get("NAXIS", 0) or 0) + 1)
        if str(header.get(f"CTYPE{i}", "")).upper().startswith(_CELESTIAL_PREFIXES)
    ]
    if len(axes) != 2:
        return None
    cd_keys = [f"CD{i}_{j}" for i in axes for j in axes]
    if any(key in header for key in cd_keys):
        matrix = np.array([_number_or_nan(header.get(key, 0.0)) for key in cd_keys]).reshape(2, 2)
        if not np.all(np.isfinite(matrix)) or np.linalg.det(matrix) == 0:
            return f"its WCS CD matrix ({', '.join(cd_keys)}) is singular or not numeric"
        return None
    for i in axes:
        if f"CDELT{i}" not in header:
            return (
                f"has a celestial WCS (CTYPE{i} = {header.get(f'CTYPE{i}')!r}) but no CDELT{i} "
                "or CD matrix, so its pixel scale is unknown"
            )
        value = _number_or_nan(header.get(f"CDELT{i}"))
        if not np.isfinite(value) or value == 0:
            return f"header CDELT{i} = {header.get(f'CDELT{i}')!r} is not a pixel scale"
    return None


def beam_problem(header: Any) -> str | None:
    """What is wrong with the ``BMAJ``/``BMIN``/``BPA`` keywords, or None.

    Parameters
    ----------
    header
        A FITS header.

    Returns
    -------
    str or None
        The problem, naming the keyword (a size that is not a positive finite number of
        degrees, an angle that is not a finite number); None when absent or usable.
    """
    for key in ("BMAJ", "BMIN"):
        if key in header:
            value = _number_or_nan(header.get(key))
            if not np.isfinite(value) or value <= 0:
                return f"header {key} = {header.get(key)!r} is not a positive beam size (deg)"
    if "BPA" in header and not np.isfinite(_number_or_nan(header.get("BPA"))):
        return f"header BPA = {header.get('BPA')!r} is not an angle (deg)"
    return None


def _number_or_nan(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
        return math.nan
    return float(value)


def beam_arcsec(header: Any) -> tuple[float, float, float] | None:
    """The restoring beam from the ``BMAJ``, ``BMIN`` and ``BPA`` keywords.

    Parameters
    ----------
    header
        A FITS header (``BMAJ``/``BMIN`` in degrees, ``BPA`` in degrees).

    Returns
    -------
    tuple or None
        (major FWHM [arcsec], minor FWHM [arcsec], position angle [deg]); a missing or bad
        ``BMIN`` is taken as ``BMAJ`` and ``BPA`` as 0. None without a valid ``BMAJ``.
    """
    bmaj = header.get("BMAJ")
    if not isinstance(bmaj, (int, float)) or not np.isfinite(bmaj) or bmaj <= 0:
        return None
    bmin = header.get("BMIN", bmaj)
    bpa = header.get("BPA", 0.0)
    if not isinstance(bmin, (int, float)) or not np.isfinite(bmin) or bmin <= 0:
        bmin = bmaj
    if not isinstance(bpa, (int, float)) or not np.isfinite(bpa):
        bpa = 0.0
    return float(bmaj) * 3600.0, float(bmin) * 3600.0, float(bpa)
