"""Putting an observation on the library's grid: flux-conserving resampling around a point."""

from __future__ import annotations

import numpy as np
import pytest

from protomatch.matching._cutout import resample_field, square_field


def _gaussian(
    n: int, centre: tuple[float, float], fwhm_px: float, supersample: int = 8
) -> np.ndarray:
    """A circular Gaussian averaged over each pixel of an n x n grid (peak 1 before averaging)."""
    fine = (np.arange(n * supersample) + 0.5) / supersample - 0.5
    rows, cols = np.meshgrid(fine, fine, indexing="ij")
    sigma = fwhm_px / 2.3548
    image = np.exp(-0.5 * (((rows - centre[0]) ** 2 + (cols - centre[1]) ** 2) / sigma**2))
    return image.reshape(n, supersample, n, supersample).mean(axis=(1, 3))


# Finer observation pixels than the library's lose nothing; coarser ones cannot give back
# the detail they averaged away, hence the looser bounds.
@pytest.mark.parametrize(("observation_au", "tolerance"), [(7.3, 0.01), (14.6, 0.02), (31.0, 0.08)])
def test_resample_field_matches_the_source_drawn_on_the_library_grid(
    observation_au: float, tolerance: float
) -> None:
    library_au, size, fwhm_au = 20.0, 32, 150.0
    centre = (61.37, 58.81)
    observed = _gaussian(128, centre, fwhm_au / observation_au)
    middle = (size - 1) / 2
    truth = _gaussian(size, (middle, middle), fwhm_au / library_au)

    field = resample_field(observed, observation_au, centre, size, library_au)

    assert field.shape == (size, size) and field.dtype == np.float32
    assert np.abs(field - truth).max() < tolerance * truth.max()
    # surface brightness is kept: the mean over the field is the truth's
    assert field.mean() == pytest.approx(truth.mean(), rel=0.01)


def test_resample_field_is_more_accurate_than_a_cut_at_whole_pixels_and_a_resize() -> None:
    import torch

    from protomatch.library.preprocess import _resize

    library_au, size, observation_au = 20.0, 32, 14.6
    centre = (61.5, 58.5)  # half a pixel off the grid: a whole-pixel cut is shifted
    observed = _gaussian(128, centre, 100.0 / observation_au)
    middle = (size - 1) / 2
    truth = _gaussian(size, (middle, middle), 100.0 / library_au)
    cut = square_field(observed.astype(np.float32), size * library_au / observation_au, centre)
    resized = _resize(torch.from_numpy(cut)[None, None], size)[0, 0].numpy()

    exact_error = np.abs(resample_field(observed, observation_au, centre, size, library_au) - truth)
    assert exact_error.max() < 0.5 * np.abs(resized - truth).max()


def test_resample_field_is_blank_beyond_the_image_and_ignores_nan_pixels() -> None:
    observed = _gaussian(64, (3.5, 3.5), 6.0)
    observed[40:, :] = np.nan

    field = resample_field(observed, 10.0, (3.5, 3.5), 32, 10.0)

    assert np.isnan(field[:10, :10]).all()  # up and left of the image: nothing there
    assert np.isfinite(field[20:, 20:]).all()  # inside the image, the NaN rows count as 0
    assert field[15, 15] == pytest.approx(observed[3, 3], rel=1e-4)  # same grid: a copy


def test_resample_field_entirely_off_the_image_is_blank() -> None:
    field = resample_field(np.ones((16, 16)), 10.0, (500.0, 500.0), 8, 10.0)

    assert np.isnan(field).all()


def _observation(image: np.ndarray, au_per_pixel: float):
    from pathlib import Path

    from protomatch.matching.observation import Observation

    return Observation(
        image=image.astype(np.float32), source=Path("obs.npy"), au_per_pixel=au_per_pixel
    )


def test_an_observation_smaller_than_the_library_field_has_a_footprint() -> None:
    from protomatch.library.preprocess import PreprocessConfig
    from protomatch.matching.observation import prepare_observation

    config = PreprocessConfig(size=32)
    image = _gaussian(40, (19.5, 19.5), 6.0)  # 40 px x 10 AU = 400 AU
    image[:, :4] = np.nan  # a blank border

    prepared = prepare_observation(_observation(image, 10.0), config, 20.0, centre="image")

    footprint = prepared.footprint  # library field: 32 px x 20 AU = 640 AU
    assert footprint is not None and footprint.shape == (32, 32)
    rows, columns = np.nonzero(footprint)
    assert (rows.min(), rows.max()) == (6, 25)  # 400 AU = 20 library pixels, centred
    assert (columns.min(), columns.max()) == (8, 25)  # the blank 40 AU border is not covered
    assert np.all(prepared.image[~footprint] == 0)
    assert any("covers 35% of the library's field" in note for note in prepared.notes)


def test_an_observation_covering_the_library_field_has_no_footprint() -> None:
    from protomatch.library.preprocess import PreprocessConfig
    from protomatch.matching.observation import prepare_observation

    image = _gaussian(80, (39.5, 39.5), 6.0)  # 800 AU, more than the 640 AU field
    prepared = prepare_observation(_observation(image, 10.0), PreprocessConfig(size=32), 20.0)

    assert prepared.footprint is None
    assert not any("covers" in note for note in prepared.notes)
