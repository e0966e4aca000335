"""``protomatch ingest``: validate a library once and write it as a library store.

Files (or catalog rows) are read and prepared in worker processes; the parent streams the
small prepared images to disk in order, so memory stays bounded and image ids are
deterministic whatever the number of workers. The store's layout is described in
:mod:`protomatch.library.store`.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

import h5py
import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from protomatch import _artefact
from protomatch._integrity import (
    file_record,
    image_block_hashes,
    images_per_block,
    nonfinite_problem,
)
from protomatch._locking import claims_output
from protomatch._parallel import ordered_map
from protomatch._text import csv_bytes, safe_name
from protomatch.errors import InputError, ProtomatchError
from protomatch.library._resolve import ResolvedDescription, resolve_description
from protomatch.library.description import (
    GivenFacts,
    Known,
    LibraryDescription,
    describe_library,
    find_description,
)
from protomatch.library.formats import DEFAULT_MAX_IMAGE_SIDE
from protomatch.library.preprocess import PreprocessConfig, crop_box, prepare_images
from protomatch.library.readers import (
    LibraryImage,
    discover_library,
    read_library_file,
    read_library_image,
)
from protomatch.library.store import (
    ID_COLUMNS,
    IMAGES_DATASET,
    IMAGES_FILE,
    MANIFEST_FILE,
    SKIPPED_FILE,
    STORE_KIND,
    STORE_SCHEMA_VERSION,
    TABLE_FILE,
)

log = logging.getLogger(__name__)

_COPY_BLOCK = 1024  # images per block when copying into images.h5
_DEFAULT_MAX_WORKERS = 4


class IngestConfig(BaseModel):
    """How a library is turned into a store.

    Attributes
    ----------
    size
        Side of the stored (and model input) images, pixels (>= 16).
    stretch
        Intensity stretch recorded for the on-the-fly stage: ``log``, ``asinh`` or
        ``linear``; the stored images stay linear.
    crop_fraction
        Side of the centred square crop as a fraction of the shorter image side, in (0, 1].
    skip_bad
        Skip unreadable files and list them in ``skipped.csv`` instead of stopping.
    max_image_side
        Largest image side [pixels] read; checked on each file's header before its pixels
        are read, so a file claiming a huge image is refused (or skipped) at once.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    size: int = Field(64, ge=16)
    stretch: Literal["log", "asinh", "linear"] = "log"
    crop_fraction: float = Field(1.0, gt=0.0, le=1.0)
    skip_bad: bool = False
    max_image_side: int = Field(DEFAULT_MAX_IMAGE_SIDE, ge=16)

    @property
    def preprocess(self) -> PreprocessConfig:
        """The preprocessing these settings stand for (other settings at their defaults)."""
        return PreprocessConfig(
            size=self.size, crop_fraction=self.crop_fraction, stretch=self.stretch
        )


@dataclass(frozen=True, eq=False)
class _Loaded:
    """One work unit (HDF5 file or catalog row) read and prepared in a worker."""

    source: str
    images: np.ndarray  # (P, size, size) float32
    peaks: np.ndarray  # (P,)
    totals: np.ndarray  # (P,)
    system: str
    snapshot: int
    projections: tuple[int, ...]
    params: dict[str, float]
    scale: Known | None  # AU per pixel of the prepared images, and its source
    unit: Known | None = None
    ambiguous: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Failed:
    source: str
    path: str
    problem: str


@dataclass(frozen=True)
class IngestResult:
    """What :func:`ingest_library` wrote.

    Attributes
    ----------
    path
        The store folder.
    form
        ``"hdf5"`` (a tree of library files) or ``"catalog"`` (images + catalog).
    n_files
        Files (or catalog rows) ingested.
    n_images
        Images in the store.
    skipped
        ``(file, problem)`` of every bad input skipped.
    fingerprint
        The store's content fingerprint.
    seconds
        Wall-clock time of the ingest.
    """

    path: Path
    form: str
    n_files: int
    n_images: int
    skipped: tuple[tuple[str, str], ...]
    fingerprint: str
    seconds: float
    description: Mapping[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        """What was ingested, and what the store knows (and does not) about the library."""
        unit = "files" if self.form == "hdf5" else "catalog rows"
        text = (
            f"ingested {self.n_images} images from {self.n_files} {unit} into {self.path} "
            f"in {self.seconds:.1f} s (fingerprint {self.fingerprint})"
        )
        if self.skipped:
            text += (
                f"\nskipped {len(self.skipped)} bad {unit}, listed in {self.path / SKIPPED_FILE}"
            )
        return "\n".join([text, *describe_library(self.description)])


@claims_output(STORE_KIND, inputs=("src", "description_file"))
def ingest_library(
    src: str | Path,
    out: str | Path,
    *,
    config: IngestConfig | None = None,
    described: LibraryDescription | None = None,
    description_file: str | Path | None = None,
    workers: int | None = None,
    overwrite: bool = False,
) -> IngestResult:
    """Validate a library, prepare every image once and write a library store.

    Parameters
    ----------
    src
        Library folder: a tree of HDF5 library files
        (``sink<K>/output_<SSSSSS>_isink_<K>_data.hdf5``) or images + ``catalog.csv`` /
        ``catalog.parquet``.
    out
        Store folder to write (atomically; must be empty or absent unless ``overwrite``).
    config
        Image size [px], stretch, crop and whether to skip bad files (None: defaults).
    described
        What the user says about the library on the command line (pixel scale, unit,
        parameters); it wins over the description file and the files' attributes.
    description_file
        A description YAML (None: ``src/library.yaml`` when present); see
        :mod:`protomatch.library.description`.
    workers
        Worker processes (None: min(cores, 4); 1: read in this process). The store does
        not depend on it.
    overwrite
        Replace a non-empty ``out``.

    Returns
    -------
    IngestResult
        Counts, skipped inputs, fingerprint, timing and what the store knows of the library.

    Raises
    ------
    InputError
        For a missing library, a bad description or file (unless ``skip_bad``) or an output
        that may not be replaced; nothing is written then.
    """
    started = time.perf_counter()
    config = config or IngestConfig()
    src, out = Path(src), Path(out)
    _artefact.ensure_writable_output(out, overwrite)
    layout = discover_library(src)
    description = resolve_description(
        layout,
        described or LibraryDescription(),
        find_description(src, None if description_file is None else Path(description_file)),
    )
    layout = description.layout
    workers = _worker_count(workers, len(layout))
    log.debug("ingesting %d units from %s with %d workers", len(layout), src, workers)
    with _artefact.atomic_directory(out, overwrite) as tmp:
        summary = _ingest_into(tmp, description, config, workers)
    result = IngestResult(
        path=out,
        form=layout.form,
        n_files=summary["counts"]["files"],
        n_images=summary["counts"]["images"],
        skipped=summary["skipped"],
        fingerprint=summary["fingerprint"],
        seconds=time.perf_counter() - started,
        description=MappingProxyType(summary["description"]),
    )
    log.debug("%s", result.describe())
    return result


def _worker_count(workers: int | None, units: int) -> int:
    if workers is None:
        workers = min(os.cpu_count() or 1, _DEFAULT_MAX_WORKERS)
    if workers < 1:
        raise ProtomatchError(f"workers must be >= 1, got {workers}")
    return max(1, min(workers, units))


@dataclass
class _Collected:
    """What the ingest loop gathers from the workers' outcomes."""

    rows: list[dict[str, Any]]
    skipped: list[tuple[str, str]]
    scales: set[tuple[float, str] | None]
    units: set[tuple[str, str] | None]
    ambiguous: set[str]
    n_files: int = 0

    def add(self, loaded: _Loaded, param_names: tuple[str, ...]) -> None:
        self.n_files += 1
        self.rows.extend(_rows(loaded, len(self.rows), param_names))
        self.scales.add(None if loaded.scale is None else (loaded.scale.value, loaded.scale.source))
        self.units.add(None if loaded.unit is None else (loaded.unit.value, loaded.unit.source))
        self.ambiguous.update(loaded.ambiguous)


def _ingest_into(
    tmp: Path, description: ResolvedDescription, ingest: IngestConfig, workers: int
) -> dict[str, Any]:
    """Read every unit, write the store files into ``tmp``; return the manifest."""
    layout = description.layout
    config, skip_bad = ingest.preprocess, ingest.skip_bad
    raw_path = tmp / ".images.raw"
    collected = _Collected([], [], set(), set(), set())
    load = _loader(description, config, ingest.max_image_side)
    units: tuple[Any, ...] = layout.files if layout.form == "hdf5" else layout.images
    outcomes = ordered_map(load, units, workers, desc="ingest", unit="file")
    with raw_path.open("wb") as raw, contextlib.closing(outcomes):
        for loaded in outcomes:
            outcome = _refuse_nonfinite(loaded, layout.root)
            if isinstance(outcome, _Failed):
                if not skip_bad:
                    raise InputError(outcome.path, outcome.problem)
                log.warning("skipping %s: %s", outcome.path, outcome.problem)
                collected.skipped.append((outcome.source, outcome.problem))
                continue
            raw.write(outcome.images.astype("<f4", copy=False).tobytes())
            collected.add(outcome, layout.param_names)
    rows, skipped = collected.rows, collected.skipped
    if not rows:
        first = f"; first problem: {skipped[0][0]}: {skipped[0][1]}" if skipped else ""
        raise InputError(layout.root, f"no usable images: all {len(units)} inputs are bad{first}")
    table = _table(rows, layout.param_names)
    fingerprint = _write_images(raw_path, tmp / IMAGES_FILE, len(rows), config, table)
    blocks = _image_blocks(raw_path, len(rows), config.size)
    raw_path.unlink()
    table.to_parquet(tmp / TABLE_FILE, index=False, engine="pyarrow")
    written = [TABLE_FILE]
    if skipped:
        skipped_table = pd.DataFrame(skipped, columns=["file", "problem"])
        (tmp / SKIPPED_FILE).write_bytes(csv_bytes(skipped_table))
        written.append(SKIPPED_FILE)
    files = {IMAGES_FILE: file_record(tmp / IMAGES_FILE, blocks=blocks)}
    files |= {name: file_record(tmp / name) for name in written}
    scale, unit = _common(collected.scales, "pixel scales"), _common(collected.units, "units")
    manifest = {
        **_artefact.provenance(STORE_KIND, STORE_SCHEMA_VERSION),
        "source": str(layout.root.resolve()),
        "form": layout.form,
        "preprocess": config.model_dump(),
        "parameters": list(layout.param_names),
        "units": dict(layout.units),
        "image_shape": [len(rows), config.size, config.size],
        "au_per_pixel": None if scale is None else scale.value,
        "intensity_unit": None if unit is None else unit.value,
        "description": description.manifest(scale, unit, sorted(collected.ambiguous), config.size),
        "counts": {"files": collected.n_files, "images": len(rows), "skipped": len(skipped)},
        "fingerprint": fingerprint,
        "files": files,
    }
    _artefact.write_json_atomic(tmp / MANIFEST_FILE, manifest)
    return {**manifest, "skipped": tuple(skipped)}


def _rows(loaded: _Loaded, first_id: int, param_names: tuple[str, ...]) -> Iterator[dict[str, Any]]:
    for k, projection in enumerate(loaded.projections):
        yield {
            "image_id": first_id + k,
            "system": loaded.system,
            "snapshot": loaded.snapshot,
            "projection": projection,
            "source": loaded.source,
            "peak": float(loaded.peaks[k]),
            "total_flux": float(loaded.totals[k]),
            "mean_intensity": float(loaded.peaks[k] * loaded.images[k].mean(dtype=np.float64)),
            **{name: loaded.params[name] for name in param_names},
        }


def _table(rows: list[dict[str, Any]], param_names: tuple[str, ...]) -> pd.DataFrame:
    table = pd.DataFrame(rows, columns=[*ID_COLUMNS, *param_names])
    dtypes = {"image_id": "int64", "snapshot": "int64", "projection": "int64"}
    dtypes |= {name: "float64" for name in ("peak", "total_flux", "mean_intensity", *param_names)}
    return table.astype(dtypes)


def _write_images(
    raw_path: Path, target: Path, n: int, config: PreprocessConfig, table: pd.DataFrame
) -> str:
    """Copy the raw image stream into a contiguous HDF5 dataset; return the fingerprint."""
    size = config.size
    raw = np.memmap(raw_path, dtype="<f4", mode="r", shape=(n, size, size))
    digest_parts = [json.dumps(config.model_dump(), sort_keys=True).encode()]
    image_hash = hashlib.sha256()
    with h5py.File(target, "w") as handle:
        dataset = handle.create_dataset(IMAGES_DATASET, shape=(n, size, size), dtype="<f4")
        for start in range(0, n, _COPY_BLOCK):
            block = np.ascontiguousarray(raw[start : start + _COPY_BLOCK])
            dataset[start : start + len(block)] = block
            image_hash.update(block.tobytes())
    del raw
    digest_parts.append(image_hash.digest())
    digest_parts.append(table.to_csv(index=False).encode())
    return _artefact.fingerprint_bytes(digest_parts)


def _image_blocks(raw_path: Path, n: int, size: int) -> dict[str, Any]:
    """The block checksums of the store's images (see :mod:`protomatch._integrity`)."""
    raw = np.memmap(raw_path, dtype="<f4", mode="r", shape=(n, size, size))
    per_block = images_per_block((size, size))
    hashes = image_block_hashes(raw, per_block)
    del raw
    return {"images_per_block": per_block, "sha256": hashes}


def _refuse_nonfinite(outcome: _Loaded | _Failed, root: Path) -> _Loaded | _Failed:
    """A prepared unit whose images or brightness are not all finite, as a failure."""
    if isinstance(outcome, _Failed):
        return outcome
    for what, values in (
        ("prepared image", outcome.images),
        ("peak intensity", outcome.peaks),
        ("total flux", outcome.totals),
    ):
        problem = nonfinite_problem(values, what)
        if problem:
            return _Failed(outcome.source, str(root / outcome.source), problem)
    return outcome


def _common(values: set[tuple[Any, str] | None], what: str) -> Known | None:
    """The store-wide value if every file agrees (scales within 1e-6), else None."""
    known = [v for v in values if v is not None]
    if not known or None in values:
        if known:
            log.warning("some files record no %s; the store records none", what[:-1])
        return None
    first = known[0][0]
    if isinstance(first, float):
        numbers = sorted(float(v) for v, _ in known)
        agree = numbers[-1] <= numbers[0] * (1 + 1e-6)
    else:
        agree = len({v for v, _ in known}) == 1
    if not agree:
        log.warning("files have different %s; the store records none", what)
        return None
    sources = sorted({s for _, s in known})
    return Known(first, sources[0] if len(sources) == 1 else ", ".join(sources))


# --------------------------------------------------------------------------- workers


def _loader(
    description: ResolvedDescription, config: PreprocessConfig, max_side: int
) -> Callable[[Any], _Loaded | _Failed]:
    layout, given = description.layout, description.given
    if layout.form == "hdf5":
        return functools.partial(
            _load_hdf5,
            root=layout.root,
            param_names=layout.param_names,
            config=config,
            given=given,
            max_side=max_side,
        )
    return functools.partial(
        _load_catalog_row, root=layout.root, config=config, given=given, max_side=max_side
    )


def _load_hdf5(
    path: Path,
    *,
    root: Path,
    param_names: tuple[str, ...],
    config: PreprocessConfig,
    given: GivenFacts,
    max_side: int,
) -> _Loaded | _Failed:
    source = _relative(path, root)
    try:
        record = read_library_file(path, param_names, max_side)
    except InputError as exc:
        return _Failed(source, str(exc.path), exc.problem)
    images, peaks, totals = prepare_images(record.images, config)
    side = record.images.shape[-1]
    attributes = record.attributes
    return _Loaded(
        source=source,
        images=images,
        peaks=peaks,
        totals=totals,
        system=record.system,
        snapshot=record.snapshot,
        projections=tuple(range(1, len(images) + 1)),
        params=record.params,
        scale=_store_scale(given.file_scale(side) or attributes.au_per_pixel, side, config),
        unit=given.unit or attributes.intensity_unit,
        ambiguous=() if given.scale else attributes.ambiguous,
    )


def _load_catalog_row(
    image: LibraryImage,
    *,
    root: Path,
    config: PreprocessConfig,
    given: GivenFacts,
    max_side: int,
) -> _Loaded | _Failed:
    source = _relative(image.source, root)
    try:
        pixels = read_library_image(image, max_side)
    except InputError as exc:
        return _Failed(source, str(exc.path), exc.problem)
    images, peaks, totals = prepare_images(pixels[None], config)
    side = pixels.shape[-1]
    return _Loaded(
        source=source,
        images=images,
        peaks=peaks,
        totals=totals,
        system=image.system,
        snapshot=image.snapshot,
        projections=(image.projection,),
        params=dict(image.params),
        scale=_store_scale(given.file_scale(side), side, config),
        unit=given.unit,
    )


def _store_scale(file_scale: Known | None, side: int, config: PreprocessConfig) -> Known | None:
    """The prepared images' AU per pixel, from the file's (cropped, then resized to size)."""
    if file_scale is None:
        return None
    cropped = crop_box(side, side, config.crop_fraction)[2]
    return Known(float(file_scale.value) * cropped / config.size, file_scale.source)


def _relative(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` as the store records it (:func:`safe_name`)."""
    try:
        return safe_name(path.relative_to(root).as_posix())
    except ValueError:
        return safe_name(path)
