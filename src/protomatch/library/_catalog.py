"""Parse the catalog table of a generic library (images + ``catalog.csv`` / ``.parquet``).

Columns: ``file`` and ``system`` (required); ``snapshot``, ``hdu``, ``projection``
(optional integers); every other numeric column is a physical parameter. A column named
``name [unit]`` is parameter ``name`` in unit ``unit``. Non-numeric extra columns are
ignored. Problems with the table itself raise :class:`InputError` naming the catalog; a bad
value in one row's parameters is left for the reader of that row, so it can be skipped.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from protomatch.errors import InputError
from protomatch.library.formats import READ_ERRORS, brief

log = logging.getLogger(__name__)

_REQUIRED = ("file", "system")
_RESERVED = frozenset({"file", "system", "snapshot", "hdu", "projection"})
_UNIT_PATTERN = re.compile(r"^\s*(.+?)\s*\[(.*)\]\s*$")


@dataclass(frozen=True)
class CatalogRow:
    """One catalog row: image file (relative to the catalog), ids and parameters."""

    file: str
    system: str
    snapshot: int
    projection: int
    hdu: int | None
    params: Mapping[str, float]


@dataclass(frozen=True)
class Catalog:
    """A parsed catalog: parameter names, their units and the rows."""

    param_names: tuple[str, ...]
    units: Mapping[str, str]
    rows: tuple[CatalogRow, ...]


def read_catalog(path: Path) -> Catalog:
    """Read and validate a catalog table.

    Parameters
    ----------
    path
        ``catalog.csv`` or ``catalog.parquet``.

    Returns
    -------
    Catalog
        Parameter names and units, and one row per image.

    Raises
    ------
    InputError
        Naming the catalog, for a missing column, no rows, no numeric parameter, empty ids
        or a bad integer column.
    """
    table = _load_table(path)
    missing = [name for name in _REQUIRED if name not in table.columns]
    if missing:
        raise InputError(path, f"missing required column(s) {', '.join(map(repr, missing))}")
    if table.empty:
        raise InputError(path, "has no rows")
    columns = _parameter_columns(path, table)
    if table["file"].isna().any() or table["system"].isna().any():
        raise InputError(path, "has empty 'file' or 'system' values")
    snapshots = _int_column(path, table, "snapshot", minimum=0)
    hdus = _int_column(path, table, "hdu", minimum=0)
    projections = _int_column(path, table, "projection", minimum=1)
    values = table[list(columns)].to_numpy(dtype=np.float64)
    names = tuple(columns.values())
    rows = tuple(
        CatalogRow(
            file=str(table["file"].iloc[i]),
            system=_system_id(table["system"].iloc[i]),
            snapshot=_or_default(snapshots[i], 0),
            projection=_or_default(projections[i], 1),
            hdu=hdus[i],
            params=dict(zip(names, map(float, values[i]), strict=True)),
        )
        for i in range(len(table))
    )
    units = {name: unit for name, unit in zip(names, _units(columns), strict=True)}
    return Catalog(names, units, rows)


def _load_table(path: Path) -> pd.DataFrame:
    """The table, its text columns decoded now (Arrow decodes them lazily, on first access)."""
    try:
        if path.suffix == ".parquet":
            table = pd.read_parquet(path)
        else:
            table = pd.read_csv(path, skipinitialspace=True)
        text = [c for c in table.columns if not pd.api.types.is_numeric_dtype(table[c])]
        return table.astype(dict.fromkeys(text, object))
    except pd.errors.EmptyDataError:
        raise InputError(path, "is empty") from None
    except (*READ_ERRORS, pd.errors.ParserError, pa.ArrowException) as exc:
        raise InputError(path, f"cannot be read as a table ({brief(exc)})") from None


def _parameter_columns(path: Path, table: pd.DataFrame) -> dict[str, str]:
    """Map catalog column → parameter name for every numeric non-reserved column."""
    columns: dict[str, str] = {}
    for column in table.columns:
        name = str(column)
        if name in _RESERVED:
            continue
        series = table[column]
        if not pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series):
            log.debug("%s: ignoring non-numeric column %r", path, name)
            continue
        match = _UNIT_PATTERN.match(name)
        param = match[1] if match else name.strip()
        if param in columns.values():
            raise InputError(path, f"parameter '{param}' appears in more than one column")
        columns[name] = param
    if not columns:
        raise InputError(path, "has no numeric parameter columns")
    return columns


def _units(columns: Mapping[str, str]) -> list[str]:
    units = []
    for column in columns:
        match = _UNIT_PATTERN.match(column)
        units.append(match[2].strip() if match else "")
    return units


def _int_column(path: Path, table: pd.DataFrame, name: str, minimum: int) -> list[int | None]:
    if name not in table.columns:
        return [None] * len(table)
    result: list[int | None] = []
    for i, value in enumerate(table[name]):
        if pd.isna(value):
            result.append(None)
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = float("nan")
        if not (np.isfinite(number) and number.is_integer() and number >= minimum):
            raise InputError(path, f"row {i + 2}: '{name}' must be an integer >= {minimum}")
        result.append(int(number))
    return result


def _or_default(value: int | None, default: int) -> int:
    return default if value is None else value


def _system_id(value: object) -> str:
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value).strip()
