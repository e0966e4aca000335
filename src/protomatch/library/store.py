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
                    counts, a content fingerprint and ``files``: the SHA-256 and size of
                    each file, and of ``images.h5``'s images in blocks of about 1 MiB
    skipped.csv     (only when bad files were skipped) file, problem

:class:`LibraryStore` opens and validates a store for training, indexing and matching:
``params.parquet`` is checked against its SHA-256 when the store opens, each block of
images when it is first read (:class:`CheckedImages`).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd

from protomatch._integrity import corrupted, image_block_hashes, note_no_checksums, read_checked
from protomatch._manifests import ImageBlocks, StoreManifest, load_manifest
from protomatch.errors import InputError
from protomatch.library.preprocess import PreprocessConfig

STORE_KIND = StoreManifest.KIND
STORE_SCHEMA_VERSION = StoreManifest.SCHEMA_VERSION
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
        (N, size, size) float32 memory map of ``images.h5`` (checked as it is read).
    table
        Its ``params.parquet``, one row per image.
    """

    def __init__(
        self, path: Path, manifest: dict[str, Any], images: CheckedImages, table: pd.DataFrame
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
        manifest = load_manifest(path / MANIFEST_FILE, StoreManifest)
        if not manifest.has_checksums:
            note_no_checksums(path, "library store")
        images = _map_images(path / IMAGES_FILE, manifest)
        table = _read_table(path / TABLE_FILE, manifest, len(images))
        return cls(path, manifest.as_dict(), images, table)

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
    def images(self) -> CheckedImages:
        """(N, size, size) float32 read-only memory map of linear, peak-1 images.

        Reading images by indexing checks the blocks they are in against the manifest's
        SHA-256 first (stores written before checksums: unchecked).
        """
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


class CheckedImages(np.memmap):
    """A store's (N, size, size) float32 memory map that checks what it is asked for.

    Indexing (``images[i]``, ``images[a:b]``, ``images[rows]``) first checks every hashed
    block of ``images.h5`` the rows fall in against the manifest's SHA-256 (once per block
    and process), then returns a plain array view of the map. Arrays derived by other means
    (``reshape``, ufuncs) are not checked; library code reads stores by indexing.
    """

    _check: _BlockCheck | None = None

    def __getitem__(self, key: Any) -> Any:
        if self._check is not None:
            self._check.ensure(_touched_rows(key, len(self)))
        result = super().__getitem__(key)
        return result.view(np.ndarray) if isinstance(result, np.ndarray) else result


class _BlockCheck:
    """Which blocks of a store's images were checked, and their expected SHA-256."""

    def __init__(self, path: Path, images: np.memmap, blocks: ImageBlocks) -> None:
        self._path = path
        self._images = images.view(np.ndarray)
        self._per_block = blocks.images_per_block
        self._expected = blocks.sha256
        self._checked = np.zeros(len(blocks.sha256), dtype=bool)

    def ensure(self, rows: np.ndarray) -> None:
        """Check the blocks holding ``rows`` (valid row numbers) not checked yet."""
        blocks = np.unique(rows // self._per_block)
        for block in blocks[~self._checked[blocks]]:
            start = int(block) * self._per_block
            block_images = self._images[start : start + self._per_block]
            if image_block_hashes(block_images, self._per_block)[0] != self._expected[block]:
                stop = min(start + self._per_block, len(self._images))
                raise corrupted(
                    self._path, f"images {start} to {stop - 1} differ from their SHA-256"
                )
            self._checked[block] = True


def _touched_rows(key: Any, n: int) -> np.ndarray:
    """The valid row numbers (along axis 0) an index expression reads from N rows."""
    first = key[0] if isinstance(key, tuple) and key else key
    if first is Ellipsis or first is None:
        return np.arange(n)
    if isinstance(first, slice):
        return np.arange(*first.indices(n))
    rows = np.asarray(first)
    if rows.dtype == bool and rows.ndim == 0:
        return np.arange(n) if rows else np.zeros(0, dtype=np.int64)
    if rows.dtype == bool:  # a mask over the leading axis, or over more axes
        rows = np.flatnonzero(rows.reshape(len(rows), -1).any(axis=1))
        return rows[rows < n]
    if not np.issubdtype(rows.dtype, np.integer):
        return np.zeros(0, dtype=np.int64)  # numpy refuses such an index itself
    rows = rows.astype(np.int64).ravel()
    rows = np.where(rows < 0, rows + n, rows)
    return rows[(rows >= 0) & (rows < n)]


def _map_images(path: Path, manifest: StoreManifest) -> CheckedImages:
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
    if list(shape) != manifest.image_shape:
        raise InputError(path, f"holds images {shape}, its manifest says {manifest.image_shape}")
    if offset + 4 * int(np.prod(shape)) > path.stat().st_size:
        raise corrupted(path, "is shorter than its images")
    images = CheckedImages(path, dtype="<f4", mode="r", offset=offset, shape=shape)
    record = None if manifest.files is None else manifest.files.get(IMAGES_FILE)
    if manifest.files is not None:
        if record is None or record.blocks is None:
            raise InputError(path, "has no block checksums in the manifest; the store was altered")
        expected_blocks = -(-len(images) // record.blocks.images_per_block)
        if len(record.blocks.sha256) != expected_blocks:
            raise InputError(path, "the manifest's block checksums do not cover its images")
        images._check = _BlockCheck(path, images, record.blocks)
    return images


def _read_table(path: Path, manifest: StoreManifest, n: int) -> pd.DataFrame:
    data = read_checked(path, manifest.files)
    try:
        table = pd.read_parquet(io.BytesIO(data))
    except (OSError, ValueError) as exc:
        raise InputError(path, f"cannot be read as Parquet ({exc})") from None
    missing = [c for c in (*ID_COLUMNS, *manifest.parameters) if c not in table.columns]
    if missing:
        raise InputError(path, f"lacks column(s) {', '.join(missing)}")
    if len(table) != n:
        raise InputError(path, f"has {len(table)} rows but the store holds {n} images")
    if not np.array_equal(table["image_id"].to_numpy(), np.arange(n)):
        raise InputError(path, "image_id is not the row number 0 .. N-1; re-run ingest")
    return table
