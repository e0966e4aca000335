"""Image preprocessing in two stages.

1. **Geometry** (:func:`prepare_image`, :func:`prepare_images`), done once at ingest and
   stored: non-finite pixels are filled with 0, a centred square is cropped (side =
   ``crop_fraction`` x the shorter image side), resized to ``size`` x ``size`` with torch
   (``area`` averaging when shrinking, bilinear when enlarging; both preserve the mean
   intensity, so total flux scales with the pixel area) and divided by its peak. The result
   stays *linear* so physically meaningful augmentations (beam convolution, noise) can still
   be applied; the peak and the total flux are returned so absolute brightness is kept.
2. **Intensity** (:func:`intensity_transform`), applied on the fly to batches of tensors:
   a ``log``, ``asinh`` or ``linear`` stretch relative to each image's peak, then per-image
   normalisation to zero mean and unit standard deviation. Blank or constant images give
   zeros, never NaN.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pydantic
import torch
import torch.nn.functional as F

#: Relative spread below which an image counts as constant in the normalisation.
_CONSTANT_TOLERANCE = 1e-5


class PreprocessConfig(pydantic.BaseModel, extra="forbid", frozen=True):
    """How images are cropped, resized and stretched.

    Attributes
    ----------
    size
        Side of the stored / model input images, pixels (>= 16).
    crop_fraction
        Side of the centred square crop as a fraction of the shorter image side, in (0, 1].
    stretch
        Intensity stretch of the on-the-fly stage: ``log``, ``asinh`` or ``linear``.
    dynamic_range
        Decades below the peak kept by the ``log`` stretch (the floor is 10^-dynamic_range).
    softening
        ``asinh`` softening intensity as a fraction of the peak.
    """

    size: int = pydantic.Field(64, ge=16)
    crop_fraction: float = pydantic.Field(1.0, gt=0.0, le=1.0)
    stretch: Literal["log", "asinh", "linear"] = "log"
    dynamic_range: float = pydantic.Field(4.0, gt=0.0, le=30.0)
    softening: float = pydantic.Field(0.01, gt=0.0)


@dataclass(frozen=True, eq=False)
class PreparedImage:
    """One image after the geometry stage.

    Attributes
    ----------
    image
        (size, size) float32, linear intensity divided by ``peak`` (max 1), or all 0 when
        the input has no positive pixel.
    peak
        Peak of the resized image in input intensity units (0 for a blank image).
    total_flux
        Sum of the cropped input image (input units x pixels), NaN/inf counted as 0.
    blank_fraction
        Fraction of input pixels that were NaN or infinite.
    """

    image: np.ndarray
    peak: float
    total_flux: float
    blank_fraction: float


def fill_nonfinite(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Replace NaN/inf by 0.

    Parameters
    ----------
    image
        Array of any shape and numeric dtype.

    Returns
    -------
    filled
        float64 copy of ``image`` with non-finite pixels set to 0, same shape.
    blank
        bool mask, same shape, true where the input was NaN or infinite.
    """
    values = np.asarray(image, dtype=np.float64)
    blank = ~np.isfinite(values)
    return np.where(blank, 0.0, values), blank


def crop_box(height: int, width: int, crop_fraction: float) -> tuple[int, int, int]:
    """Where the centred square crop of an image lies.

    Parameters
    ----------
    height, width
        Image size, pixels.
    crop_fraction
        Side of the crop as a fraction of the shorter image side, in (0, 1].

    Returns
    -------
    tuple of int
        Top row, left column and side of the crop, pixels.
    """
    side = max(1, round(crop_fraction * min(height, width)))
    return (height - side) // 2, (width - side) // 2, side


def prepare_images(
    images: np.ndarray, config: PreprocessConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Geometry stage for a stack of images of one shape.

    Parameters
    ----------
    images
        (N, H, W) raw intensities, any float or integer dtype, may hold NaN/inf.
    config
        Crop fraction and output size.

    Returns
    -------
    prepared
        (N, size, size) float32, each divided by its peak (max 1) or all 0 if blank.
    peaks
        (N,) float64 peak of each resized image, input units (0 for blank images).
    totals
        (N,) float64 sum of each cropped input image, input units x pixels.
    """
    stack = np.asarray(images)
    if stack.ndim != 3:
        raise ValueError(f"expected an (N, H, W) stack of images, got shape {stack.shape}")
    top, left, side = crop_box(stack.shape[1], stack.shape[2], config.crop_fraction)
    filled, _ = fill_nonfinite(stack[:, top : top + side, left : left + side])
    totals = filled.sum(axis=(1, 2))
    # Pre-scale in float64 so float32 neither under- nor overflows for any intensity unit.
    scale = np.abs(filled).max(axis=(1, 2))
    scale = np.where(scale > 0, scale, 1.0)
    scaled = torch.from_numpy((filled / scale[:, None, None]).astype(np.float32))
    resized = _resize(scaled[:, None], config.size)[:, 0]
    maxima = resized.amax(dim=(1, 2)).double().numpy()
    positive = maxima > 0
    divisor = torch.from_numpy(np.where(positive, maxima, 1.0).astype(np.float32))
    prepared = (resized / divisor[:, None, None]).numpy()
    prepared[~positive] = 0.0
    peaks = np.where(positive, maxima * scale, 0.0)
    return np.ascontiguousarray(prepared, dtype=np.float32), peaks, totals


def prepare_image(image: np.ndarray, config: PreprocessConfig) -> PreparedImage:
    """Geometry stage for one image; see :func:`prepare_images`.

    Parameters
    ----------
    image
        (H, W) raw intensities, any numeric dtype, may hold NaN/inf.
    config
        Crop fraction and output size.

    Returns
    -------
    PreparedImage
        The (size, size) float32 peak-1 image, its peak and total flux (input units) and
        the fraction of non-finite input pixels.
    """
    values = np.asarray(image)
    if values.ndim != 2:
        raise ValueError(f"expected a 2-D image, got shape {values.shape}")
    prepared, peaks, totals = prepare_images(values[None], config)
    blank_fraction = float(np.mean(~np.isfinite(values))) if values.size else 1.0
    return PreparedImage(prepared[0], float(peaks[0]), float(totals[0]), blank_fraction)


def _resize(batch: torch.Tensor, size: int) -> torch.Tensor:
    """Resize (N, 1, S, S) to (N, 1, size, size), preserving the mean intensity."""
    side = batch.shape[-1]
    if side == size:
        return batch.clone()
    if side > size:
        return F.interpolate(batch, size=(size, size), mode="area")
    return F.interpolate(batch, size=(size, size), mode="bilinear", align_corners=False)


def intensity_transform(images: torch.Tensor, config: PreprocessConfig) -> torch.Tensor:
    """Stretch and normalise a batch of linear images, per image.

    Parameters
    ----------
    images
        (B, H, W) or (B, 1, H, W) linear intensities (any scale; the stretch is relative
        to each image's peak). NaN/inf are treated as 0.
    config
        ``stretch``, ``dynamic_range`` and ``softening``.

    Returns
    -------
    torch.Tensor
        Same shape, floating dtype; each image has mean 0 and standard deviation 1, or is
        all 0 if it is blank (no positive pixel) or constant after the stretch.
    """
    if images.ndim not in (3, 4):
        raise ValueError(f"expected (B, H, W) or (B, 1, H, W) images, got {tuple(images.shape)}")
    x = images if images.is_floating_point() else images.float()
    flat = torch.nan_to_num(x.reshape(x.shape[0], -1), nan=0.0, posinf=0.0, neginf=0.0)
    peak = flat.amax(dim=1, keepdim=True)
    positive = peak > 0
    relative = flat / torch.where(positive, peak, torch.ones_like(peak))
    stretched = _stretch(relative, config)
    stretched = torch.where(positive, stretched, torch.zeros_like(stretched))
    return _standardise(stretched).reshape(images.shape)


def _stretch(relative: torch.Tensor, config: PreprocessConfig) -> torch.Tensor:
    """Apply the configured stretch to intensities relative to the peak (max 1)."""
    if config.stretch == "log":
        return torch.log10(relative.clamp_min(10.0**-config.dynamic_range))
    if config.stretch == "asinh":
        return torch.asinh(relative / config.softening) / math.asinh(1.0 / config.softening)
    return relative


def _standardise(values: torch.Tensor) -> torch.Tensor:
    """Zero mean, unit std along dim 1 of (B, D); constant rows become 0."""
    mean = values.mean(dim=1, keepdim=True)
    std = values.std(dim=1, correction=0, keepdim=True)
    spread = values.abs().amax(dim=1, keepdim=True)
    varied = std > _CONSTANT_TOLERANCE * spread
    safe_std = torch.where(varied, std, torch.ones_like(std))
    return torch.where(varied, (values - mean) / safe_std, torch.zeros_like(values))
