"""The out-of-library inputs: on the template's grid, at its peak and noise, readable by match."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits

import out_of_library as ool
from protomatch.matching.observation import read_observation

NPIX, PIXEL_ARCSEC, PEAK, RMS = 64, 0.05, 0.02, 2e-4


@pytest.fixture()
def mocks(tmp_path: Path) -> Path:
    """Two template observations as protomatch observe writes them (header and truth.csv)."""
    folder = tmp_path / "mocks"
    folder.mkdir()
    rows = []
    for i in range(2):
        header = fits.Header()
        header["CTYPE1"], header["CTYPE2"] = "RA---SIN", "DEC--SIN"
        header["CDELT1"], header["CDELT2"] = -PIXEL_ARCSEC / 3600, PIXEL_ARCSEC / 3600
        header["CRPIX1"] = header["CRPIX2"] = NPIX / 2
        header["CUNIT1"] = header["CUNIT2"] = "deg"
        header["BMAJ"], header["BMIN"], header["BPA"] = 0.3 / 3600, 0.2 / 3600, 30.0
        header["BUNIT"], header["DISTANCE"] = "Jy/beam", 200.0
        name = f"obs_{i:03d}.fits"
        fits.PrimaryHDU(np.zeros((NPIX, NPIX), np.float32), header).writeto(folder / name)
        rows.append(
            {
                "file": name,
                "pixel_arcsec": PIXEL_ARCSEC,
                "pixel_au": PIXEL_ARCSEC * 200.0,
                "beam_major_arcsec": 0.3,
                "beam_minor_arcsec": 0.2,
                "beam_pa_deg": 30.0,
                "npix": NPIX,
                "peak_jy_beam": PEAK,
                "noise_rms_jy_beam": RMS,
            }
        )
    pd.DataFrame(rows).to_csv(folder / "truth.csv", index=False)
    return folder


@pytest.mark.parametrize("kind", ["point_source", "galaxy", "in_library_rendered"])
def test_sources_have_the_template_s_peak_and_noise(mocks: Path, kind: str) -> None:
    template = ool.read_templates(mocks)[0]
    image = ool.MAKERS[kind](template, np.random.default_rng(0))
    assert image.shape == (NPIX, NPIX) and np.isfinite(image).all()
    assert image.max() == pytest.approx(PEAK, rel=0.2)  # the peak plus a noise excursion
    corner = image[:8, :8]  # no source there
    assert corner.std() < 5 * RMS


def test_noise_only_has_the_template_s_rms(mocks: Path) -> None:
    template = ool.read_templates(mocks)[0]
    image = ool.MAKERS["noise"](template, np.random.default_rng(1))
    assert image.std() == pytest.approx(RMS, rel=0.2)


def test_point_source_is_the_beam(mocks: Path) -> None:
    """Smoothed with the beam, a point is as wide as the beam (FWHM 6 x 4 pixels)."""
    template = ool.read_templates(mocks)[0]
    image = ool.point_source(template, np.random.default_rng(2))
    above_half = (image > PEAK / 2).sum()
    assert above_half == pytest.approx(np.pi / 4 * 6 * 4, rel=0.35)


def test_inputs_are_written_like_their_template_and_read_by_match(
    mocks: Path, tmp_path: Path
) -> None:
    independent = tmp_path / "indep"
    independent.mkdir()
    files = ool.make_inputs(ool.read_templates(mocks), independent, tmp_path / "out", 1, 2)
    assert list(files) == list(ool.KINDS)
    assert len(files["in_library_observe"]) == 2 and len(files["noise"]) == 1
    observation = read_observation(files["galaxy"][0])
    assert observation.beam_arcsec == pytest.approx((0.3, 0.2, 30.0))
    assert observation.distance_pc == pytest.approx(200.0)
