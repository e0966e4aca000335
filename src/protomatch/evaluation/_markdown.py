"""Text of the evaluation records: Markdown table cells and rows, strict-JSON values.

Shared by the library evaluation's and the observation evaluation's tables
(:mod:`protomatch.evaluation._library_figures`, :mod:`protomatch.evaluation._observation_figures`)
and by both metrics records, which are written as strict JSON (a missing number is ``null``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def fmt(value: Any, digits: int = 3) -> str:
    """A number with ``digits`` decimals; "–" for None and non-finite floats.

    Parameters
    ----------
    value : Any
        A number of a metrics record, or None where it is missing.
    digits : int
        Decimals shown.

    Returns
    -------
    str
        The table cell's text.
    """
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return f"{value:.{digits}f}"


def table_row(cells: Sequence[str]) -> str:
    """One row of a Markdown table.

    Parameters
    ----------
    cells : sequence of str
        The row's cells, in column order.

    Returns
    -------
    str
        ``| a | b | ... |``.
    """
    return "| " + " | ".join(cells) + " |"


def nan_if_none(value: Any) -> float:
    """A number of a JSON-safe record as a float: None (a missing number) becomes NaN.

    Parameters
    ----------
    value : Any
        A number, or None.

    Returns
    -------
    float
        ``float(value)``, or NaN for None.
    """
    return math.nan if value is None else float(value)


def json_safe(value: Any) -> Any:
    """A record as strict JSON can hold it: NaN/inf -> None, numpy scalars -> Python.

    Parameters
    ----------
    value : Any
        A metrics record: nested mappings, lists and tuples of numbers and strings.

    Returns
    -------
    Any
        The same structure with mappings as dicts with str keys and tuples as lists.
    """
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
