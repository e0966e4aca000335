"""Turning and mirroring images together with their beams, and sky angles on the array.

Sky orientation carries no physics: training rotates and flips images freely, and a beam
turns with the image it belongs to. Conventions as in :mod:`protomatch.optics`: a positive
angle turns the content counter-clockwise on an origin-lower display, so a rotation by 90°
equals ``torch.rot90(images, 1, dims=(-1, -2))``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from protomatch.errors import ProtomatchError
from protomatch.optics.beam import Beam

__all__ = [
    "DIHEDRAL",
    "array_position_angle",
    "dihedral_beam",
    "dihedral_image",
    "rotate_images",
]

#: The 8 orientations of the square: (quarter turns counter-clockwise, left-right flip first).
DIHEDRAL: tuple[tuple[int, bool], ...] = tuple((k, f) for f in (False, True) for k in range(4))


def rotate_images(images: torch.Tensor, angles_deg: torch.Tensor) -> torch.Tensor:
    """Rotate square images about their centre, counter-clockwise (origin-lower display).

    Each angle is split into a multiple of 90°, applied exactly with ``torch.rot90``, and a
    remainder in [-45°, 45°], applied by bilinear resampling (``grid_sample``, zero padding
    outside the field). Multiples of 90° are therefore exact.

    Parameters
    ----------
    images
        (B, H, H) float images.
    angles_deg
        (B,) rotation angles [degrees].

    Returns
    -------
    torch.Tensor
        (B, H, H) rotated images.
    """
    if images.ndim != 3 or not images.is_floating_point():
        raise ProtomatchError(
            f"rotation takes a float tensor of shape (B, H, W); got {images.dtype} "
            f"{tuple(images.shape)}"
        )
    if images.shape[-1] != images.shape[-2]:
        raise ProtomatchError(f"rotation needs square images; got {tuple(images.shape[-2:])}")
    angles = angles_deg.to(device=images.device, dtype=torch.float64).reshape(-1)
    if angles.shape[0] != images.shape[0]:
        raise ProtomatchError(f"got {angles.shape[0]} rotation angles for {images.shape[0]} images")
    quarter_turns = torch.round(angles / 90.0)
    residual = angles - 90.0 * quarter_turns
    turns = torch.remainder(quarter_turns, 4).to(torch.int64)

    rotated = images.clone()
    for k in range(1, 4):
        selected = turns == k
        if bool(selected.any()):
            rotated[selected] = torch.rot90(images[selected], k, dims=(-1, -2))

    needs_resampling = residual != 0
    if bool(needs_resampling.any()):
        rotated[needs_resampling] = _rotate_small(
            rotated[needs_resampling], residual[needs_resampling]
        )
    return rotated


def _rotate_small(images: torch.Tensor, angles_deg: torch.Tensor) -> torch.Tensor:
    """Bilinear counter-clockwise rotation of (B, H, H) images by (B,) angles."""
    radians = torch.deg2rad(angles_deg)
    cos, sin = torch.cos(radians), torch.sin(radians)
    zero = torch.zeros_like(cos)
    # grid_sample reads the input at theta @ (x, y, 1) for each output pixel (x: column,
    # y: row, both normalised to [-1, 1]); rotating content by +a means reading at R(-a) p.
    theta = torch.stack(
        [torch.stack([cos, sin, zero], dim=1), torch.stack([-sin, cos, zero], dim=1)], dim=1
    ).to(images.dtype)
    batch = images[:, None]
    grid = F.affine_grid(theta, list(batch.shape), align_corners=False)
    out = F.grid_sample(batch, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out[:, 0]


def dihedral_image(image: np.ndarray, quarter_turns: int, flip: bool) -> np.ndarray:
    """Image(s) flipped left-right (if ``flip``), then turned ``90° x quarter_turns`` CCW.

    Parameters
    ----------
    image
        (…, H, W) image or stack.
    quarter_turns
        Counter-clockwise quarter turns.
    flip
        Flip left-right first.

    Returns
    -------
    numpy.ndarray
        The turned image(s), C-contiguous.
    """
    out = image[..., ::-1] if flip else image
    return np.ascontiguousarray(np.rot90(out, quarter_turns, axes=(-1, -2)))


def dihedral_beam(beam: Beam, quarter_turns: int, flip: bool) -> Beam:
    """The beam of :func:`dihedral_image` of an image observed with ``beam``.

    Parameters
    ----------
    beam
        (FWHM major [px], FWHM minor [px], PA [deg]) in the array frame.
    quarter_turns, flip
        As in :func:`dihedral_image`.

    Returns
    -------
    Beam
        The same FWHMs; the PA negated by the flip, then turned by ``90° x quarter_turns``,
        in [0, 180).
    """
    major, minor, pa = beam
    pa = -pa if flip else pa
    return major, minor, float((pa + 90.0 * quarter_turns) % 180.0)


def array_position_angle(
    sky_per_pixel: tuple[tuple[float, float], ...] | None, sky_pa_deg: float
) -> float:
    """A sky position angle (east of north) in the array frame (from +row through -column).

    Parameters
    ----------
    sky_per_pixel
        2x2 (east, north) offsets [arcsec] per (column, row) pixel step from the celestial
        WCS (CDELT, PC or CD), which says how the array is turned and mirrored on the sky;
        None: north up, east left.
    sky_pa_deg
        Position angle on the sky [degrees east of north].

    Returns
    -------
    float
        The angle in the array frame [degrees]: kept on a standard grid, negated on a
        mirrored one, turned by θ on a grid rotated by θ.
    """
    if sky_per_pixel is None:
        return float(sky_pa_deg)
    angle = np.deg2rad(sky_pa_deg)
    column, row = np.linalg.solve(np.asarray(sky_per_pixel), [np.sin(angle), np.cos(angle)])
    return float(np.rad2deg(np.arctan2(-column, row)))
