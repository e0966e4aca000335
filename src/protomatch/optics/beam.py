"""Gaussian beams: kernel, convolution, beam-correlated noise and solid angle.

A beam is given by the full widths at half maximum (FWHM) of its major and minor axes in
pixels and the position angle of the major axis in degrees, measured from +row (north)
through -column (east); see :mod:`protomatch.optics` for the orientation conventions.
"""

from __future__ import annotations

import math

import torch

from protomatch.errors import ProtomatchError

__all__ = [
    "ARCSEC_PER_RADIAN",
    "FWHM_PER_SIGMA",
    "Beam",
    "beam_solid_angle_sr",
    "convolve_with_beam",
    "correlated_noise",
    "gaussian_beam_kernel",
    "kernel_half_width",
]

#: (FWHM major [px], FWHM minor [px], PA [deg] from +row through -column).
Beam = tuple[float, float, float]
#: FWHM = FWHM_PER_SIGMA x sigma for a Gaussian.
FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))
ARCSEC_PER_RADIAN = 180.0 / math.pi * 3600.0
_KERNEL_HALF_WIDTH_SIGMAS = 4.0

BeamWidth = float | torch.Tensor


def kernel_half_width(fwhm_major_px: float) -> int:
    """Half the side of the beam kernel: pixels within 4 sigma of its centre, at least 1.

    Parameters
    ----------
    fwhm_major_px
        Major-axis FWHM [pixels].

    Returns
    -------
    int
        The kernel is ``2 * half + 1`` pixels on a side; padding white noise by ``half``
        pixels on each side makes beam-correlated noise stationary up to the image edges.
    """
    sigma = fwhm_major_px / FWHM_PER_SIGMA
    return max(1, math.ceil(_KERNEL_HALF_WIDTH_SIGMAS * sigma))


def gaussian_beam_kernel(
    fwhm_major_px: BeamWidth,
    fwhm_minor_px: BeamWidth,
    pa_deg: BeamWidth,
    size: int | None = None,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Normalised 2-D elliptical Gaussian beam on a pixel grid.

    Parameters
    ----------
    fwhm_major_px, fwhm_minor_px
        Full widths at half maximum of the major and minor axes [pixels]; scalars, or (B,)
        tensors for a batch of beams. sigma = FWHM / (2 sqrt(2 ln 2)).
    pa_deg
        Position angle of the major axis [degrees], from +row (north) towards -column (east).
    size
        Odd side of the kernel [pixels]; default ``2 * kernel_half_width(widest major) + 1``.
    dtype, device
        Of the returned kernel.

    Returns
    -------
    torch.Tensor
        (size, size) kernel for scalar inputs, (B, size, size) for tensors; each sums to 1.
    """
    batched = any(
        isinstance(v, torch.Tensor) and v.ndim > 0 for v in (fwhm_major_px, fwhm_minor_px, pa_deg)
    )
    major, minor, pa = (
        torch.as_tensor(v, dtype=torch.float64, device=device).reshape(-1)
        for v in (fwhm_major_px, fwhm_minor_px, pa_deg)
    )
    major, minor, pa = torch.broadcast_tensors(major, minor, pa)
    if not bool(((minor > 0) & (major >= minor)).all()):
        raise ProtomatchError(
            "beam FWHMs must satisfy major >= minor > 0 (pixels); got "
            f"major {major.tolist()}, minor {minor.tolist()}"
        )
    if size is None:
        size = 2 * kernel_half_width(float(major.max())) + 1
    if size < 1 or size % 2 == 0:
        raise ProtomatchError(f"beam kernel size {size} must be a positive odd number")
    offsets = torch.arange(size, dtype=torch.float64, device=major.device) - size // 2
    y = offsets[None, :, None]  # row offset (north)
    x = offsets[None, None, :]  # column offset (east is -x)
    theta = torch.deg2rad(pa)[:, None, None]
    along_major = -x * torch.sin(theta) + y * torch.cos(theta)
    along_minor = x * torch.cos(theta) + y * torch.sin(theta)
    sigma_major = (major / FWHM_PER_SIGMA)[:, None, None]
    sigma_minor = (minor / FWHM_PER_SIGMA)[:, None, None]
    kernel = torch.exp(-0.5 * ((along_major / sigma_major) ** 2 + (along_minor / sigma_minor) ** 2))
    kernel = (kernel / kernel.sum(dim=(-2, -1), keepdim=True)).to(dtype)
    return kernel if batched else kernel[0]


def _fft_convolve_same(images: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """Linear (zero-padded) convolution of (B, H, W) images with (B or 1, K, K) kernels."""
    height, width = images.shape[-2:]
    size = kernels.shape[-1]
    shape = (height + size - 1, width + size - 1)
    spectrum = torch.fft.rfft2(images, s=shape) * torch.fft.rfft2(kernels, s=shape)
    full = torch.fft.irfft2(spectrum, s=shape)
    half = size // 2
    return full[..., half : half + height, half : half + width]


def _check_batch(images: torch.Tensor) -> None:
    if images.ndim != 3 or not images.is_floating_point():
        raise ProtomatchError(
            f"expected a float tensor of shape (B, H, W); got {images.dtype} {tuple(images.shape)}"
        )


def _batch_kernels(
    batch: torch.Tensor, fwhm_major_px: BeamWidth, fwhm_minor_px: BeamWidth, pa_deg: BeamWidth
) -> torch.Tensor:
    """(B or 1, K, K) kernels for a (B, H, W) batch, on its device and in its dtype."""
    kernels = gaussian_beam_kernel(
        fwhm_major_px, fwhm_minor_px, pa_deg, device=batch.device, dtype=batch.dtype
    )
    if kernels.ndim == 2:
        return kernels[None]
    if kernels.shape[0] != batch.shape[0]:
        raise ProtomatchError(f"got {kernels.shape[0]} beams for {batch.shape[0]} images")
    return kernels


def convolve_with_beam(
    images: torch.Tensor,
    fwhm_major_px: BeamWidth,
    fwhm_minor_px: BeamWidth,
    pa_deg: BeamWidth,
) -> torch.Tensor:
    """Convolve images with (per-image or common) Gaussian beams; flux is preserved.

    Outside the field the image is taken as zero, so flux closer to the edge than the beam
    width partly leaves the field.

    Parameters
    ----------
    images
        (B, H, W) or (H, W) images, linear intensity.
    fwhm_major_px, fwhm_minor_px, pa_deg
        Beam(s) as in :func:`gaussian_beam_kernel` [pixels, pixels, degrees]: scalars (one
        beam for all) or (B,) tensors.

    Returns
    -------
    torch.Tensor
        Convolved images, same shape and dtype as ``images``.
    """
    single = images.ndim == 2
    batch = images[None] if single else images
    _check_batch(batch)
    out = _fft_convolve_same(batch, _batch_kernels(batch, fwhm_major_px, fwhm_minor_px, pa_deg))
    return out[0] if single else out


def correlated_noise(
    white: torch.Tensor,
    shape: tuple[int, int],
    fwhm_major_px: BeamWidth,
    fwhm_minor_px: BeamWidth,
    pa_deg: BeamWidth,
) -> torch.Tensor:
    """Beam-correlated Gaussian noise of unit rms per image, stationary up to the edges.

    White noise larger than the image is convolved with the beam and the centre cut out,
    so every output pixel sums a full kernel of independent values: the noise is as strong
    at the image edges as in the middle (as in an interferometric image, whose noise does
    not know where the image was cut). Each image is then scaled to unit rms.

    Parameters
    ----------
    white
        (B, H + 2p, W + 2p) independent standard-normal values, with a padding ``p`` of at
        least :func:`kernel_half_width` of the widest beam on every side.
    shape
        (H, W) of the noise images [pixels].
    fwhm_major_px, fwhm_minor_px, pa_deg
        Beam(s) as in :func:`gaussian_beam_kernel`: scalars or (B,) tensors.

    Returns
    -------
    torch.Tensor
        (B, H, W) noise in ``white``'s dtype and device, each image with unit standard
        deviation.
    """
    _check_batch(white)
    height, width = shape
    extra_rows, extra_cols = white.shape[-2] - height, white.shape[-1] - width
    kernels = _batch_kernels(white, fwhm_major_px, fwhm_minor_px, pa_deg)
    needed = 2 * (kernels.shape[-1] // 2)
    if min(extra_rows, extra_cols) < needed or extra_rows % 2 or extra_cols % 2:
        raise ProtomatchError(
            f"white noise {tuple(white.shape[-2:])} must exceed the noise image {shape} by an "
            f"even number of at least {needed} pixels per axis"
        )
    smooth = _fft_convolve_same(white, kernels)
    top, left = extra_rows // 2, extra_cols // 2
    smooth = smooth[..., top : top + height, left : left + width]
    std = smooth.std(dim=(-2, -1), keepdim=True)
    return smooth / std.clamp_min(torch.finfo(smooth.dtype).tiny)


def beam_solid_angle_sr(major_arcsec: float, minor_arcsec: float) -> float:
    """Solid angle ``pi bmaj bmin / (4 ln 2)`` of a Gaussian beam.

    Parameters
    ----------
    major_arcsec, minor_arcsec
        FWHMs of the beam's axes [arcsec].

    Returns
    -------
    float
        Solid angle [sr].
    """
    return math.pi * major_arcsec * minor_arcsec / (4.0 * math.log(2.0)) / ARCSEC_PER_RADIAN**2
