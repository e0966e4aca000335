"""Mock observations: files, WCS and beam round trips, noise, NaN borders, seeds, refusals."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pydantic
import pytest
from astropy.io import fits

from protomatch.errors import InputError, ProtomatchError, validated
from protomatch.library import schema
from protomatch.library.readers import discover_library, read_library_file
from protomatch.matching.observation import read_observation
from protomatch.simulators.observations import (
    TRUTH_COLUMNS,
    ObserveConfig,
    ObserveResult,
    make_observations,
    observe_sky,
)

SMALL = {
    "n": 8,
    "seed": 3,
    "npix_range": (48, 64),
    "snr_range": (10.0, 30.0),
    "nan_border_fraction": 0.5,
    "cube_fraction": 0.5,
}


@pytest.fixture(scope="module")
def observed(tiny_library, tmp_path_factory):
    out = tmp_path_factory.mktemp("observe") / "obs"
    result = make_observations(tiny_library, out, config=ObserveConfig(**SMALL), workers=1)
    return result, pd.read_csv(out / "truth.csv")


def _moments(image: np.ndarray) -> tuple[float, float, float]:
    """Second moments (var_row, var_col, cov) of a non-negative image, in pixels^2."""
    rows, cols = np.indices(image.shape)
    total = image.sum()
    r0, c0 = (rows * image).sum() / total, (cols * image).sum() / total
    var_r = ((rows - r0) ** 2 * image).sum() / total
    var_c = ((cols - c0) ** 2 * image).sum() / total
    cov = ((rows - r0) * (cols - c0) * image).sum() / total
    return float(var_r), float(var_c), float(cov)


# --- what is written ---------------------------------------------------------------------------


def test_files_truth_and_manifest(observed, tiny_library):
    result, truth = observed
    assert isinstance(result, ObserveResult)
    assert list(truth.columns) == list(TRUTH_COLUMNS)
    assert len(truth) == SMALL["n"] == result.n_observations
    assert sorted(p.name for p in result.out.glob("*.fits")) == sorted(truth.file)
    assert truth.npix.between(48, 64).all()
    # the fixture's seed gives both shapes and both border kinds, so every branch is checked
    assert truth.shape4d.any() and not truth.shape4d.all()
    assert truth.nan_border.any() and not truth.nan_border.all()
    manifest = json.loads((result.out / "manifest.json").read_text())
    assert manifest["kind"] == "observations"
    assert manifest["config"]["seed"] == SMALL["seed"]
    assert manifest["library"]["settings"]["seed"] == 11
    assert manifest["library"]["path"] == str(tiny_library.resolve())
    assert "mock observations" in result.describe()


def test_every_file_reads_with_its_pixel_scale_and_beam(observed):
    result, truth = observed
    for row in truth.itertuples():
        obs = read_observation(result.out / row.file)
        assert obs.image.shape == (row.npix, row.npix)
        assert obs.pixel_scale_arcsec == pytest.approx(row.pixel_arcsec, rel=1e-6)
        bmaj, bmin, bpa = obs.beam_arcsec
        assert bmaj == pytest.approx(row.beam_major_arcsec, rel=1e-6)
        assert bmin == pytest.approx(row.beam_minor_arcsec, rel=1e-6)
        assert bpa == pytest.approx(row.beam_pa_deg, rel=1e-6)
        assert obs.distance_pc == pytest.approx(row.distance_pc)
        assert obs.distance_from == "header DISTANCE"
        assert obs.intensity_unit == "Jy/beam"


def test_header_units_axes_and_shapes(observed):
    result, truth = observed
    for row in truth.itertuples():
        with fits.open(result.out / row.file) as hdus:
            header, data = hdus[0].header, hdus[0].data
        assert data.shape == ((1, 1, row.npix, row.npix) if row.shape4d else (row.npix,) * 2)
        assert header["CTYPE1"] == "RA---SIN" and header["CTYPE2"] == "DEC--SIN"
        if row.shape4d:
            assert (header["CTYPE3"], header["CTYPE4"]) == ("FREQ", "STOKES")
        assert header["CDELT1"] < 0 < header["CDELT2"]
        assert header["CDELT2"] * 3600 == pytest.approx(row.pixel_arcsec, rel=1e-9)
        assert header["CRPIX1"] == header["CRPIX2"] == pytest.approx((row.npix + 1) / 2)
        # beam keywords [deg] -> arcsec -> AU at the distance (1 arcsec at 1 pc is 1 AU)
        assert header["BMAJ"] * 3600 * row.distance_pc == pytest.approx(row.beam_major_au)
        assert header["BMIN"] * 3600 * row.distance_pc == pytest.approx(row.beam_minor_au)
        assert row.pixel_au == pytest.approx(row.pixel_arcsec * row.distance_pc)
        assert 3.0 <= row.beam_major_au / row.pixel_au <= 6.0


def test_nan_borders_where_truth_says_and_finite_inside(observed):
    result, truth = observed
    for row in truth.itertuples():
        image = read_observation(result.out / row.file).image
        n = row.npix
        centre = image[n // 4 : n - n // 4, n // 4 : n - n // 4]
        assert np.isfinite(centre).all()
        if row.nan_border:
            if row.nan_border_kind == "circle":
                corners = image[[0, 0, -1, -1], [0, -1, 0, -1]]
                assert np.isnan(corners).all()
            else:
                edges = (image[0], image[-1], image[:, 0], image[:, -1])
                assert all(np.isnan(edge).all() for edge in edges)
        else:
            assert np.isfinite(image).all()


def test_noise_level_and_correlation(observed):
    result, truth = observed
    ratios = []
    for row in truth[~truth.nan_border].itertuples():
        image = read_observation(result.out / row.file).image.astype(np.float64)
        corner = image[: row.npix // 3, : row.npix // 3]  # far from the central source
        ratios.append(corner.std() / row.noise_rms_jy_beam)
        a, b = corner[:, :-1].ravel(), corner[:, 1:].ravel()
        assert np.corrcoef(a, b)[0, 1] > 0.3  # beam-correlated, not white
        assert row.snr == pytest.approx(row.peak_jy_beam / row.noise_rms_jy_beam)
    assert all(0.4 < r < 2.0 for r in ratios)
    assert 0.6 < float(np.median(ratios)) < 1.5


def test_observed_systems_are_not_library_systems(observed, tiny_library):
    _, truth = observed
    layout = discover_library(tiny_library)
    library = np.array(
        [[read_library_file(f).params[p] for p in schema.DEFAULT_PARAMETERS] for f in layout.files]
    )
    observed_params = truth[list(schema.DEFAULT_PARAMETERS)].to_numpy()
    for params in observed_params:
        relative = np.abs(library - params) / np.abs(library)
        assert relative.max(axis=1).min() > 1e-3  # no library snapshot has these parameters
    assert truth.system.nunique() == len(truth)  # snapshots_per_system = 1: one system each


# --- the beam and the unit conversion ----------------------------------------------------------


@pytest.mark.parametrize(
    ("major", "minor", "pa"), [(4.0, 4.0, 0.0), (5.0, 3.0, 0.0), (6.0, 4.0, 90.0)]
)
def test_point_source_is_smoothed_to_the_beam_and_keeps_its_flux(major, minor, pa):
    pixel_arcsec, flux_jy, n = 0.05, 0.02, 65
    pixel_sr = (pixel_arcsec / 206264.80624709636) ** 2
    sky = np.zeros((n, n))
    sky[n // 2, n // 2] = flux_jy / pixel_sr / 1e6  # MJy/sr of a point source in one pixel
    beam = (major * pixel_arcsec, minor * pixel_arcsec, pa)
    image = observe_sky(sky, pixel_arcsec, beam)
    var_r, var_c, cov = _moments(image)
    fwhm = 2 * math.sqrt(2 * math.log(2))
    along_rows, along_cols = (major, minor) if pa == 0.0 else (minor, major)
    assert math.sqrt(var_r) * fwhm == pytest.approx(along_rows, rel=0.1)
    assert math.sqrt(var_c) * fwhm == pytest.approx(along_cols, rel=0.1)
    assert abs(cov) < 1e-6 * max(var_r, var_c)
    assert image.max() == pytest.approx(flux_jy, rel=0.05)  # Jy/beam peak = point flux


def test_beam_position_angle_is_east_of_north():
    """BPA 30 deg: the major axis turns from +row (north) towards -column (east)."""
    sky = np.zeros((81, 81))
    sky[40, 40] = 1.0
    image = observe_sky(sky, 0.1, (0.8, 0.3, 30.0))
    var_r, var_c, cov = _moments(image)
    eigenvalues, vectors = np.linalg.eigh(np.array([[var_r, cov], [cov, var_c]]))
    d_row, d_col = vectors[:, np.argmax(eigenvalues)]
    angle = math.degrees(math.atan2(-d_col, d_row)) % 180.0
    assert angle == pytest.approx(30.0, abs=1.0)


# --- seeds and refusals ------------------------------------------------------------------------


def _tiny(seed: int) -> ObserveConfig:
    return ObserveConfig(n=3, seed=seed, npix_range=(32, 40))


def test_same_seed_same_files_other_seed_different(tiny_library, tmp_path):
    first = make_observations(tiny_library, tmp_path / "a", config=_tiny(5), workers=1).out
    again = make_observations(tiny_library, tmp_path / "b", config=_tiny(5), workers=1).out
    other = make_observations(tiny_library, tmp_path / "c", config=_tiny(6), workers=1).out
    names = [*sorted(p.name for p in first.glob("*.fits")), "truth.csv"]
    for name in names:
        assert (first / name).read_bytes() == (again / name).read_bytes()
        assert (first / name).read_bytes() != (other / name).read_bytes()


@pytest.mark.slow
def test_worker_processes_do_not_change_the_output(tiny_library, tmp_path):
    serial = make_observations(tiny_library, tmp_path / "a", config=_tiny(5), workers=1).out
    parallel = make_observations(tiny_library, tmp_path / "b", config=_tiny(5), workers=2).out
    for path in [*sorted(serial.glob("*.fits")), serial / "truth.csv"]:
        assert path.read_bytes() == (parallel / path.name).read_bytes()


def test_library_store_is_followed_to_its_simulated_library(tiny_store, tiny_library, tmp_path):
    out = make_observations(tiny_store, tmp_path / "obs", config=_tiny(5), workers=1).out
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["library"]["path"] == str(tiny_library.resolve())
    assert manifest["library"]["store"]["path"] == str(tiny_store.resolve())
    with pytest.raises(ProtomatchError, match="library's own seed"):
        make_observations(tiny_store, tmp_path / "same", config=_tiny(11))


def test_the_library_seed_is_refused(tiny_library, tmp_path):
    with pytest.raises(ProtomatchError, match="seed 11 is the library's own seed"):
        make_observations(tiny_library, tmp_path / "obs", config=_tiny(11))
    assert not (tmp_path / "obs").exists()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"n": 0}, "n"),
        ({"snr_range": (30.0, 10.0)}, "snr_range"),
        ({"npix_range": (64, 48)}, "npix_range"),
        ({"beam_range_au": (-5.0, 10.0)}, "beam_range_au"),
        ({"beam_axis_ratio": (0.5, 1.5)}, "beam_axis_ratio"),
        ({"pixels_per_beam": (1.0, 3.0)}, "Nyquist"),
        ({"cube_fraction": 1.5}, "cube_fraction"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_bad_options_are_one_line_errors_and_write_nothing(tiny_library, tmp_path, change, message):
    with pytest.raises(ProtomatchError, match=message) as caught:
        config = validated(ObserveConfig, **(_tiny(5).model_dump() | change))
        make_observations(tiny_library, tmp_path / "obs", config=config)
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "obs").exists()


def test_config_model_validates_directly():
    with pytest.raises(pydantic.ValidationError):
        ObserveConfig(distance_range_pc=(450.0, 100.0))
    assert ObserveConfig().n == 60


def test_bad_library_and_workers(tiny_library, tmp_path):
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(InputError, match=r"no manifest\.json"):
        make_observations(plain, tmp_path / "obs", config=_tiny(5))
    with pytest.raises(InputError, match="not a folder"):
        make_observations(tmp_path / "missing", tmp_path / "obs", config=_tiny(5))
    with pytest.raises(ProtomatchError, match="workers"):
        make_observations(tiny_library, tmp_path / "obs", config=_tiny(5), workers=0)
    assert not (tmp_path / "obs").exists()


def test_offset_sources_sit_where_truth_says(tiny_library, tmp_path):
    from protomatch.matching.observation import source_position

    config = _tiny(5).model_copy(
        update={
            "n": 4,
            "max_offset_au": 400.0,
            "snr_range": (1000.0, 1000.0),
            "nan_border_fraction": 0.0,
            "beam_range_au": (20.0, 20.0),
        }
    )
    out = make_observations(tiny_library, tmp_path / "obs", config=config, workers=1).out
    truth = pd.read_csv(out / "truth.csv")
    moved = 0
    for row in truth.itertuples():
        image = read_observation(out / row.file).image
        found = np.array(source_position(image, row.beam_major_au / row.pixel_au))
        centre = (np.array(image.shape) - 1) / 2
        expected = centre + np.array([row.source_row_offset_px, row.source_col_offset_px])
        assert np.abs(found - expected).max() <= 1.5, row.file
        offset_au = row.pixel_au * np.hypot(row.source_row_offset_px, row.source_col_offset_px)
        assert offset_au <= 400.0 + row.pixel_au
        assert np.hypot(row.source_row_offset_px, row.source_col_offset_px) <= 0.35 * row.npix + 1
        moved += offset_au > 2 * row.pixel_au
    assert moved >= 2  # most sources are off the centre
