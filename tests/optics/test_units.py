"""Intensity units of an image: conversion to the library's unit."""

from __future__ import annotations

import math

import numpy as np
import pytest

from protomatch.optics.units import intensity_factor

BEAM = (0.3, 0.2, 20.0)  # arcsec, arcsec, deg
PIXEL = 0.04  # arcsec


def _factor(unit: str | None, library: str | None, beam=BEAM, pixel=PIXEL) -> float | None:
    return intensity_factor(unit, library, beam_arcsec=beam, pixel_scale_arcsec=pixel)


def test_point_source_flux_is_kept_from_jy_per_beam_to_mjy_per_sr() -> None:
    """A point source of F Jy reads F Jy/beam at its peak; in MJy/sr, summed over the pixels'
    solid angles, it must give back F."""
    flux = 0.25
    major, minor = (v / PIXEL / (2 * math.sqrt(2 * math.log(2))) for v in BEAM[:2])
    rows, cols = np.mgrid[-60:61, -60:61]
    image = flux * np.exp(-0.5 * ((rows / major) ** 2 + (cols / minor) ** 2))
    pixel_sr = (PIXEL / (180 / math.pi * 3600)) ** 2
    factor = _factor("Jy/beam", "MJy/sr")
    assert image.sum() * factor * 1e6 * pixel_sr == pytest.approx(flux, rel=1e-3)


@pytest.mark.parametrize(
    ("unit", "relative"),
    [
        ("Jy/beam", 1.0),
        ("JY/BEAM", 1.0),
        ("Jy beam-1", 1.0),
        ("Jy beam^-1", 1.0),
        ("mJy/beam", 1e-3),
        ("uJy/beam", 1e-6),
        ("µJy/beam", 1e-6),
        # per pixel: the beam holds (beam area / pixel area) pixels
        ("Jy/pixel", math.pi * BEAM[0] * BEAM[1] / (4 * math.log(2)) / PIXEL**2),
    ],
)
def test_flux_density_units_relative_to_jy_per_beam(unit: str, relative: float) -> None:
    reference = _factor("Jy/beam", "MJy/sr")
    assert _factor(unit, "MJy/sr") == pytest.approx(relative * reference)


def test_mega_and_milli_are_told_apart() -> None:
    assert _factor("MJy/sr", "MJy/sr") == 1.0
    assert _factor("Jy/sr", "MJy/sr") == pytest.approx(1e-6)
    assert _factor("mJy/sr", "MJy/sr") == pytest.approx(1e-9)


@pytest.mark.parametrize(
    ("unit", "library", "kwargs"),
    [
        ("K", "MJy/sr", {}),  # brightness temperature: not converted
        (None, "MJy/sr", {}),
        ("Jy/beam", None, {}),
        ("Jy/beam", "MJy/sr", {"beam": None}),  # no beam, no solid angle
        ("Jy/pixel", "MJy/sr", {"pixel": None}),
        ("Jy/beam", "Jy/pixel", {}),  # a library per pixel: only the same unit converts
    ],
)
def test_unknown_or_unconvertible_units_give_none(unit, library, kwargs) -> None:
    assert _factor(unit, library, **kwargs) is None


def test_same_unknown_unit_is_identity() -> None:
    assert _factor("K", "K") == 1.0
