"""The library store: a library ingested once into a fast, memory-mapped form.

A store is a folder (written by :func:`protomatch.library.ingest.ingest_library`; see
``docs/architecture.md``)::

    images.h5       dataset "images" (N, size, size) float32, contiguous, memory-mappable;
                    linear intensities after the geometry stage of
                    :mod:`protomatch.library.preprocess` (peak 1 per image)
    params.parquet  image_id, system, snapshot, projection, source, peak, total_flux,
                    mean_intensity (mean of the prepared image in input units: the absolute
                    brightness that peak normalisation removes) and one float64 column per
                    physical parameter (raw values, physical units)
    manifest.json   provenance, source, preprocessing, parameters + units, pixel scale,
                    counts and a content fingerprint
    skipped.csv     (only when bad files were skipped) file, problem

:class:`LibraryStore` opens and validates a store for training, indexing and matching.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd

from protomatch import _artefact
from protomatch.errors import InputError
from protomatch.library.preprocess import PreprocessConfig

STORE_KIND = "library-store"
STORE_SCHEMA_VERSION = 1
IMAGES_FILE = "images.h5"
IMAGES_DATASET = "images"
TABLE_FILE = "params.parquet"
MANIFEST_FILE = "manifest.json"
SKIPPED_FILE = "skipped.csv"
#: Columns of ``params.parquet`` before the physical parameters.
ID_COLUMNS = (
    "image_id", "system", "snapshot", "projection", "source", "peak", "total_flux",
    "mean_intensity",
)  # fmt: skip


class LibraryStore:
    """A library store opened for reading; images are memory-mapped, never copied.

    Pickling a store (e.g. to send it to data-loader workers) pickles only its path; the
    receiving process re-opens the memory map. Open stores with :meth:`open`.

    Parameters
    ----------
    path
        The store folder.
    manifest
        Its parsed ``manifest.json``.
    images
        (N, size, size) float32 memory map of ``images.h5``.
    table
        Its ``params.parquet``, one row per image.
    """

    def __init__(
        self, path: Path, manifest: dict[str, Any], images: np.memmap, table: pd.DataFrame
    ) -> None:
        self._path = path
        self._manifest = manifest
        self._images = images
        self._table = table

    @classmethod
    def open(cls, path: str | Path) -> LibraryStore:
        """Open and validate a store folder.

        Parameters
        ----------
        path
            The folder written by ``protomatch ingest``.

        Returns
        -------
        LibraryStore
            The opened store; images stay on disk (memory-mapped).

        Raises
        ------
        InputError
            If the folder is missing, incomplete or of a newer schema.
        """
        path = Path(path)
        if not path.is_dir():
            raise InputError(path, "is not a library store folder (run 'protomatch ingest')")
        manifest = _artefact.read_manifest(path / MANIFEST_FILE, STORE_KIND, STORE_SCHEMA_VERSION)
        images = _map_images(path / IMAGES_FILE)
        table = _read_table(path / TABLE_FILE, manifest.get("parameters", []), len(images))
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
        """The parsed ``manifest.json`` (provenance, preprocessing, counts, fingerprint)."""
        return self._manifest

    @property
    def param_names(self) -> tuple[str, ...]:
        """Names of the physical parameter columns, in library order."""
        return tuple(self._manifest["parameters"])

    @property
    def units(self) -> dict[str, str]:
        """Unit of each physical parameter ("" when the library gave none)."""
        return dict(self._manifest.get("units", {}))

    @property
    def fingerprint(self) -> str:
        """Content hash of the preprocessing, images and table (16 hex digits)."""
        return str(self._manifest["fingerprint"])

    @property
    def preprocess(self) -> PreprocessConfig:
        """The preprocessing the images went through (and the stretch recorded for them)."""
        return PreprocessConfig(**self._manifest["preprocess"])

    @property
    def au_per_pixel(self) -> float | None:
        """Pixel side of the stored images, AU (None when the library did not record it)."""
        value = self._manifest.get("au_per_pixel")
        return None if value is None else float(value)

    @property
    def intensity_unit(self) -> str | None:
        """Unit of the raw intensities (``peak``, ``mean_intensity``), e.g. "MJy/sr"."""
        unit = self._manifest.get("intensity_unit")
        return None if unit is None else str(unit)

    @property
    def described_log10(self) -> dict[str, bool]:
        """Parameters the library's description says to compare in log10 (True) or not."""
        described = (self._manifest.get("description") or {}).get("parameters", {})
        return {name: bool(p["log"]) for name, p in described.items() if p.get("log") is not None}

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
            dataset = handle.get(IMAGES_DATASET)
            if not isinstance(dataset, h5py.Dataset) or dataset.ndim != 3:
                raise InputError(path, f"has no 3-D '{IMAGES_DATASET}' dataset")
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
    missing = [c for c in (*ID_COLUMNS, *param_names) if c not in table.columns]
    if missing:
        raise InputError(path, f"lacks column(s) {', '.join(missing)}")
    if len(table) != n:
        raise InputError(path, f"has {len(table)} rows but the store holds {n} images")
    return table
