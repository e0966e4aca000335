"""``protomatch observe``: mock interferometric observations of systems NOT in a library.

To test matching on realistic data, this writes FITS images of new systems drawn from the
built-in simulator's prior (:func:`protomatch.simulate.draw_system`) with a seed stream of
their own, ``SeedSequence([tag("observe"), seed])``, which never coincides with a library's
``SeedSequence(seed).spawn(...)`` streams; the library's own seed is refused anyway. Every
observation is made as a radio interferometer would see it:

1. a system at a random age within the library's snapshot age range, seen from an isotropic
   direction (``cos i`` uniform in [-1, 1], azimuth uniform) at a random sky position angle,
   rendered in MJy/sr on the observation's pixel grid plus a margin of four beam sigmas, so
   that flux just outside the field is smoothed into it as on the sky;
2. convolved with an elliptical Gaussian beam (:func:`protomatch.augment.convolve_with_beam`;
   major FWHM drawn in AU at the source, sampled by 3-6 pixels) and converted to Jy/beam,
   ``I_Jy/beam = I_MJy/sr * 1e6 * Omega_beam``, ``Omega_beam = pi bmaj bmin / (4 ln 2)``;
3. plus beam-correlated noise (white noise convolved with the same beam, rescaled to the rms
   ``peak / snr``);
4. optionally blanked with NaN outside a frame or a circle (as a primary-beam cut-off);
5. written as FITS with a celestial SIN WCS (RA increasing to the left), ``BMAJ``/``BMIN``
   [deg], ``BPA`` [deg east of north], ``BUNIT = 'Jy/beam'``; some as 4-D (1, 1, Ny, Nx)
   cubes with degenerate FREQ and STOKES axes.

The header also carries ``DISTANCE`` [pc]: real data do not have it (the user supplies the
distance, e.g. ``protomatch match --distance``); it is there for convenience, and
``truth.csv`` records it too. Output folder::

    OUT/obs_<NNN>.fits   the images
    OUT/truth.csv        one row per file: system, its 7 parameters, distance, beam, pixel
                         scale, noise, viewing geometry, NaN border and shape flags
    OUT/manifest.json    provenance, configuration and the identity of the library

The line of sight is integrated through the rendered field (image plus margins), so images
with a field smaller than the library's see a shorter column of envelope than the library.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import pydantic
from numpy.typing import NDArray

from protomatch import schema
from protomatch._artefact import atomic_directory, provenance, read_manifest, write_json_atomic
from protomatch._parallel import unordered_map
from protomatch.errors import InputError, ProtomatchError

__all__ = ["TRUTH_COLUMNS", "ObserveConfig", "ObserveResult", "make_observations", "observe_sky"]

log = logging.getLogger(__name__)

MANIFEST_KIND = "observations"
MANIFEST_VERSION = 1
TRUTH_FILE = "truth.csv"
_MANIFEST_FILE = "manifest.json"
_OBSERVE_TAG = int.from_bytes(b"observe", "big")
_FREQUENCY_HZ, _BANDWIDTH_HZ = 230.0e9, 7.5e9
_ARCSEC_PER_RAD = 180.0 * 3600.0 / math.pi
_KERNEL_SIGMAS = 4.0
#: NaN frames are 3-15 % of the side wide; circular masks keep a radius of 38-50 % of it.
_FRAME_FRACTION, _CIRCLE_FRACTION = (0.03, 0.15), (0.38, 0.5)
_MAX_NPIX = 2048
_MAX_OFFSET_FRACTION = 0.35
TRUTH_COLUMNS: tuple[str, ...] = (
    "file", "system", *schema.DEFAULT_PARAMETERS, "distance_pc",
    "beam_major_au", "beam_minor_au", "beam_pa_deg", "beam_major_arcsec", "beam_minor_arcsec",
    "pixel_arcsec", "pixel_au", "npix", "snr", "noise_rms_jy_beam",
    "inclination_deg", "azimuth_deg", "position_angle_deg", "nan_border", "shape4d",
    "nan_border_kind", "field_au", "peak_jy_beam", "ra_deg", "dec_deg",
    "source_row_offset_px", "source_col_offset_px",
)  # fmt: skip
#: (smallest low end, largest high end, why) of each (low, high) range of ObserveConfig.
_RANGE_LIMITS = MappingProxyType(
    {
        "beam_range_au": (0.0, math.inf, ""),
        "beam_axis_ratio": (0.0, 1.0, "minor / major"),
        "snr_range": (0.0, math.inf, ""),
        "distance_range_pc": (0.0, math.inf, ""),
        "pixels_per_beam": (2.0, math.inf, "Nyquist sampling"),
        "npix_range": (16, _MAX_NPIX, "image side in pixels"),
    }
)


class ObserveConfig(pydantic.BaseModel, extra="forbid", frozen=True):
    """What to observe and how: counts, seed and the ranges every observation is drawn from.

    Attributes
    ----------
    n : number of observations (files), >= 1.
    seed : seed of the observations; must differ from the library's seed.
    beam_range_au : (low, high) major-axis FWHM of the beam [AU at the source], log-uniform.
    beam_axis_ratio : (low, high) minor / major, uniform, in (0, 1].
    snr_range : (low, high) peak signal-to-noise ratio, log-uniform.
    distance_range_pc : (low, high) distance [pc], uniform.
    pixels_per_beam : (low, high) pixels across the major FWHM, uniform, >= 2 (Nyquist).
    npix_range : (low, high) image side [pixels], uniform integers, 16 ... 2048.
    nan_border_fraction : share of images with NaN-blanked borders (frame or circle).
    cube_fraction : share of images written with shape (1, 1, Ny, Nx).
    snapshots_per_system : observations of each system (at independent ages and directions).
    max_offset_au : the source is placed up to this far from the image centre [AU] (uniform
        over a disc, at most 35 % of the side; 0: at the centre), as when the phase centre
        is not on the star.
    """

    n: int = pydantic.Field(60, ge=1)
    seed: int = pydantic.Field(1, ge=0)
    beam_range_au: tuple[float, float] = (20.0, 150.0)
    beam_axis_ratio: tuple[float, float] = (0.6, 1.0)
    snr_range: tuple[float, float] = (10.0, 300.0)
    distance_range_pc: tuple[float, float] = (100.0, 450.0)
    pixels_per_beam: tuple[float, float] = (3.0, 6.0)
    npix_range: tuple[int, int] = (96, 256)
    nan_border_fraction: float = pydantic.Field(0.3, ge=0.0, le=1.0)
    cube_fraction: float = pydantic.Field(0.5, ge=0.0, le=1.0)
    snapshots_per_system: int = pydantic.Field(1, ge=1)
    max_offset_au: float = pydantic.Field(0.0, ge=0.0)

    @pydantic.field_validator(*_RANGE_LIMITS)
    @classmethod
    def _check_range(cls, value: tuple[float, float], info: pydantic.ValidationInfo) -> Any:
        lowest, highest, why = _RANGE_LIMITS[str(info.field_name)]
        low, high = value
        if not (low > 0 and lowest <= low <= high <= highest):
            top = f" <= {highest:g}" if highest < math.inf else ""
            reason = f" ({why})" if why else ""
            raise ValueError(
                f"{info.field_name} {list(value)} must be (low, high) with "
                f"{lowest:g} <= low <= high{top} and low > 0{reason}"
            )
        return value


@dataclass(frozen=True)
class ObserveResult:
    """What :func:`make_observations` wrote."""

    out: Path
    n_observations: int
    n_systems: int
    n_cubes: int
    n_nan_border: int
    pixel_arcsec_range: tuple[float, float]
    library: Path
    seconds: float

    def describe(self) -> str:
        """A few human-readable lines: what was written, where, how fast."""
        low, high = self.pixel_arcsec_range
        return "\n".join(
            [
                f"Wrote {self.n_observations} mock observations of {self.n_systems} systems "
                f"not in {self.library} to {self.out}",
                f"  {self.n_cubes} as (1, 1, Ny, Nx) cubes, {self.n_nan_border} with NaN "
                f"borders, pixels {low:.3g}-{high:.3g} arcsec; truth in {TRUTH_FILE}",
                f"  {self.seconds:.1f} s",
            ]
        )


# --- the library observed against ------------------------------------------------------------


@dataclass(frozen=True)
class _Library:
    """The simulated library the observations must stay out of."""

    root: Path
    seed: int
    snapshots: int
    identity: Mapping[str, Any]


def _resolve_library(path: Path) -> _Library:
    """Read a simulated library's manifest, directly or through a library store's source."""
    from protomatch.simulate import MANIFEST_KIND as LIBRARY_KIND
    from protomatch.simulate import MANIFEST_VERSION as LIBRARY_VERSION

    if not path.is_dir():
        raise InputError(path, "is not a folder; give a simulated library or a library store")
    manifest_path = path / _MANIFEST_FILE
    kind = _manifest_kind(path, manifest_path)
    store: dict[str, Any] | None = None
    if kind == "library-store":
        from protomatch.store import STORE_KIND, STORE_SCHEMA_VERSION

        store_manifest = read_manifest(manifest_path, STORE_KIND, STORE_SCHEMA_VERSION)
        source = Path(str(store_manifest.get("source", "")))
        store = {"path": str(path.resolve()), "fingerprint": store_manifest.get("fingerprint")}
        if not (source / _MANIFEST_FILE).is_file():
            raise InputError(
                path,
                f"was ingested from {source}, which has no simulated-library manifest.json "
                "(moved, or not made by `protomatch simulate`); give the simulated library",
            )
        path, manifest_path = source, source / _MANIFEST_FILE
    manifest = read_manifest(manifest_path, LIBRARY_KIND, LIBRARY_VERSION)
    settings = manifest.get("settings", {})
    seed, snapshots = settings.get("seed"), settings.get("snapshots")
    if not isinstance(seed, int) or not isinstance(snapshots, int) or snapshots < 1:
        raise InputError(manifest_path, "has no integer settings.seed and settings.snapshots")
    identity = {
        "path": str(path.resolve()),
        "created_utc": manifest.get("created_utc"),
        "protomatch_version": manifest.get("protomatch_version"),
        "settings": settings,
        "store": store,
    }
    return _Library(path, seed, snapshots, identity)


def _manifest_kind(folder: Path, manifest_path: Path) -> str:
    hint = "give a library written by `protomatch simulate` or a store ingested from one"
    if not manifest_path.is_file():
        raise InputError(folder, f"has no manifest.json; {hint}")
    try:
        kind = json.loads(manifest_path.read_text()).get("kind")
    except (UnicodeDecodeError, json.JSONDecodeError, AttributeError) as exc:
        raise InputError(manifest_path, f"is not a valid JSON manifest ({exc})") from None
    if kind not in ("simulated-library", "library-store"):
        raise InputError(manifest_path, f"describes a {kind!r}, not a library; {hint}")
    return str(kind)


# --- planning: every random choice except the noise, drawn in the main process --------------


@dataclass(frozen=True)
class _Plan:
    """One observation: the system's state and how it is seen (angles in radians)."""

    index: int
    system: int
    system_seed: np.random.SeedSequence
    clump_index: int
    age: float
    inclination: float
    azimuth: float
    position_angle: float
    distance_pc: float
    beam_major_au: float
    beam_ratio: float
    beam_pa_deg: float
    pixels_per_beam: float
    npix: int
    snr: float
    nan_kind: str
    nan_extent: tuple[float, ...]
    shape4d: bool
    ra_deg: float
    dec_deg: float
    noise_seed: np.random.SeedSequence
    offset_px: tuple[int, int]

    @property
    def pixel_au(self) -> float:
        return self.beam_major_au / self.pixels_per_beam

    @property
    def pixel_arcsec(self) -> float:
        return self.pixel_au / self.distance_pc  # 1 AU at 1 pc subtends 1 arcsec


def _log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(np.exp(rng.uniform(math.log(low), math.log(high))))


def _plans(config: ObserveConfig, library: _Library) -> list[_Plan]:
    from protomatch.simulate import draw_system, snapshot_ages

    n_systems = math.ceil(config.n / config.snapshots_per_system)
    root = np.random.SeedSequence([_OBSERVE_TAG, config.seed])
    plans = []
    for system, system_seed in enumerate(root.spawn(n_systems), start=1):
        history = draw_system(np.random.default_rng(system_seed))
        ages = snapshot_ages(history, library.snapshots)
        for j, seed in enumerate(system_seed.spawn(config.snapshots_per_system)):
            index = (system - 1) * config.snapshots_per_system + j
            if index < config.n:
                plans.append(_plan(seed, config, index, system, system_seed, j, ages))
    return plans


def _plan(
    seed: np.random.SeedSequence,
    config: ObserveConfig,
    index: int,
    system: int,
    system_seed: np.random.SeedSequence,
    clump_index: int,
    ages: NDArray[np.float64],
) -> _Plan:
    """Draw one observation; every draw is made whatever the flags, in a fixed order."""
    rng = np.random.default_rng(seed)
    age = _log_uniform(rng, float(ages[0]), float(ages[-1]))
    inclination = math.acos(rng.uniform(-1.0, 1.0))
    azimuth, position_angle = rng.uniform(0.0, 2 * math.pi, 2)
    distance = float(rng.uniform(*config.distance_range_pc))
    beam = _log_uniform(rng, *config.beam_range_au)
    ratio, beam_pa = float(rng.uniform(*config.beam_axis_ratio)), float(rng.uniform(0.0, 180.0))
    sampling = float(rng.uniform(*config.pixels_per_beam))
    npix = int(rng.integers(config.npix_range[0], config.npix_range[1], endpoint=True))
    snr = _log_uniform(rng, *config.snr_range)
    blank, circular = rng.uniform() < config.nan_border_fraction, rng.uniform() < 0.5
    frame, radius = rng.uniform(*_FRAME_FRACTION, 4), rng.uniform(*_CIRCLE_FRACTION)
    kind, extent = "none", ()
    if blank:
        kind, extent = ("circle", (float(radius),)) if circular else ("frame", tuple(frame))
    shape4d = bool(rng.uniform() < config.cube_fraction)
    ra, dec = float(rng.uniform(0.0, 360.0)), math.degrees(math.asin(rng.uniform(-1.0, 0.5)))
    # pixels; kept within 35 % of the side from the centre, so the source stays in the field
    radius = min(config.max_offset_au / (beam / sampling), _MAX_OFFSET_FRACTION * npix)
    radius *= math.sqrt(rng.uniform())
    angle = rng.uniform(0.0, 2 * math.pi)
    offset = (round(radius * math.sin(angle)), round(radius * math.cos(angle)))
    return _Plan(
        index=index,
        system=system,
        system_seed=system_seed,
        clump_index=clump_index,
        age=age,
        inclination=inclination,
        azimuth=float(azimuth),
        position_angle=float(position_angle),
        distance_pc=distance,
        beam_major_au=beam,
        beam_ratio=ratio,
        beam_pa_deg=beam_pa,
        pixels_per_beam=sampling,
        npix=npix,
        snr=snr,
        nan_kind=kind,
        nan_extent=tuple(float(v) for v in extent),
        shape4d=shape4d,
        ra_deg=ra,
        dec_deg=dec,
        noise_seed=seed.spawn(1)[0],
        offset_px=offset,
    )


# --- making one observation ------------------------------------------------------------------


def _margin(major_px: float) -> int:
    """Pixels beyond the image that a beam of ``major_px`` FWHM reaches (4 sigma)."""
    from protomatch.augment import FWHM_PER_SIGMA

    return math.ceil(_KERNEL_SIGMAS * major_px / FWHM_PER_SIGMA) + 1


def _beam_solid_angle_sr(major_arcsec: float, minor_arcsec: float) -> float:
    """``pi bmaj bmin / (4 ln 2)`` [sr] of a Gaussian beam with FWHMs in arcsec."""
    return math.pi * major_arcsec * minor_arcsec / (4.0 * math.log(2.0)) / _ARCSEC_PER_RAD**2


def _convolve(
    image: NDArray[np.floating], major_px: float, minor_px: float, pa_deg: float
) -> NDArray[np.float64]:
    """``image`` (H, W) convolved with the normalised beam (FWHMs [px], BPA [deg]), float64."""
    import torch

    from protomatch.augment import convolve_with_beam

    tensor = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float64))
    return convolve_with_beam(tensor, major_px, minor_px, pa_deg).numpy()


def observe_sky(
    sky_mjy_sr: NDArray[np.floating],
    pixel_arcsec: float,
    beam_arcsec: tuple[float, float, float],
    margin: int = 0,
) -> NDArray[np.float64]:
    """Beam-smooth a sky image and convert it to Jy/beam (noise-free).

    Parameters
    ----------
    sky_mjy_sr : (H, W) surface brightness [MJy/sr] on a grid of ``pixel_arcsec`` pixels.
    pixel_arcsec : pixel side [arcsec].
    beam_arcsec : (major FWHM [arcsec], minor FWHM [arcsec], BPA [deg east of north]).
    margin : pixels cropped from every side after the convolution.

    Returns
    -------
    (H - 2 margin, W - 2 margin) float64 image [Jy/beam].
    """
    major, minor, pa = beam_arcsec
    smooth = _convolve(sky_mjy_sr, major / pixel_arcsec, minor / pixel_arcsec, pa)
    if margin:
        smooth = smooth[margin:-margin, margin:-margin]
    return smooth * (1e6 * _beam_solid_angle_sr(major, minor))


def _unit_noise(
    rng: np.random.Generator, npix: int, major_px: float, minor_px: float, pa: float
) -> NDArray[np.float64]:
    """(npix, npix) beam-correlated Gaussian noise of unit rms, stationary up to the edges."""
    margin = _margin(major_px)
    white = rng.standard_normal((npix + 2 * margin, npix + 2 * margin))
    smooth = _convolve(white, major_px, minor_px, pa)[margin:-margin, margin:-margin]
    return smooth / smooth.std()


def _blank(image: NDArray[np.float64], kind: str, extent: tuple[float, ...]) -> None:
    """Set the border of ``image`` to NaN in place: a frame or outside a centred circle."""
    npix = image.shape[0]
    if kind == "frame":
        bottom, top, left, right = (max(1, round(f * npix)) for f in extent)
        image[:bottom], image[npix - top :] = np.nan, np.nan
        image[:, :left], image[:, npix - right :] = np.nan, np.nan
    elif kind == "circle":
        offsets = np.arange(npix) - (npix - 1) / 2
        image[np.hypot(offsets[:, None], offsets[None, :]) > extent[0] * npix] = np.nan


def _observe(plan: _Plan, out: Path) -> dict[str, Any]:
    """Render, smooth, add noise, blank and write one observation; return its truth row."""
    from protomatch.simulate import draw_system, render_projection, snapshot_state

    history = draw_system(np.random.default_rng(plan.system_seed))
    state = snapshot_state(history, plan.age, plan.clump_index)
    major_px = plan.pixels_per_beam
    minor_px = major_px * plan.beam_ratio
    margin = _margin(major_px)
    size = plan.npix + 2 * margin
    row_shift, col_shift = plan.offset_px
    pad = max(abs(row_shift), abs(col_shift))
    rendered = size + 2 * pad  # the star at its centre; the window below moves off it
    sky = render_projection(
        state,
        (plan.inclination, plan.azimuth),
        size=rendered,
        fov_au=rendered * plan.pixel_au,
        position_angle=plan.position_angle,
        samples=rendered,
    )
    top, left = pad - row_shift, pad - col_shift
    sky = sky[top : top + size, left : left + size]
    beam = (major_px * plan.pixel_arcsec, minor_px * plan.pixel_arcsec, plan.beam_pa_deg)
    image = observe_sky(sky, plan.pixel_arcsec, beam, margin)
    peak = float(image.max())
    rms = peak / plan.snr
    rng = np.random.default_rng(plan.noise_seed)
    image += rms * _unit_noise(rng, plan.npix, major_px, minor_px, plan.beam_pa_deg)
    _blank(image, plan.nan_kind, plan.nan_extent)
    name = f"obs_{plan.index:03d}.fits"
    _write_fits(out / name, image.astype(np.float32), plan, beam)
    return _truth_row(plan, state.parameters(), name, beam, rms, peak)


def _write_fits(
    path: Path, image: NDArray[np.float32], plan: _Plan, beam: tuple[float, float, float]
) -> None:
    from astropy.io import fits
    from astropy.wcs import WCS

    naxis = 4 if plan.shape4d else 2
    wcs = WCS(naxis=naxis)
    centre = (plan.npix + 1) / 2.0
    pixel_deg = plan.pixel_arcsec / 3600.0
    wcs.wcs.ctype = ["RA---SIN", "DEC--SIN", "FREQ", "STOKES"][:naxis]
    wcs.wcs.cunit = ["deg", "deg", "Hz", ""][:naxis]
    wcs.wcs.cdelt = [-pixel_deg, pixel_deg, _BANDWIDTH_HZ, 1.0][:naxis]
    wcs.wcs.crpix = [centre, centre, 1.0, 1.0][:naxis]
    wcs.wcs.crval = [plan.ra_deg, plan.dec_deg, _FREQUENCY_HZ, 1.0][:naxis]
    wcs.wcs.radesys = "ICRS"
    if plan.shape4d:
        wcs.wcs.specsys = "LSRK"
    header = wcs.to_header()
    header["BMAJ"] = (beam[0] / 3600.0, "[deg] beam major axis FWHM")
    header["BMIN"] = (beam[1] / 3600.0, "[deg] beam minor axis FWHM")
    header["BPA"] = (beam[2], "[deg] beam position angle, east of north")
    header["BUNIT"] = ("Jy/beam", "brightness unit")
    header["BTYPE"] = "Intensity"
    header["RESTFRQ"] = (_FREQUENCY_HZ, "[Hz] 1.3 mm dust continuum")
    header["OBJECT"] = f"MOCK-{plan.index:03d}"
    header["TELESCOP"] = "protomatch-mock"
    header["DISTANCE"] = (plan.distance_pc, "[pc] mock only: real data lack this keyword")
    header["COMMENT"] = "Mock observation written by protomatch observe; truth in truth.csv."
    data = image[None, None] if plan.shape4d else image
    fits.PrimaryHDU(data=data, header=header).writeto(path)


def _truth_row(
    plan: _Plan,
    parameters: Mapping[str, float],
    name: str,
    beam: tuple[float, float, float],
    rms: float,
    peak: float,
) -> dict[str, Any]:
    return {
        "file": name,
        "system": plan.system,
        **{key: parameters[key] for key in schema.DEFAULT_PARAMETERS},
        "distance_pc": plan.distance_pc,
        "beam_major_au": plan.beam_major_au,
        "beam_minor_au": plan.beam_major_au * plan.beam_ratio,
        "beam_pa_deg": plan.beam_pa_deg,
        "beam_major_arcsec": beam[0],
        "beam_minor_arcsec": beam[1],
        "pixel_arcsec": plan.pixel_arcsec,
        "pixel_au": plan.pixel_au,
        "npix": plan.npix,
        "snr": plan.snr,
        "noise_rms_jy_beam": rms,
        "inclination_deg": math.degrees(plan.inclination),
        "azimuth_deg": math.degrees(plan.azimuth),
        "position_angle_deg": math.degrees(plan.position_angle),
        "nan_border": plan.nan_kind != "none",
        "shape4d": plan.shape4d,
        "nan_border_kind": plan.nan_kind,
        "field_au": plan.npix * plan.pixel_au,
        "peak_jy_beam": peak,
        "ra_deg": plan.ra_deg,
        "dec_deg": plan.dec_deg,
        "source_row_offset_px": plan.offset_px[0],
        "source_col_offset_px": plan.offset_px[1],
    }


# --- the command -----------------------------------------------------------------------------


def make_observations(
    library: str | Path,
    out: str | Path,
    *,
    config: ObserveConfig | Mapping[str, Any] | None = None,
    workers: int | None = None,
    overwrite: bool = False,
) -> ObserveResult:
    """Write mock interferometric observations of systems that are not in ``library``.

    Parameters
    ----------
    library : a simulated library folder (``protomatch simulate``) or a library store
        (``protomatch ingest``) made from one; its seed is refused, its snapshot age range
        is used and its identity is recorded in ``manifest.json``.
    out : folder to create (refused if it exists and is not empty, unless ``overwrite``).
    config : :class:`ObserveConfig`, or a mapping of its fields (validated).
    workers : worker processes (default one per core, at most one per observation); the
        output does not depend on it.
    overwrite : replace a non-empty ``out``.

    Returns
    -------
    ObserveResult with counts, pixel scales and timing.

    Raises
    ------
    ProtomatchError : bad configuration, library or output folder; nothing is written then.
    """
    started = time.perf_counter()
    config = _as_config(config)
    if workers is not None and (
        isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 1
    ):
        raise ProtomatchError(
            f"workers must be at least 1 (or omitted for one per core), got {workers}"
        )
    lib = _resolve_library(Path(library))
    if config.seed == lib.seed:
        raise ProtomatchError(
            f"seed {config.seed} is the library's own seed; choose another so the observed "
            "systems come from a separate stream"
        )
    plans = _plans(config, lib)
    n_workers = min(len(plans), workers if workers is not None else os.cpu_count() or 1)
    out = Path(out)
    with atomic_directory(out, overwrite) as tmp:
        rows = sorted(_run(plans, tmp, n_workers), key=lambda row: row["file"])
        _write_truth(tmp / TRUTH_FILE, rows)
        write_json_atomic(tmp / _MANIFEST_FILE, _manifest(config, lib, len(rows)))
    scales = [row["pixel_arcsec"] for row in rows]
    result = ObserveResult(
        out=out,
        n_observations=len(rows),
        n_systems=len({row["system"] for row in rows}),
        n_cubes=sum(row["shape4d"] for row in rows),
        n_nan_border=sum(row["nan_border"] for row in rows),
        pixel_arcsec_range=(min(scales), max(scales)),
        library=lib.root,
        seconds=time.perf_counter() - started,
    )
    log.debug("observe: %s", result)
    return result


def _as_config(config: ObserveConfig | Mapping[str, Any] | None) -> ObserveConfig:
    if config is None:
        return ObserveConfig()
    if isinstance(config, ObserveConfig):
        return config
    try:
        return ObserveConfig(**config)
    except pydantic.ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        where = ".".join(map(str, error["loc"])) or "config"
        raise ProtomatchError(f"invalid observe option {where}: {error['msg']}") from None


def _write_truth(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    import pandas as pd

    pd.DataFrame(list(rows), columns=list(TRUTH_COLUMNS)).to_csv(path, index=False)


def _manifest(config: ObserveConfig, lib: _Library, count: int) -> dict[str, Any]:
    return provenance(MANIFEST_KIND, MANIFEST_VERSION) | {
        "config": config.model_dump(mode="json"),
        "library": dict(lib.identity),
        "seed_stream": f"SeedSequence([{_OBSERVE_TAG}, seed]) ('observe' tag)",
        "counts": {"observations": count},
        "truth": TRUTH_FILE,
        "intensity_unit": "Jy/beam",
        "frequency_hz": _FREQUENCY_HZ,
        "notes": [
            "DISTANCE in the FITS headers is a convenience of these mocks; real data lack it.",
            "Inclination 0-180 deg (isotropic); position angle rotates the image on the sky.",
        ],
    }


def _run(plans: Sequence[_Plan], out: Path, workers: int) -> list[dict[str, Any]]:
    # Largest images first: rendering costs ~npix^3, so this balances the workers.
    ordered = sorted(plans, key=lambda plan: -plan.npix)
    tasks = [(plan, out) for plan in ordered]
    return list(unordered_map(_observe_task, tasks, workers, desc="observe", unit="obs"))


def _observe_task(task: tuple[_Plan, Path]) -> dict[str, Any]:
    return _observe(*task)
