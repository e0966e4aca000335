"""Tests for the sky-image augmentations."""

from __future__ import annotations

import math

import pydantic
import pytest
import torch

from protomatch.errors import ProtomatchError
from protomatch.optics.beam import convolve_with_beam, gaussian_beam_kernel
from protomatch.optics.orientation import rotate_images
from protomatch.training.augment import (
    AugmentConfig,
    augment_batch,
    augment_pair,
    draw_conditions,
)

OFF = AugmentConfig(
    rotate=False, flip=False, beam=False, noise=False, shared_conditions=False, clean_fraction=0.0
)
FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))


def _generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _blob(size: int = 33, sigma_row: float = 3.0, sigma_col: float = 5.0) -> torch.Tensor:
    """An elongated Gaussian source centred on the image, peak 1, shape (size, size)."""
    offsets = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    rows, cols = offsets[:, None], offsets[None, :]
    return torch.exp(-0.5 * ((rows / sigma_row) ** 2 + (cols / sigma_col) ** 2))


def _moments(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Centroid (row, col) and 2x2 covariance [(col, row) order] of a (H, W) image."""
    image = image.double()
    rows = torch.arange(image.shape[0], dtype=torch.float64)[:, None]
    cols = torch.arange(image.shape[1], dtype=torch.float64)[None, :]
    total = image.sum()
    r0, c0 = (image * rows).sum() / total, (image * cols).sum() / total
    x, y = cols - c0, rows - r0
    cov = torch.stack(
        [
            torch.stack([(image * x * x).sum(), (image * x * y).sum()]),
            torch.stack([(image * x * y).sum(), (image * y * y).sum()]),
        ]
    )
    return torch.stack([r0, c0]), cov / total


# --- config ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"beam_fwhm_px": (6.0, 1.0)}, "beam_fwhm_px [6.0, 1.0] must be (low, high)"),
        ({"snr_range": (0.0, 10.0)}, "snr_range [0.0, 10.0] must be (low, high)"),
        ({"beam_axis_ratio": (0.5, 1.5)}, "must not exceed 1.0"),
        ({"blur": True}, "Extra inputs are not permitted"),
    ],
)
def test_bad_config_is_clear(fields: dict, expected: str) -> None:
    with pytest.raises(pydantic.ValidationError) as info:
        AugmentConfig(**fields)
    assert expected in str(info.value)


# --- rotation and flips ---------------------------------------------------------------------


def test_quarter_turns_are_exact() -> None:
    images = torch.rand(4, 16, 16)
    angles = torch.tensor([0.0, 90.0, 180.0, -90.0])
    rotated = rotate_images(images, angles)
    assert torch.equal(rotated[0], images[0])
    assert torch.equal(rotated[1], torch.rot90(images[1], 1, dims=(-1, -2)))
    assert torch.equal(rotated[2], images[2].flip(0).flip(1))
    assert torch.equal(rotated[3], torch.rot90(images[3], 1, dims=(0, 1)))
    assert torch.equal(rotate_images(images, torch.full((4,), 360.0)), images)


def test_positive_angle_is_counter_clockwise_on_origin_lower_display() -> None:
    image = torch.zeros(1, 9, 9)
    image[0, 4, 7] = 1.0  # three pixels to the right (+column) of the centre (4, 4)
    up = rotate_images(image, torch.tensor([90.0]))[0]
    assert up[7, 4] == 1.0  # now three pixels up (+row)
    centroid, _ = _moments(rotate_images(image, torch.tensor([30.0]))[0])
    expected = (4 + 3 * math.sin(math.radians(30)), 4 + 3 * math.cos(math.radians(30)))
    assert centroid.tolist() == pytest.approx(expected, abs=0.15)


def test_resampled_and_exact_parts_turn_the_same_way() -> None:
    # 44.9° is resampled only, 45.1° is a quarter turn then -44.9°: nearly the same image.
    image = _blob()[None]
    a = rotate_images(image, torch.tensor([44.9]))
    b = rotate_images(image, torch.tensor([45.1]))
    assert torch.allclose(a, b, atol=0.02)


@pytest.mark.parametrize("angle", [17.0, 45.0, 133.0, 251.5])
def test_arbitrary_rotation_preserves_flux_and_centroid(angle: float) -> None:
    image = _blob()
    rotated = rotate_images(image[None], torch.tensor([angle]))[0]
    assert rotated.sum().item() == pytest.approx(image.sum().item(), rel=0.01)
    centroid, cov = _moments(rotated)
    assert centroid.tolist() == pytest.approx([16.0, 16.0], abs=0.02)
    # the major axis (sigma 5 along columns) turns by the angle
    eigenvalues, eigenvectors = torch.linalg.eigh(cov)
    x, y = eigenvectors[:, 1].tolist()
    axis_angle = math.degrees(math.atan2(y, x)) % 180.0
    assert axis_angle == pytest.approx(angle % 180.0, abs=1.0)
    assert eigenvalues.sqrt().tolist() == pytest.approx([3.0, 5.0], rel=0.03)


def test_flip_is_exact_mirror() -> None:
    images = torch.rand(64, 8, 8)
    out = augment_batch(images, OFF.model_copy(update={"flip": True}), _generator())
    pairs = list(zip(out, images, strict=True))
    mirrored = torch.tensor([torch.equal(o, i.flip(-1)) for o, i in pairs])
    unchanged = torch.tensor([torch.equal(o, i) for o, i in pairs])
    assert bool((mirrored | unchanged).all())
    assert 16 < int(mirrored.sum()) < 48


# --- beam -----------------------------------------------------------------------------------


def test_kernel_normalised_and_sized() -> None:
    kernel = gaussian_beam_kernel(6.0, 6.0, 0.0)
    sigma = 6.0 / FWHM_PER_SIGMA
    assert kernel.shape == (2 * math.ceil(4 * sigma) + 1,) * 2
    assert kernel.sum().item() == pytest.approx(1.0, abs=1e-6)
    assert torch.equal(kernel, kernel.flip(0)) and torch.equal(kernel, kernel.T)
    # the value at one FWHM / 2 from the centre is half the peak (FWHM 6 → 3 px)
    centre = kernel.shape[0] // 2
    assert (kernel[centre, centre + 3] / kernel[centre, centre]).item() == pytest.approx(0.5)
    batch = gaussian_beam_kernel(torch.tensor([2.0, 4.0]), torch.tensor([1.0, 4.0]), 0.0, size=9)
    assert batch.shape == (2, 9, 9)


def test_kernel_rejects_bad_beams() -> None:
    with pytest.raises(ProtomatchError, match="major >= minor > 0"):
        gaussian_beam_kernel(2.0, 3.0, 0.0)
    with pytest.raises(ProtomatchError, match="size 8 must be a positive odd number"):
        gaussian_beam_kernel(2.0, 2.0, 0.0, size=8)


@pytest.mark.parametrize(("major", "minor", "pa"), [(4.0, 4.0, 0.0), (6.0, 3.0, 30.0)])
def test_point_source_reproduces_the_beam(major: float, minor: float, pa: float) -> None:
    image = torch.zeros(65, 65)
    image[32, 32] = 1.0
    out = convolve_with_beam(image, major, minor, pa)
    assert out.shape == image.shape
    assert out.sum().item() == pytest.approx(1.0, abs=1e-5)
    centroid, cov = _moments(out)
    assert centroid.tolist() == pytest.approx([32.0, 32.0], abs=1e-4)
    eigenvalues, eigenvectors = torch.linalg.eigh(cov)
    fwhm = (eigenvalues.sqrt() * FWHM_PER_SIGMA).tolist()
    assert fwhm == pytest.approx([minor, major], rel=0.01)
    if major > minor:
        x, y = eigenvectors[:, 1].tolist()  # major axis direction in (column, row)
        measured_pa = math.degrees(math.atan2(-x, y)) % 180.0  # from +row towards -column
        assert measured_pa == pytest.approx(pa, abs=0.5)


def test_convolution_preserves_flux_per_image_beams() -> None:
    # sources well inside the field: the zero padding outside loses no flux
    images = torch.stack([_blob(65), 2.0 * _blob(65, sigma_row=2.0, sigma_col=2.0)])
    out = convolve_with_beam(images, torch.tensor([3.0, 5.0]), torch.tensor([2.0, 5.0]), 45.0)
    assert out.sum(dim=(1, 2)).tolist() == pytest.approx(images.sum(dim=(1, 2)).tolist(), rel=1e-4)
    assert bool((out.amax(dim=(1, 2)) < images.amax(dim=(1, 2))).all())
    with pytest.raises(ProtomatchError, match="got 3 beams for 2 images"):
        convolve_with_beam(images, torch.tensor([3.0, 3.0, 3.0]), 2.0, 0.0)


# --- noise ----------------------------------------------------------------------------------


@pytest.mark.parametrize("correlated", [False, True])
def test_noise_rms_matches_peak_over_snr(correlated: bool) -> None:
    snr = 20.0
    config = OFF.model_copy(
        update={"noise": True, "snr_range": (snr, snr), "correlated_noise": correlated}
    )
    images = torch.zeros(8, 64, 64)
    images[:, 32, 32] = 1.0
    out = augment_batch(images, config, _generator())
    noise = out - images
    rms = noise.pow(2).mean(dim=(1, 2)).sqrt()
    assert rms.tolist() == pytest.approx([1.0 / snr] * 8, rel=0.05)
    neighbours = (noise[:, :, 1:] * noise[:, :, :-1]).mean() / noise.pow(2).mean()
    if correlated:
        assert neighbours.item() > 0.3
    else:
        assert abs(neighbours.item()) < 0.05


def test_snr_drawn_log_uniformly_within_range() -> None:
    config = OFF.model_copy(
        update={"noise": True, "correlated_noise": False, "snr_range": (5.0, 200.0)}
    )
    images = torch.zeros(256, 32, 32)
    images[:, 16, 16] = 1.0
    noise = augment_batch(images, config, _generator()) - images
    snr = 1.0 / noise.std(dim=(1, 2))
    assert float(snr.min()) > 5.0 * 0.9 and float(snr.max()) < 200.0 * 1.1
    # log-uniform: about half the draws below the geometric mean sqrt(5 * 200) = 31.6
    assert 0.4 < float((snr < math.sqrt(1000.0)).float().mean()) < 0.6


# --- the whole batch ------------------------------------------------------------------------


def test_switches_off_is_identity() -> None:
    images = torch.rand(3, 16, 16)
    out = augment_batch(images, OFF, _generator())
    assert torch.equal(out, images)
    assert out.data_ptr() != images.data_ptr()


def test_same_seed_same_output_and_different_seed_differs() -> None:
    config = AugmentConfig(beam=True, noise=True)
    images = _blob(32)[None].repeat(4, 1, 1)
    first = augment_batch(images, config, _generator(7))
    second = augment_batch(images, config, _generator(7))
    other = augment_batch(images, config, _generator(8))
    assert torch.equal(first, second)
    assert not torch.allclose(first, other)
    assert not torch.allclose(first[0], first[1])  # each image draws its own augmentation


@pytest.mark.parametrize("correlated", [False, True])
def test_never_nan_even_for_blank_images(correlated: bool) -> None:
    config = AugmentConfig(beam=True, noise=True, correlated_noise=correlated)
    images = torch.zeros(4, 32, 32)
    images[1] = _blob(32)
    out = augment_batch(images, config, _generator())
    assert bool(torch.isfinite(out).all())
    assert torch.equal(out[0], torch.zeros(32, 32))  # no signal → noise rms 0


def test_bad_input_is_clear() -> None:
    with pytest.raises(ProtomatchError, match=r"shape \(B, H, W\)"):
        augment_batch(torch.zeros(2, 1, 8, 8), OFF, _generator())
    with pytest.raises(ProtomatchError, match="NaN"):
        augment_batch(torch.full((1, 8, 8), float("nan")), OFF, _generator())
    with pytest.raises(ProtomatchError, match="square"):
        augment_batch(torch.zeros(1, 8, 10), AugmentConfig(), _generator())


# --- pairs: shared observing conditions, clean share ------------------------------------------


def _beam_only(**update: object) -> AugmentConfig:
    return OFF.model_copy(update={"beam": True, "beam_fwhm_px": (1.0, 8.0), **update})


def _widths(images: torch.Tensor) -> torch.Tensor:
    """(B,) second moment of each image along the columns: grows with the beam."""
    return torch.stack([_moments(image)[1][0, 0] for image in images])


def test_shared_conditions_give_both_sides_of_a_pair_the_same_beam() -> None:
    images = _blob(48, 2.0, 2.0)[None].repeat(64, 1, 1)
    shared_a, shared_b = augment_pair(
        images, images, _beam_only(shared_conditions=True), _generator()
    )
    assert torch.allclose(shared_a, shared_b, atol=1e-6)
    assert float(_widths(shared_a).std()) > 1.0  # the beam still varies from pair to pair
    own_a, own_b = augment_pair(images, images, _beam_only(), _generator())
    gap = (_widths(own_a) - _widths(own_b)).abs()
    assert float(gap.median()) > 1.0  # independent beams


def test_shared_noise_level_with_independent_realisations() -> None:
    config = OFF.model_copy(
        update={"noise": True, "correlated_noise": False, "shared_conditions": True}
    )
    images = torch.zeros(200, 32, 32)
    images[:, 16, 16] = 1.0
    out_a, out_b = augment_pair(images, images, config, _generator())
    rms_a, rms_b = (out.sub(images).std(dim=(1, 2)) for out in (out_a, out_b))
    assert torch.allclose(rms_a, rms_b, rtol=0.2)  # same S/N per pair (1,024 pixels each)
    assert float(rms_a.max() / rms_a.min()) > 10  # S/N varies across pairs (5 to 200)
    assert not torch.allclose(out_a, out_b)  # each side has its own noise


def test_clean_fraction_leaves_that_share_untouched() -> None:
    images = _blob(32)[None].repeat(400, 1, 1)
    everything_clean = AugmentConfig(beam=True, noise=True, clean_fraction=1.0, rotate=False)
    assert torch.equal(
        augment_batch(images, everything_clean.model_copy(update={"flip": False}), _generator()),
        images,
    )
    config = _beam_only(noise=True, clean_fraction=0.3, shared_conditions=True)
    out_a, out_b = augment_pair(images, images, config, _generator())
    clean_a = (out_a == images).flatten(1).all(dim=1)
    clean_b = (out_b == images).flatten(1).all(dim=1)
    assert torch.equal(clean_a, clean_b)  # pairs are clean together
    assert 0.22 < float(clean_a.float().mean()) < 0.38  # binomial(400, 0.3) within ~3.5 sigma


def test_clean_fraction_outside_zero_one_is_refused() -> None:
    with pytest.raises(pydantic.ValidationError, match="clean_fraction"):
        AugmentConfig(clean_fraction=1.5)


def test_conditions_for_another_batch_size_are_refused() -> None:
    conditions = draw_conditions(3, _beam_only(), _generator(), torch.device("cpu"))
    with pytest.raises(ProtomatchError, match="3 conditions for 2 images"):
        augment_batch(torch.zeros(2, 8, 8), _beam_only(), _generator(), conditions)
