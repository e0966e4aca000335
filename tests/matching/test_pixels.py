"""The strongest simple baseline: noise-aware asinh stretch, beam-matched, orientation-free."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from protomatch.library.store import LibraryStore
from protomatch.matching.conditioned import BeamMatchedLibrary
from protomatch.matching.pixels import asinh_rows, fused_scores, strong_pixel_similarities
from protomatch.neural_nets.trained import load_model
from protomatch.optics.beam import convolve_with_beam
from protomatch.optics.orientation import dihedral_beam, dihedral_image


def test_asinh_rows_are_correlations_of_the_stretched_peak_normalised_images() -> None:
    rng = np.random.default_rng(0)
    image = rng.random((8, 8)).astype(np.float32)
    rows = asinh_rows(np.stack([image, 40.0 * image, np.ones((8, 8), np.float32)]), 0.05)
    np.testing.assert_allclose(rows[0], rows[1], atol=1e-6)  # brightness does not matter
    assert np.all(rows[2] == 0)  # a constant image has no pattern
    np.testing.assert_allclose(np.linalg.norm(rows[:2], axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(rows[:2].sum(axis=1), 0.0, atol=1e-5)


def test_the_stretch_is_linear_below_the_softening_and_logarithmic_above() -> None:
    values = np.array([[[1.0, 0.001, 0.002, 0.1, 0.2]]], dtype=np.float32)
    stretched = np.arcsinh(values / 0.01) / np.arcsinh(100.0)
    assert stretched[0, 0, 2] / stretched[0, 0, 1] == pytest.approx(2.0, rel=0.01)
    assert stretched[0, 0, 4] - stretched[0, 0, 3] == pytest.approx(
        np.log(2.0) / np.arcsinh(100.0), rel=0.01
    )
    expected = stretched.reshape(1, -1) - stretched.mean()
    expected /= np.linalg.norm(expected)
    np.testing.assert_allclose(asinh_rows(values, 0.01), expected, atol=1e-6)


@pytest.fixture(scope="module")
def library(tiny_model, tiny_store) -> BeamMatchedLibrary:
    return BeamMatchedLibrary(load_model(tiny_model), LibraryStore.open(tiny_store), block=40)


def _observed(library: BeamMatchedLibrary, row: int, beam, seed: int = 1) -> np.ndarray:
    source = torch.from_numpy(library.convolved_images(None, row, row + 1))
    image = convolve_with_beam(source, *beam).numpy()[0]
    noise = np.random.default_rng(seed).normal(0.0, 0.02, image.shape).astype(np.float32)
    image = image / image.max() + noise
    return image / image.max()


def test_turning_the_observation_and_its_beam_changes_nothing(library) -> None:
    beam = (3.0, 1.5, 30.0)
    image = _observed(library, 7, beam)
    footprint = np.zeros(image.shape, dtype=bool)
    footprint[4:28, 2:30] = True
    image = image * footprint
    given = strong_pixel_similarities(library, image, beam, 0.02, footprint)
    turned = strong_pixel_similarities(
        library,
        dihedral_image(image, 3, True),
        dihedral_beam(beam, 3, True),
        0.02,
        dihedral_image(footprint, 3, True),
    )
    assert given.shape == (len(library),)
    np.testing.assert_allclose(given, turned, atol=1e-5)


def test_a_turned_noisy_library_image_finds_its_source(library) -> None:
    beam = (2.5, 2.0, 60.0)
    image = dihedral_image(_observed(library, 11, beam), 1, False)
    scores = strong_pixel_similarities(library, image, dihedral_beam(beam, 1, False), 0.02)
    assert int(np.argmax(scores)) == 11
    without_turns = (
        asinh_rows(library.convolved_images(beam, 0, len(library)), 0.04)
        @ (asinh_rows(image[None], 0.04)[0])
    )
    assert scores[11] > without_turns[11]  # the turn is undone, unlike a plain comparison


def test_fused_scores_weigh_standardised_similarities() -> None:
    rng = np.random.default_rng(3)
    network, pixels = rng.normal(0.8, 0.05, 50), rng.normal(0.3, 0.2, 50)
    assert np.array_equal(np.argsort(fused_scores(network, pixels, 1.0)), np.argsort(network))
    assert np.array_equal(np.argsort(fused_scores(network, pixels, 0.0)), np.argsort(pixels))
    z_network = (network - network.mean()) / network.std()
    z_pixels = (pixels - pixels.mean()) / pixels.std()
    expected = 0.4 * z_network + 0.6 * z_pixels
    np.testing.assert_allclose(fused_scores(network, pixels, 0.4), expected, rtol=1e-5, atol=1e-6)
    # the two scales do not matter, only each one's order and spread
    np.testing.assert_allclose(
        fused_scores(network * 10 + 3, pixels, 0.4), expected, rtol=1e-5, atol=1e-5
    )


def test_fused_scores_rank_non_finite_last_and_refuse_bad_input() -> None:
    network = np.array([0.9, np.nan, 0.1, 0.5])
    pixels = np.array([0.2, 0.9, -np.inf, 0.4])
    fused = fused_scores(network, pixels, 0.5)
    assert np.isneginf(fused[1]) and np.isneginf(fused[2])
    assert np.isfinite(fused[[0, 3]]).all()
    with pytest.raises(ValueError, match="network_weight"):
        fused_scores(network, pixels, 1.5)
    with pytest.raises(ValueError, match="shapes"):
        fused_scores(network, pixels[:3])
