"""``protomatch simulate``: write a library of simulated protostellar systems.

Every system is drawn from its own seed (``numpy.random.SeedSequence(seed).spawn``), evolved
through ``snapshots`` ages and rendered from eight fixed viewing directions, one HDF5 file per
snapshot in the schema of real simulation libraries::

    OUT/sink<K>/output_<SSSSSS>_isink_<K>_data.hdf5
    OUT/manifest.json            settings, parameter names and units, counts, ranges
    OUT/preview.png              with ``preview=True``

The forward model is documented in :mod:`protomatch.simulators._physics` (accretion history,
disk growth, luminosity) and :mod:`protomatch.simulators._emission` (density, emission,
images); its reusable pieces are re-exported here:
:func:`draw_system`, :func:`evolve`, :func:`snapshot_state`, :func:`render_projection`,
:func:`render_projections`, :func:`stellar_radius`, :func:`accretion_luminosity`.

Every image covers ``field_of_view_au`` (1600 AU by default) over ``size`` pixels, and its
line of sight is integrated over the same depth; the files record ``au_per_pixel`` and
``field_of_view_au``.

Systems are simulated in parallel worker processes (:mod:`protomatch._parallel`, one task per
system), counted on the same progress bar as ingest (on stderr, when it is a terminal);
results do not depend on the number of workers.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from protomatch._artefact import atomic_directory, provenance, write_json_atomic
from protomatch._locking import claims_output
from protomatch._parallel import unordered_map
from protomatch.errors import ProtomatchError
from protomatch.library import schema
from protomatch.simulators._emission import (
    CLUMP_BOX_AU,
    FIELD_OF_VIEW_AU,
    INTENSITY_UNIT,
    camera_basis,
    clump_field,
    render_projection,
)
from protomatch.simulators._physics import (
    SnapshotState,
    SystemHistory,
    accretion_luminosity,
    draw_system,
    evolve,
    photospheric_luminosity,
    reference_temperature,
    snapshot_ages,
    snapshot_state,
    stellar_radius,
)

__all__ = [
    "FIELD_OF_VIEW_AU",
    "INTENSITY_UNIT",
    "MAX_AU_PER_PIXEL",
    "MAX_FIELD_OF_VIEW_AU",
    "MIN_FIELD_OF_VIEW_AU",
    "MIN_SIZE",
    "VIEWING_DIRECTIONS_DEG",
    "SimulateConfig",
    "SimulationResult",
    "SnapshotState",
    "SystemHistory",
    "accretion_luminosity",
    "camera_basis",
    "clump_field",
    "draw_system",
    "evolve",
    "photospheric_luminosity",
    "reference_temperature",
    "render_projection",
    "render_projections",
    "simulate_library",
    "snapshot_ages",
    "snapshot_state",
    "stellar_radius",
    "viewing_directions",
]

log = logging.getLogger(__name__)

#: The eight fixed viewing directions of every library file, (inclination, azimuth) [deg]:
#: face-on to edge-on in steps, at spread azimuths (which change the clumps seen in front).
VIEWING_DIRECTIONS_DEG: tuple[tuple[float, float], ...] = (
    (0.0, 0.0),
    (20.0, 45.0),
    (35.0, 100.0),
    (50.0, 160.0),
    (60.0, 210.0),
    (70.0, 250.0),
    (80.0, 300.0),
    (90.0, 340.0),
)
MANIFEST_KIND = "simulated-library"
MANIFEST_VERSION = 1
#: Smallest image side [px]: fewer pixels cannot show a disk, its cavity and the envelope.
MIN_SIZE = 16
#: Widest pixel [AU]: coarser pixels blur disks and cavities away (1600 AU over 16 px).
MAX_AU_PER_PIXEL = FIELD_OF_VIEW_AU / MIN_SIZE
#: Narrowest field [AU]: the largest disks (~300 AU in radius) fit with a margin.
MIN_FIELD_OF_VIEW_AU = 800.0
#: Widest field [AU]: one period of the clump field, so no clump is seen twice in an image.
MAX_FIELD_OF_VIEW_AU = CLUMP_BOX_AU
#: Simulation output cadence [yr] used to number snapshots like a real run's output files.
_OUTPUT_INTERVAL_YR = 500.0
_PREVIEW_ROWS = 5
_PREVIEW_DECADES = 4.0


class SimulateConfig(BaseModel):
    """What library to simulate; the output depends on these settings only.

    Attributes
    ----------
    systems
        Number of systems (sinks), >= 1.
    snapshots
        Snapshots per system, >= 1, log-spaced in age.
    size
        Image side [px], >= 16.
    seed
        Seed of the whole library, >= 0; each system gets its own spawned seed.
    field_of_view_au
        Side of the images [AU], 800 ... 2048, and depth of the integrated line of sight;
        the pixel scale ``field_of_view_au / size`` must be at most 100 AU.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    systems: int = 96
    snapshots: int = 6
    size: int = 64
    seed: int = 0
    field_of_view_au: float = FIELD_OF_VIEW_AU

    @field_validator("systems", "snapshots", "size", "seed", mode="before")
    @classmethod
    def _whole_number(cls, value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            raise ValueError(f"must be an integer, got {value!r}")
        return int(value)

    @field_validator("systems", "snapshots")
    @classmethod
    def _at_least_one(cls, value: int) -> int:
        if value < 1:
            raise ValueError(f"must be at least 1, got {value}")
        return value

    @field_validator("size")
    @classmethod
    def _enough_pixels(cls, value: int) -> int:
        if value < MIN_SIZE:
            raise ValueError(
                f"must be at least {MIN_SIZE} pixels, got {value}: smaller images cannot show "
                "disks or cavities"
            )
        return value

    @field_validator("field_of_view_au", mode="before")
    @classmethod
    def _real_number(cls, value: object) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
            raise ValueError(f"must be a number of AU, got {value!r}")
        return float(value)

    @field_validator("field_of_view_au")
    @classmethod
    def _field_in_range(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError(f"must be a finite number of AU, got {value}")
        if value < MIN_FIELD_OF_VIEW_AU:
            raise ValueError(
                f"must be at least {MIN_FIELD_OF_VIEW_AU:.0f} AU, got {value:g}: a narrower "
                "field cuts the largest disks (~300 AU in radius)"
            )
        if value > MAX_FIELD_OF_VIEW_AU:
            raise ValueError(
                f"must be at most {MAX_FIELD_OF_VIEW_AU:.0f} AU, got {value:g}: the clump field "
                f"repeats every {CLUMP_BOX_AU:.0f} AU, so a wider image shows the same clumps twice"
            )
        return value

    @model_validator(mode="after")
    def _resolvable(self) -> SimulateConfig:
        if self.au_per_pixel > MAX_AU_PER_PIXEL:
            raise ValueError(
                f"pixels of {self.au_per_pixel:.4g} AU (field_of_view_au {self.field_of_view_au:g}"
                f" / size {self.size}) are too coarse to resolve disks or cavities: at most "
                f"{MAX_AU_PER_PIXEL:.0f} AU, so size >= "
                f"{math.ceil(self.field_of_view_au / MAX_AU_PER_PIXEL)} for this field"
            )
        return self

    @property
    def au_per_pixel(self) -> float:
        """Pixel scale [AU/px], ``field_of_view_au / size``."""
        return self.field_of_view_au / self.size

    @field_validator("seed")
    @classmethod
    def _non_negative(cls, value: int) -> int:
        if value < 0:
            raise ValueError(f"must be a non-negative integer, got {value}")
        return value


@dataclass(frozen=True)
class SimulationResult:
    """What :func:`simulate_library` wrote.

    Attributes
    ----------
    out
        The library folder.
    n_systems, n_snapshots
        Systems, and snapshots per system.
    n_files, n_images
        HDF5 files (one per snapshot) and images (eight per file) written.
    seconds
        Wall-clock time.
    preview
        The preview image, if one was asked for.
    """

    out: Path
    n_systems: int
    n_snapshots: int
    n_files: int
    n_images: int
    seconds: float
    preview: Path | None

    def describe(self) -> str:
        """A few human-readable lines: what was written, where, how fast."""
        rate = self.n_images / self.seconds if self.seconds > 0 else float("inf")
        lines = [
            f"Wrote a simulated library of {self.n_systems} systems x {self.n_snapshots} "
            f"snapshots x {schema.N_PROJECTIONS} projections to {self.out}",
            f"  {self.n_files} HDF5 files, {self.n_images} images in {self.seconds:.1f} s "
            f"({rate:.0f} images/s)",
        ]
        if self.preview is not None:
            lines.append(f"  preview: {self.preview}")
        return "\n".join(lines)


@dataclass(frozen=True)
class _SystemTask:
    system: int
    seed: np.random.SeedSequence
    snapshots: int
    size: int
    field_of_view_au: float
    root: Path


@dataclass(frozen=True)
class _SnapshotRecord:
    system: int
    number: int
    parameters: dict[str, float]


@claims_output(MANIFEST_KIND)
def simulate_library(
    out: str | Path,
    *,
    config: SimulateConfig | None = None,
    workers: int | None = None,
    preview: bool = False,
    overwrite: bool = False,
) -> SimulationResult:
    """Simulate protostellar systems and write them as a library.

    Parameters
    ----------
    out
        Folder to create (refused if it exists and is not empty, unless ``overwrite``).
    config
        Systems, snapshots, image size [px], field of view [AU] and seed (None: the
        defaults).
    workers
        Worker processes (None: one per core); the output does not depend on it.
    preview
        Also write ``preview.png``, one system's evolution x the eight projections.
    overwrite
        Replace a non-empty ``out``.

    Returns
    -------
    SimulationResult
        Counts, timing and the preview path.

    Raises
    ------
    ProtomatchError
        For a bad ``workers`` or an output folder that may not be replaced; nothing is
        written then.
    """
    config = config or SimulateConfig()
    _check_workers(workers)
    systems, snapshots = config.systems, config.snapshots
    n_workers = min(systems, workers if workers is not None else os.cpu_count() or 1)
    started = time.perf_counter()
    out = Path(out)
    system_seeds = np.random.SeedSequence(config.seed).spawn(systems)
    with atomic_directory(out, overwrite) as tmp:
        tasks = [
            _SystemTask(k + 1, s, snapshots, config.size, config.field_of_view_au, tmp)
            for k, s in enumerate(system_seeds)
        ]
        records = sorted(_run(tasks, n_workers), key=lambda r: (r.system, r.number))
        write_json_atomic(tmp / "manifest.json", _manifest(records, config))
        preview_path = None
        if preview:
            _write_preview(tmp, records, tmp / "preview.png", config.field_of_view_au)
            preview_path = out / "preview.png"
    seconds = time.perf_counter() - started
    result = SimulationResult(
        out=out,
        n_systems=systems,
        n_snapshots=snapshots,
        n_files=len(records),
        n_images=len(records) * schema.N_PROJECTIONS,
        seconds=seconds,
        preview=preview_path,
    )
    log.debug("simulate: %s", result)
    return result


def viewing_directions() -> tuple[tuple[float, float], ...]:
    """The library's eight viewing directions.

    Returns
    -------
    tuple
        Eight ``(inclination, azimuth)`` pairs [rad], in projection order.
    """
    return tuple((math.radians(i), math.radians(a)) for i, a in VIEWING_DIRECTIONS_DEG)


def render_projections(
    state: SnapshotState, *, size: int, fov_au: float = FIELD_OF_VIEW_AU
) -> NDArray[np.float32]:
    """The eight library projections of one snapshot, sharing one clump field.

    Parameters
    ----------
    state
        The system at one age.
    size
        Image side [px].
    fov_au
        Field of view [AU].

    Returns
    -------
    numpy.ndarray
        (8, size, size) float32 intensities [MJy/sr], in projection order.
    """
    clumps = clump_field(state)
    return np.stack(
        [
            render_projection(state, d, size=size, fov_au=fov_au, clumps=clumps)
            for d in viewing_directions()
        ]
    )


def _check_workers(workers: int | None) -> None:
    if workers is not None and (
        isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 1
    ):
        raise ProtomatchError(
            f"workers must be at least 1 (or omitted for one per core), got {workers}"
        )


# --- running the systems ----------------------------------------------------------------------


def _run(tasks: Sequence[_SystemTask], workers: int) -> list[_SnapshotRecord]:
    results = unordered_map(_simulate_system, tasks, workers, desc="simulate", unit="system")
    return [record for system_records in results for record in system_records]


def _simulate_system(task: _SystemTask) -> list[_SnapshotRecord]:
    """Draw, evolve, render and write one system; returns its snapshots' parameters."""
    rng = np.random.default_rng(task.seed)
    history = draw_system(rng)
    formation_time = rng.uniform(0.0, 2e5)
    states = evolve(history, task.snapshots)
    numbers = _snapshot_numbers(formation_time, [s.age for s in states])
    records = []
    for number, state in zip(numbers, states, strict=True):
        path = schema.library_file_path(task.root, task.system, number)
        _write_snapshot(path, state, task, number)
        records.append(_SnapshotRecord(task.system, number, state.parameters()))
    return records


def _snapshot_numbers(formation_time: float, ages: Sequence[float]) -> list[int]:
    """Output numbers of a run writing every ``_OUTPUT_INTERVAL_YR``, strictly increasing."""
    numbers: list[int] = []
    for age in ages:
        number = round((formation_time + age) / _OUTPUT_INTERVAL_YR)
        numbers.append(max(number, numbers[-1] + 1) if numbers else number)
    return numbers


def _write_snapshot(path: Path, state: SnapshotState, task: _SystemTask, number: int) -> None:
    fov_au = task.field_of_view_au
    images = render_projections(state, size=task.size, fov_au=fov_au)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f.attrs[schema.PIXEL_SCALE_ATTRIBUTE] = fov_au / task.size
        f.attrs["field_of_view_au"] = fov_au
        f.attrs[schema.INTENSITY_UNIT_ATTRIBUTE] = INTENSITY_UNIT
        f.attrs["system"] = task.system
        f.attrs["snapshot"] = number
        for index, (image, angles) in enumerate(zip(images, VIEWING_DIRECTIONS_DEG, strict=True)):
            dataset = f.create_dataset(schema.projection_dataset(index + 1), data=image)
            dataset.attrs["inclination_deg"], dataset.attrs["azimuth_deg"] = angles
        for name, value in state.parameters().items():
            f.create_dataset(name, data=np.float64(value))


# --- manifest and preview ---------------------------------------------------------------------


def _manifest(records: Sequence[_SnapshotRecord], config: SimulateConfig) -> dict[str, Any]:
    systems, snapshots, size = config.systems, config.snapshots, config.size
    values = {name: [r.parameters[name] for r in records] for name in schema.DEFAULT_PARAMETERS}
    by_system: dict[int, list[int]] = {}
    for record in records:
        by_system.setdefault(record.system, []).append(record.number)
    return provenance(MANIFEST_KIND, MANIFEST_VERSION) | {
        "settings": {
            "systems": systems,
            "snapshots": snapshots,
            "size": size,
            "seed": config.seed,
            "field_of_view_au": config.field_of_view_au,
            "au_per_pixel": config.au_per_pixel,
            "line_of_sight_samples": size,
        },
        "layout": "sink<K>/output_<SSSSSS>_isink_<K>_data.hdf5",
        "projections": [
            {"dataset": schema.projection_dataset(i + 1), "inclination_deg": inc, "azimuth_deg": az}
            for i, (inc, az) in enumerate(VIEWING_DIRECTIONS_DEG)
        ],
        "intensity_unit": INTENSITY_UNIT,
        "parameters": dict(schema.PARAMETER_UNITS),
        "parameter_ranges": {name: [min(v), max(v)] for name, v in values.items()},
        "counts": {
            "systems": systems,
            "snapshots_per_system": snapshots,
            "files": len(records),
            "images": len(records) * schema.N_PROJECTIONS,
        },
        "systems": [{"id": k, "snapshots": numbers} for k, numbers in sorted(by_system.items())],
    }


def _write_preview(
    root: Path, records: Sequence[_SnapshotRecord], path: Path, fov_au: float
) -> None:
    """One system (the one with the largest final disk) at up to 5 ages x the 8 projections."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    last = {r.system: r for r in records}
    system = max(last.values(), key=lambda r: r.parameters["disk_size"]).system
    own = [r for r in records if r.system == system]
    picks = sorted({round(x) for x in np.linspace(0, len(own) - 1, min(_PREVIEW_ROWS, len(own)))})
    rows = [own[i] for i in picks]
    fig = Figure(
        figsize=(1.3 * schema.N_PROJECTIONS + 0.5, 1.38 * len(rows) + 0.6), facecolor="black"
    )
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(rows), schema.N_PROJECTIONS, squeeze=False)
    for row, record in zip(axes, rows, strict=True):
        with h5py.File(schema.library_file_path(root, system, record.number), "r") as f:
            images = [f[schema.projection_dataset(i + 1)][()] for i in range(schema.N_PROJECTIONS)]
        top = np.log10(max(float(np.max(im)) for im in images))
        for j, (ax, image) in enumerate(zip(row, images, strict=True)):
            stretched = np.log10(np.maximum(image, 10 ** (top - _PREVIEW_DECADES)))
            ax.imshow(
                stretched, origin="lower", cmap="inferno", vmin=top - _PREVIEW_DECADES, vmax=top
            )
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if record is rows[0]:
                inc, az = VIEWING_DIRECTIONS_DEG[j]
                ax.set_title(f"i={inc:.0f}°  az={az:.0f}°", color="white", fontsize=8)
        p = record.parameters
        row[0].set_ylabel(
            f"{p['age']:.3g} yr\ndisk {p['disk_size']:.0f} AU", color="white", fontsize=8
        )
    fig.suptitle(
        f"system {system}: log intensity ({_PREVIEW_DECADES:.0f} decades per row), "
        f"{fov_au:.0f} AU field",
        color="white",
        fontsize=10,
    )
    fig.tight_layout(pad=0.4, h_pad=0.3, w_pad=0.2)
    fig.savefig(path, dpi=110, facecolor=fig.get_facecolor())
