"""An independent forward model of protostellar systems, for validating protomatch.

This program writes a simulation library in protomatch's HDF5 schema, and mock radio
observations of new systems drawn from the same prior, from a physical model written
separately from protomatch's built-in simulator (it imports only numpy, scipy, h5py and
astropy). A matching method tuned to the built-in simulator's look is caught when it fails
on these images.

The model, per system and snapshot
----------------------------------
* Evolution. A system draws a final stellar mass (log-normal, median 0.55 Msun), the fraction
  ``q`` of it still to be accreted at 10^4 yr and a decline index ``p`` (1.05-1.4); then
  ``M(t) = M_f (1 - q (t / 10^4 yr)^(1 - p))`` and ``Mdot ~ t^-p`` (its derivative, times
  per-snapshot log-normal bursts). The envelope drains as ``exp(-(t / t_d)^0.8)``, the
  disk's 90 %-mass radius grows as ``sqrt(t)`` from a per-system centrifugal radius, the
  disk mass is ``Mdot`` times a viscous time (clipped), the luminosity is a pre-main-sequence
  photosphere ``~ M^1.7 t^-0.45`` plus ``G M Mdot / R*``, and ``temperature`` is the dust
  temperature at 100 AU, ``27 K (L / Lsun)^(1/4) (1 + M_env / Msun)^0.2``.
* Density. A tapered power-law (Lynden-Bell & Pringle) disk whose scale height follows
  hydrostatic balance at 100 AU and flares as ``h / R ~ R^0.25``; a power-law envelope
  ``rho ~ r^-1.5`` that flattens to ``r^-0.5`` and towards the midplane inside the
  centrifugal radius; a paraboloidal bipolar cavity ``|z| > 1000 AU (R / w)^1.5`` with a
  denser wall, whose width ``w`` grows with age; a few Gaussian clumps and sometimes a
  spiral streamer (a chain of Gaussian beads) per snapshot.
* Emission. ``T(r) = T100 (r / 100 AU)^-0.4`` floored at 10 K, colder in the disk midplane;
  dust opacity 0.019 cm^2 per gram of gas at 230 GHz (1.3 mm); the formal solution of
  radiative transfer with absorption and the Planck function, on a line-of-sight grid that
  is finest at the system's centre (cells of 1.5 AU growing by 11 % of the distance; a disk
  thinner than a cell is widened by the cell so that its column is kept). Library pixels
  within 1.2 disk radii of the star are averaged over 3 x 3 sub-pixels; observations are
  rendered on sub-pixels of at most 8 AU. Intensities are in Jy/sr.
* Views. The library's 8 projections are fixed (inclination, azimuth, sky position angle of
  the disk axis) in :data:`PROJECTIONS`; an observation draws an isotropic direction and a
  position angle, a distance, a beam, a pixel scale and a noise level (see ``observe``).

Everything is deterministic for a seed: every system (and every observation) has its own
random stream, keyed on the seed, the stream (library or observations) and its number, so
results do not depend on the number of worker processes. The program is one file on purpose,
so that it can be copied and run anywhere numpy, scipy, h5py and astropy are installed.

Usage
-----
``python validation/independent_model.py library OUT [--systems 50] [--snapshots 10]``
``[--size 128] [--au-per-pixel 12] [--seed 11] [--workers 0]``

``python validation/independent_model.py observations OUT --library LIB [--n 160]``
``[--seed 12] [--workers 0]``
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import astropy
import h5py
import numpy as np
import scipy
from astropy.io import fits
from scipy.signal import fftconvolve
from scipy.special import erf

# ----------------------------------------------------------------- constants (cgs)

AU_CM = 1.495978707e13
MSUN_G = 1.98847e33
LSUN_ERG_S = 3.828e33
RSUN_CM = 6.957e10
YEAR_S = 3.15576e7
G_CGS = 6.6743e-8
K_B = 1.380649e-16
H_PLANCK = 6.62607015e-27
C_LIGHT = 2.99792458e10
M_H = 1.6735575e-24
MEAN_MOLECULAR_WEIGHT = 2.37

FREQUENCY_HZ = 230.0e9
KAPPA_CM2_PER_G = 0.019  # dust opacity per gram of gas (dust-to-gas 1:100) at 1.3 mm
T_FLOOR_K = 10.0
T_CEILING_K = 1500.0
T_SLOPE = 0.4
ENVELOPE_RADIUS_AU = 3000.0
LOS_HALF_LENGTH_AU = 2400.0

PARAMETERS: dict[str, str] = {
    "Envelope_mass": "Msun",
    "accretion_rate": "Msun/yr",
    "temperature": "K",
    "mass": "Msun",
    "disk_size": "AU",
    "luminosity": "Lsun",
    "age": "yr",
}
#: Library viewing directions: (inclination [deg], azimuth [deg], axis position angle [deg]).
PROJECTIONS: tuple[tuple[float, float, float], ...] = (
    (4.0, 0.0, 0.0),
    (17.0, 137.5, 35.0),
    (30.0, 275.0, 110.0),
    (43.0, 52.5, 145.0),
    (55.0, 190.0, 70.0),
    (66.0, 327.5, 160.0),
    (77.0, 105.0, 20.0),
    (88.0, 242.5, 95.0),
)
AGE_RANGE_YR = (1.0e4, 1.0e6)
LIBRARY_STREAM = 1  # seed-sequence tags: library and observation streams never overlap
OBSERVATION_STREAM = 2
PROGRAM = "independent_model.py"
DESCRIPTION = "An independent forward model of protostellar systems, for validating protomatch."


class UserError(Exception):
    """A problem with the user's input, reported as one line."""


# ----------------------------------------------------------------- evolution


@dataclass(frozen=True)
class SystemDraw:
    """The per-system constants of one protostar's evolution.

    Attributes
    ----------
    final_mass
        Stellar mass the accretion tends to [Msun].
    q_remaining
        Fraction of ``final_mass`` still to be accreted at 10^4 yr.
    decline_index
        ``p`` in ``Mdot ~ t^-p``.
    envelope_efficiency
        Initial envelope mass over ``final_mass``.
    dispersal_time
        Envelope e-folding time [yr].
    centrifugal_radius
        Disk 90 %-mass radius at 10^5 yr [AU] (sets the specific angular momentum).
    surface_index
        ``gamma`` of the tapered disk surface density.
    viscous_time
        Disk mass over accretion rate [yr].
    cavity_width
        Cavity half-width at 1000 AU height at 10^4 yr [AU].
    cavity_widening
        Power of age the cavity width grows with.
    cavity_contrast
        Density inside the cavity over the envelope's.
    star_radius
        Stellar radius [Rsun].
    """

    final_mass: float
    q_remaining: float
    decline_index: float
    envelope_efficiency: float
    dispersal_time: float
    centrifugal_radius: float
    surface_index: float
    viscous_time: float
    cavity_width: float
    cavity_widening: float
    cavity_contrast: float
    star_radius: float


@dataclass(frozen=True)
class Blob:
    """An isotropic Gaussian overdensity: centre [AU] (system frame), sigma [AU], g/cm^3."""

    centre: tuple[float, float, float]
    sigma: float
    density: float


@dataclass(frozen=True)
class Snapshot:
    """Everything that fixes a snapshot's images: the seven parameters and the hidden ones.

    Attributes
    ----------
    params
        The seven stored parameters, by name, in the units of :data:`PARAMETERS`.
    disk_mass
        [Msun].
    surface_index
        ``gamma`` of the disk surface density.
    aspect_100
        Disk scale height over radius at 100 AU.
    centrifugal_radius
        Radius inside which the envelope flattens [AU].
    envelope_rho0
        Envelope density at the centrifugal radius [g/cm^3], before flattening.
    cavity_width
        Cavity half-width at 1000 AU height [AU].
    cavity_contrast
        Density inside the cavity over the envelope's.
    blobs
        Clumps and streamer beads.
    t_slope
        Power of the radial temperature decline.
    midplane_cooling
        Fractional temperature drop in the disk midplane.
    """

    params: dict[str, float]
    disk_mass: float
    surface_index: float
    aspect_100: float
    centrifugal_radius: float
    envelope_rho0: float
    cavity_width: float
    cavity_contrast: float
    blobs: tuple[Blob, ...] = ()
    t_slope: float = T_SLOPE
    midplane_cooling: float = 0.3

    @property
    def taper_radius(self) -> float:
        """Characteristic radius Rc of the disk [AU]; ``disk_size`` holds 90 % of its mass."""
        return self.params["disk_size"] / math.log(10.0) ** (1.0 / (2.0 - self.surface_index))


def log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    """One draw, uniform in log between ``low`` and ``high``."""
    return float(math.exp(rng.uniform(math.log(low), math.log(high))))


def draw_system(rng: np.random.Generator) -> SystemDraw:
    """Draw one system's constants from the prior."""
    return SystemDraw(
        final_mass=float(np.clip(10 ** rng.normal(math.log10(0.55), 0.3), 0.08, 3.0)),
        q_remaining=float(rng.uniform(0.5, 0.85)),
        decline_index=float(rng.uniform(1.05, 1.4)),
        envelope_efficiency=10 ** float(rng.normal(math.log10(2.0), 0.2)),
        dispersal_time=log_uniform(rng, 1.0e5, 6.0e5),
        centrifugal_radius=log_uniform(rng, 15.0, 120.0),
        surface_index=float(rng.uniform(0.4, 1.2)),
        viscous_time=log_uniform(rng, 3.0e4, 2.0e5),
        cavity_width=log_uniform(rng, 60.0, 180.0),
        cavity_widening=float(rng.uniform(0.2, 0.4)),
        cavity_contrast=log_uniform(rng, 0.005, 0.05),
        star_radius=float(rng.uniform(2.0, 3.0)),
    )


def draw_ages(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` increasing ages [yr], each log-uniform over :data:`AGE_RANGE_YR`."""
    low, high = np.log(AGE_RANGE_YR)
    return np.sort(np.exp(rng.uniform(low, high, n)))


def evolve(system: SystemDraw, age: float, burst: float) -> dict[str, float]:
    """The seven parameters of ``system`` at ``age`` [yr], with accretion burst factor ``burst``.

    Returns
    -------
    dict
        Parameter name to value, in the units of :data:`PARAMETERS`.
    """
    t4 = age / 1.0e4
    p = system.decline_index
    mass = system.final_mass * (1.0 - system.q_remaining * t4 ** (1.0 - p))
    mdot = (p - 1.0) * system.q_remaining * system.final_mass * t4**-p / 1.0e4 * burst
    envelope = system.envelope_efficiency * system.final_mass
    envelope = envelope * math.exp(-((age / system.dispersal_time) ** 0.8)) + 1.0e-3
    disk_size = float(np.clip(system.centrifugal_radius * math.sqrt(age / 1.0e5), 4.0, 400.0))
    photosphere = 1.1 * (mass / 0.5) ** 1.7 * (age / 3.0e5) ** -0.45
    accretion = G_CGS * mass * MSUN_G * mdot * MSUN_G / YEAR_S
    accretion /= system.star_radius * RSUN_CM * LSUN_ERG_S
    luminosity = photosphere + accretion
    temperature = 27.0 * luminosity**0.25 * (1.0 + envelope) ** 0.2
    return {
        "Envelope_mass": envelope,
        "accretion_rate": mdot,
        "temperature": temperature,
        "mass": mass,
        "disk_size": disk_size,
        "luminosity": luminosity,
        "age": age,
    }


def disk_aspect_100(temperature_100: float, mass: float) -> float:
    """Hydrostatic scale height over radius at 100 AU, c_s / v_K, for the midplane there."""
    sound2 = K_B * temperature_100 / (MEAN_MOLECULAR_WEIGHT * M_H)
    kepler2 = G_CGS * mass * MSUN_G / (100.0 * AU_CM)
    return float(np.clip(math.sqrt(sound2 / kepler2), 0.03, 0.3))


def cavity_factor(
    radius: np.ndarray, height: np.ndarray, width: float, contrast: float
) -> np.ndarray:
    """Envelope density factor of the bipolar cavity (inside ``contrast``, a denser wall).

    Parameters
    ----------
    radius, height
        Cylindrical radius and height above the midplane [AU] (any matching shapes).
    width
        Cavity half-width at 1000 AU height [AU].
    contrast
        Density inside the cavity over the envelope's.
    """
    wall = width * np.cbrt(np.square(height / 1000.0, dtype=np.float32))
    delta = (radius - wall) / (0.12 * wall + 4.0)
    outside = 0.5 * (1.0 + np.tanh(delta))
    return contrast + outside * ((1.0 - contrast) + 1.2 * np.exp(-0.5 * delta * delta))


def envelope_shape(r: np.ndarray, mu2: np.ndarray, centrifugal_radius: float) -> np.ndarray:
    """Envelope density over its value at the centrifugal radius, before the cavity.

    ``x^-0.5 / (1 + x)`` with ``x = r / R_cf`` (``r^-1.5`` outside, ``r^-0.5`` inside), times
    a flattening towards the midplane that fades outside ``R_cf``, times an outer taper.
    """
    x = r / centrifugal_radius
    flat = np.exp(-mu2 / (0.32 * (1.0 + x * x)))
    taper = np.exp(-np.square(np.square(r / ENVELOPE_RADIUS_AU)))
    return 2.0 * flat * taper / (np.sqrt(x) * (1.0 + x))


def envelope_rho0(params: dict[str, float], centrifugal_radius: float, system: SystemDraw) -> float:
    """Envelope density scale [g/cm^3] that holds ``Envelope_mass`` (with the cavity)."""
    r = np.geomspace(0.5, 2.0 * ENVELOPE_RADIUS_AU, 600)
    mu = np.linspace(-1.0, 1.0, 401)
    rr, mm = np.meshgrid(r, mu, indexing="ij")
    cyl = rr * np.sqrt(1.0 - mm * mm)
    width = cavity_width(system, params["age"])
    shape = envelope_shape(rr, mm * mm, centrifugal_radius)
    shape = shape * cavity_factor(cyl, rr * mm, width, system.cavity_contrast)
    volume = 2.0 * np.pi * np.trapezoid(np.trapezoid(shape, mu, axis=1) * r * r, r)
    return float(params["Envelope_mass"] * MSUN_G / (volume * AU_CM**3))


def cavity_width(system: SystemDraw, age: float) -> float:
    """Cavity half-width at 1000 AU height [AU] at ``age`` [yr]."""
    return system.cavity_width * (age / 1.0e4) ** system.cavity_widening


def snapshot_state(system: SystemDraw, age: float, rng: np.random.Generator) -> Snapshot:
    """The full state of ``system`` at ``age`` [yr]; ``rng`` draws bursts, clumps, streamer."""
    params = evolve(system, age, burst=10 ** float(rng.normal(0.0, 0.15)))
    mass_cap = 0.3 * params["mass"]
    disk_mass = float(np.clip(params["accretion_rate"] * system.viscous_time, 1e-4, mass_cap))
    centrifugal = float(np.clip(0.8 * params["disk_size"] * (age / 1.0e5) ** 0.25, 5.0, 600.0))
    rho0 = envelope_rho0(params, centrifugal, system)
    aspect = disk_aspect_100(0.7 * params["temperature"], params["mass"])
    return Snapshot(
        params=params,
        disk_mass=disk_mass,
        surface_index=system.surface_index,
        aspect_100=aspect,
        centrifugal_radius=centrifugal,
        envelope_rho0=rho0,
        cavity_width=cavity_width(system, age),
        cavity_contrast=system.cavity_contrast,
        blobs=draw_blobs(rng, rho0, centrifugal),
    )


def _unit_vector(rng: np.random.Generator, max_abs_z: float = 1.0) -> np.ndarray:
    z = rng.uniform(-max_abs_z, max_abs_z)
    phi = rng.uniform(0.0, 2.0 * np.pi)
    s = math.sqrt(1.0 - z * z)
    return np.array([s * math.cos(phi), s * math.sin(phi), z])


def draw_blobs(rng: np.random.Generator, rho0: float, centrifugal: float) -> tuple[Blob, ...]:
    """A few Gaussian clumps and, half the time, a spiral streamer of overlapping beads.

    Each overdensity is 1-6 times the local (cavity-free, unflattened) envelope density.
    """

    def local(r: float) -> float:
        return rho0 * float(envelope_shape(np.array(r), np.array(0.0), centrifugal))

    blobs = []
    for _ in range(int(rng.integers(2, 6))):
        r = log_uniform(rng, 150.0, 900.0)
        centre = r * _unit_vector(rng, max_abs_z=0.8)
        amplitude = log_uniform(rng, 1.0, 6.0)
        sigma = float(rng.uniform(0.08, 0.2)) * r
        blobs.append(Blob(tuple(centre.tolist()), sigma, amplitude * local(r)))
    if rng.uniform() < 0.5:
        normal = _unit_vector(rng)
        a = np.cross(normal, [0.0, 0.0, 1.0] if abs(normal[2]) < 0.9 else [1.0, 0.0, 0.0])
        a /= np.linalg.norm(a)
        b = np.cross(normal, a)
        start, end = log_uniform(rng, 500.0, 1000.0), max(centrifugal, 60.0)
        sweep = float(rng.uniform(0.5, 1.2)) * np.pi
        amplitude = log_uniform(rng, 2.0, 5.0)
        for f in np.linspace(0.0, 1.0, 12):
            r = start * (end / start) ** f
            phi = sweep * f
            centre = r * (math.cos(phi) * a + math.sin(phi) * b)
            blobs.append(Blob(tuple(centre.tolist()), 0.12 * r, amplitude * local(r)))
    return tuple(blobs)


# ----------------------------------------------------------------- rendering


@dataclass(frozen=True)
class LineOfSight:
    """Line-of-sight cells, towards the observer: centres and lengths [AU]."""

    centres: np.ndarray
    lengths: np.ndarray

    @classmethod
    def stretched(
        cls, half_length: float = LOS_HALF_LENGTH_AU, finest: float = 1.5, growth: float = 0.11
    ) -> LineOfSight:
        """Cells of length ``finest + growth |s|`` from ``-half_length`` to ``+half_length``."""
        edges = [0.0]
        while edges[-1] < half_length:
            edges.append(edges[-1] + finest + growth * edges[-1])
        half = np.array(edges)
        full = np.concatenate([-half[:0:-1], half])
        return cls(0.5 * (full[1:] + full[:-1]), np.diff(full))


def view_basis(inclination: float, azimuth: float, position_angle: float) -> np.ndarray:
    """System-frame directions of the image column, image row and line of sight.

    Parameters
    ----------
    inclination
        Angle between the line of sight (towards the observer) and the disk axis [deg].
    azimuth
        Azimuth of the observer around the disk axis [deg].
    position_angle
        Sky position angle of the projected disk axis, east of north [deg]; the image's
        rows run north and its columns west (east to the left).

    Returns
    -------
    np.ndarray
        (3, 3): rows ``e_col``, ``e_row``, ``n``; a point at column offset c, row offset r
        and depth s (towards the observer) [AU] sits at ``c e_col + r e_row + s n``.
    """
    i, phi, pa = np.radians([inclination, azimuth, position_angle])
    n = np.array([np.sin(i) * np.cos(phi), np.sin(i) * np.sin(phi), np.cos(i)])
    up = np.array([-np.cos(i) * np.cos(phi), -np.cos(i) * np.sin(phi), np.sin(i)])
    right = np.cross(up, n)
    e_col = np.cos(pa) * right - np.sin(pa) * up
    e_row = np.sin(pa) * right + np.cos(pa) * up
    return np.stack([e_col, e_row, n])


def planck_jy_sr(temperature: np.ndarray) -> np.ndarray:
    """Planck intensity B_nu(T) at :data:`FREQUENCY_HZ` [Jy/sr] for T [K]."""
    scale = 2.0 * H_PLANCK * FREQUENCY_HZ**3 / C_LIGHT**2 * 1.0e23
    return scale / np.expm1(H_PLANCK * FREQUENCY_HZ / (K_B * temperature))


def _gaussian_1d(x: np.ndarray, centre: float, sigma: float) -> np.ndarray:
    return np.exp(-0.5 * np.square((x - centre) / sigma))


def _gaussian_cells(los: LineOfSight, centre: float, sigma: float) -> np.ndarray:
    """Mean of a unit Gaussian over each line-of-sight cell (exact, resolves narrow blobs)."""
    lo = (los.centres - 0.5 * los.lengths - centre) / (math.sqrt(2.0) * sigma)
    hi = (los.centres + 0.5 * los.lengths - centre) / (math.sqrt(2.0) * sigma)
    return math.sqrt(np.pi / 2.0) * sigma * (erf(hi) - erf(lo)) / los.lengths


def _add_blobs(
    rho: np.ndarray,
    state: Snapshot,
    basis: np.ndarray,
    cols: np.ndarray,
    rows: np.ndarray,
    los: LineOfSight,
) -> None:
    """Add the state's blobs to ``rho`` (rows, cols, los) in place, within 4.5 sigma."""
    for blob in state.blobs:
        gc, gr, gs = basis @ np.asarray(blob.centre)
        fr = _gaussian_1d(rows, gr, blob.sigma)
        fc = _gaussian_1d(cols, gc, blob.sigma)
        fs = _gaussian_cells(los, gs, blob.sigma)
        keep = [np.flatnonzero(f > 4e-5) for f in (fr, fc, fs)]
        if any(k.size == 0 for k in keep):
            continue
        sl = tuple(slice(k[0], k[-1] + 1) for k in keep)
        part = (fr[sl[0], None, None] * fc[None, sl[1], None]) * fs[None, None, sl[2]]
        rho[sl] += (blob.density * part).astype(np.float32)


def _density_temperature(
    state: Snapshot, x: np.ndarray, y: np.ndarray, z: np.ndarray, blur2: np.ndarray | float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """Gas density [g/cm^3] and dust temperature [K] at system-frame points [AU].

    ``blur2`` [AU^2] is added to the disk's squared scale height: the variance of the
    height over a line-of-sight cell, so that a disk thinner than a cell keeps its column.
    """
    f32 = np.float32
    cyl2 = x * x + y * y
    z2 = z * z
    r = np.sqrt(cyl2 + z2 + f32(0.25))  # softened by 0.5 AU at the star
    cyl = np.sqrt(cyl2 + f32(0.25))
    env = envelope_shape(r, z2 / (r * r), state.centrifugal_radius)
    env *= cavity_factor(cyl, z, state.cavity_width, state.cavity_contrast)
    rho = f32(state.envelope_rho0) * env
    rc, gamma = state.taper_radius, state.surface_index
    sigma_c = state.disk_mass * MSUN_G * (2.0 - gamma) / (2.0 * np.pi * (rc * AU_CM) ** 2)
    h = np.sqrt(np.square(f32(100.0 * state.aspect_100) * (cyl / f32(100.0)) ** f32(1.25)) + blur2)
    layer = np.exp(-0.5 * z2 / (h * h))
    log_x = np.log(cyl / f32(rc))
    surface = np.exp(-gamma * log_x - np.exp((2.0 - gamma) * log_x))
    rho += f32(sigma_c / (math.sqrt(2.0 * np.pi) * AU_CM)) * layer * surface / h
    temperature = f32(state.params["temperature"]) * (r / f32(100.0)) ** f32(-state.t_slope)
    in_disk = layer / (1.0 + np.square(np.square(cyl / f32(2.5 * rc))))
    temperature *= 1.0 - f32(state.midplane_cooling) * in_disk
    return rho, np.clip(temperature, T_FLOOR_K, T_CEILING_K)


def render(
    state: Snapshot,
    basis: np.ndarray,
    cols: np.ndarray,
    rows: np.ndarray,
    los: LineOfSight,
    points_per_block: int = 60_000,
) -> np.ndarray:
    """Intensity [Jy/sr] of ``state`` on a sky grid, by the formal solution of transfer.

    ``I = sum_i B(T_i) (1 - exp(-dtau_i)) exp(-tau_i)``, with ``tau_i`` the optical depth
    between cell ``i`` and the observer.

    Parameters
    ----------
    state
        The snapshot.
    basis
        (3, 3) from :func:`view_basis`.
    cols, rows
        Pixel-centre offsets from the star along the image columns and rows [AU].
    los
        Line-of-sight cells.
    points_per_block
        Points evaluated at once (memory and cache).

    Returns
    -------
    np.ndarray
        (len(rows), len(cols)) float64 intensity [Jy/sr].
    """
    f32 = np.float32
    cols32, s32 = cols.astype(f32), los.centres.astype(f32)
    dtau_per_rho = (KAPPA_CM2_PER_G * AU_CM * los.lengths).astype(f32)
    blur2 = (np.square(basis[2, 2] * los.lengths) / 12.0).astype(f32)
    image = np.empty((rows.size, cols.size))
    step = max(1, points_per_block // (cols.size * s32.size))
    for start in range(0, rows.size, step):
        block = rows[start : start + step].astype(f32)
        x, y, z = (
            (e[0] * cols32)[None, :, None] + (e[1] * block)[:, None, None] + (e[2] * s32)
            for e in basis.T.astype(f32)
        )
        rho, temperature = _density_temperature(state, x, y, z, blur2)
        _add_blobs(rho, state, basis, cols, rows[start : start + step], los)
        dtau = rho * dtau_per_rho
        behind = np.cumsum(dtau[..., ::-1], axis=-1)[..., ::-1]  # from the cell to the front
        weight = -np.expm1(-dtau) * np.exp(dtau - behind)
        image[start : start + step] = np.sum(planck_jy_sr(temperature) * weight, axis=-1)
    return image


def pixel_centres(n: int, pixel: float) -> np.ndarray:
    """Offsets [AU] of ``n`` pixel centres from the image centre (star between pixels if even)."""
    return (np.arange(n) - 0.5 * (n - 1)) * pixel


def block_mean(image: np.ndarray, factor: int) -> np.ndarray:
    """Average ``factor`` x ``factor`` blocks (image sides divisible by ``factor``)."""
    ny, nx = image.shape
    return image.reshape(ny // factor, factor, nx // factor, factor).mean(axis=(1, 3))


def render_image(
    state: Snapshot, basis: np.ndarray, n: int, pixel: float, los: LineOfSight
) -> np.ndarray:
    """A library image: ``n`` x ``n`` pixels of ``pixel`` AU, 3x3-supersampled near the disk.

    Returns
    -------
    np.ndarray
        (n, n) float32 intensity [Jy/sr].
    """
    centres = pixel_centres(n, pixel)
    image = render(state, basis, centres, centres, los)
    half = int(np.clip(math.ceil(1.2 * state.params["disk_size"] / pixel), 2, 12))
    lo, hi = max(n // 2 - half, 0), min(n // 2 + half, n)
    sub = (np.arange(3 * lo, 3 * hi) - 1.5 * (n - 1) - 1.0) * pixel / 3.0
    image[lo:hi, lo:hi] = block_mean(render(state, basis, sub, sub, los), 3)
    return image.astype(np.float32)


# ----------------------------------------------------------------- files


@contextmanager
def atomic_file(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``, renamed onto it when the block succeeds."""
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def fresh_folder(out: Path) -> Iterator[Path]:
    """Yield a temporary folder that becomes ``out`` on success (``out`` must be empty).

    Raises
    ------
    UserError
        If ``out`` exists and is not an empty folder.
    """
    out = out.resolve()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"output {out} exists and is not empty; choose a new or empty folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    tmp.chmod(0o755)
    try:
        yield tmp
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def write_json(path: Path, record: dict[str, Any]) -> None:
    """Write ``record`` as indented JSON, atomically."""
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(record, indent=2) + "\n")


def library_file(root: Path, system: int, snapshot: int) -> Path:
    """``root/sink<K>/output_<SSSSSS>_isink_<K>_data.hdf5``."""
    return root / f"sink{system}" / f"output_{snapshot:06d}_isink_{system}_data.hdf5"


def write_snapshot(path: Path, images: Sequence[np.ndarray], params: dict[str, float]) -> None:
    """One library file: the projections (float32) and the seven 0-d parameters (float64)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as tmp, h5py.File(tmp, "w") as handle:
        for k, image in enumerate(images, start=1):
            handle.create_dataset(f"intensity_projection_{k}", data=image.astype(np.float32))
        for name in PARAMETERS:
            handle.create_dataset(name, data=np.float64(params[name]))


def provenance(argv: Sequence[str]) -> dict[str, Any]:
    """The command line and software versions, for ``model.json``."""
    return {
        "command": [PROGRAM, *argv],
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "h5py": h5py.__version__,
        "astropy": astropy.__version__,
    }


def physics_record() -> dict[str, Any]:
    """The fixed constants of the model, for ``model.json``."""
    return {
        "frequency_hz": FREQUENCY_HZ,
        "kappa_cm2_per_g_gas": KAPPA_CM2_PER_G,
        "temperature_law": f"T100 (r/100 AU)^-{T_SLOPE}, floor {T_FLOOR_K} K, cold midplane",
        "envelope": "r^-1.5 outside the centrifugal radius, r^-0.5 and flattened inside",
        "envelope_radius_au": ENVELOPE_RADIUS_AU,
        "disk": "tapered power law (Lynden-Bell & Pringle), h/R ~ R^0.25, disk_size = R90",
        "cavity": "paraboloid |z| > 1000 AU (R/w)^1.5, w growing with age, denser wall",
        "transfer": "formal solution with absorption, Planck source function",
        "line_of_sight_half_length_au": LOS_HALF_LENGTH_AU,
        "age_range_yr": list(AGE_RANGE_YR),
    }


def _workers(requested: int) -> int:
    return requested if requested > 0 else (os.cpu_count() or 1)


def run_parallel(
    task: Callable[..., Any], jobs: Sequence[tuple[Any, ...]], workers: int
) -> list[Any]:
    """``[task(*job) for job in jobs]``, over ``workers`` processes when more than one."""
    if workers <= 1 or len(jobs) <= 1:
        return [task(*job) for job in jobs]
    with ProcessPoolExecutor(max_workers=min(workers, len(jobs))) as pool:
        return list(pool.map(task, *zip(*jobs)))


# ----------------------------------------------------------------- library


@dataclass(frozen=True)
class LibrarySettings:
    """What a library is made with (all of it goes to ``model.json``)."""

    systems: int = 50
    snapshots: int = 10
    size: int = 128
    au_per_pixel: float = 12.0
    seed: int = 11

    def __post_init__(self) -> None:
        if self.systems < 1 or self.snapshots < 1:
            raise UserError("--systems and --snapshots must be at least 1")
        if self.size < 8:
            raise UserError("--size must be at least 8 pixels")
        if not self.au_per_pixel > 0:
            raise UserError("--au-per-pixel must be positive")


def system_rng(seed: int, stream: int, *key: int) -> np.random.Generator:
    """A generator for one (stream, key) of ``seed``: independent of every other key."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(stream, *key)))


def system_snapshots(settings: LibrarySettings, system: int) -> list[tuple[int, Snapshot]]:
    """One system's snapshots: (snapshot number = age / 100 yr, increasing; state)."""
    draw = draw_system(system_rng(settings.seed, LIBRARY_STREAM, system, 0))
    ages = draw_ages(system_rng(settings.seed, LIBRARY_STREAM, system, 1), settings.snapshots)
    out, last = [], -1
    for k, age in enumerate(ages):
        number = max(round(age / 100.0), last + 1)
        rng = system_rng(settings.seed, LIBRARY_STREAM, system, 2 + k)
        state = snapshot_state(draw, float(age), rng)
        out.append((number, state))
        last = number
    return out


def write_system(settings: LibrarySettings, system: int, root: Path) -> dict[str, Any]:
    """Render and write every snapshot of one system; return its record."""
    los = LineOfSight.stretched()
    bases = [view_basis(*view) for view in PROJECTIONS]
    numbers = []
    for number, state in system_snapshots(settings, system):
        images = [render_image(state, b, settings.size, settings.au_per_pixel, los) for b in bases]
        write_snapshot(library_file(root, system, number), images, state.params)
        numbers.append(number)
    return {"system": system, "snapshots": numbers}


def make_library(
    out: Path, settings: LibrarySettings, workers: int, argv: Sequence[str]
) -> dict[str, Any]:
    """Write a library of ``settings.systems`` systems into the new folder ``out``."""
    started = time.perf_counter()
    with fresh_folder(out) as tmp:
        jobs = [(settings, system, tmp) for system in range(1, settings.systems + 1)]
        records = run_parallel(write_system, jobs, _workers(workers))
        record = {
            "kind": "independent protostar library",
            "model": DESCRIPTION,
            "settings": dataclasses.asdict(settings),
            "field_of_view_au": settings.size * settings.au_per_pixel,
            "intensity_unit": "Jy/sr",
            "parameters": PARAMETERS,
            "projections": [
                {"projection": k, "inclination_deg": i, "azimuth_deg": a, "axis_pa_deg": p}
                for k, (i, a, p) in enumerate(PROJECTIONS, start=1)
            ],
            "physics": physics_record(),
            "systems": [r["system"] for r in records],
            "snapshots": {str(r["system"]): r["snapshots"] for r in records},
            "seed": settings.seed,
            "ingest": f"protomatch ingest {out} -o STORE --au-per-pixel "
            f"{settings.au_per_pixel:g} --intensity-unit Jy/sr",
            "seconds": round(time.perf_counter() - started, 1),
            **provenance(argv),
        }
        write_json(tmp / "model.json", record)
    return record


# ----------------------------------------------------------------- observations


@dataclass(frozen=True)
class Conditions:
    """How one mock observation is made.

    Attributes
    ----------
    inclination, azimuth, position_angle
        Viewing direction and sky position angle of the disk axis [deg].
    distance_pc
        Distance [pc].
    beam_major_au, beam_minor_au, beam_pa_deg
        Beam FWHMs [AU] and position angle [deg east of north].
    pixel_au
        Pixel side [AU].
    npix
        Image side [pixels].
    snr
        Peak over noise rms.
    cube, blank
        Write a (1, 1, Ny, Nx) cube; blank outside a circle of ``blank`` x npix radius (0: none).
    ra_deg, dec_deg
        Pointing centre.
    """

    inclination: float
    azimuth: float
    position_angle: float
    distance_pc: float
    beam_major_au: float
    beam_minor_au: float
    beam_pa_deg: float
    pixel_au: float
    npix: int
    snr: float
    cube: bool
    blank: float
    ra_deg: float
    dec_deg: float

    @property
    def beam_solid_angle_sr(self) -> float:
        """Beam solid angle pi bmaj bmin / (4 ln 2) [sr]."""
        arcsec = np.pi / (180.0 * 3600.0)
        bmaj = self.beam_major_au / self.distance_pc * arcsec
        bmin = self.beam_minor_au / self.distance_pc * arcsec
        return float(np.pi * bmaj * bmin / (4.0 * math.log(2.0)))


def draw_conditions(rng: np.random.Generator, library_field_au: float) -> Conditions:
    """Observing conditions from their priors (isotropic view, beam sampled by 3-6 pixels)."""
    cos_i = rng.uniform(-1.0, 1.0)
    beam = rng.uniform(40.0, 150.0)
    pixel = beam / rng.uniform(3.0, 6.0)
    field = library_field_au * rng.uniform(1.0, 1.6)
    return Conditions(
        inclination=math.degrees(math.acos(cos_i)),
        azimuth=float(rng.uniform(0.0, 360.0)),
        position_angle=float(rng.uniform(0.0, 360.0)),
        distance_pc=float(rng.uniform(140.0, 400.0)),
        beam_major_au=float(beam),
        beam_minor_au=float(beam * rng.uniform(0.6, 1.0)),
        beam_pa_deg=float(rng.uniform(-90.0, 90.0)),
        pixel_au=float(pixel),
        npix=max(16, round(field / pixel)),
        snr=log_uniform(rng, 30.0, 300.0),
        cube=bool(rng.uniform() < 0.2),
        blank=float(rng.uniform(0.42, 0.5)) if rng.uniform() < 0.25 else 0.0,
        ra_deg=float(rng.uniform(0.0, 360.0)),
        dec_deg=float(np.degrees(np.arcsin(rng.uniform(-0.9, 0.5)))),
    )


def beam_kernel(major_px: float, minor_px: float, pa_deg: float) -> np.ndarray:
    """Unit-sum elliptical Gaussian on the array; FWHMs in pixels, PA east of north.

    Rows run north and columns west, so the major axis points along (col, row) =
    (-sin PA, cos PA).
    """
    to_sigma = 1.0 / math.sqrt(8.0 * math.log(2.0))
    half = math.ceil(4.0 * major_px * to_sigma)
    r, c = np.mgrid[-half : half + 1, -half : half + 1].astype(float)
    pa = math.radians(pa_deg)
    along = -c * math.sin(pa) + r * math.cos(pa)
    across = c * math.cos(pa) + r * math.sin(pa)
    major, minor = major_px * to_sigma, minor_px * to_sigma
    kernel = np.exp(-0.5 * (np.square(along / major) + np.square(across / minor)))
    return kernel / kernel.sum()


def observe(
    state: Snapshot, cond: Conditions, rng: np.random.Generator, max_subpixel_au: float = 8.0
) -> dict[str, np.ndarray]:
    """Render, convolve and add beam-correlated noise: the observed image and its parts.

    Returns
    -------
    dict
        (npix, npix) float64 images with the star at the centre: ``"sky"`` the model before
        the beam [Jy/sr]; ``"clean"`` after the beam, ``"noise"`` the added noise and
        ``"image"`` their sum [Jy/beam], NaN outside the blanking circle when ``cond.blank``.
    """
    kernel = beam_kernel(
        cond.beam_major_au / cond.pixel_au, cond.beam_minor_au / cond.pixel_au, cond.beam_pa_deg
    )
    margin = kernel.shape[0] // 2
    padded = cond.npix + 2 * margin
    factor = max(1, math.ceil(cond.pixel_au / max_subpixel_au))
    basis = view_basis(cond.inclination, cond.azimuth, cond.position_angle)
    sub = pixel_centres(padded * factor, cond.pixel_au / factor)
    sky = block_mean(render(state, basis, sub, sub, LineOfSight.stretched()), factor)
    inner = (slice(margin, margin + cond.npix),) * 2
    clean = fftconvolve(sky, kernel, mode="same")[inner] * cond.beam_solid_angle_sr
    noise = fftconvolve(rng.standard_normal(sky.shape), kernel, mode="same")[inner]
    noise *= clean.max() / cond.snr / noise.std()
    image = clean + noise
    if cond.blank:
        offsets = pixel_centres(cond.npix, 1.0)
        radius = np.hypot(offsets[:, None], offsets[None, :])
        image[radius > cond.blank * cond.npix] = np.nan
    return {"sky": sky[inner], "clean": clean, "noise": noise, "image": image}


def fits_bytes(image: np.ndarray, cond: Conditions, name: str) -> bytes:
    """The observation as a FITS file: SIN projection, beam, Jy/beam, DISTANCE."""
    degrees = cond.pixel_au / cond.distance_pc / 3600.0
    header = fits.Header()
    centre = 0.5 * (cond.npix + 1)
    for axis, (ctype, crval, cdelt) in enumerate(
        (("RA---SIN", cond.ra_deg, -degrees), ("DEC--SIN", cond.dec_deg, degrees)), start=1
    ):
        header[f"CTYPE{axis}"] = ctype
        header[f"CRVAL{axis}"] = crval
        header[f"CDELT{axis}"] = cdelt
        header[f"CRPIX{axis}"] = centre
        header[f"CUNIT{axis}"] = "deg"
    data = image.astype(np.float32)
    if cond.cube:
        for axis, (ctype, crval, cdelt, unit) in enumerate(
            (("FREQ", FREQUENCY_HZ, 7.5e9, "Hz"), ("STOKES", 1.0, 1.0, "")), start=3
        ):
            header[f"CTYPE{axis}"] = ctype
            header[f"CRVAL{axis}"] = crval
            header[f"CDELT{axis}"] = cdelt
            header[f"CRPIX{axis}"] = 1.0
            header[f"CUNIT{axis}"] = unit
        data = data[None, None]
    header["RADESYS"] = "ICRS"
    header["BMAJ"] = cond.beam_major_au / cond.distance_pc / 3600.0
    header["BMIN"] = cond.beam_minor_au / cond.distance_pc / 3600.0
    header["BPA"] = cond.beam_pa_deg
    header["BUNIT"] = "Jy/beam"
    header["DISTANCE"] = (cond.distance_pc, "[pc]")
    header["RESTFRQ"] = FREQUENCY_HZ
    header["OBJECT"] = name
    header["ORIGIN"] = f"{PROGRAM} (independent protostar model)"
    buffer = io.BytesIO()
    fits.PrimaryHDU(data=data, header=header).writeto(buffer)
    return buffer.getvalue()


TRUTH_COLUMNS = (
    "file",
    *PARAMETERS,
    "distance_pc",
    "beam_major_au",
    "beam_minor_au",
    "beam_pa_deg",
    "pixel_au",
    "snr",
    "inclination_deg",
    "system",
    "axis_pa_deg",
    "npix",
    "cube",
    "blanked",
)


def observation_parts(
    index: int, seed: int, system: int, library_field_au: float
) -> tuple[Snapshot, Conditions, dict[str, np.ndarray]]:
    """Draw observation ``index`` (a new system at a random age) and observe it."""
    draw = draw_system(system_rng(seed, OBSERVATION_STREAM, index, 0))
    age = float(draw_ages(system_rng(seed, OBSERVATION_STREAM, index, 1), 1)[0])
    state = snapshot_state(draw, age, system_rng(seed, OBSERVATION_STREAM, index, 2))
    rng = system_rng(seed, OBSERVATION_STREAM, index, 3)
    cond = draw_conditions(rng, library_field_au)
    return state, cond, observe(state, cond, rng)


def write_observation(
    index: int, seed: int, system: int, library_field_au: float, folder: Path
) -> dict[str, Any]:
    """Write ``obs_<NNN>.fits``; return its truth row."""
    state, cond, parts = observation_parts(index, seed, system, library_field_au)
    name = f"obs_{index:03d}.fits"
    with atomic_file(folder / name) as tmp:
        tmp.write_bytes(fits_bytes(parts["image"], cond, f"indep-{system}"))
    inclination = min(cond.inclination, 180.0 - cond.inclination)
    return {
        "file": name,
        **state.params,
        "distance_pc": cond.distance_pc,
        "beam_major_au": cond.beam_major_au,
        "beam_minor_au": cond.beam_minor_au,
        "beam_pa_deg": cond.beam_pa_deg,
        "pixel_au": cond.pixel_au,
        "snr": cond.snr,
        "inclination_deg": inclination,
        "system": system,
        "axis_pa_deg": cond.position_angle,
        "npix": cond.npix,
        "cube": int(cond.cube),
        "blanked": int(cond.blank > 0),
    }


def read_library_model(library: Path) -> dict[str, Any]:
    """The library's ``model.json`` (written by the ``library`` command)."""
    path = library / "model.json"
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: cannot read the library's model.json ({exc})") from None
    missing = [key for key in ("field_of_view_au", "systems", "seed") if key not in record]
    if missing:
        raise UserError(f"{path}: not written by {PROGRAM} (no {', '.join(missing)})")
    return record


def make_observations(
    out: Path, library: Path, n: int, seed: int, workers: int, argv: Sequence[str]
) -> dict[str, Any]:
    """Write ``n`` mock observations of new systems, ``truth.csv`` and ``model.json``."""
    started = time.perf_counter()
    if n < 1:
        raise UserError("--n must be at least 1")
    lib = read_library_model(library)
    field = float(lib["field_of_view_au"])
    first = 10 ** len(str(max(lib["systems"]) + n)) + 1  # ids above every library id
    with fresh_folder(out) as tmp:
        jobs = [(i, seed, first + i, field, tmp) for i in range(n)]
        rows = run_parallel(write_observation, jobs, _workers(workers))
        with atomic_file(tmp / "truth.csv") as table, table.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=TRUTH_COLUMNS)
            writer.writeheader()
            writer.writerows({k: _csv_value(v) for k, v in row.items()} for row in rows)
        record = {
            "kind": "independent protostar mock observations",
            "model": DESCRIPTION,
            "library": str(library.resolve()),
            "library_seed": lib.get("seed"),
            "library_field_au": field,
            "n": n,
            "seed": seed,
            "systems": [row["system"] for row in rows],
            "parameters": PARAMETERS,
            "physics": physics_record(),
            "observing": {
                "distance_pc": [140, 400],
                "field_over_library_field": [1.0, 1.6],
                "beam_major_au": [40, 150],
                "beam_axis_ratio": [0.6, 1.0],
                "pixels_per_beam_major": [3, 6],
                "snr_log_uniform": [30, 300],
                "noise": "white noise convolved with the beam, rms = peak / snr",
                "cube_fraction": 0.2,
                "blanked_fraction": 0.25,
                "unit": "Jy/beam = Jy/sr x pi bmaj bmin / (4 ln 2)",
            },
            "seconds": round(time.perf_counter() - started, 1),
            **provenance(argv),
        }
        write_json(tmp / "model.json", record)
    return record


def _csv_value(value: Any) -> Any:
    return f"{value:.9g}" if isinstance(value, float) else value


# ----------------------------------------------------------------- command line


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """Parse the command line (see the module docstring)."""
    parser = argparse.ArgumentParser(prog=PROGRAM, description=DESCRIPTION)
    commands = parser.add_subparsers(dest="command", required=True)
    defaults = argparse.ArgumentDefaultsHelpFormatter
    lib = commands.add_parser(
        "library", help="write a simulation library (HDF5 schema)", formatter_class=defaults
    )
    lib.add_argument("out", type=Path, help="new or empty output folder")
    lib.add_argument("--systems", type=int, default=50, help="systems (sinks)")
    lib.add_argument("--snapshots", type=int, default=10, help="snapshots per system")
    lib.add_argument("--size", type=int, default=128, help="image side [pixels]")
    lib.add_argument("--au-per-pixel", type=float, default=12.0, help="pixel side [AU]")
    lib.add_argument("--seed", type=int, default=11, help="random seed")
    lib.add_argument("--workers", type=int, default=0, help="processes (0: one per core)")
    obs = commands.add_parser(
        "observations", help="write mock FITS observations + truth.csv", formatter_class=defaults
    )
    obs.add_argument("out", type=Path, help="new or empty output folder")
    obs.add_argument("--library", type=Path, required=True, help="library written by 'library'")
    obs.add_argument("--n", type=int, default=160, help="observations")
    obs.add_argument("--seed", type=int, default=12, help="random seed")
    obs.add_argument("--workers", type=int, default=0, help="processes (0: one per core)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    try:
        if args.command == "library":
            settings = LibrarySettings(
                args.systems, args.snapshots, args.size, args.au_per_pixel, args.seed
            )
            record = make_library(args.out, settings, args.workers, argv)
            what = f"{settings.systems * settings.snapshots} files"
        else:
            record = make_observations(
                args.out, args.library, args.n, args.seed, args.workers, argv
            )
            what = f"{args.n} observations"
    except UserError as exc:
        print(f"{PROGRAM}: error: {exc}", file=sys.stderr)
        return 2
    print(f"{PROGRAM}: wrote {what} to {args.out} in {record['seconds']} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
