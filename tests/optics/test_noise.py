"""Beam-correlated noise is as strong at the image edges as in the middle, wherever it is made.

Training, the noise-matched library and the mock observations all draw their noise through
:func:`protomatch.optics.beam.correlated_noise`. White noise that is not padded before
smoothing gives edges that see only part of the beam: their rms falls to about 0.85 of the
centre's for a 6 px beam on 64 px images, which these tests would catch.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from protomatch.errors import ProtomatchError
from protomatch.matching.conditioned import _correlated_noise
from protomatch.optics.beam import correlated_noise, kernel_half_width
from protomatch.simulators._mock_observation import _unit_noise
from protomatch.training.augment import AugmentConfig, augment_batch

SIZE, FWHM, COUNT = 64, 6.0, 200


def _edge_to_centre_rms(noise: np.ndarray) -> float:
    """rms of the outer 2-pixel ring over rms of the central 16 x 16 pixels, over a stack."""
    noise = np.asarray(noise, dtype=np.float64)
    ring = np.ones(noise.shape[-2:], dtype=bool)
    ring[2:-2, 2:-2] = False
    middle = slice(SIZE // 2 - 8, SIZE // 2 + 8)
    return float(np.sqrt(np.mean(noise[:, ring] ** 2) / np.mean(noise[:, middle, middle] ** 2)))


def _padded_white(seed: int) -> torch.Tensor:
    pad = kernel_half_width(FWHM)
    generator = torch.Generator().manual_seed(seed)
    return torch.randn((COUNT, SIZE + 2 * pad, SIZE + 2 * pad), generator=generator)


def test_correlated_noise_is_stationary_to_the_edges() -> None:
    noise = correlated_noise(_padded_white(0), (SIZE, SIZE), FWHM, FWHM, 0.0).numpy()
    assert noise.shape == (COUNT, SIZE, SIZE)
    assert noise.std(axis=(1, 2), ddof=1) == pytest.approx(1.0, abs=1e-5)
    assert _edge_to_centre_rms(noise) == pytest.approx(1.0, abs=0.05)


def test_unpadded_smoothing_is_weaker_at_the_edges() -> None:
    """The check above can fail: noise smoothed without padding is ~15 % weaker at the edges."""
    white = torch.randn((COUNT, SIZE, SIZE), generator=torch.Generator().manual_seed(1))
    from protomatch.optics.beam import convolve_with_beam

    smooth = convolve_with_beam(white, FWHM, FWHM, 0.0).numpy()
    assert _edge_to_centre_rms(smooth) < 0.9


def test_noise_needs_enough_padding() -> None:
    with pytest.raises(ProtomatchError, match="must exceed"):
        correlated_noise(torch.zeros((1, SIZE + 2, SIZE + 2)), (SIZE, SIZE), FWHM, FWHM, 0.0)


def test_training_noise_is_stationary_to_the_edges() -> None:
    config = AugmentConfig(
        rotate=False,
        flip=False,
        beam=False,
        noise=True,
        correlated_noise=True,
        beam_fwhm_px=(FWHM, FWHM),
        beam_axis_ratio=(1.0, 1.0),
        snr_range=(10.0, 10.0),
        shared_conditions=False,
        clean_fraction=0.0,
    )
    flat = torch.ones((COUNT, SIZE, SIZE))
    noise = augment_batch(flat, config, torch.Generator().manual_seed(2)) - flat
    assert _edge_to_centre_rms(noise.numpy()) == pytest.approx(1.0, abs=0.05)


def test_library_noise_is_stationary_to_the_edges() -> None:
    noise = _correlated_noise((3,), COUNT, (SIZE, SIZE), (FWHM, FWHM, 0.0))
    assert _edge_to_centre_rms(noise) == pytest.approx(1.0, abs=0.05)


def test_mock_observation_noise_is_stationary_to_the_edges() -> None:
    rng = np.random.default_rng(4)
    noise = np.stack([_unit_noise(rng, SIZE, FWHM, FWHM, 0.0) for _ in range(COUNT)])
    assert _edge_to_centre_rms(noise) == pytest.approx(1.0, abs=0.05)
