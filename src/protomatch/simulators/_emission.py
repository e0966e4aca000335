"""How a simulated snapshot looks: density, dust emission and images.

The snapshot (:class:`protomatch.simulators._physics.SnapshotState`: masses, disk radius,
luminosity, cavity angle at one age) comes from :mod:`protomatch.simulators._physics`, which
also documents the drawn quantities named here (``H_100``, ``R_env``, the clump ``sigma``).

Density and images
------------------
In the system frame (z = rotation axis; all lengths in AU, number densities n of H2 in cm^-3):

* flared disk: ``n_d = Sigma(R) / (sqrt(2 pi) h) exp(-z^2 / 2h^2)`` with
  ``Sigma = Sigma_0 (R_d / R) exp(-(R / R_d)^4)`` normalised to ``M_disk`` and scale height
  ``h = H_100 (R / 100 AU)^(5/4)``;
* envelope (rotating-collapse-like):
  ``n_e = n_0 / [sqrt(q) (1 + q)] * [1 + A ((1 - mu^2)^2 - 8/15) / (1 + q^2)]`` with ``A = 1.5``,
  ``q = r / R_d`` and ``mu = |z| / r``: ``r^-3/2`` free fall outside the centrifugal radius,
  ``r^-1/2`` and flattened towards the equator inside it; normalised to ``M_env`` within the
  outer radius ``R_env`` (the angular term averages to zero);
* bipolar cavity: the envelope is multiplied by ``eps_c + (1 - eps_c) / (1 + exp((mu - cos
  theta_c) / w))`` (``eps_c = 0.02``, ``w = 0.04``) and by a swept-up wall ``1 + B exp(-((mu - cos
  theta_c) / w_wall)^2)`` (``B = 1.5``, ``w_wall = 0.06``);
* clumps: total density times ``exp(sigma g - sigma^2 / 2)``, ``g`` a unit-variance Gaussian
  random field (power spectrum ``k^-3.5`` on a periodic 32^3 grid of side 2048 AU, trilinearly
  interpolated), drawn anew for every snapshot from its own seed.

Emission is optically thin dust continuum at 1.3 mm in the Rayleigh-Jeans limit,
``I = kappa (2 k nu^2 / c^2) mu m_H  integral n T dl`` in MJy/sr (``kappa = 0.01 cm^2`` per gram
of gas), summed along the line of sight through a cube of side ``fov_au``. To keep the thin
disk and the centre from aliasing, the scale height is broadened to ``sqrt(h^2 + (0.6 D)^2)``,
the disk's radial taper to ``sqrt(R_d^2 + D^2)`` and radii are softened by ``0.5 D``, where ``D``
is the sampling step (a pixel-sized beam); ``Sigma_0`` is normalised for the softened profile,
so the disk mass is kept however coarse the sampling.

The dust temperature is ``T(r) = [T_ref^4 (r_ref / r)^2 + T_bg^4]^(1/4)``, with ``T_ref`` the
snapshot's ``temperature`` at ``r_ref = 100 AU`` and an external floor ``T_bg = 10 K``.

Viewing directions: ``(inclination, azimuth)`` of the line of sight in the system frame
(inclination 0 = face-on, 90 deg = edge-on; the library's eight are listed in
:mod:`protomatch.simulators.library`). Image columns run along ``e_u = (-sin phi, cos phi,
0)`` and rows along ``e_v = n x e_u``, so the projected rotation axis points along the rows
(up in an image shown with ``origin="lower"``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray
from scipy import special

from protomatch.simulators._physics import _MSUN_G, REFERENCE_RADIUS_AU, SnapshotState

_AU_CM = 1.495978707e13
_MEAN_MOLECULAR_MASS_G = 2.8 * 1.6735e-24
#: Converts a density in Msun/AU^3 to an H2 number density in cm^-3.
_MSUN_PER_AU3_TO_CM3 = _MSUN_G / _AU_CM**3 / _MEAN_MOLECULAR_MASS_G
_KAPPA_CM2_G, _NU_HZ, _K_B, _C_CM_S = 0.01, 230.0e9, 1.380649e-16, 2.99792458e10
#: Multiplies sum(n [cm^-3] * T [K] * dl [AU]) to give MJy/sr.
_INTENSITY_SCALE = (
    _KAPPA_CM2_G * 2 * _K_B * _NU_HZ**2 / _C_CM_S**2 * _MEAN_MOLECULAR_MASS_G * _AU_CM / 1e-17
)
INTENSITY_UNIT = "MJy/sr (optically thin 1.3 mm dust continuum, Rayleigh-Jeans)"

BACKGROUND_TEMPERATURE_K = 10.0
#: Field of view of the library images [AU]: the largest disks (~300 AU radius) fit well.
FIELD_OF_VIEW_AU = 1600.0
#: Side of the periodic clump grid [AU]: a field wider than this shows the same clumps twice.
CLUMP_BOX_AU = 2048.0
_CLUMP_GRID = 32
_CAVITY_CONTRAST, _CAVITY_WIDTH, _WALL_BOOST, _WALL_WIDTH = 0.02, 0.04, 1.5, 0.06
_ENVELOPE_FLATTENING = 1.5
_BLOCK_SAMPLES = 16384


def clump_field(state: SnapshotState) -> NDArray[np.float32]:
    """The snapshot's log-normal density perturbation on a periodic 32^3 grid.

    Parameters
    ----------
    state
        The snapshot (its clump seed and ``clump_sigma``).

    Returns
    -------
    numpy.ndarray
        Values ``exp(sigma g - sigma^2/2)`` (mean ~1) as a float32 corner table of shape
        (32^3, 8): row ``(i * 32 + j) * 32 + k`` holds the values at the eight corners of
        cell ``(i, j, k)`` (wrapped), so trilinear interpolation is one gather per point.
    """
    rng = np.random.default_rng(state.clump_seed)
    n = _CLUMP_GRID
    k = np.sqrt(
        np.fft.fftfreq(n)[:, None, None] ** 2
        + np.fft.fftfreq(n)[None, :, None] ** 2
        + np.fft.rfftfreq(n)[None, None, :] ** 2
    )
    amplitude = np.where(k > 0, np.maximum(k, 1e-12) ** -1.75, 0.0)
    noise = np.fft.rfftn(rng.standard_normal((n, n, n)))
    g = np.fft.irfftn(noise * amplitude, s=(n, n, n), axes=(0, 1, 2))
    g /= g.std()
    field = np.exp(state.clump_sigma * g - 0.5 * state.clump_sigma**2)
    padded = np.pad(field, ((0, 1), (0, 1), (0, 1)), mode="wrap").astype(np.float32)
    corners = [
        padded[i : i + n, j : j + n, k : k + n] for i in (0, 1) for j in (0, 1) for k in (0, 1)
    ]
    return np.stack(corners, axis=-1).reshape(n**3, 8)


def camera_basis(
    direction: Sequence[float] | NDArray[np.float64], position_angle: float = 0.0
) -> NDArray[np.float64]:
    """The camera's unit vectors in the system frame.

    Parameters
    ----------
    direction
        ``(inclination, azimuth)`` [rad] or a 3-vector pointing from the system to the
        observer.
    position_angle
        Rotation of the image on the sky [rad].

    Returns
    -------
    numpy.ndarray
        (3, 3) rows ``(e_u, e_v, n)``: image columns, image rows, line of sight.

    Raises
    ------
    ValueError
        For a zero or non-finite vector or a direction of another shape.
    """
    d = np.asarray(direction, dtype=np.float64)
    if d.shape == (3,):
        norm = np.linalg.norm(d)
        if not np.isfinite(norm) or norm == 0:
            raise ValueError("viewing direction vector must be finite and non-zero")
        d = d / norm
        inclination, azimuth = math.acos(np.clip(d[2], -1.0, 1.0)), math.atan2(d[1], d[0])
    elif d.shape == (2,):
        inclination, azimuth = float(d[0]), float(d[1])
    else:
        raise ValueError("direction must be (inclination, azimuth) or a 3-vector")
    n = np.array(
        [
            math.sin(inclination) * math.cos(azimuth),
            math.sin(inclination) * math.sin(azimuth),
            math.cos(inclination),
        ]
    )
    e_u = np.array([-math.sin(azimuth), math.cos(azimuth), 0.0])
    e_v = np.cross(n, e_u)
    c, s = math.cos(position_angle), math.sin(position_angle)
    return np.stack([c * e_u + s * e_v, -s * e_u + c * e_v, n])


def _sample_clumps(
    corners: NDArray[np.float32],
    x: NDArray[np.float32],
    y: NDArray[np.float32],
    z: NDArray[np.float32],
) -> NDArray[np.float32]:
    """Trilinear, periodic interpolation of a :func:`clump_field` at positions [AU]."""
    n, f32 = _CLUMP_GRID, np.float32
    offsets: list[NDArray[np.int32]] = []
    fractions: list[NDArray[np.float32]] = []
    for coord, stride in zip((x, y, z), (n * n, n, 1), strict=True):
        s = coord * f32(n / CLUMP_BOX_AU)
        s += f32(64 * n)  # positive for |coord| < 64 boxes, so the wrap is a bit mask
        cell = np.floor(s)
        fractions.append((s - cell).ravel())
        index = cell.astype(np.int32)
        index &= n - 1
        index *= stride
        offsets.append(index)
    base = offsets[0] + offsets[1] + offsets[2]
    c = corners.take(base.ravel(), axis=0)
    fx, fy, fz = fractions
    c00, c01 = c[:, 0] + (c[:, 1] - c[:, 0]) * fz, c[:, 2] + (c[:, 3] - c[:, 2]) * fz
    c10, c11 = c[:, 4] + (c[:, 5] - c[:, 4]) * fz, c[:, 6] + (c[:, 7] - c[:, 6]) * fz
    c0, c1 = c00 + (c01 - c00) * fy, c10 + (c11 - c10) * fy
    return (c0 + (c1 - c0) * fx).reshape(x.shape)


def _softening(step: float) -> float:
    """Softening length [AU] of radii for a sampling ``step`` [AU]."""
    return max(0.5 * step, 0.5)


def _disk_density(
    state: SnapshotState, cyl2: NDArray[np.float32], z2: NDArray[np.float32], step: float
) -> NDArray[np.float32]:
    """Flared disk ``Sigma(R) / (sqrt(2 pi) h) exp(-z^2 / 2h^2)`` [cm^-3], h widened by ``step``."""
    f32, rd = np.float32, math.hypot(state.disk_size, step)
    # Mass of the softened, widened profile: 2 pi Sigma_0 R_d^2 Gamma(5/4) Q(1/4, (s / R_d)^4).
    tail = float(special.gammaincc(0.25, (_softening(step) / rd) ** 4))
    sigma0 = state.disk_mass / (2 * math.pi * rd**2 * math.gamma(1.25) * tail)
    sigma0 *= _MSUN_PER_AU3_TO_CM3
    # h^2 = H_100^2 (R / 100 AU)^(5/2), written with square roots (cheaper than a power).
    h2 = cyl2 * np.sqrt(np.sqrt(cyl2)) * f32(state.scale_height_100**2 * 1e-5)
    h2 += f32((0.6 * step) ** 2)
    q2 = cyl2 * f32(1.0 / rd**2)
    exponent = np.minimum(q2 * q2 + z2 / (f32(2.0) * h2), f32(60.0))
    return f32(sigma0 * rd / math.sqrt(2 * math.pi)) * np.exp(-exponent) / np.sqrt(cyl2 * h2)


def _envelope_density(
    state: SnapshotState, cyl2: NDArray[np.float32], r2: NDArray[np.float32], r: NDArray[np.float32]
) -> NDArray[np.float32]:
    """Rotating-collapse-like envelope with a bipolar cavity and swept-up walls [cm^-3]."""
    f32, one, rd = np.float32, np.float32(1.0), state.disk_size
    q_env = max(state.envelope_radius / rd, 1.0)
    shape_mass = 2.0 * (q_env**1.5 / 3.0 - math.sqrt(q_env) + math.atan(math.sqrt(q_env)))
    n0 = state.envelope_mass / (4 * math.pi * rd**3 * shape_mass) * _MSUN_PER_AU3_TO_CM3
    q = r * f32(1.0 / rd)
    sin2 = cyl2 / r2
    flattening = one + f32(_ENVELOPE_FLATTENING) * (sin2 * sin2 - f32(8 / 15)) / (one + q * q)
    density = f32(n0) * flattening / (np.sqrt(q) * (one + q))
    offset = np.sqrt(one - sin2) - f32(math.cos(math.radians(state.cavity_angle)))
    inside = np.exp(np.minimum(offset * f32(1.0 / _CAVITY_WIDTH), f32(60.0)))
    cavity = f32(_CAVITY_CONTRAST) + f32(1.0 - _CAVITY_CONTRAST) / (one + inside)
    wall = one + f32(_WALL_BOOST) * np.exp(-np.square(offset * f32(1.0 / _WALL_WIDTH)))
    density *= cavity * wall
    if state.envelope_radius * state.envelope_radius < float(r2.max()):
        density *= r <= f32(state.envelope_radius)
    return density


def _emissivity(
    state: SnapshotState,
    x: NDArray[np.float32],
    y: NDArray[np.float32],
    z: NDArray[np.float32],
    step: float,
    clumps: NDArray[np.float32],
) -> NDArray[np.float32]:
    """``n T`` [cm^-3 K] at system-frame positions [AU] (arrays of one small shape)."""
    f32 = np.float32
    cyl2 = x * x + y * y + f32(_softening(step) ** 2)
    z2 = z * z
    r2 = cyl2 + z2
    r = np.sqrt(r2)
    density = _disk_density(state, cyl2, z2, step) + _envelope_density(state, cyl2, r2, r)
    density *= _sample_clumps(clumps, x, y, z)
    # Dust temperature: stellar heating (T_ref at 100 AU, r^-1/2) plus an external floor.
    heat2 = f32(state.temperature**2 * REFERENCE_RADIUS_AU) / r
    return density * np.sqrt(np.sqrt(heat2 * heat2 + f32(BACKGROUND_TEMPERATURE_K**4)))


def render_projection(
    state: SnapshotState,
    direction: Sequence[float] | NDArray[np.float64],
    *,
    size: int,
    fov_au: float = FIELD_OF_VIEW_AU,
    position_angle: float = 0.0,
    samples: int | None = None,
    clumps: NDArray[np.float32] | None = None,
) -> NDArray[np.float32]:
    """Render ``state`` seen from ``direction``: an optically thin dust-continuum image.

    Parameters
    ----------
    state
        The system at one age.
    direction
        ``(inclination, azimuth)`` [rad] or a 3-vector towards the observer.
    size
        Image side [px]; the pixel scale is ``fov_au / size`` [AU/px].
    fov_au
        Field of view [AU]; the line of sight is integrated over the same depth.
    position_angle
        Rotation of the image on the sky [rad].
    samples
        Samples along the line of sight (default ``size``).
    clumps
        The snapshot's :func:`clump_field`, to reuse it across directions.

    Returns
    -------
    numpy.ndarray
        (size, size) float32 intensities [MJy/sr], finite and non-negative; rows run along
        the projected rotation axis.
    """
    if size < 1 or not fov_au > 0 or (samples is not None and samples < 1):
        raise ValueError("size and samples must be positive and fov_au > 0")
    basis = camera_basis(direction, position_angle).astype(np.float32)
    clumps = clump_field(state) if clumps is None else clumps
    samples = size if samples is None else samples
    pixel, depth_step = fov_au / size, fov_au / samples
    centres = ((np.arange(size) + 0.5) * pixel - fov_au / 2).astype(np.float32)
    depth = ((np.arange(samples) + 0.5) * depth_step - fov_au / 2).astype(np.float32)
    image = np.empty((size, size), dtype=np.float32)
    # Blocks of ~16k samples keep the temporaries in cache: 2-3x faster than one big block.
    pixels = max(1, _BLOCK_SAMPLES // samples)
    rows, cols = (max(1, pixels // size), size) if pixels >= size else (1, pixels)
    step = max(pixel, depth_step)
    for r0 in range(0, size, rows):
        v = centres[r0 : r0 + rows]
        for c0 in range(0, size, cols):
            u = centres[c0 : c0 + cols]
            coords = [
                (v * basis[1, axis])[:, None, None]
                + (u * basis[0, axis])[None, :, None]
                + (depth * basis[2, axis])[None, None, :]
                for axis in range(3)
            ]
            emissivity = _emissivity(state, coords[0], coords[1], coords[2], step, clumps)
            image[r0 : r0 + len(v), c0 : c0 + len(u)] = emissivity.sum(axis=2)
    image *= np.float32(_INTENSITY_SCALE * depth_step)
    return image
