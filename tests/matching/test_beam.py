"""Beam matching: FITS beam to library pixels, its orientation, the Gaussian, the cache."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from astropy.io import fits
from astropy.wcs import WCS

from protomatch.library.ingest import IngestConfig, ingest_library
from protomatch.library.schema import DEFAULT_PARAMETERS
from protomatch.library.store import LibraryStore
from protomatch.matching.conditioned import (
    _NOISE_SEED,
    BeamMatchedLibrary,
    _correlated_noise,
    _noise_key,
    beam_key,
    noise_level,
    pixel_vectors,
)
from protomatch.matching.observation import (
    PreparedObservation,
    beam_in_library_pixels,
    clipped_mean,
    read_observation,
)
from protomatch.neural_nets.trained import load_model
from protomatch.optics.beam import FWHM_PER_SIGMA, convolve_with_beam
from protomatch.optics.orientation import (
    DIHEDRAL,
    array_position_angle,
    dihedral_beam,
    dihedral_image,
)

PIXEL_ARCSEC = 0.05


def _write_fits(
    path, bmaj_arcsec, bmin_arcsec, bpa_deg, *, mirrored=False, distance=None, rotation=0.0
):
    """A 2-D FITS image with a SIN WCS (east left unless ``mirrored``, the grid turned by
    ``rotation`` degrees through a PC matrix) and beam keywords."""
    wcs = _wcs(mirrored, rotation)
    header = wcs.to_header()
    header["BMAJ"] = bmaj_arcsec / 3600.0
    header["BMIN"] = bmin_arcsec / 3600.0
    header["BPA"] = bpa_deg
    header["BUNIT"] = "Jy/beam"
    if distance is not None:
        header["DISTANCE"] = distance
    image = np.ones((64, 64), dtype=np.float32)
    fits.PrimaryHDU(image, header=header).writeto(path)
    return path


def _wcs(mirrored: bool = False, rotation: float = 0.0) -> WCS:
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---SIN", "DEC--SIN"]
    wcs.wcs.cunit = ["deg", "deg"]
    sign = 1.0 if mirrored else -1.0
    wcs.wcs.cdelt = [sign * PIXEL_ARCSEC / 3600.0, PIXEL_ARCSEC / 3600.0]
    turn = math.radians(rotation)
    wcs.wcs.pc = [[math.cos(turn), -math.sin(turn)], [math.sin(turn), math.cos(turn)]]
    wcs.wcs.crpix = [32.5, 32.5]
    wcs.wcs.crval = [83.8, -5.4]
    return wcs


def _moments(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flux centroid (row, col) and 2x2 covariance (pixels^2) of a non-negative image."""
    rows, cols = np.indices(image.shape)
    total = image.sum()
    centre = np.array([(rows * image).sum(), (cols * image).sum()]) / total
    dr, dc = rows - centre[0], cols - centre[1]
    cov = np.array(
        [
            [(dr * dr * image).sum(), (dr * dc * image).sum()],
            [(dr * dc * image).sum(), (dc * dc * image).sum()],
        ]
    )
    return centre, cov / total


def _point(size: int = 65) -> torch.Tensor:
    image = torch.zeros(size, size, dtype=torch.float64)
    image[size // 2, size // 2] = 1.0
    return image


# --- the beam in library pixels ------------------------------------------------------------


def test_beam_keywords_degrees_to_library_pixels(tmp_path):
    observation = read_observation(_write_fits(tmp_path / "b.fits", 0.5, 0.25, 30.0))
    assert observation.beam_arcsec == pytest.approx((0.5, 0.25, 30.0))
    # 0.5 arcsec at 140 pc = 70 AU = 7 pixels of 10 AU
    beam = beam_in_library_pixels(observation.at_distance(140.0), 10.0)
    assert beam == pytest.approx((7.0, 3.5, 30.0))


def test_distance_from_header_and_missing_inputs(tmp_path):
    observation = read_observation(_write_fits(tmp_path / "d.fits", 0.4, 0.4, 0.0, distance=250))
    assert beam_in_library_pixels(observation, 25.0) == pytest.approx((4.0, 4.0, 0.0))
    assert beam_in_library_pixels(observation.at_distance(100.0), 25.0) == pytest.approx(
        (1.6, 1.6, 0.0)
    )
    assert beam_in_library_pixels(observation, None) is None
    plain = read_observation(_write_fits(tmp_path / "n.fits", 0.4, 0.4, 0.0))
    assert beam_in_library_pixels(plain, 25.0) is None  # no distance anywhere
    np.save(tmp_path / "a.npy", np.ones((8, 8), dtype=np.float32))
    assert (
        beam_in_library_pixels(read_observation(tmp_path / "a.npy").at_distance(100.0), 25.0)
        is None
    )


@pytest.mark.parametrize("rotation", [0.0, 35.0, -100.0])
@pytest.mark.parametrize("mirrored", [False, True])
@pytest.mark.parametrize("bpa", [30.0, 120.0])
def test_elongated_beam_lies_along_the_sky_position_angle(tmp_path, mirrored, bpa, rotation):
    """The convolved point source is elongated along the sky direction at BPA east of north,
    located in the array through the WCS, whatever its handedness and rotation."""
    path = _write_fits(tmp_path / "e.fits", 1.0, 0.4, bpa, mirrored=mirrored, rotation=rotation)
    major, minor, pa = beam_in_library_pixels(read_observation(path).at_distance(100.0), 10.0)
    assert (major, minor) == pytest.approx((10.0, 4.0))
    smooth = convolve_with_beam(_point(), major, minor, pa).numpy()
    _, cov = _moments(smooth)
    eigenvalues, vectors = np.linalg.eigh(cov)
    axis = vectors[:, 1]  # (row, col) of the major axis
    # Independent truth: a point 1 arcsec from the centre towards PA (east of north).
    wcs = _wcs(mirrored, rotation)
    ra0, dec0 = wcs.wcs.crval
    offset = np.deg2rad(bpa)
    ra = ra0 + math.sin(offset) / 3600.0 / math.cos(math.radians(dec0))
    dec = dec0 + math.cos(offset) / 3600.0
    x0, y0 = wcs.world_to_pixel_values(ra0, dec0)
    x1, y1 = wcs.world_to_pixel_values(ra, dec)
    expected = np.array([y1 - y0, x1 - x0])  # array index is [row = y, col = x]
    expected /= np.linalg.norm(expected)
    assert abs(float(axis @ expected)) > 0.999
    assert math.sqrt(eigenvalues[1] / eigenvalues[0]) == pytest.approx(2.5, rel=0.02)


@pytest.mark.parametrize(
    ("major", "minor", "pa"), [(6.0, 3.0, 0.0), (4.0, 4.0, 0.0), (5.0, 2.0, 70.0)]
)
def test_gaussian_from_fwhm_reproduces_the_beam(major, minor, pa):
    smooth = convolve_with_beam(_point(), major, minor, pa).numpy()
    centre, cov = _moments(smooth)
    assert centre == pytest.approx([32.0, 32.0], abs=1e-9)
    measured = np.sqrt(np.linalg.eigvalsh(cov))[::-1] * FWHM_PER_SIGMA
    assert measured == pytest.approx([major, minor], rel=0.01)
    # the peak of a unit point source is 1 / (2 pi sigma_major sigma_minor)
    sigmas = np.array([major, minor]) / FWHM_PER_SIGMA
    assert smooth.max() == pytest.approx(1 / (2 * math.pi * sigmas.prod()), rel=0.02)


@pytest.mark.parametrize(("quarter_turns", "flip"), DIHEDRAL)
def test_dihedral_turns_image_and_beam_together(quarter_turns, flip):
    rng = np.random.default_rng(4)
    image = rng.random((33, 33))
    beam = (5.0, 2.0, 30.0)
    then_turned = dihedral_image(
        convolve_with_beam(torch.from_numpy(image), *beam).numpy(), quarter_turns, flip
    )
    turned_beam = dihedral_beam(beam, quarter_turns, flip)
    turned_first = convolve_with_beam(
        torch.from_numpy(dihedral_image(image, quarter_turns, flip)), *turned_beam
    ).numpy()
    np.testing.assert_allclose(then_turned, turned_first, atol=1e-12)
    if (quarter_turns, flip) == (1, False):  # a quarter turn is torch.rot90(dims=(-1, -2))
        expected = torch.rot90(torch.from_numpy(image), 1, dims=(-1, -2)).numpy()
        np.testing.assert_array_equal(dihedral_image(image, 1, False), expected)


def test_beam_key_grid():
    assert beam_key(None) is None
    assert beam_key((3.1, 2.05, 34.0)) == (3.0, 2.0, 30.0)
    assert beam_key((3.1, 3.0, 77.0)) == (3.0, 3.0, 0.0)  # round: PA does not matter
    assert beam_key((0.05, 0.01, 10.0)) == (0.25, 0.25, 0.0)
    assert beam_key((4.0, 2.0, 178.0)) == (4.0, 2.0, 0.0)


# --- the beam-matched library --------------------------------------------------------------


@pytest.fixture(scope="module")
def blob_store(tmp_path_factory):
    """A 32 px store of compact, off-centre Gaussian blobs (no flux near the edges)."""
    root = tmp_path_factory.mktemp("blobs") / "library"
    root.mkdir()
    rows, cols = np.indices((32, 32))
    records = []
    for i, (r0, c0, width) in enumerate(
        [(14, 17, 1.0), (16, 12, 1.5), (18, 16, 0.7), (15, 15, 2.0)]
    ):
        image = np.exp(-((rows - r0) ** 2 + (cols - c0) ** 2) / (2 * width**2)) * (i + 1)
        np.save(root / f"b{i}.npy", image.astype(np.float32))
        parameters = {name: 0.1 * (i + 1) for name in DEFAULT_PARAMETERS}
        records.append({"file": f"b{i}.npy", "system": f"s{i}", **parameters})
    pd.DataFrame(records).to_csv(root / "catalog.csv", index=False)
    out = tmp_path_factory.mktemp("blob-store") / "store"
    ingest_library(root, out, config=IngestConfig(size=32), workers=1)
    return LibraryStore.open(out)


def test_convolution_keeps_flux_and_centroid(tiny_model, blob_store):
    library = BeamMatchedLibrary(load_model(tiny_model), blob_store, block=3)
    before = np.array(blob_store.images, dtype=np.float64)
    after = library.convolved_images((3.0, 1.5, 40.0), 0, len(blob_store)).astype(np.float64)
    assert after.shape == before.shape
    np.testing.assert_allclose(after.sum(axis=(1, 2)), before.sum(axis=(1, 2)), rtol=1e-4)
    for a, b in zip(after, before):
        np.testing.assert_allclose(_moments(a)[0], _moments(b)[0], atol=1e-3)
    assert (after.max(axis=(1, 2)) < before.max(axis=(1, 2))).all()


def test_cache_hits_return_identical_arrays(tiny_model, tiny_store):
    trained, store = load_model(tiny_model), LibraryStore.open(tiny_store)
    library = BeamMatchedLibrary(trained, store, cache_size=2, block=50)
    first = library.embeddings((2.0, 1.2, 30.0))
    assert first.shape == (len(store), trained.encoder_config.embedding_dim)
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, rtol=1e-5)
    assert library.embeddings((2.05, 1.22, 33.0)) is first  # same grid cell
    assert library.misses == 1
    other = library.embeddings((2.0, 1.2, 90.0))
    assert other is not first and not np.allclose(other, first)
    plain = library.embeddings(None)
    np.testing.assert_allclose(
        plain,
        trained.embed(np.asarray(store.images), store.table["mean_intensity"].to_numpy()),
        atol=1e-5,
    )
    assert library.misses == 3
    assert library.embeddings((2.0, 1.2, 30.0)) is not first  # evicted (cache of two)
    assert not first.flags.writeable


def test_convolved_pixels_are_unit_rows_of_the_convolved_library(tiny_model, tiny_store):
    trained, store = load_model(tiny_model), LibraryStore.open(tiny_store)
    library = BeamMatchedLibrary(trained, store, block=64)
    beam = (3.0, 2.0, 60.0)
    pixels = library.convolved_pixels(beam)
    assert pixels.shape == (len(store), 32 * 32)
    assert library.convolved_pixels(beam) is pixels
    np.testing.assert_allclose(np.linalg.norm(pixels, axis=1), 1.0, rtol=1e-5)
    expected = pixel_vectors(library.convolved_images(beam, 0, 10), trained.preprocess)
    np.testing.assert_allclose(pixels[:10], expected, atol=1e-6)
    assert not np.allclose(pixels, library.convolved_pixels(None))


def test_dihedral_similarities_do_not_depend_on_the_sky_orientation(tiny_model, tiny_store):
    """Turning the observation (and its beam) only permutes the 8 orientation columns."""
    trained, store = load_model(tiny_model), LibraryStore.open(tiny_store)
    library = BeamMatchedLibrary(trained, store, block=96)
    image = np.array(store.images[5], dtype=np.float32)
    image[3:9, 20:24] += 0.3  # break any symmetry of the simulated image
    brightness = float(store.table["mean_intensity"].iloc[5])
    beam = (3.0, 1.5, 20.0)
    given = library.similarities(image, brightness, beam)
    turned = library.similarities(
        dihedral_image(image, 1, True), brightness, dihedral_beam(beam, 1, True)
    )
    assert given.shape == turned.shape == (len(store), 8)
    np.testing.assert_allclose(np.sort(given, axis=1), np.sort(turned, axis=1), atol=2e-5)
    assert not np.allclose(given[:, 0], turned[:, 0], atol=1e-3)  # one orientation does depend
    single = library.similarities(image, brightness, beam, dihedral=False)
    np.testing.assert_allclose(single[:, 0], given[:, 0], atol=1e-6)


def test_noise_level_is_the_robust_rms_of_the_background() -> None:
    rng = np.random.default_rng(0)
    image = rng.normal(0.0, 0.05, (64, 64))
    image[30:34, 30:34] = 1.0  # a compact source barely moves the median deviation
    image[:5] = 0.0  # blank border pixels are left out
    assert noise_level(image) == pytest.approx(0.05, rel=0.1)
    assert noise_level(np.zeros((8, 8))) == 0.0


def test_noise_matched_library_is_cached_and_noisier(tiny_model, tiny_store) -> None:
    trained = load_model(tiny_model)
    library = BeamMatchedLibrary(trained, LibraryStore.open(tiny_store), cache_size=4)
    beam = (2.0, 2.0, 0.0)
    clean = library.embeddings(beam)
    noisy = library.embeddings(beam, 0.0525)
    assert library.embeddings(beam, 0.053) is noisy  # same 10 % bin: cached
    assert noisy.shape == clean.shape
    assert not np.allclose(noisy, clean)
    np.testing.assert_allclose(np.linalg.norm(noisy, axis=1), 1.0, atol=1e-5)
    # fixed seed: a fresh library gives the same noisy embeddings
    again = BeamMatchedLibrary(trained, LibraryStore.open(tiny_store)).embeddings(beam, 0.0525)
    np.testing.assert_allclose(again, noisy, atol=1e-6)


# --- brightness of noisy images ---------------------------------------------------------------


def test_clipped_mean_counts_only_pixels_above_two_noise_rms() -> None:
    image = np.zeros((1, 4, 4))
    image[0, 0, :4] = [5.0, 2.5, 1.9, -3.0]
    assert clipped_mean(image, 1.0)[0] == pytest.approx((5.0 + 2.5) / 16)
    assert clipped_mean(image, 0.0)[0] == pytest.approx((5.0 + 2.5 + 1.9) / 16)
    per_image = clipped_mean(np.stack([image[0], image[0]]), np.array([1.0, 3.0]))
    np.testing.assert_allclose(per_image, [(5.0 + 2.5) / 16, 0.0])


def test_clipped_brightness_of_a_noisy_compact_source_is_steadier_than_its_mean() -> None:
    """Beam-correlated noise summed over the field swamps the mean of a compact source."""
    offsets = np.arange(64) - 31.5
    source = np.exp(-0.5 * (offsets[:, None] ** 2 + offsets[None, :] ** 2) / 2.0**2)
    beam = (3.0, 3.0, 0.0)
    noise = 0.1  # peak S/N 10
    plain, clipped = [], []
    for seed in range(40):
        unit = _correlated_noise((seed,), 1, source.shape, beam)[0]
        noisy = (source + noise * unit).astype(np.float32)
        prepared = PreparedObservation(noisy / noisy.max(), float(noisy.max()), ())
        plain.append(prepared.mean_intensity)
        clipped.append(prepared.clipped_intensity(noise / noisy.max()))
    plain, clipped = np.array(plain), np.array(clipped)
    # Positive noise peaks above the cut bias it high, the same way on both sides of a
    # noise-matched comparison; what matters is that it scatters far less.
    assert np.std(clipped) / np.mean(clipped) < 0.3 * np.std(plain) / np.mean(plain)


def test_unknown_units_or_nothing_above_the_noise_give_no_brightness() -> None:
    image = np.full((8, 8), 0.5, dtype=np.float32)
    assert PreparedObservation(image, None, ()).clipped_intensity(0.1) is None
    assert PreparedObservation(image, None, ()).mean_intensity is None
    assert PreparedObservation(image, 2.0, ()).mean_intensity == pytest.approx(1.0)
    assert PreparedObservation(image, 2.0, ()).clipped_intensity(0.3) is None


def test_noise_matched_similarities_are_those_of_the_noisy_library(tiny_model, tiny_store) -> None:
    trained = load_model(tiny_model)
    store = LibraryStore.open(tiny_store)
    library = BeamMatchedLibrary(trained, store)
    beam = (2.0, 2.0, 0.0)
    rng = np.random.default_rng(3)
    image = convolve_with_beam(torch.from_numpy(np.array(store.images[5])), *beam).numpy()
    image = image + 0.05 * image.max() * rng.standard_normal(image.shape).astype(np.float32)
    image = image / image.max()
    prepared = PreparedObservation(image, float(store.table["peak"].iloc[5]), ())
    scores, noise = library.noise_matched_similarities(prepared, beam)
    assert noise == pytest.approx(noise_level(image))
    brightness = np.array([prepared.clipped_intensity(noise)])
    query = trained.embed(image[None], brightness)[0]
    np.testing.assert_allclose(scores, library.embeddings(beam, noise) @ query, atol=1e-5)
    assert scores.shape == (len(store),)


def test_cd_matrix_and_missing_wcs_orientation(tmp_path) -> None:
    """A CD matrix turns the PA like the equivalent PC matrix; no WCS means north up."""
    pc = _write_fits(tmp_path / "pc.fits", 1.0, 0.4, 30.0, rotation=35.0)
    header = fits.getheader(pc)
    wcs = _wcs(rotation=35.0)
    matrix = wcs.wcs.get_pc() * wcs.wcs.cdelt[:, None]
    for key in [k for k in header if k.startswith(("PC", "CDELT"))]:
        del header[key]
    for i in range(2):
        for j in range(2):
            header[f"CD{i + 1}_{j + 1}"] = matrix[i, j]
    cd = tmp_path / "cd.fits"
    fits.PrimaryHDU(np.ones((64, 64), dtype=np.float32), header=header).writeto(cd)
    by_pc, by_cd = (
        beam_in_library_pixels(read_observation(p).at_distance(100.0), 10.0) for p in (pc, cd)
    )
    assert by_cd == pytest.approx(by_pc)
    # this PC matrix turns the grid's axes by +35 deg on the sky, so the beam turns by -35 deg
    # against the array (the sense is checked independently in the elongated-beam test)
    assert by_pc[2] == pytest.approx((30.0 - 35.0) % 180.0)
    assert array_position_angle(None, 30.0) == pytest.approx(30.0)


def test_analogue_similarity_is_the_neighbour_statistic_of_the_matched_comparison(
    tiny_model, tiny_store
) -> None:
    from protomatch.matching.index import neighbour_similarity

    trained = load_model(tiny_model)
    store = LibraryStore.open(tiny_store)
    library = BeamMatchedLibrary(trained, store)
    beam = (2.0, 1.5, 30.0)
    systems = store.table["system"].astype(str).to_numpy()
    # without noise the sampled queries are the convolved library images themselves
    noiseless = library.analogue_similarity(beam, 0.0)
    expected = neighbour_similarity(library.embeddings(beam), systems)
    assert noiseless == pytest.approx(expected, abs=1e-3)  # float32 batches differ slightly
    noisy = library.analogue_similarity(beam, 0.0525)
    assert noisy["p1"] <= noisy["p5"] <= noisy["median"] <= 1.0
    assert noisy != pytest.approx(noiseless)  # queries carry their own noise realisation
    assert library.analogue_similarity(beam, 0.053) == noisy  # same noise bin: cached


# --- the observation's footprint ----------------------------------------------------------------


def _half_field() -> np.ndarray:
    footprint = np.zeros((32, 32), dtype=bool)
    footprint[8:24, 6:26] = True
    return footprint


def test_footprint_blanks_the_noisy_library_outside_the_observed_area(tiny_model, tiny_store):
    trained, store = load_model(tiny_model), LibraryStore.open(tiny_store)
    library = BeamMatchedLibrary(trained, store, cache_size=4, block=64)
    beam, footprint = (2.0, 2.0, 0.0), _half_field()
    whole = library.embeddings(beam, 0.05)
    masked = library.embeddings(beam, 0.05, footprint)
    assert library.embeddings(beam, 0.05, footprint.copy()) is masked  # keyed by its content
    assert not np.allclose(whole, masked)
    # the same as embedding the noisy images blanked by hand
    images = library.convolved_images(beam, 0, 4)
    peaks = images.reshape(4, -1).max(axis=1)
    noise = _correlated_noise((_NOISE_SEED, 0), 64, (32, 32), beam)[:4]
    level = 10 ** _noise_key(0.05)
    noisy = (images + level * peaks[:, None, None] * noise) * footprint
    brightness = np.array(store.table["peak"].iloc[:4]) * clipped_mean(noisy, level * peaks)
    expected = trained.embed(noisy, brightness)
    np.testing.assert_allclose(masked[:4], expected, atol=1e-5)


def test_footprint_blanks_the_beam_matched_pixel_baseline(tiny_model, tiny_store):
    trained, store = load_model(tiny_model), LibraryStore.open(tiny_store)
    library = BeamMatchedLibrary(trained, store, pixel_cache_size=2, block=64)
    beam, footprint = (3.0, 2.0, 60.0), _half_field()
    pixels = library.convolved_pixels(beam, footprint)
    blanked = library.convolved_images(beam, 0, 10) * footprint
    np.testing.assert_allclose(pixels[:10], pixel_vectors(blanked, trained.preprocess), atol=1e-6)
    assert not np.allclose(pixels, library.convolved_pixels(beam))


def test_noise_matched_similarities_use_the_observation_footprint(tiny_model, tiny_store):
    trained, store = load_model(tiny_model), LibraryStore.open(tiny_store)
    library = BeamMatchedLibrary(trained, store)
    beam, footprint = (2.0, 2.0, 0.0), _half_field()
    rng = np.random.default_rng(3)
    image = convolve_with_beam(torch.from_numpy(np.array(store.images[5])), *beam).numpy()
    image = image + 0.05 * image.max() * rng.standard_normal(image.shape).astype(np.float32)
    image = image * footprint / (image * footprint).max()
    peak = float(store.table["peak"].iloc[5])
    prepared = PreparedObservation(image, peak, (), footprint=footprint)
    scores, noise = library.noise_matched_similarities(prepared, beam)
    query = trained.embed(image[None], np.array([prepared.clipped_intensity(noise)]))[0]
    np.testing.assert_allclose(
        scores, library.embeddings(beam, noise, footprint) @ query, atol=1e-5
    )
