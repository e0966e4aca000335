"""The true parameters of mock observations, as ``protomatch observe`` records them.

A folder of mock observations holds the FITS files, ``truth.csv`` (one row per file: the
system's parameters, distance, beam, noise and viewing geometry) and a manifest of kind
``observations``. This module is the one reader of that table, and it is strict: a table
that lacks a column, has a non-numeric parameter or lists a missing file is refused with
one line naming it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from protomatch._artefact import read_manifest
from protomatch.errors import InputError

__all__ = [
    "MANIFEST_FILE",
    "MANIFEST_KIND",
    "MANIFEST_VERSION",
    "TRUTH_FILE",
    "read_truth",
    "truth_of",
]

MANIFEST_KIND = "observations"
MANIFEST_VERSION = 1
MANIFEST_FILE = "manifest.json"
TRUTH_FILE = "truth.csv"


def read_truth(folder: Path, names: Sequence[str]) -> pd.DataFrame:
    """The truth table of a folder of mock observations, checked.

    Parameters
    ----------
    folder
        A folder written by ``protomatch observe``.
    names
        Parameters that must be present, numeric and finite.

    Returns
    -------
    pandas.DataFrame
        One row per observation file (column ``file``, the parameters, ``distance_pc`` and
        the observing conditions), every listed file present in ``folder``.
    """
    if not folder.is_dir():
        raise InputError(folder, "is not a folder of observations (run 'protomatch observe')")
    path = folder / TRUTH_FILE
    if not path.is_file():
        raise InputError(
            folder, f"has no {TRUTH_FILE}; give a folder written by 'protomatch observe'"
        )
    try:
        table = pd.read_csv(path)
    except (ValueError, OSError, UnicodeDecodeError) as exc:
        raise InputError(path, f"cannot be read as CSV ({' '.join(str(exc).split())})") from None
    missing = [c for c in ("file", *names) if c not in table.columns]
    if missing:
        raise InputError(path, f"lacks column(s) {', '.join(missing)}")
    if table.empty:
        raise InputError(path, "has no rows")
    values = table[list(names)].apply(pd.to_numeric, errors="coerce")
    if not np.isfinite(values.to_numpy(dtype=np.float64)).all():
        raise InputError(path, "has missing or non-numeric parameter values")
    absent = [f for f in table["file"].astype(str) if not (folder / f).is_file()]
    if absent:
        raise InputError(path, f"lists {len(absent)} missing file(s), e.g. {absent[0]}")
    return table.reset_index(drop=True)


def truth_of(source: Path, names: Sequence[str]) -> dict[str, float] | None:
    """The true parameters of one mock observation, or None if ``source`` is not one.

    Parameters
    ----------
    source
        An observation file.
    names
        Parameters wanted.

    Returns
    -------
    dict or None
        ``{name: value}`` when ``source`` lies in a folder whose manifest says ``protomatch
        observe`` wrote it and its ``truth.csv`` lists it; None for any other file. A truth
        table that is there but malformed is an :class:`InputError`, as in
        :func:`read_truth`.
    """
    folder = Path(source).parent
    try:
        read_manifest(folder / MANIFEST_FILE, MANIFEST_KIND, MANIFEST_VERSION)
    except InputError:
        return None  # not a folder of mock observations
    table = read_truth(folder, names)
    rows = table[table["file"].astype(str) == Path(source).name]
    if len(rows) > 1:
        raise InputError(folder / TRUTH_FILE, f"lists {Path(source).name} {len(rows)} times")
    if rows.empty:
        return None
    return {name: float(rows.iloc[0][name]) for name in names}
