"""Two-stage preprocessing: geometry (crop/resize/peak) and intensity (stretch/normalise)."""

from __future__ import annotations

import numpy as np
import pydantic
import pytest
import torch

from protomatch.library.preprocess import (
    PreprocessConfig,
    crop_box,
    fill_nonfinite,
    intensity_transform,
    prepare_image,
    prepare_images,
)

STRETCHES = ("log", "asinh", "linear")


def _gaussian(side: int, x0: float, y0: float, sigma: float, amplitude: float = 1.0) -> np.ndarray:
    y, x = np.mgrid[0:side, 0:side] + 0.5
    return amplitude * np.exp(-((x - x0) ** 2 + (y - y0) ** 2) / (2 * sigma**2))


def _model_input(image: np.ndarray, config: PreprocessConfig) -> torch.Tensor:
    """Both stages for one (H, W) image, as a model sees it: (1, 1, size, size)."""
    prepared = prepare_image(image, config)
    return intensity_transform(torch.from_numpy(prepared.image)[None], config)[:, None]


def _centroid(image: np.ndarray) -> tuple[float, float]:
    """Flux-weighted centre as a fraction of the side (0 … 1)."""
    side = image.shape[0]
    y, x = np.mgrid[0:side, 0:side] + 0.5
    total = image.sum()
    return float((x * image).sum() / total / side), float((y * image).sum() / total / side)


def test_config_rejects_bad_values() -> None:
    for bad in ({"size": 8}, {"crop_fraction": 0.0}, {"crop_fraction": 1.5}, {"stretch": "sqrt"}):
        with pytest.raises(pydantic.ValidationError):
            PreprocessConfig(**bad)
    with pytest.raises(pydantic.ValidationError):
        PreprocessConfig(unknown=1)


def test_fill_nonfinite_returns_mask() -> None:
    image = np.array([[1.0, np.nan], [np.inf, -np.inf]])
    filled, blank = fill_nonfinite(image)
    np.testing.assert_array_equal(filled, [[1.0, 0.0], [0.0, 0.0]])
    np.testing.assert_array_equal(blank, [[False, True], [True, True]])


@pytest.mark.parametrize("value", [0.0, 3.5])
@pytest.mark.parametrize("stretch", STRETCHES)
def test_constant_or_zero_image_gives_finite_zeros(value: float, stretch: str) -> None:
    config = PreprocessConfig(size=16, stretch=stretch)
    prepared = prepare_image(np.full((30, 30), value), config)
    assert np.isfinite(prepared.image).all()
    assert prepared.peak == pytest.approx(value)
    out = _model_input(np.full((30, 30), value), config)
    assert out.shape == (1, 1, 16, 16)
    assert torch.equal(out, torch.zeros_like(out))


def test_nan_bordered_image_is_finite_with_peak_one() -> None:
    image = _gaussian(40, 20, 20, 5.0, amplitude=7.0)
    image[:4, :] = np.nan
    image[:, -3:] = np.inf
    prepared = prepare_image(image, PreprocessConfig(size=20))
    assert np.isfinite(prepared.image).all()
    assert prepared.image.max() == pytest.approx(1.0)
    assert prepared.blank_fraction == pytest.approx((4 * 40 + 3 * 36) / 1600)
    assert prepared.peak == pytest.approx(7.0, rel=0.1)
    model_input = _model_input(image, PreprocessConfig(size=20))
    assert torch.isfinite(model_input).all()


def test_area_resize_conserves_flux_and_peak_scaling() -> None:
    image = _gaussian(64, 30, 36, 6.0, amplitude=5.0) + 0.01
    prepared = prepare_image(image, PreprocessConfig(size=16))
    assert prepared.image.max() == pytest.approx(1.0)
    assert prepared.total_flux == pytest.approx(image.sum())
    # Each stored pixel is the mean of a 4x4 block: its flux is 16 input pixels' worth.
    restored = prepared.image.astype(np.float64) * prepared.peak * (64 / 16) ** 2
    assert restored.sum() == pytest.approx(image.sum(), rel=1e-5)


@pytest.mark.parametrize(("side", "size"), [(80, 32), (20, 32), (57, 16)])
def test_resize_keeps_the_flux_centroid(side: int, size: int) -> None:
    image = _gaussian(side, 0.3 * side, 0.65 * side, 0.08 * side)
    prepared = prepare_image(image, PreprocessConfig(size=size))
    assert prepared.image.shape == (size, size)
    np.testing.assert_allclose(_centroid(prepared.image), _centroid(image), atol=0.5 / size)


def test_centre_crop_of_non_square_image() -> None:
    assert crop_box(40, 60, 1.0) == (0, 10, 40)
    assert crop_box(40, 40, 0.5) == (10, 10, 20)
    image = np.zeros((40, 60))
    image[10:30, 20:40] = 1.0  # exactly the half-size centre crop
    image[0:5, 12:17] = 100.0  # inside the full square crop (columns 10-50) only
    half = prepare_image(image, PreprocessConfig(size=20, crop_fraction=0.5))
    np.testing.assert_array_equal(half.image, np.ones((20, 20), dtype=np.float32))
    assert half.total_flux == pytest.approx(400.0)
    full = prepare_image(image, PreprocessConfig(size=20))
    assert full.total_flux == pytest.approx(400.0 + 25 * 100.0)
    assert full.image.max() == pytest.approx(1.0)


def test_tiny_intensity_units_survive_float32() -> None:
    image = _gaussian(32, 16, 16, 4.0, amplitude=1e-40)
    prepared = prepare_image(image, PreprocessConfig(size=16))
    assert prepared.image.max() == pytest.approx(1.0)
    assert prepared.peak == pytest.approx(1e-40, rel=0.05)


def test_prepare_images_matches_single_calls() -> None:
    stack = np.stack([_gaussian(40, 15 + k, 20, 3.0 + k, amplitude=10.0**k) for k in range(3)])
    config = PreprocessConfig(size=16)
    batch, peaks, totals = prepare_images(stack, config)
    for k in range(3):
        single = prepare_image(stack[k], config)
        np.testing.assert_array_equal(batch[k], single.image)
        assert peaks[k] == single.peak and totals[k] == single.total_flux


@pytest.mark.parametrize("stretch", ["log", "asinh"])
def test_stretches_are_monotone(stretch: str) -> None:
    ramp = torch.logspace(-6, 0, 256).reshape(1, 16, 16)
    out = intensity_transform(ramp, PreprocessConfig(stretch=stretch)).flatten()
    assert (torch.diff(out) >= 0).all()
    assert out[-1] > out[0]


def test_log_stretch_clips_below_dynamic_range() -> None:
    image = torch.tensor([[[1e-7, 1e-5], [1e-2, 1.0]]])
    out = intensity_transform(image, PreprocessConfig(dynamic_range=4.0)).flatten()
    assert out[0] == out[1]  # both below the 1e-4 floor
    assert out[1] < out[2] < out[3]


@pytest.mark.parametrize("stretch", STRETCHES)
@pytest.mark.parametrize("shape", [(5, 24, 24), (5, 1, 24, 24)])
def test_per_image_normalisation(stretch: str, shape: tuple[int, ...]) -> None:
    images = torch.rand(shape) ** 4 * torch.logspace(-3, 3, 5).reshape(-1, *[1] * (len(shape) - 1))
    out = intensity_transform(images, PreprocessConfig(stretch=stretch))
    assert out.shape == images.shape
    flat = out.reshape(5, -1)
    torch.testing.assert_close(flat.mean(dim=1), torch.zeros(5), atol=1e-5, rtol=0)
    torch.testing.assert_close(flat.std(dim=1, correction=0), torch.ones(5), atol=1e-4, rtol=0)


def test_intensity_stage_is_per_image_and_scale_free() -> None:
    config = PreprocessConfig(stretch="asinh")
    images = torch.rand(4, 16, 16)
    together = intensity_transform(images, config)
    alone = intensity_transform(images[2:3] * 1e-20, config)
    torch.testing.assert_close(together[2:3], alone, atol=1e-5, rtol=1e-5)


def test_intensity_stage_handles_nan_and_negative_images() -> None:
    images = torch.rand(3, 8, 8)
    images[0, 0, 0] = float("nan")
    images[1] = -images[1]  # no positive pixel: blank
    out = intensity_transform(images, PreprocessConfig())
    assert torch.isfinite(out).all()
    assert torch.equal(out[1], torch.zeros(8, 8))


def test_both_stages_on_a_non_square_observation() -> None:
    image = _gaussian(70, 35, 35, 5.0)[:50]
    out = _model_input(image, PreprocessConfig(size=32))
    assert out.shape == (1, 1, 32, 32) and out.dtype == torch.float32
    assert torch.isfinite(out).all()
