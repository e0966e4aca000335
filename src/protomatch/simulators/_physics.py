"""Forward model of the built-in simulator: how a protostellar system evolves.

This module draws a system and evaluates it at any age (the seven library parameters and
what the renderer needs); how a snapshot looks (density, dust emission, images) is in
:mod:`protomatch.simulators._emission`.

Evolution of one system (all times t are ages since the protostar formed, in yr)
---------------------------------------------------------------------------------
Each system draws a core mass ``M_core`` [Msun], a star-formation efficiency ``eps`` and an
accretion history made of a smooth decaying part and a few episodic bursts:

    Mdot(t) = (p - 1) M_s / tau * (1 + t / tau)^(-p)                    [Msun/yr]
            + sum_k (m_k / d_k) exp(-(t - t_k) / d_k) H(t - t_k)

with decay time ``tau``, index ``p`` and burst onsets ``t_k``, durations ``d_k`` and masses
``m_k``; ``M_s + sum_k m_k = eps M_core - M0``. The stellar mass is the exact (analytic)
integral of the accretion rate on top of a seed mass ``M0 = 0.01 Msun``:

    M(t) = M0 + M_s [1 - (1 + t/tau)^(1-p)] + sum_k m_k [1 - exp(-(t - t_k)/d_k)] H(t - t_k).

The disk holds ``M_disk = f_d M`` and outflows have ejected ``f_w (M - M0)``; the envelope is
what is left of the core, ``M_env = M_core - M - M_disk - f_w (M - M0)`` (positive because
``eps (1 + f_d + f_w) < 1``), so it drains as the star grows.

Rotation: the specific angular momentum of the material that has fallen in grows with the
accreted fraction ``x = (M - M0) / (M_final - M0)`` as ``j = j_max x^a`` [AU^2/yr]; the disk
radius is the centrifugal radius plus a 5 AU inner floor, ``R_d = 5 + j^2 / (G M)`` [AU] with
G = 4 pi^2 AU^3 Msun^-1 yr^-2, so disks grow from ~5-10 AU to tens or hundreds of AU.

Star: radius ``R* = 2.5 Rsun (M / 0.5 Msun)^(1/3) (1 + Mdot / 1e-5 Msun/yr)^(1/5)`` (swollen by
accretion), effective temperature ``T_eff = 4000 K (M / 0.5 Msun)^(1/5)``. Luminosity

    L = L_phot + L_acc,  L_phot = (R*/Rsun)^2 (T_eff / 5772 K)^4 Lsun,  L_acc = G M Mdot / R*.

The stored ``temperature`` is the dust temperature at ``r_ref = 100 AU`` heated by the star,
``T_ref = 35 K (L / Lsun)^(1/4)`` (the images' temperature profile built on it is in
:mod:`protomatch.simulators._emission`). The outflow cavity half-opening angle widens with
age, ``theta_c = min(70 deg, theta_0 (t / 1e4 yr)^g)``.

Drawn per system (log-uniform "logU", uniform "U"): M_core logU(0.5, 6) Msun, eps U(0.3, 0.6),
tau logU(1.5e4, 1.5e5) yr, p U(1.8, 2.8), 0-3 bursts carrying U(5, 30) % of the accreted mass
with d_k logU(300, 3000) yr, f_d U(0.05, 0.2), f_w U(0.1, 0.3), final centrifugal radius
logU(40, 300) AU (sets j_max), a U(0.8, 1.2), H_100 U(6, 12) AU, R_env logU(4e3, 1e4) AU,
theta_0 U(8, 16) deg, g U(0.25, 0.4), clump sigma U(0.3, 0.7); snapshot ages log-spaced from
logU(8e3, 2.5e4) to logU(2e5, 1e6) yr.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np
from numpy.typing import NDArray

G_AU3_PER_MSUN_YR2 = 4.0 * math.pi**2
_G_CGS, _MSUN_G, _RSUN_CM, _LSUN_CGS = 6.674e-8, 1.989e33, 6.957e10, 3.828e33
_YR_S = 3.15576e7
#: G Msun (Msun/yr) / Rsun in Lsun: L_acc = this * M Mdot / R* (Msun, Msun/yr, Rsun).
ACCRETION_LUMINOSITY_LSUN = _G_CGS * _MSUN_G**2 / (_YR_S * _RSUN_CM * _LSUN_CGS)

SEED_MASS_MSUN = 0.01
REFERENCE_RADIUS_AU = 100.0
#: Parameter names of the library schema and the SnapshotState attributes that hold them.
SCHEMA_FIELDS = MappingProxyType(
    {
        "Envelope_mass": "envelope_mass",
        "accretion_rate": "accretion_rate",
        "temperature": "temperature",
        "mass": "mass",
        "disk_size": "disk_size",
        "luminosity": "luminosity",
        "age": "age",
    }
)


# --- stellar physics --------------------------------------------------------------------------


def stellar_radius(mass: float, accretion_rate: float) -> float:
    """Protostellar radius, swollen by accretion.

    Parameters
    ----------
    mass
        Stellar mass [Msun].
    accretion_rate
        Accretion rate onto the star [Msun/yr].

    Returns
    -------
    float
        ``R* = 2.5 (M / 0.5)^(1/3) (1 + Mdot / 1e-5)^(1/5)`` [Rsun].
    """
    return 2.5 * (mass / 0.5) ** (1.0 / 3.0) * (1.0 + accretion_rate / 1e-5) ** 0.2


def accretion_luminosity(mass: float, accretion_rate: float, radius: float) -> float:
    """Accretion luminosity ``G M Mdot / R*``.

    Parameters
    ----------
    mass
        Stellar mass [Msun].
    accretion_rate
        Accretion rate [Msun/yr].
    radius
        Stellar radius [Rsun].

    Returns
    -------
    float
        Luminosity [Lsun].
    """
    return ACCRETION_LUMINOSITY_LSUN * mass * accretion_rate / radius


def photospheric_luminosity(mass: float, radius: float) -> float:
    """Photospheric luminosity ``4 pi R*^2 sigma T_eff^4``.

    Parameters
    ----------
    mass
        Stellar mass [Msun]; sets ``T_eff = 4000 K (M / 0.5 Msun)^(1/5)``.
    radius
        Stellar radius [Rsun].

    Returns
    -------
    float
        Luminosity [Lsun].
    """
    t_eff = 4000.0 * (mass / 0.5) ** 0.2
    return radius**2 * (t_eff / 5772.0) ** 4


def reference_temperature(luminosity: float) -> float:
    """Dust temperature at 100 AU from the source: ``35 K L^(1/4)``.

    Parameters
    ----------
    luminosity
        Source luminosity [Lsun].

    Returns
    -------
    float
        Temperature [K].
    """
    return 35.0 * luminosity**0.25


# --- system history ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SystemHistory:
    """Everything drawn once for one system; :func:`snapshot_state` evaluates it at any age.

    Masses in Msun, times in yr, lengths in AU, angles in degrees.
    """

    core_mass: float
    smooth_mass: float
    decay_time: float
    decay_index: float
    burst_onsets: tuple[float, ...]
    burst_masses: tuple[float, ...]
    burst_durations: tuple[float, ...]
    disk_fraction: float
    ejection_fraction: float
    max_angular_momentum: float  # j_max [AU^2/yr]
    angular_momentum_index: float
    scale_height_100: float  # disk scale height at 100 AU [AU]
    envelope_radius: float
    cavity_angle_1e4: float  # half-opening angle at 1e4 yr [deg]
    cavity_growth: float
    clump_sigma: float
    clump_seed: int
    first_age: float
    last_age: float

    @property
    def final_mass(self) -> float:
        """Stellar mass once everything has been accreted [Msun]."""
        return SEED_MASS_MSUN + self.smooth_mass + sum(self.burst_masses)

    def accretion_rate(self, age: NDArray[np.float64] | float) -> NDArray[np.float64]:
        """Accretion rate onto the star.

        Parameters
        ----------
        age
            Age(s) since formation [yr], any shape.

        Returns
        -------
        numpy.ndarray
            Accretion rate [Msun/yr], same shape as ``age``.
        """
        t = np.asarray(age, dtype=np.float64)
        p, tau = self.decay_index, self.decay_time
        rate = (p - 1.0) * self.smooth_mass / tau * (1.0 + t / tau) ** (-p)
        for onset, mass, duration in self._bursts():
            after = t >= onset
            rate = rate + np.where(after, mass / duration, 0.0) * np.exp(
                -np.where(after, t - onset, 0.0) / duration
            )
        return rate

    def stellar_mass(self, age: NDArray[np.float64] | float) -> NDArray[np.float64]:
        """Stellar mass: the seed mass plus the exact integral of the accretion rate.

        Parameters
        ----------
        age
            Age(s) since formation [yr], any shape.

        Returns
        -------
        numpy.ndarray
            Stellar mass [Msun], same shape as ``age``.
        """
        t = np.asarray(age, dtype=np.float64)
        p, tau = self.decay_index, self.decay_time
        mass = SEED_MASS_MSUN + self.smooth_mass * (1.0 - (1.0 + t / tau) ** (1.0 - p))
        for onset, burst, duration in self._bursts():
            mass = mass + burst * -np.expm1(-np.clip(t - onset, 0.0, None) / duration)
        return mass

    def _bursts(self) -> zip[tuple[float, float, float]]:
        return zip(self.burst_onsets, self.burst_masses, self.burst_durations, strict=True)


def _log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(np.exp(rng.uniform(np.log(low), np.log(high))))


def draw_system(rng: np.random.Generator) -> SystemHistory:
    """Draw one system's core, rotation, accretion history and geometry.

    Parameters
    ----------
    rng
        The system's own generator; the draws are in a fixed order.

    Returns
    -------
    SystemHistory
        Everything drawn (distributions in the module docstring).
    """
    core = _log_uniform(rng, 0.5, 6.0)
    budget = rng.uniform(0.3, 0.6) * core - SEED_MASS_MSUN
    first_age, last_age = _log_uniform(rng, 8e3, 2.5e4), _log_uniform(rng, 2e5, 1e6)
    n_bursts = int(rng.integers(0, 4))
    burst_share = rng.uniform(0.05, 0.3) if n_bursts else 0.0
    burst_masses = burst_share * budget * rng.dirichlet(np.ones(n_bursts)) if n_bursts else ()
    onsets = np.sort(np.exp(rng.uniform(np.log(first_age / 2), np.log(last_age), n_bursts)))
    durations = np.exp(rng.uniform(np.log(300.0), np.log(3000.0), n_bursts))
    smooth = (1.0 - burst_share) * budget
    final_mass = SEED_MASS_MSUN + budget
    final_radius = _log_uniform(rng, 40.0, 300.0)
    return SystemHistory(
        core_mass=core,
        smooth_mass=smooth,
        decay_time=_log_uniform(rng, 1.5e4, 1.5e5),
        decay_index=rng.uniform(1.8, 2.8),
        burst_onsets=tuple(float(v) for v in onsets),
        burst_masses=tuple(float(v) for v in burst_masses),
        burst_durations=tuple(float(v) for v in durations),
        disk_fraction=rng.uniform(0.05, 0.2),
        ejection_fraction=rng.uniform(0.1, 0.3),
        max_angular_momentum=math.sqrt(G_AU3_PER_MSUN_YR2 * final_mass * final_radius),
        angular_momentum_index=rng.uniform(0.8, 1.2),
        scale_height_100=rng.uniform(6.0, 12.0),
        envelope_radius=_log_uniform(rng, 4000.0, 10000.0),
        cavity_angle_1e4=rng.uniform(8.0, 16.0),
        cavity_growth=rng.uniform(0.25, 0.4),
        clump_sigma=rng.uniform(0.3, 0.7),
        clump_seed=int(rng.integers(0, 2**63 - 1)),
        first_age=first_age,
        last_age=last_age,
    )


@dataclass(frozen=True)
class SnapshotState:
    """A system at one age: the seven library parameters plus what the renderer needs.

    Masses in Msun, rates in Msun/yr, lengths in AU, luminosity in Lsun, temperature in K,
    cavity angle in degrees, stellar radius in Rsun.
    """

    age: float
    mass: float
    accretion_rate: float
    envelope_mass: float
    disk_mass: float
    disk_size: float
    luminosity: float
    temperature: float
    stellar_radius: float
    cavity_angle: float
    scale_height_100: float
    envelope_radius: float
    clump_sigma: float
    clump_seed: int

    def parameters(self) -> dict[str, float]:
        """The seven schema parameters by their library names (see ``schema.PARAMETER_UNITS``)."""
        return {name: float(getattr(self, field)) for name, field in SCHEMA_FIELDS.items()}


def snapshot_ages(history: SystemHistory, n_snapshots: int) -> NDArray[np.float64]:
    """The ages of a system's snapshots, log-spaced from ``first_age`` to ``last_age``.

    Parameters
    ----------
    history
        The system.
    n_snapshots
        Number of snapshots n >= 1 (1: ``first_age`` only).

    Returns
    -------
    numpy.ndarray
        (n,) ages [yr].
    """
    if n_snapshots == 1:
        return np.array([history.first_age])
    return np.geomspace(history.first_age, history.last_age, n_snapshots)


def snapshot_state(history: SystemHistory, age: float, index: int = 0) -> SnapshotState:
    """Evaluate a system at one age.

    Parameters
    ----------
    history
        The system.
    age
        Age since formation [yr].
    index
        Snapshot index; picks that snapshot's clump pattern.

    Returns
    -------
    SnapshotState
        The seven library parameters and what the renderer needs.
    """
    mass = float(history.stellar_mass(age))
    rate = float(history.accretion_rate(age))
    accreted = (mass - SEED_MASS_MSUN) / (history.final_mass - SEED_MASS_MSUN)
    j = history.max_angular_momentum * accreted**history.angular_momentum_index
    disk_mass = history.disk_fraction * mass
    ejected = history.ejection_fraction * (mass - SEED_MASS_MSUN)
    radius = stellar_radius(mass, rate)
    luminosity = photospheric_luminosity(mass, radius) + accretion_luminosity(mass, rate, radius)
    clump_seed = np.random.SeedSequence([history.clump_seed, index]).generate_state(1, np.uint64)
    return SnapshotState(
        age=float(age),
        mass=mass,
        accretion_rate=rate,
        envelope_mass=history.core_mass - mass - disk_mass - ejected,
        disk_mass=disk_mass,
        disk_size=5.0 + j**2 / (G_AU3_PER_MSUN_YR2 * mass),
        luminosity=luminosity,
        temperature=reference_temperature(luminosity),
        stellar_radius=radius,
        cavity_angle=min(70.0, history.cavity_angle_1e4 * (age / 1e4) ** history.cavity_growth),
        scale_height_100=history.scale_height_100,
        envelope_radius=history.envelope_radius,
        clump_sigma=history.clump_sigma,
        clump_seed=int(clump_seed[0]),
    )


def evolve(history: SystemHistory, n_snapshots: int) -> tuple[SnapshotState, ...]:
    """The system at each of its snapshot ages (:func:`snapshot_ages`).

    Parameters
    ----------
    history
        The system.
    n_snapshots
        Number of snapshots.

    Returns
    -------
    tuple of SnapshotState
        Youngest first.
    """
    ages = snapshot_ages(history, n_snapshots)
    return tuple(snapshot_state(history, float(age), k) for k, age in enumerate(ages))
