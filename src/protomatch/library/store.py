"""Ingest a library once into a fast *library store*, and open stores for training/matching.

A store is a folder (DESIGN.md §3)::

    images.h5       dataset "images" (N, size, size) float32, contiguous, memory-mappable;
                    linear intensities after the geometry stage of :mod:`protomatch.library.preprocess`
                    (peak 1 per image)
    params.parquet  image_id, system, snapshot, projection, source, peak, total_flux,
                    mean_intensity (mean of the prepared image in input units: the absolute
                    brightness that peak normalisation removes) and one float64 column per
                    physical parameter (raw values, physical units)
    manifest.json   provenance, source, preprocessing, parameters + units, pixel scale,
                    counts and a content fingerprint
    skipped.csv     (only with skip_bad and bad files) file, problem

Files are read and preprocessed in worker processes; the parent streams the small prepared
images to disk in order, so memory stays bounded and image ids are deterministic.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import multiprocessing
import os
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd
import pydantic
from tqdm import tqdm

from protomatch import _artefact
from protomatch.errors import InputError, ProtomatchError
from protomatch.library.preprocess import PreprocessConfig, crop_box, prepare_images
from protomatch.library.readers import (
    LibraryImage,
    LibraryLayout,
    discover_library,
    read_library_file,
    read_library_image,
)

log = logging.getLogger(__name__)

STORE_KIND = "library-store"
STORE_SCHEMA_VERSION = 1
_IMAGES_FILE = "images.h5"
_IMAGES_DATASET = "images"
_TABLE_FILE = "params.parquet"
_MANIFEST_FILE = "manifest.json"
_SKIPPED_FILE = "skipped.csv"
_ID_COLUMNS = (
    "image_id", "system", "snapshot", "projection", "source", "peak", "total_flux",
    "mean_intensity",
)  # fmt: skip
_COPY_BLOCK = 1024  # images per block when copying into images.h5


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
    au_per_pixel: float | None  # of the prepared images
    intensity_unit: str | None = None


@dataclass(frozen=True)
class _Failed:
    source: str
    path: str
    problem: str


@dataclass(frozen=True)
class IngestResult:
    """What :func:`ingest_library` wrote."""

    path: Path
    form: str
    n_files: int
    n_images: int
    skipped: tuple[tuple[str, str], ...]
    fingerprint: str
    seconds: float

    def describe(self) -> str:
        """One or two lines for the command line."""
        unit = "files" if self.form == "hdf5" else "catalog rows"
        text = (
            f"ingested {self.n_images} images from {self.n_files} {unit} into {self.path} "
            f"in {self.seconds:.1f} s (fingerprint {self.fingerprint})"
        )
        if self.skipped:
            text += (
                f"\nskipped {len(self.skipped)} bad {unit}, listed in {self.path / _SKIPPED_FILE}"
            )
        return text


def ingest_library(
    src: str | Path,
    out: str | Path,
    *,
    size: int = 64,
    stretch: str = "log",
    skip_bad: bool = False,
    workers: int | None = None,
    overwrite: bool = False,
    crop_fraction: float = 1.0,
) -> IngestResult:
    """Validate a library, prepare every image once and write a library store.

    Parameters
    ----------
    src
        Library folder: HDF5 tree (DESIGN.md §1) or images + ``catalog.csv``/``.parquet``.
    out
        Store folder to write (atomically; must be empty or absent unless ``overwrite``).
    size, stretch, crop_fraction
        Preprocessing (see :class:`~protomatch.library.preprocess.PreprocessConfig`); the stretch is
        recorded for the on-the-fly intensity stage, stored images stay linear.
    skip_bad
        Skip unreadable files and list them in ``skipped.csv`` instead of stopping.
    workers
        Worker processes (None: min(cores, 4); 1: read in this process).
    overwrite
        Replace a non-empty ``out``.
    """
    started = time.perf_counter()
    src, out = Path(src), Path(out)
    config = _config(size=size, stretch=stretch, crop_fraction=crop_fraction)
    _artefact.ensure_writable_output(out, overwrite)
    layout = discover_library(src)
    if out.resolve() == src.resolve() or out.resolve() in src.resolve().parents:
        raise InputError(out, "the store must not replace the library folder")
    workers = _worker_count(workers, len(layout))
    log.debug("ingesting %d units from %s with %d workers", len(layout), src, workers)
    with _artefact.atomic_directory(out, overwrite) as tmp:
        summary = _ingest_into(tmp, layout, config, skip_bad, workers)
    result = IngestResult(
        path=out,
        form=layout.form,
        n_files=summary["counts"]["files"],
        n_images=summary["counts"]["images"],
        skipped=summary["skipped"],
        fingerprint=summary["fingerprint"],
        seconds=time.perf_counter() - started,
    )
    log.debug("%s", result.describe())
    return result


def _config(**fields: Any) -> PreprocessConfig:
    try:
        return PreprocessConfig(**fields)
    except pydantic.ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors(include_url=False)
        )
        raise ProtomatchError(f"invalid preprocessing option ({problems})") from None


def _worker_count(workers: int | None, units: int) -> int:
    if workers is None:
        workers = min(os.cpu_count() or 1, 4)
    if workers < 1:
        raise ProtomatchError(f"workers must be >= 1, got {workers}")
    return max(1, min(workers, units))


def _ingest_into(
    tmp: Path, layout: LibraryLayout, config: PreprocessConfig, skip_bad: bool, workers: int
) -> dict[str, Any]:
    """Read every unit, write the store files into ``tmp``; return the manifest."""
    raw_path = tmp / ".images.raw"
    rows: list[dict[str, Any]] = []
    skipped: list[tuple[str, str]] = []
    scales: set[float | None] = set()
    intensity_units: set[str | None] = set()
    n_files = 0
    load = _loader(layout, config)
    units = layout.files if layout.form == "hdf5" else layout.images
    with (
        raw_path.open("wb") as raw,
        tqdm(total=len(units), desc="ingest", unit="file", disable=None) as bar,
        contextlib.closing(_ordered_map(load, units, workers)) as outcomes,
    ):
        for outcome in outcomes:
            bar.update()
            if isinstance(outcome, _Failed):
                if not skip_bad:
                    raise InputError(outcome.path, outcome.problem)
                log.warning("skipping %s: %s", outcome.path, outcome.problem)
                skipped.append((outcome.source, outcome.problem))
                continue
            n_files += 1
            raw.write(outcome.images.astype("<f4", copy=False).tobytes())
            rows.extend(_rows(outcome, len(rows), layout.param_names))
            scales.add(outcome.au_per_pixel)
            intensity_units.add(outcome.intensity_unit)
    if not rows:
        first = f"; first problem: {skipped[0][0]}: {skipped[0][1]}" if skipped else ""
        raise InputError(layout.root, f"no usable images: all {len(units)} inputs are bad{first}")
    table = _table(rows, layout.param_names)
    fingerprint = _write_images(raw_path, tmp / _IMAGES_FILE, len(rows), config, table)
    raw_path.unlink()
    table.to_parquet(tmp / _TABLE_FILE, index=False, engine="pyarrow")
    if skipped:
        pd.DataFrame(skipped, columns=["file", "problem"]).to_csv(tmp / _SKIPPED_FILE, index=False)
    manifest = {
        **_artefact.provenance(STORE_KIND, STORE_SCHEMA_VERSION),
        "source": str(layout.root.resolve()),
        "form": layout.form,
        "preprocess": config.model_dump(),
        "parameters": list(layout.param_names),
        "units": dict(layout.units),
        "image_shape": [len(rows), config.size, config.size],
        "au_per_pixel": _common_scale(scales),
        "intensity_unit": intensity_units.pop() if len(intensity_units) == 1 else None,
        "counts": {"files": n_files, "images": len(rows), "skipped": len(skipped)},
        "fingerprint": fingerprint,
    }
    _artefact.write_json_atomic(tmp / _MANIFEST_FILE, manifest)
    return {**manifest, "skipped": tuple(skipped)}


def _rows(loaded: _Loaded, first_id: int, param_names: tuple[str, ...]) -> Iterator[dict]:
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
    table = pd.DataFrame(rows, columns=[*_ID_COLUMNS, *param_names])
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
        dataset = handle.create_dataset(_IMAGES_DATASET, shape=(n, size, size), dtype="<f4")
        for start in range(0, n, _COPY_BLOCK):
            block = np.ascontiguousarray(raw[start : start + _COPY_BLOCK])
            dataset[start : start + len(block)] = block
            image_hash.update(block.tobytes())
    del raw
    digest_parts.append(image_hash.digest())
    digest_parts.append(table.to_csv(index=False).encode())
    return _artefact.fingerprint_bytes(digest_parts)


def _common_scale(scales: set[float | None]) -> float | None:
    """The store's AU per pixel if every file agrees (within 1e-6), else None."""
    values = sorted(s for s in scales if s is not None)
    if not values or None in scales:
        return None
    if values[-1] > values[0] * (1 + 1e-6):
        log.warning("files have different pixel scales; the store records none")
        return None
    return values[0]


# --------------------------------------------------------------------------- workers


def _loader(layout: LibraryLayout, config: PreprocessConfig) -> Callable[[Any], _Loaded | _Failed]:
    if layout.form == "hdf5":
        return functools.partial(
            _load_hdf5, root=layout.root, param_names=layout.param_names, config=config
        )
    return functools.partial(_load_catalog_row, root=layout.root, config=config)


def _load_hdf5(
    path: Path, *, root: Path, param_names: tuple[str, ...], config: PreprocessConfig
) -> _Loaded | _Failed:
    source = _relative(path, root)
    try:
        record = read_library_file(path, param_names)
    except InputError as exc:
        return _Failed(source, str(exc.path), exc.problem)
    images, peaks, totals = prepare_images(record.images, config)
    return _Loaded(
        source=source,
        images=images,
        peaks=peaks,
        totals=totals,
        system=record.system,
        snapshot=record.snapshot,
        projections=tuple(range(1, len(images) + 1)),
        params=record.params,
        au_per_pixel=_store_scale(record.au_per_pixel, record.images.shape[-1], config),
        intensity_unit=record.intensity_unit,
    )


def _load_catalog_row(
    image: LibraryImage, *, root: Path, config: PreprocessConfig
) -> _Loaded | _Failed:
    source = _relative(image.source, root)
    try:
        pixels = read_library_image(image)
    except InputError as exc:
        return _Failed(source, str(exc.path), exc.problem)
    images, peaks, totals = prepare_images(pixels[None], config)
    return _Loaded(
        source=source,
        images=images,
        peaks=peaks,
        totals=totals,
        system=image.system,
        snapshot=image.snapshot,
        projections=(image.projection,),
        params=dict(image.params),
        au_per_pixel=None,
    )


def _store_scale(au_per_pixel: float | None, side: int, config: PreprocessConfig) -> float | None:
    if au_per_pixel is None:
        return None
    cropped = crop_box(side, side, config.crop_fraction)[2]
    return au_per_pixel * cropped / config.size


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)


@contextlib.contextmanager
def _torch_threads(count: int) -> Iterator[None]:
    """Run torch with ``count`` intra-op threads inside the block.

    Per-file resizes are far too small to gain from threads; the thread hand-off made
    serial ingest several times slower.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _ordered_map(fn: Callable[[Any], Any], units: Iterable[Any], workers: int) -> Iterator[Any]:
    """``map(fn, units)`` over ``workers`` processes, in order, with a bounded backlog."""
    if workers <= 1:
        with _torch_threads(1):
            yield from map(fn, units)
        return
    # Fork on Linux (like torch's DataLoader; workers run torch single-threaded, which keeps
    # it fork-safe) so scripts without a __main__ guard work; elsewhere the platform default.
    method = "fork" if sys.platform.startswith("linux") else None
    pool = ProcessPoolExecutor(
        workers, mp_context=multiprocessing.get_context(method), initializer=_init_worker
    )
    pending: deque[Future] = deque()
    remaining = iter(units)
    try:
        for unit in remaining:
            pending.append(pool.submit(fn, unit))
            if len(pending) >= 4 * workers:
                break
        while pending:
            result = pending.popleft().result()
            for unit in remaining:
                pending.append(pool.submit(fn, unit))
                break
            yield result
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


# --------------------------------------------------------------------------- reading stores


class LibraryStore:
    """A library store opened for reading; images are memory-mapped, never copied.

    Pickling a store (e.g. to send it to data-loader workers) pickles only its path; the
    receiving process re-opens the memory map.
    """

    def __init__(self, path: Path, manifest: dict[str, Any], images: np.memmap, table: Any):
        self._path = path
        self._manifest = manifest
        self._images = images
        self._table = table

    @classmethod
    def open(cls, path: str | Path) -> LibraryStore:
        """Open and validate the store folder ``path``."""
        path = Path(path)
        if not path.is_dir():
            raise InputError(path, "is not a library store folder (run 'protomatch ingest')")
        manifest = _artefact.read_manifest(path / _MANIFEST_FILE, STORE_KIND, STORE_SCHEMA_VERSION)
        images = _map_images(path / _IMAGES_FILE)
        table = _read_table(path / _TABLE_FILE, manifest.get("parameters", []), len(images))
        return cls(path, manifest, images, table)

    def __getstate__(self) -> dict[str, str]:
        return {"path": str(self._path)}

    def __setstate__(self, state: dict[str, str]) -> None:
        opened = LibraryStore.open(state["path"])
        self.__dict__.update(opened.__dict__)

    def __len__(self) -> int:
        return len(self._images)

    def __repr__(self) -> str:
        return f"LibraryStore({str(self._path)!r}, images={len(self)})"

    @property
    def path(self) -> Path:
        """The store folder."""
        return self._path

    @property
    def images(self) -> np.memmap:
        """(N, size, size) float32 read-only memory map of linear, peak-1 images."""
        return self._images

    @property
    def table(self) -> pd.DataFrame:
        """The parameter table; row i describes ``images[i]``."""
        return self._table

    @property
    def manifest(self) -> dict[str, Any]:
        return self._manifest

    @property
    def param_names(self) -> tuple[str, ...]:
        return tuple(self._manifest["parameters"])

    @property
    def units(self) -> dict[str, str]:
        return dict(self._manifest.get("units", {}))

    @property
    def fingerprint(self) -> str:
        return str(self._manifest["fingerprint"])

    @property
    def preprocess(self) -> PreprocessConfig:
        return PreprocessConfig(**self._manifest["preprocess"])

    @property
    def au_per_pixel(self) -> float | None:
        """Pixel side of the stored images, AU (None when the library did not record it)."""
        value = self._manifest.get("au_per_pixel")
        return None if value is None else float(value)

    @property
    def intensity_unit(self) -> str | None:
        """Unit of the raw intensities (``peak``, ``mean_intensity``), e.g. "MJy/sr"."""
        return self._manifest.get("intensity_unit")

    def systems(self) -> tuple[str, ...]:
        """Unique system ids in order of first appearance."""
        return tuple(pd.unique(self._table["system"].astype(str)))

    def theta(self) -> np.ndarray:
        """(N, P) float64 raw parameters, columns in ``param_names`` order."""
        return self._table[list(self.param_names)].to_numpy(dtype=np.float64)


def _map_images(path: Path) -> np.memmap:
    if not path.is_file():
        raise InputError(path, "missing; this library store is incomplete")
    try:
        with h5py.File(path, "r") as handle:
            dataset = handle.get(_IMAGES_DATASET)
            if not isinstance(dataset, h5py.Dataset) or dataset.ndim != 3:
                raise InputError(path, f"has no 3-D '{_IMAGES_DATASET}' dataset")
            offset, shape, dtype = dataset.id.get_offset(), dataset.shape, dataset.dtype
    except OSError as exc:
        raise InputError(path, f"cannot be read as HDF5 ({exc})") from None
    if offset is None or dtype != np.dtype("<f4"):
        raise InputError(path, "images are not a contiguous float32 array; re-run ingest")
    return np.memmap(path, dtype="<f4", mode="r", offset=offset, shape=shape)


def _read_table(path: Path, param_names: list[str], n: int) -> pd.DataFrame:
    if not path.is_file():
        raise InputError(path, "missing; this library store is incomplete")
    try:
        table = pd.read_parquet(path)
    except (OSError, ValueError) as exc:
        raise InputError(path, f"cannot be read as Parquet ({exc})") from None
    missing = [c for c in (*_ID_COLUMNS, *param_names) if c not in table.columns]
    if missing:
        raise InputError(path, f"lacks column(s) {', '.join(missing)}")
    if len(table) != n:
        raise InputError(path, f"has {len(table)} rows but the store holds {n} images")
    return table
