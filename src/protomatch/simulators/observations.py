"""``protomatch observe``: mock interferometric observations of systems NOT in a library.

To test matching on realistic data, this writes FITS images of new systems drawn from the
built-in simulator's prior (:func:`protomatch.simulators.library.draw_system`) with a seed stream of
their own, ``SeedSequence([tag("observe"), seed])``, which never coincides with a library's
``SeedSequence(seed).spawn(...)`` streams; the library's own seed is refused anyway. Every
observation is made as a radio interferometer would see it:

1. a system at a random age within the library's snapshot age range, seen from an isotropic
   direction (``cos i`` uniform in [-1, 1], azimuth uniform) at a random sky position angle,
   rendered in MJy/sr on the observation's pixel grid plus a margin of four beam sigmas, so
   that flux just outside the field is smoothed into it as on the sky;
2. convolved with an elliptical Gaussian beam (:func:`protomatch.optics.beam.convolve_with_beam`;
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

from protomatch._artefact import atomic_directory, provenance, read_manifest, write_json_atomic
from protomatch._locking import claims_output
from protomatch._parallel import unordered_map
from protomatch._text import csv_bytes
from protomatch.errors import InputError, ProtomatchError
from protomatch.simulators._mock_observation import (
    FREQUENCY_HZ,
    TRUTH_COLUMNS,
    MockPlan,
    observe_sky,
    render_observation,
)
from protomatch.simulators.truth import MANIFEST_FILE, MANIFEST_KIND, MANIFEST_VERSION, TRUTH_FILE

__all__ = ["TRUTH_COLUMNS", "ObserveConfig", "ObserveResult", "make_observations", "observe_sky"]

log = logging.getLogger(__name__)

_OBSERVE_TAG = int.from_bytes(b"observe", "big")
#: NaN frames are 3-15 % of the side wide; circular masks keep a radius of 38-50 % of it.
_FRAME_FRACTION, _CIRCLE_FRACTION = (0.03, 0.15), (0.38, 0.5)
_MAX_NPIX = 2048
_MAX_OFFSET_FRACTION = 0.35
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
    from protomatch.simulators.library import MANIFEST_KIND as LIBRARY_KIND
    from protomatch.simulators.library import MANIFEST_VERSION as LIBRARY_VERSION

    if not path.is_dir():
        raise InputError(path, "is not a folder; give a simulated library or a library store")
    manifest_path = path / MANIFEST_FILE
    kind = _manifest_kind(path, manifest_path)
    store: dict[str, Any] | None = None
    if kind == "library-store":
        from protomatch.library.store import STORE_KIND, STORE_SCHEMA_VERSION

        store_manifest = read_manifest(manifest_path, STORE_KIND, STORE_SCHEMA_VERSION)
        source = Path(str(store_manifest.get("source", "")))
        store = {"path": str(path.resolve()), "fingerprint": store_manifest.get("fingerprint")}
        if not (source / MANIFEST_FILE).is_file():
            raise InputError(
                path,
                f"was ingested from {source}, which has no simulated-library manifest.json "
                "(moved, or not made by `protomatch simulate`); give the simulated library",
            )
        path, manifest_path = source, source / MANIFEST_FILE
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


def _log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(np.exp(rng.uniform(math.log(low), math.log(high))))


def _plans(config: ObserveConfig, library: _Library) -> list[MockPlan]:
    from protomatch.simulators.library import draw_system, snapshot_ages

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
) -> MockPlan:
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
    kind: str = "none"
    extent: tuple[float, ...] = ()
    if blank:
        kind, extent = ("circle", (float(radius),)) if circular else ("frame", tuple(frame))
    shape4d = bool(rng.uniform() < config.cube_fraction)
    ra, dec = float(rng.uniform(0.0, 360.0)), math.degrees(math.asin(rng.uniform(-1.0, 0.5)))
    # pixels; kept within 35 % of the side from the centre, so the source stays in the field
    radius = min(config.max_offset_au / (beam / sampling), _MAX_OFFSET_FRACTION * npix)
    radius *= math.sqrt(rng.uniform())
    angle = rng.uniform(0.0, 2 * math.pi)
    offset = (round(radius * math.sin(angle)), round(radius * math.cos(angle)))
    return MockPlan(
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


# --- the command -----------------------------------------------------------------------------


@claims_output(MANIFEST_KIND, inputs=("library",))
def make_observations(
    library: str | Path,
    out: str | Path,
    *,
    config: ObserveConfig | None = None,
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
    config = config or ObserveConfig()
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
        write_json_atomic(tmp / MANIFEST_FILE, _manifest(config, lib, len(rows)))
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


def _write_truth(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    import pandas as pd

    path.write_bytes(csv_bytes(pd.DataFrame(list(rows), columns=list(TRUTH_COLUMNS))))


def _manifest(config: ObserveConfig, lib: _Library, count: int) -> dict[str, Any]:
    return provenance(MANIFEST_KIND, MANIFEST_VERSION) | {
        "config": config.model_dump(mode="json"),
        "library": dict(lib.identity),
        "seed_stream": f"SeedSequence([{_OBSERVE_TAG}, seed]) ('observe' tag)",
        "counts": {"observations": count},
        "truth": TRUTH_FILE,
        "intensity_unit": "Jy/beam",
        "frequency_hz": FREQUENCY_HZ,
        "notes": [
            "DISTANCE in the FITS headers is a convenience of these mocks; real data lack it.",
            "Inclination 0-180 deg (isotropic); position angle rotates the image on the sky.",
        ],
    }


def _run(plans: Sequence[MockPlan], out: Path, workers: int) -> list[dict[str, Any]]:
    # Largest images first: rendering costs ~npix^3, so this balances the workers.
    ordered = sorted(plans, key=lambda plan: -plan.npix)
    tasks = [(plan, out) for plan in ordered]
    return list(unordered_map(_observe_task, tasks, workers, desc="observe", unit="obs"))


def _observe_task(task: tuple[MockPlan, Path]) -> dict[str, Any]:
    return render_observation(*task)
