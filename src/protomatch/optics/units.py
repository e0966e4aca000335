"""Flux-density units of images and their conversion to a library's unit.

Understood: ``[prefix]Jy/beam``, ``Jy beam-1``, ``Jy/pixel`` (``Jy/pix``), ``Jy/sr`` with
the prefixes ``u``/``µ`` (micro), ``m`` (milli), ``k`` (kilo) and ``M`` (mega; ``MJy`` and
``mJy`` are told apart). Per-beam and per-pixel units convert to per-steradian through the
beam solid angle or the pixel area.
"""

from __future__ import annotations

import re
from types import MappingProxyType

from protomatch.optics.beam import ARCSEC_PER_RADIAN, beam_solid_angle_sr

__all__ = ["flux_density_unit", "intensity_factor"]

_JY_PREFIXES = MappingProxyType(
    {"": 1.0, "u": 1e-6, "µ": 1e-6, "μ": 1e-6, "m": 1e-3, "k": 1e3, "M": 1e6}
)
_FLUX_UNIT = re.compile(
    r"(?P<prefix>[uµμmkM]?)jy\s*(?:/\s*(?P<over>beam|pixel|pix|sr)"
    r"|\s+(?P<inverse>beam|pixel|pix|sr)\s*\^?\s*-1)",
    re.IGNORECASE,
)


def flux_density_unit(unit: str) -> tuple[float, str] | None:
    """Parse a flux-density unit.

    Parameters
    ----------
    unit
        A unit string such as ``"mJy/beam"`` or ``"MJy/sr"``.

    Returns
    -------
    tuple or None
        (Jy per unit, area: ``"beam"``, ``"pixel"`` or ``"sr"``), or None when the unit is
        not of that form.
    """
    match = _FLUX_UNIT.fullmatch(unit.strip())
    if match is None:
        return None
    prefix = match["prefix"]
    scale = _JY_PREFIXES[prefix if prefix == "M" else prefix.lower()]  # M mega, m milli
    area = (match["over"] or match["inverse"]).lower()
    return scale, "pixel" if area == "pix" else area


def intensity_factor(
    unit: str | None,
    library_unit: str | None,
    *,
    beam_arcsec: tuple[float, float, float] | None = None,
    pixel_scale_arcsec: float | None = None,
) -> float | None:
    """Multiplier taking intensities in ``unit`` to ``library_unit``, or None.

    Flux-density units convert through Jy/sr: per beam by the beam solid angle
    ``pi bmaj bmin / (4 ln 2)``, per pixel by the pixel area. Other units convert only to
    themselves (factor 1, compared case-insensitively).

    Parameters
    ----------
    unit
        The image's unit (FITS ``BUNIT``); None when unknown.
    library_unit
        The library's unit (e.g. ``"MJy/sr"``); None when unknown.
    beam_arcsec
        (major FWHM [arcsec], minor FWHM [arcsec], PA [deg]) of the image, for per-beam units.
    pixel_scale_arcsec
        Pixel side [arcsec], for per-pixel units.

    Returns
    -------
    float or None
        The factor, or None when either unit is unknown or the conversion needs a beam or
        pixel scale that is not given; a library per beam or per pixel accepts only its own
        unit.
    """
    if not unit or not library_unit or not unit.strip() or not library_unit.strip():
        return None
    source, target = flux_density_unit(unit), flux_density_unit(library_unit)
    if source is None or target is None:
        return 1.0 if unit.strip().lower() == library_unit.strip().lower() else None
    if source == target:
        return 1.0
    per_sr = _per_steradian(source[1], beam_arcsec, pixel_scale_arcsec)
    if target[1] != "sr" or per_sr is None:
        return None
    return source[0] * per_sr / target[0]


def _per_steradian(
    area: str, beam_arcsec: tuple[float, float, float] | None, pixel_scale_arcsec: float | None
) -> float | None:
    """1 / (solid angle of one ``area``) [1/sr]: 1 for sr; None if the beam/pixel is unknown."""
    if area == "sr":
        return 1.0
    if area == "beam" and beam_arcsec:
        return 1.0 / beam_solid_angle_sr(beam_arcsec[0], beam_arcsec[1])
    if area == "pixel" and pixel_scale_arcsec:
        return (ARCSEC_PER_RADIAN / pixel_scale_arcsec) ** 2
    return None
