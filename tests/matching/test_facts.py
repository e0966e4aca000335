"""No silent fallback: a library and observations protomatch did not write, end to end.

A research-schema library without any attributes (float64 Jy/sr), and FITS observations with
a WCS, a beam and Jy/beam but no DISTANCE: ``match`` refuses with one line naming what is
missing and the option that supplies it; with the library's pixel scale given at ingest and
the distance at match, the beam- and noise-matched path runs; with ``--unscaled`` it runs and
says so on the terminal and at the top of the report.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pydantic
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from protomatch.library.description import LibraryDescription
from protomatch.library.ingest import IngestConfig, ingest_library
from protomatch.matching.facts import ObservationFacts, with_facts
from protomatch.matching.index import build_index
from protomatch.matching.match import MatchConfig
from protomatch.matching.observation import read_observation
from protomatch.training.config import load_config
from protomatch.training.engine import train_model
from tests.conftest import tiny_training_overrides, write_foreign_library

LIBRARY_AU_PER_PIXEL = 10.0  # of the foreign library's 40 px files: a 400 AU field


@pytest.fixture(scope="module")
def foreign(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Indexes of one foreign library: ``unscaled`` (ingested as is) and ``scaled``."""
    root = tmp_path_factory.mktemp("foreign")
    library = write_foreign_library(root / "library", {"pixel_size": 3.0}, systems=8)
    config = IngestConfig(size=32)
    ingest_library(library, root / "bare", config=config, workers=1)
    described = LibraryDescription(au_per_pixel=LIBRARY_AU_PER_PIXEL, intensity_unit="Jy/sr")
    ingest_library(library, root / "scaled", config=config, described=described, workers=1)
    settings = load_config(None, tiny_training_overrides(epochs=1))
    train_model(root / "scaled", root / "model", config=settings)
    for name in ("bare", "scaled"):
        build_index(root / "model", root / name, root / f"index-{name}")
    return {"unscaled": root / "index-bare", "scaled": root / "index-scaled", "root": root}


def _sky_header(pixel_arcsec: float, side: int) -> fits.Header:
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---SIN", "DEC--SIN"]
    wcs.wcs.cdelt = [-pixel_arcsec / 3600, pixel_arcsec / 3600]
    wcs.wcs.crpix = [side / 2 + 0.5, side / 2 + 0.5]
    wcs.wcs.crval = [250.0, -24.0]
    return wcs.to_header()


def write_observation(path: Path, **keywords: object) -> Path:
    """A FITS observation: WCS at 0.05"/px, a 0.3" x 0.25" beam, Jy/beam, noise, no DISTANCE.

    ``keywords`` are set in the header afterwards (None deletes one).
    """
    side = 96
    y, x = np.mgrid[:side, :side] - side / 2
    image = 0.02 * np.exp(-(x**2 + y**2) / (2 * 6.0**2))
    image += np.random.default_rng(1).normal(0, 2e-4, image.shape)
    header = _sky_header(0.05, side)
    header.update(BMAJ=0.3 / 3600, BMIN=0.25 / 3600, BPA=20.0, BUNIT="Jy/beam")
    for key, value in keywords.items():
        if value is None:
            header.remove(key, ignore_missing=True)
        else:
            header[key] = value
    fits.PrimaryHDU(image.astype(np.float32), header=header).writeto(path)
    return path


def _one_line_error(run_cli, *args: object) -> str:
    status, out, err = run_cli(*args)
    assert status == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("protomatch: error: "), err
    assert "Traceback" not in err
    return lines[0]


def test_missing_distance_is_refused_with_the_option(foreign, tmp_path, run_cli) -> None:
    obs = write_observation(tmp_path / "obs.fits")
    line = _one_line_error(run_cli, "match", foreign["scaled"], obs, "-o", tmp_path / "r")
    assert line == (
        f"protomatch: error: {obs}: has no distance (no DISTANCE keyword): give --distance PC "
        "or --distance-range LO HI; or --unscaled to match without it"
    )
    assert not (tmp_path / "r").exists()


def test_library_without_pixel_scale_is_refused(foreign, tmp_path, run_cli) -> None:
    obs = write_observation(tmp_path / "obs.fits")
    line = _one_line_error(
        run_cli, "match", foreign["unscaled"], obs, "--distance", 140, "-o", tmp_path / "r"
    )
    store = json.loads((foreign["unscaled"] / "index.json").read_text())["library"]["path"]
    assert line.startswith(f"protomatch: error: {store}: records no pixel scale")
    assert "--au-per-pixel" in line and "--unscaled" in line
    assert not (tmp_path / "r").exists()


def test_scaled_library_and_distance_run_the_beam_matched_path(foreign, tmp_path, run_cli):
    obs = write_observation(tmp_path / "obs.fits")
    status, out, err = run_cli(
        "match", foreign["scaled"], obs, "--distance", 140, "--k", 8, "-o", tmp_path / "r"
    )
    assert status == 0, err
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    compared = summary["compared"]
    assert compared["unscaled"] is False and compared["missing"] == []
    assert compared["distance_pc"] == 140 and compared["distance_from"] == "given"
    assert compared["library_au_per_pixel"] == pytest.approx(LIBRARY_AU_PER_PIXEL * 40 / 32)
    assert compared["observation_au_per_pixel"] == pytest.approx(0.05 * 140)
    assert compared["beam_au"] == pytest.approx([0.3 * 140, 0.25 * 140])
    assert compared["peak_snr"] > 10
    notes = summary["notes"]
    assert any("convolved to the observation's beam" in n for n in notes)
    assert any("resampled from 7 to the library's 12.5 AU/pixel" in n for n in notes)
    # every note reaches the terminal, one line each, after the estimates
    for note in notes:
        assert f"  note: {note}" in out.splitlines()
    assert "WITHOUT" not in out


def test_unscaled_runs_and_says_so_on_the_terminal_and_the_report(foreign, tmp_path, run_cli):
    obs = write_observation(tmp_path / "obs.fits")
    status, out, err = run_cli(
        "match", foreign["unscaled"], obs, "--unscaled", "--k", 8, "-o", tmp_path / "r"
    )
    assert status == 0, err
    missing = ["the distance", "the library's pixel scale", "the brightness in the library's unit"]
    assert f"  MATCHED WITHOUT {', '.join(missing).upper()} (--unscaled)" in out.splitlines()
    assert "matching WITHOUT the distance" in err
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["compared"]["unscaled"] is True
    assert summary["compared"]["missing"] == missing
    page = (tmp_path / "r" / "index.html").read_text()
    body = page[page.index("<body") :]
    assert "--unscaled" in body[:2000]
    assert any("shorter side" in n for n in summary["notes"])


def test_bare_npy_needs_its_facts_and_runs_with_them(foreign, tmp_path, run_cli) -> None:
    image = fits.getdata(write_observation(tmp_path / "src.fits"))
    path = tmp_path / "obs.npy"
    np.save(path, image)
    args = ("match", foreign["scaled"], path, "--k", 8)
    line = _one_line_error(run_cli, *args, "-o", tmp_path / "r")
    assert "has no pixel scale" in line and "--pixel-scale" in line
    line = _one_line_error(run_cli, *args, "--pixel-scale", 0.05, "-o", tmp_path / "r")
    assert "has no distance" in line
    line = _one_line_error(
        run_cli, *args, "--pixel-scale", 0.05, "--distance", 140, "-o", tmp_path / "r"
    )
    assert "has no beam" in line and "--beam MAJOR MINOR PA" in line
    facts = ("--pixel-scale", 0.05, "--distance", 140, "--beam", 0.3, 0.25, 20)
    line = _one_line_error(run_cli, *args, *facts, "-o", tmp_path / "r")
    assert "has no intensity unit (BUNIT): give --intensity-unit" in line
    status, _, err = run_cli(*args, *facts, "--intensity-unit", "Jy/beam", "-o", tmp_path / "r")
    assert status == 0, err
    compared = json.loads((tmp_path / "r" / "summary.json").read_text())["compared"]
    assert compared["beam_arcsec"] == pytest.approx([0.3, 0.25, 20])
    assert compared["missing"] == []


@pytest.mark.parametrize(
    ("keywords", "problem"),
    [
        ({"DISTANCE": -5}, "header DISTANCE = -5 is not a positive distance in pc"),
        ({"DISTANCE": "far"}, "header DISTANCE = 'far' is not a positive distance in pc"),
        ({"DISTANCE": 0.0}, "header DISTANCE = 0.0 is not a positive distance in pc"),
        ({"CDELT1": 0.0}, "header CDELT1 = 0.0 is not a pixel scale"),
        ({"CDELT2": None}, "but no CDELT2 or CD matrix, so its pixel scale is unknown"),
        ({"BMAJ": -1.0}, "header BMAJ = -1.0 is not a positive beam size (deg)"),
        ({"BPA": "north"}, "header BPA = 'north' is not an angle (deg)"),
    ],
)
def test_invalid_header_values_name_the_keyword(foreign, tmp_path, run_cli, keywords, problem):
    obs = write_observation(tmp_path / "obs.fits", **keywords)
    line = _one_line_error(
        run_cli, "match", foreign["scaled"], obs, "--unscaled", "-o", tmp_path / "r"
    )
    assert line.startswith(f"protomatch: error: {obs}: ")
    assert f"{problem}; fix the header or give --" in line
    assert not (tmp_path / "r").exists()


def test_fits_without_cdelt_is_not_one_degree_per_pixel(tmp_path) -> None:
    obs = read_observation(write_observation(tmp_path / "o.fits", CDELT1=None, CDELT2=None))
    assert obs.pixel_scale_arcsec is None
    assert "pixel_scale" in obs.problems
    given = with_facts(obs, ObservationFacts(pixel_scale_arcsec=0.05))
    assert given.pixel_scale_arcsec == 0.05 and "pixel_scale" not in given.problems
    assert any("CDELT" in note and "ignored, --pixel-scale given" in note for note in given.notes)


def test_given_distance_over_the_header_is_a_note(foreign, tmp_path, run_cli) -> None:
    obs = write_observation(tmp_path / "obs.fits", DISTANCE=200.0)
    status, out, err = run_cli(
        "match", foreign["scaled"], obs, "--distance", 140, "--k", 8, "-o", tmp_path / "r"
    )
    assert status == 0, err
    assert "note: --distance 140 pc overrides the header's DISTANCE 200 pc" in out


def test_distance_range_pools_the_matches_and_reports_the_preferred_distance(
    foreign, tmp_path, run_cli
) -> None:
    obs = write_observation(tmp_path / "obs.fits")
    status, out, err = run_cli(
        "match", foreign["scaled"], obs, "--distance-range", 100, 400, "--distance-steps", 3,
        "--k", 8, "-o", tmp_path / "r",
    )  # fmt: skip
    assert status == 0, err
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    distance = summary["distance"]
    assert distance["grid"] == pytest.approx([100, 200, 400])
    assert sum(distance["counts"]) == 8
    assert 100 <= distance["q16"] <= distance["median"] <= distance["q84"] <= 400
    compared = summary["compared"]
    assert compared["distance_pc"] == pytest.approx(distance["best"])
    assert compared["distance_from"] == "best match's, of 3 in 100-400 pc"
    assert compared["observation_au_per_pixel"] == pytest.approx(
        compared["pixel_scale_arcsec"] * distance["best"]
    )
    matches = pd.read_csv(tmp_path / "r" / "matches.csv")
    assert set(matches["distance_pc"]) <= {100.0, 200.0, 400.0}
    assert matches["image_id"].is_unique
    assert "preferred by the matches" in out
    assert "overrides" not in out  # no header DISTANCE: nothing was overridden


def test_distance_range_over_a_header_distance_is_one_note(foreign, tmp_path, run_cli) -> None:
    obs = write_observation(tmp_path / "obs.fits", DISTANCE=300.0)
    status, out, err = run_cli(
        "match", foreign["scaled"], obs, "--distance-range", 100, 400, "--distance-steps", 3,
        "--k", 8, "-o", tmp_path / "r",
    )  # fmt: skip
    assert status == 0, err
    overrides = [line for line in out.splitlines() if "overrides" in line]
    expected = "  note: --distance-range 100-400 pc overrides the header's DISTANCE 300 pc"
    assert overrides == [expected]


def test_header_distance_is_kept_without_distance_options(foreign, tmp_path, run_cli) -> None:
    obs = write_observation(tmp_path / "obs.fits", DISTANCE=250.0)
    status, _, err = run_cli("match", foreign["scaled"], obs, "--k", 8, "-o", tmp_path / "r")
    assert status == 0, err
    compared = json.loads((tmp_path / "r" / "summary.json").read_text())["compared"]
    assert compared["distance_pc"] == 250.0
    assert compared["distance_from"] == "header DISTANCE"


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (("--distance", 140, "--distance-range", 100, 200), "not both"),
        (("--distance-range", 300, 200), "0 < LO <= HI"),
        (("--beam", 0.2, 0.3, 0), "minor FWHM 0.3 exceeds major FWHM 0.2"),
        (("--pixel-scale", 0.05, "--au-per-pixel", 7), "not both"),
        (("--pixel-scale", -1), "pixel_scale_arcsec"),
    ],
)
def test_bad_match_options_are_one_line(foreign, tmp_path, run_cli, args, problem) -> None:
    obs = write_observation(tmp_path / "obs.fits")
    line = _one_line_error(run_cli, "match", foreign["scaled"], obs, *args, "-o", tmp_path / "r")
    assert problem in line


def test_observation_facts_validate() -> None:
    with pytest.raises(pydantic.ValidationError, match="positive FWHMs"):
        ObservationFacts(beam_arcsec=(0.0, 0.0, 0.0))
    assert ObservationFacts(beam_arcsec=(0.3, 0.2, 10)).beam_arcsec == (0.3, 0.2, 10.0)
    assert MatchConfig(distance_range_pc=(100, 400), distance_steps=3).distances() == (
        pytest.approx([100, 200, 400])
    )
