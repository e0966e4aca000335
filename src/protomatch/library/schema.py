"""The simulation library file schema, shared by the simulator and the readers.

A library is a folder tree with one HDF5 file per snapshot of one system ("sink")::

    <root>/sink<K>/output_<SSSSSS>_isink_<K>_data.hdf5

holding ``intensity_projection_1`` … ``intensity_projection_8`` (2-D images of one system
seen from eight directions) and seven 0-d scalar datasets of physical parameters.
"""

from __future__ import annotations

import re
from pathlib import Path
from types import MappingProxyType

N_PROJECTIONS = 8

#: Default physical parameters of the HDF5 schema and their units.
PARAMETER_UNITS = MappingProxyType(
    {
        "Envelope_mass": "Msun",
        "accretion_rate": "Msun/yr",
        "temperature": "K",
        "mass": "Msun",
        "disk_size": "AU",
        "luminosity": "Lsun",
        "age": "yr",
    }
)
DEFAULT_PARAMETERS: tuple[str, ...] = tuple(PARAMETER_UNITS)

#: File attribute holding the pixel scale, astronomical units per pixel.
PIXEL_SCALE_ATTRIBUTE = "au_per_pixel"

#: File attribute naming the intensity unit of the images (e.g. "MJy/sr").
INTENSITY_UNIT_ATTRIBUTE = "intensity_unit"

LIBRARY_FILE_PATTERN = re.compile(r"^output_(\d+)_isink_(\d+)_data\.hdf5$")


def projection_dataset(index: int) -> str:
    """The dataset name of one projection.

    Parameters
    ----------
    index
        1-based projection, 1 … 8.

    Returns
    -------
    str
        ``"intensity_projection_<index>"``.
    """
    return f"intensity_projection_{index}"


def library_file_path(root: Path, system: int, snapshot: int) -> Path:
    """Where one snapshot of one system lives in a library.

    Parameters
    ----------
    root
        The library folder.
    system
        System (sink) number.
    snapshot
        Snapshot (output) number.

    Returns
    -------
    pathlib.Path
        ``root/sink<system>/output_<snapshot:06d>_isink_<system>_data.hdf5``.
    """
    return root / f"sink{system}" / f"output_{snapshot:06d}_isink_{system}_data.hdf5"
