r"""Text from files and users made safe to show: in a terminal, a web page, a figure or a sheet.

A file name is bytes on POSIX; Python decodes the bytes that are not UTF-8 to lone
surrogates, which cannot be written as UTF-8 (Parquet, JSON, HTML, a figure's font all
fail on them). :func:`safe_name` shows such bytes as ``\xNN`` and control characters
(an escape sequence that would recolour a terminal, a newline) as escapes, so one name is
always one printable line. :func:`csv_bytes` writes a table that a spreadsheet opens
without running any cell as a formula.
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

#: Lone surrogates (undecodable bytes, or broken UTF-16) and control characters.
_UNSAFE = re.compile("[\ud800-\udfff\x00-\x1f\x7f-\x9f]")
#: Undecodable file-name bytes 0x80-0xFF are decoded to these surrogates (PEP 383).
_ESCAPED_BYTES = range(0xDC80, 0xDD00)
#: A spreadsheet reads a cell starting with one of these as a formula (or part of one).
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def safe_name(name: str | bytes | os.PathLike[Any]) -> str:
    r"""A file name (or any text) as one printable line that encodes as UTF-8.

    Parameters
    ----------
    name
        A path, a string (maybe holding surrogate-escaped bytes) or raw bytes.

    Returns
    -------
    str
        The name with each undecodable byte shown as ``\xNN``, other lone surrogates as
        ``\uNNNN`` and control characters (newline, escape, ...) as ``\xNN``; unchanged
        when it has none.
    """
    return _UNSAFE.sub(_escape, os.fsdecode(name))


def _escape(match: re.Match[str]) -> str:
    code = ord(match[0])
    if code in _ESCAPED_BYTES:
        return f"\\x{code - 0xDC00:02x}"
    return f"\\u{code:04x}" if code > 0xFF else f"\\x{code:02x}"


def spreadsheet_cell(value: Any) -> Any:
    """A text cell a spreadsheet will not read as a formula; other values unchanged.

    Parameters
    ----------
    value
        One cell.

    Returns
    -------
    Any
        For text: :func:`safe_name` of it, with a leading ``'`` when it starts with ``=``,
        ``+``, ``-``, ``@``, a tab or a carriage return. Numbers (negative ones too) and
        missing values are returned as they are.
    """
    if not isinstance(value, str):
        return value
    if value.startswith(_FORMULA_STARTS):
        value = "'" + value
    return safe_name(value)


def csv_bytes(table: pd.DataFrame) -> bytes:
    """A table as UTF-8 CSV bytes, every text cell and column name spreadsheet-safe.

    Parameters
    ----------
    table
        Any table; numeric and boolean columns are written as they are.

    Returns
    -------
    bytes
        ``table.to_csv(index=False)`` of the neutralised table (:func:`spreadsheet_cell`).
    """
    import pandas as pd

    safe = table.copy()
    for column in safe.columns:
        series = safe[column]
        if not (pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series)):
            safe[column] = series.map(spreadsheet_cell).astype(object)
    safe.columns = [spreadsheet_cell(str(column)) for column in safe.columns]
    return safe.to_csv(index=False).encode("utf-8")
