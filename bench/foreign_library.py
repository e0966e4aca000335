"""Rewrite a simulated library as another simulation code might have written it.

``python bench/foreign_library.py SRC_LIBRARY OUT`` reads a library written by
``protomatch simulate`` and writes the same tree of files to ``OUT``, changed the way a
library from elsewhere differs from protomatch's own:

* images in Jy/sr instead of MJy/sr (values x 1e6), stored as float64;
* the attributes ``au_per_pixel``, ``field_of_view_au`` and ``intensity_unit`` are gone; the
  pixel side [AU] is the file attribute ``pixel_size``, a name protomatch does not guess, and
  the unit is written nowhere (only the user knows it);
* the seven parameter datasets, the other attributes and ``manifest.json`` (which
  ``protomatch observe`` reads to know which systems the library holds) are copied unchanged.

Such a library tests that ingest, matching and evaluation ask for what they cannot know
instead of assuming protomatch's conventions. Nothing is written unless every source file
reads; ``OUT`` must not exist yet.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from protomatch.library import schema

#: MJy/sr -> Jy/sr.
JY_PER_MJY = 1e6
#: The attribute holding the pixel side [AU] in the rewritten files.
FOREIGN_PIXEL_ATTRIBUTE = "pixel_size"
#: Source attributes that the rewritten files do not carry.
DROPPED_ATTRIBUTES = (
    schema.PIXEL_SCALE_ATTRIBUTE,
    schema.INTENSITY_UNIT_ATTRIBUTE,
    "field_of_view_au",
)
SOURCE_UNIT = "MJy/sr"
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class Rewritten:
    """What :func:`rewrite_library` wrote.

    Attributes
    ----------
    out
        The new library folder.
    n_files, n_images
        HDF5 files and images written.
    pixel_sizes_au
        The distinct ``pixel_size`` values written [AU].
    peak_jy_sr
        Largest image value written [Jy/sr].
    """

    out: Path
    n_files: int
    n_images: int
    pixel_sizes_au: tuple[float, ...]
    peak_jy_sr: float

    def describe(self) -> str:
        """A few lines: what was written, in which unit, with which attributes."""
        sizes = ", ".join(f"{s:g}" for s in self.pixel_sizes_au)
        return "\n".join(
            [
                f"Wrote a foreign-style library to {self.out}",
                f"  {self.n_files} HDF5 files, {self.n_images} images as float64 in Jy/sr "
                f"(x{JY_PER_MJY:g} from MJy/sr; the unit is written nowhere), peak "
                f"{self.peak_jy_sr:.4g} Jy/sr",
                f"  attribute {FOREIGN_PIXEL_ATTRIBUTE!r} = {sizes} AU per pixel; removed: "
                + ", ".join(DROPPED_ATTRIBUTES),
                f"  {MANIFEST} copied unchanged",
            ]
        )


def library_files(root: Path) -> list[Path]:
    """The library files under ``root``, sorted, in the ``sink<K>/output_...hdf5`` layout.

    Parameters
    ----------
    root
        A library folder written by ``protomatch simulate``.

    Returns
    -------
    list of pathlib.Path
        Every file whose name matches the schema, inside a ``sink*`` folder.

    Raises
    ------
    SystemExit
        When ``root`` holds no library file or no ``manifest.json``.
    """
    if not (root / MANIFEST).is_file():
        raise SystemExit(f"foreign_library: {root} has no {MANIFEST}; is it a simulated library?")
    files = sorted(
        path
        for path in root.glob("sink*/*.hdf5")
        if schema.LIBRARY_FILE_PATTERN.match(path.name) is not None
    )
    if not files:
        raise SystemExit(f"foreign_library: {root} holds no sink*/output_*_isink_*_data.hdf5")
    return files


def rewrite_file(source: Path, target: Path) -> tuple[float, float]:
    """Write one library file in the foreign convention.

    Parameters
    ----------
    source
        A protomatch library file (images in MJy/sr, ``au_per_pixel`` attribute).
    target
        The file to write (its folder is created).

    Returns
    -------
    tuple of float
        The pixel side [AU] and the largest image value written [Jy/sr].

    Raises
    ------
    SystemExit
        When ``source`` lacks the pixel scale or is not in MJy/sr.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(source, "r") as src, h5py.File(target, "w") as out:
        pixel_au = _pixel_scale(src, source)
        for name, value in src.attrs.items():
            if name not in DROPPED_ATTRIBUTES:
                out.attrs[name] = value
        out.attrs[FOREIGN_PIXEL_ATTRIBUTE] = pixel_au
        peak = 0.0
        for index in range(1, schema.N_PROJECTIONS + 1):
            name = schema.projection_dataset(index)
            image = src[name][()].astype(np.float64) * JY_PER_MJY
            peak = max(peak, float(image.max()))
            _copy_attrs(src[name], out.create_dataset(name, data=image))
        for name in schema.DEFAULT_PARAMETERS:
            _copy_attrs(src[name], out.create_dataset(name, data=src[name][()]))
    return pixel_au, peak


def rewrite_library(src: Path, out: Path) -> Rewritten:
    """Rewrite every file of ``src`` into ``out`` (written under a temporary name, then renamed).

    Parameters
    ----------
    src
        A library written by ``protomatch simulate``.
    out
        The folder to create; refused if it exists.

    Returns
    -------
    Rewritten
        Counts, pixel sizes and the peak value written.

    Raises
    ------
    SystemExit
        When ``out`` exists or a source file is not a protomatch library file; nothing is
        left behind then.
    """
    if out.exists():
        raise SystemExit(f"foreign_library: {out} exists; give a new folder")
    files = library_files(src)
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    sizes: set[float] = set()
    peak = 0.0
    try:
        for path in files:
            pixel_au, file_peak = rewrite_file(path, partial / path.relative_to(src))
            sizes.add(pixel_au)
            peak = max(peak, file_peak)
        shutil.copy2(src / MANIFEST, partial / MANIFEST)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    partial.rename(out)
    return Rewritten(
        out=out,
        n_files=len(files),
        n_images=len(files) * schema.N_PROJECTIONS,
        pixel_sizes_au=tuple(sorted(sizes)),
        peak_jy_sr=peak,
    )


def _pixel_scale(src: h5py.File, path: Path) -> float:
    unit = str(src.attrs.get(schema.INTENSITY_UNIT_ATTRIBUTE, ""))
    if not unit.startswith(SOURCE_UNIT):
        raise SystemExit(f"foreign_library: {path} is in {unit!r}, not {SOURCE_UNIT}")
    if schema.PIXEL_SCALE_ATTRIBUTE not in src.attrs:
        raise SystemExit(f"foreign_library: {path} has no {schema.PIXEL_SCALE_ATTRIBUTE!r}")
    return float(src.attrs[schema.PIXEL_SCALE_ATTRIBUTE])


def _copy_attrs(source: h5py.Dataset, target: h5py.Dataset) -> None:
    for name, value in source.attrs.items():
        target.attrs[name] = value


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry: ``foreign_library.py SRC_LIBRARY OUT``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", type=Path, help="library written by `protomatch simulate`")
    parser.add_argument("out", type=Path, help="new folder for the rewritten library")
    args = parser.parse_args(argv)
    print(rewrite_library(args.src, args.out).describe())
    return 0


if __name__ == "__main__":
    sys.exit(main())
