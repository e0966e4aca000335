"""One mock observation: render a planned system, smooth it with the beam, add noise, write FITS.

The private half of :mod:`protomatch.simulators.observations`, which draws the plans
(:class:`MockPlan`) and
runs :func:`render_observation` for each in worker processes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from protomatch.library import schema
from protomatch.optics.beam import (
    beam_solid_angle_sr,
    convolve_with_beam,
    correlated_noise,
    kernel_half_width,
)

FREQUENCY_HZ, _BANDWIDTH_HZ = 230.0e9, 7.5e9
TRUTH_COLUMNS: tuple[str, ...] = (
    "file", "system", *schema.DEFAULT_PARAMETERS, "distance_pc",
    "beam_major_au", "beam_minor_au", "beam_pa_deg", "beam_major_arcsec", "beam_minor_arcsec",
    "pixel_arcsec", "pixel_au", "npix", "snr", "noise_rms_jy_beam",
    "inclination_deg", "azimuth_deg", "position_angle_deg", "nan_border", "shape4d",
    "nan_border_kind", "field_au", "peak_jy_beam", "ra_deg", "dec_deg",
    "source_row_offset_px", "source_col_offset_px",
)  # fmt: skip


@dataclass(frozen=True)
class MockPlan:
    """One observation: the system's state and how it is seen (angles in radians)."""

    index: int
    system: int
    system_seed: np.random.SeedSequence
    clump_index: int
    age: float
    inclination: float
    azimuth: float
    position_angle: float
    distance_pc: float
    beam_major_au: float
    beam_ratio: float
    beam_pa_deg: float
    pixels_per_beam: float
    npix: int
    snr: float
    nan_kind: str
    nan_extent: tuple[float, ...]
    shape4d: bool
    ra_deg: float
    dec_deg: float
    noise_seed: np.random.SeedSequence
    offset_px: tuple[int, int]

    @property
    def pixel_au(self) -> float:
        return self.beam_major_au / self.pixels_per_beam

    @property
    def pixel_arcsec(self) -> float:
        return self.pixel_au / self.distance_pc  # 1 AU at 1 pc subtends 1 arcsec


# --- making one observation ------------------------------------------------------------------


def _margin(major_px: float) -> int:
    """Pixels beyond the image that a beam of ``major_px`` FWHM reaches (4 sigma), plus one."""
    return kernel_half_width(major_px) + 1


def _convolve(
    image: NDArray[np.floating], major_px: float, minor_px: float, pa_deg: float
) -> NDArray[np.float64]:
    """``image`` (H, W) convolved with the normalised beam (FWHMs [px], BPA [deg]), float64."""
    tensor = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float64))
    return convolve_with_beam(tensor, major_px, minor_px, pa_deg).numpy()


def observe_sky(
    sky_mjy_sr: NDArray[np.floating],
    pixel_arcsec: float,
    beam_arcsec: tuple[float, float, float],
    margin: int = 0,
) -> NDArray[np.float64]:
    """Beam-smooth a sky image and convert it to Jy/beam (noise-free).

    Parameters
    ----------
    sky_mjy_sr : (H, W) surface brightness [MJy/sr] on a grid of ``pixel_arcsec`` pixels.
    pixel_arcsec : pixel side [arcsec].
    beam_arcsec : (major FWHM [arcsec], minor FWHM [arcsec], BPA [deg east of north]).
    margin : pixels cropped from every side after the convolution.

    Returns
    -------
    (H - 2 margin, W - 2 margin) float64 image [Jy/beam].
    """
    major, minor, pa = beam_arcsec
    smooth = _convolve(sky_mjy_sr, major / pixel_arcsec, minor / pixel_arcsec, pa)
    if margin:
        smooth = smooth[margin:-margin, margin:-margin]
    return smooth * (1e6 * beam_solid_angle_sr(major, minor))


def _unit_noise(
    rng: np.random.Generator, npix: int, major_px: float, minor_px: float, pa: float
) -> NDArray[np.float64]:
    """(npix, npix) beam-correlated Gaussian noise of unit rms, stationary up to the edges."""
    margin = _margin(major_px)
    white = torch.from_numpy(rng.standard_normal((1, npix + 2 * margin, npix + 2 * margin)))
    return correlated_noise(white, (npix, npix), major_px, minor_px, pa)[0].numpy()


def _blank(image: NDArray[np.float64], kind: str, extent: tuple[float, ...]) -> None:
    """Set the border of ``image`` to NaN in place: a frame or outside a centred circle."""
    npix = image.shape[0]
    if kind == "frame":
        bottom, top, left, right = (max(1, round(f * npix)) for f in extent)
        image[:bottom], image[npix - top :] = np.nan, np.nan
        image[:, :left], image[:, npix - right :] = np.nan, np.nan
    elif kind == "circle":
        offsets = np.arange(npix) - (npix - 1) / 2
        image[np.hypot(offsets[:, None], offsets[None, :]) > extent[0] * npix] = np.nan


def render_observation(plan: MockPlan, out: Path) -> dict[str, Any]:
    """Render, smooth, add noise, blank and write one observation; return its truth row."""
    from protomatch.simulators.library import draw_system, render_projection, snapshot_state

    history = draw_system(np.random.default_rng(plan.system_seed))
    state = snapshot_state(history, plan.age, plan.clump_index)
    major_px = plan.pixels_per_beam
    minor_px = major_px * plan.beam_ratio
    margin = _margin(major_px)
    size = plan.npix + 2 * margin
    row_shift, col_shift = plan.offset_px
    pad = max(abs(row_shift), abs(col_shift))
    rendered = size + 2 * pad  # the star at its centre; the window below moves off it
    sky = render_projection(
        state,
        (plan.inclination, plan.azimuth),
        size=rendered,
        fov_au=rendered * plan.pixel_au,
        position_angle=plan.position_angle,
        samples=rendered,
    )
    top, left = pad - row_shift, pad - col_shift
    sky = sky[top : top + size, left : left + size]
    beam = (major_px * plan.pixel_arcsec, minor_px * plan.pixel_arcsec, plan.beam_pa_deg)
    image = observe_sky(sky, plan.pixel_arcsec, beam, margin)
    peak = float(image.max())
    rms = peak / plan.snr
    rng = np.random.default_rng(plan.noise_seed)
    image += rms * _unit_noise(rng, plan.npix, major_px, minor_px, plan.beam_pa_deg)
    _blank(image, plan.nan_kind, plan.nan_extent)
    name = f"obs_{plan.index:03d}.fits"
    _write_fits(out / name, image.astype(np.float32), plan, beam)
    return _truth_row(plan, state.parameters(), name, beam, rms, peak)


def _write_fits(
    path: Path, image: NDArray[np.float32], plan: MockPlan, beam: tuple[float, float, float]
) -> None:
    from astropy.io import fits
    from astropy.wcs import WCS

    naxis = 4 if plan.shape4d else 2
    wcs = WCS(naxis=naxis)
    centre = (plan.npix + 1) / 2.0
    pixel_deg = plan.pixel_arcsec / 3600.0
    wcs.wcs.ctype = ["RA---SIN", "DEC--SIN", "FREQ", "STOKES"][:naxis]
    wcs.wcs.cunit = ["deg", "deg", "Hz", ""][:naxis]
    wcs.wcs.cdelt = [-pixel_deg, pixel_deg, _BANDWIDTH_HZ, 1.0][:naxis]
    wcs.wcs.crpix = [centre, centre, 1.0, 1.0][:naxis]
    wcs.wcs.crval = [plan.ra_deg, plan.dec_deg, FREQUENCY_HZ, 1.0][:naxis]
    wcs.wcs.radesys = "ICRS"
    if plan.shape4d:
        wcs.wcs.specsys = "LSRK"
    header = wcs.to_header()
    header["BMAJ"] = (beam[0] / 3600.0, "[deg] beam major axis FWHM")
    header["BMIN"] = (beam[1] / 3600.0, "[deg] beam minor axis FWHM")
    header["BPA"] = (beam[2], "[deg] beam position angle, east of north")
    header["BUNIT"] = ("Jy/beam", "brightness unit")
    header["BTYPE"] = "Intensity"
    header["RESTFRQ"] = (FREQUENCY_HZ, "[Hz] 1.3 mm dust continuum")
    header["OBJECT"] = f"MOCK-{plan.index:03d}"
    header["TELESCOP"] = "protomatch-mock"
    header["DISTANCE"] = (plan.distance_pc, "[pc] mock only: real data lack this keyword")
    header["COMMENT"] = "Mock observation written by protomatch observe; truth in truth.csv."
    data = image[None, None] if plan.shape4d else image
    fits.PrimaryHDU(data=data, header=header).writeto(path)


def _truth_row(
    plan: MockPlan,
    parameters: Mapping[str, float],
    name: str,
    beam: tuple[float, float, float],
    rms: float,
    peak: float,
) -> dict[str, Any]:
    return {
        "file": name,
        "system": plan.system,
        **{key: parameters[key] for key in schema.DEFAULT_PARAMETERS},
        "distance_pc": plan.distance_pc,
        "beam_major_au": plan.beam_major_au,
        "beam_minor_au": plan.beam_major_au * plan.beam_ratio,
        "beam_pa_deg": plan.beam_pa_deg,
        "beam_major_arcsec": beam[0],
        "beam_minor_arcsec": beam[1],
        "pixel_arcsec": plan.pixel_arcsec,
        "pixel_au": plan.pixel_au,
        "npix": plan.npix,
        "snr": plan.snr,
        "noise_rms_jy_beam": rms,
        "inclination_deg": math.degrees(plan.inclination),
        "azimuth_deg": math.degrees(plan.azimuth),
        "position_angle_deg": math.degrees(plan.position_angle),
        "nan_border": plan.nan_kind != "none",
        "shape4d": plan.shape4d,
        "nan_border_kind": plan.nan_kind,
        "field_au": plan.npix * plan.pixel_au,
        "peak_jy_beam": peak,
        "ra_deg": plan.ra_deg,
        "dec_deg": plan.dec_deg,
        "source_row_offset_px": plan.offset_px[0],
        "source_col_offset_px": plan.offset_px[1],
    }
