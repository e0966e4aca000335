"""Read library images and observations, validating everything at the edge.

Two library forms are understood (see ``docs/architecture.md``):

* the HDF5 tree ``sink<K>/output_<SSSSSS>_isink_<K>_data.hdf5`` (:func:`read_library_file`);
* a folder with ``catalog.csv`` or ``catalog.parquet``: one row per image with columns
  ``file`` (path relative to the catalog: .fits/.fit/.fits.gz/.npy), ``system``, optional
  ``snapshot``, ``hdu`` (0-based FITS HDU) and ``projection`` (1-based plane of a 3-D
  cube or stack), and any number of numeric parameter columns. A column named
  ``name [unit]`` is parameter ``name`` with unit ``unit``.

One projection of a library file can also be read as a target
(:func:`read_library_projection`, used by :func:`protomatch.matching.observation.read_observation`).

Files are recognised by their first bytes, never by their extension, and a Python pickle is
refused before anything parses it. Every problem is an :class:`InputError` naming the file.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import h5py
import numpy as np

from protomatch.errors import InputError
from protomatch.library import schema
from protomatch.library._catalog import read_catalog
from protomatch.library.description import FileAttributes, read_file_attributes
from protomatch.library.formats import (
    DEFAULT_MAX_IMAGE_SIDE,
    HDF5_ERRORS,
    as_image,
    check_declared_shape,
    expect_format,
    read_fits,
    read_npy,
    require_square,
    sniff_format,
    unreadable,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LibraryImage:
    """Where one library image comes from and what its parameters are.

    ``projection`` is 1-based: the HDF5 projection, or in the catalog form the plane of a
    3-D cube / stack (1 when the catalog has no ``projection`` column). ``hdu`` is the
    0-based FITS HDU of a catalog image (None: the first HDU holding an image).
    """

    source: Path
    system: str
    snapshot: int
    projection: int
    params: Mapping[str, float]
    hdu: int | None = None


@dataclass(frozen=True)
class LibraryLayout:
    """A discovered library: its form, parameters and the files or images to read.

    ``files`` lists the HDF5 files (form ``hdf5``, sorted by system then snapshot);
    ``images`` lists catalog rows (form ``catalog``).
    """

    root: Path
    form: Literal["hdf5", "catalog"]
    param_names: tuple[str, ...]
    units: Mapping[str, str]
    files: tuple[Path, ...] = ()
    images: tuple[LibraryImage, ...] = ()
    catalog: Path | None = None

    def __len__(self) -> int:
        return len(self.files) if self.form == "hdf5" else len(self.images)


@dataclass(frozen=True, eq=False)
class LibraryRecord:
    """One validated library file: (P, H, W) float32 images, scalar parameters, attributes."""

    images: np.ndarray
    params: dict[str, float]
    system: str
    snapshot: int
    attributes: FileAttributes = field(default_factory=FileAttributes)

    @property
    def au_per_pixel(self) -> float | None:
        """Pixel side [AU] recorded in the file's attributes, if any."""
        known = self.attributes.au_per_pixel
        return None if known is None else float(known.value)

    @property
    def intensity_unit(self) -> str | None:
        """Intensity unit recorded in the file's attributes, if any."""
        known = self.attributes.intensity_unit
        return None if known is None else str(known.value)


@dataclass(frozen=True, eq=False)
class LibraryProjection:
    """One projection of a library file: (H, W) float32 image and where it comes from."""

    image: np.ndarray
    system: str
    snapshot: int
    projection: int
    au_per_pixel: float | None
    intensity_unit: str | None


# --------------------------------------------------------------------------- HDF5 schema


def read_library_file(
    path: str | Path,
    param_names: Sequence[str] = schema.DEFAULT_PARAMETERS,
    max_side: int = DEFAULT_MAX_IMAGE_SIDE,
) -> LibraryRecord:
    """Read and validate one HDF5 library file of the schema (:mod:`~protomatch.library.schema`).

    Parameters
    ----------
    path
        ``.../output_<SSSSSS>_isink_<K>_data.hdf5`` (other names: system = file stem,
        snapshot = 0).
    param_names
        Scalar datasets to read as physical parameters.
    max_side
        Largest accepted image side [pixels], checked on each dataset's shape before it
        is read.

    Returns
    -------
    LibraryRecord
        images (P, H, W) float32 for projections 1 … P (P >= 8; all square, same shape),
        params (finite floats), system, snapshot and the pixel scale (AU/px) if recorded.

    Raises
    ------
    InputError
        For a missing or bad dataset, a dataset over ``max_side`` or reading other files,
        an infinite pixel or a non-finite parameter.
    """
    path = Path(path)
    expect_format(path, "hdf5")
    system, snapshot = _system_snapshot(path)
    try:
        with h5py.File(path, "r") as handle:
            images = _read_projections(path, handle, max_side)
            params = {name: _read_scalar(path, handle, name) for name in param_names}
            attributes = read_file_attributes(handle.attrs, images.shape[-1])
    except HDF5_ERRORS as exc:
        raise unreadable(path, "HDF5", exc) from None
    return LibraryRecord(images, params, system, snapshot, attributes)


def _system_snapshot(path: Path) -> tuple[str, int]:
    match = schema.LIBRARY_FILE_PATTERN.match(path.name)
    if match is None:
        return path.stem, 0
    return str(int(match[2])), int(match[1])


def _read_projections(path: Path, handle: h5py.File, max_side: int) -> np.ndarray:
    count = 0
    while schema.projection_dataset(count + 1) in handle:
        count += 1
    if count < schema.N_PROJECTIONS:
        raise InputError(
            path,
            f"missing projection dataset '{schema.projection_dataset(count + 1)}' "
            f"(expected {schema.N_PROJECTIONS} projections)",
        )
    images = np.empty(0, dtype=np.float32)
    for k in range(1, count + 1):  # one projection in memory besides the stack
        image = _read_projection(path, handle, k, max_side)
        if k == 1:
            images = np.empty((count, *image.shape), dtype=np.float32)
        elif image.shape != images.shape[1:]:
            raise InputError(
                path, f"projections differ in shape: {images.shape[1:]} and {image.shape}"
            )
        refuse_infinite(path, image, f"'{schema.projection_dataset(k)}'")
        images[k - 1] = image
    return images


def _read_projection(path: Path, handle: h5py.File, projection: int, max_side: int) -> np.ndarray:
    """One projection as (H, W) float32, its shape, type and storage checked before reading."""
    name = schema.projection_dataset(projection)
    if isinstance(handle.get(name, getlink=True), h5py.ExternalLink):
        raise InputError(path, f"'{name}' is a link to another file; protomatch refuses it")
    if name not in handle:
        raise InputError(path, f"has no projection {projection} (dataset '{name}')")
    dataset = handle[name]
    if not isinstance(dataset, h5py.Dataset):
        raise InputError(path, f"'{name}' is not a dataset")
    if dataset.external or dataset.is_virtual:
        raise InputError(path, f"'{name}' reads its data from other files; protomatch refuses it")
    if dataset.ndim != 2:
        raise InputError(path, f"'{name}' is not a 2-D image (shape {dataset.shape})")
    if dataset.dtype.kind not in "fiu":
        raise InputError(path, f"'{name}' has non-numeric type {dataset.dtype}")
    check_declared_shape(path, dataset.shape, max_side, f"'{name}'")
    image = as_image(path, dataset[()], f"'{name}'", None)
    require_square(path, image, f"'{name}'")
    return image


def refuse_infinite(path: Path, image: np.ndarray, what: str) -> None:
    """Refuse a library image with infinite pixels (NaN stays: it is a blank).

    Parameters
    ----------
    path
        The file it came from, for the message.
    image
        The pixels, any shape.
    what
        How the message names the image.

    Raises
    ------
    InputError
        Naming the file and how many pixels are infinite.
    """
    infinite = int(np.isinf(image).sum())
    if infinite:
        raise InputError(
            path,
            f"{what} has {infinite} infinite pixel(s) (inf or -inf); a library image must "
            "be finite or NaN (blank): fix the file, or skip it with --skip-bad",
        )


def _read_scalar(path: Path, handle: h5py.File, name: str) -> float:
    if name not in handle:
        raise InputError(path, f"missing scalar dataset '{name}'")
    dataset = handle[name]
    if not isinstance(dataset, h5py.Dataset) or dataset.size != 1:
        shape = getattr(dataset, "shape", "a group")
        raise InputError(path, f"'{name}' is not a scalar dataset (shape {shape})")
    if dataset.dtype.kind not in "fiub":
        raise InputError(path, f"'{name}' is not numeric (type {dataset.dtype})")
    value = float(np.asarray(dataset[()]).reshape(()))
    if not np.isfinite(value):
        raise InputError(path, f"parameter '{name}' is not finite ({value})")
    return value


# --------------------------------------------------------------------------- discovery


def discover_library(src: str | Path) -> LibraryLayout:
    """Find the library in ``src``: a ``catalog.csv`` / ``catalog.parquet`` or an HDF5 tree.

    A catalog wins when both exist. HDF5 files whose names do not follow the schema are
    ignored (with a log message).

    Parameters
    ----------
    src
        The library folder.

    Returns
    -------
    LibraryLayout
        Its form, parameter names and units, and the files or catalog rows to read.

    Raises
    ------
    InputError
        If ``src`` is not a folder or holds no library.
    """
    root = Path(src)
    if not root.exists():
        raise InputError(root, "does not exist")
    if not root.is_dir():
        raise InputError(root, "is not a folder; give the library folder")
    for name in ("catalog.parquet", "catalog.csv"):
        if (root / name).is_file():
            return _catalog_layout(root, root / name)
    files = _schema_files(root)
    if not files:
        raise InputError(
            root,
            "holds no library: expected sink<K>/output_<SSSSSS>_isink_<K>_data.hdf5 files "
            "or a catalog.csv / catalog.parquet",
        )
    units = {name: schema.PARAMETER_UNITS[name] for name in schema.DEFAULT_PARAMETERS}
    return LibraryLayout(root, "hdf5", schema.DEFAULT_PARAMETERS, units, files=files)


def _schema_files(root: Path) -> tuple[Path, ...]:
    found: list[tuple[int, int, Path]] = []
    for path in root.rglob("*.hdf5"):
        match = schema.LIBRARY_FILE_PATTERN.match(path.name)
        if match is None:
            log.debug("ignoring %s: not named like a library file", path)
            continue
        if not _inside(root, path):
            raise InputError(
                path,
                f"is a link to {path.resolve()}, outside the library folder {root}; "
                "library files must lie inside it",
            )
        found.append((int(match[2]), int(match[1]), path))
    return tuple(path for _, _, path in sorted(found))


def _inside(root: Path, path: Path) -> bool:
    """Whether ``path``, with every link and '..' resolved, lies inside ``root``."""
    return path.resolve().is_relative_to(root.resolve())


def _catalog_layout(root: Path, catalog: Path) -> LibraryLayout:
    parsed = read_catalog(catalog)
    for i, row in enumerate(parsed.rows):
        if not _inside(root, root / row.file):
            raise InputError(
                catalog,
                f"row {i + 2}: file {row.file!r} lies outside the library folder {root}; "
                "catalog paths must stay inside it (no absolute paths, '..' or links out)",
            )
    images = tuple(
        LibraryImage(
            source=root / row.file,
            system=row.system,
            snapshot=row.snapshot,
            projection=row.projection,
            params=dict(row.params),
            hdu=row.hdu,
        )
        for row in parsed.rows
    )
    return LibraryLayout(
        root, "catalog", parsed.param_names, dict(parsed.units), images=images, catalog=catalog
    )


# --------------------------------------------------------------------------- generic images


def read_library_image(image: LibraryImage, max_side: int = DEFAULT_MAX_IMAGE_SIDE) -> np.ndarray:
    """Read and validate the image of one catalog row.

    Parameters
    ----------
    image
        The catalog row: file (FITS, ``.npy`` or library HDF5), HDU, projection, parameters.
    max_side
        Largest accepted image side [pixels], checked on the file's header before reading.

    Returns
    -------
    numpy.ndarray
        The square (H, W) float32 image (NaN kept as blank).

    Raises
    ------
    InputError
        For a non-finite parameter, an unreadable file, an image over ``max_side``, an
        infinite pixel or an otherwise unusable image.
    """
    path = image.source
    for name, value in image.params.items():
        if not np.isfinite(value):
            raise InputError(path, f"catalog gives a non-finite value for parameter '{name}'")
    fmt = sniff_format(path)
    if fmt == "hdf5":
        pixels = read_library_projection(path, image.projection, max_side).image
    else:
        if fmt == "fits":
            array = read_fits(path, image.hdu, max_side)[0]
        else:
            array = read_npy(path, max_side)
        pixels = as_image(path, array, "image", image.projection)
        require_square(path, pixels, "image")
    refuse_infinite(path, pixels, "image")
    return pixels


def read_library_projection(
    path: str | Path, projection: int | None, max_side: int = DEFAULT_MAX_IMAGE_SIDE
) -> LibraryProjection:
    """Read one projection of a library HDF5 file, with its system, pixel scale and unit.

    Parameters
    ----------
    path
        A library file of the HDF5 schema.
    projection
        1-based projection; None is refused with a message naming the file.
    max_side
        Largest accepted image side [pixels], checked on the dataset before reading.

    Returns
    -------
    LibraryProjection
        The (H, W) float32 image, its system, snapshot and projection, the pixel side [AU]
        and intensity unit when the file records them.
    """
    path = Path(path)
    if projection is None:
        raise InputError(path, "is an HDF5 library file; name a projection, e.g. 'file.hdf5:1'")
    try:
        with h5py.File(path, "r") as handle:
            image = _read_projection(path, handle, projection, max_side)
            attributes = read_file_attributes(handle.attrs, image.shape[-1])
    except HDF5_ERRORS as exc:
        raise unreadable(path, "HDF5", exc) from None
    system, snapshot = _system_snapshot(path)
    scale, unit = attributes.au_per_pixel, attributes.intensity_unit
    return LibraryProjection(
        image,
        system,
        snapshot,
        projection,
        None if scale is None else float(scale.value),
        None if unit is None else str(unit.value),
    )
