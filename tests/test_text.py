"""Names made safe to show, and CSV cells a spreadsheet never runs as formulas."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from protomatch._text import csv_bytes, safe_name, spreadsheet_cell


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        ("plain.fits", "plain.fits"),
        (b"obs_\xff\xfe.fits", "obs_\\xff\\xfe.fits"),
        ("obs_\udcff.fits", "obs_\\xff.fits"),  # how Python decodes the byte 0xff
        (Path("a/\udc80b"), "a/\\x80b"),
        ("red\x1b[31m\nnext\ttab", "red\\x1b[31m\\x0anext\\x09tab"),
        ("lone \ud800 surrogate", "lone \\ud800 surrogate"),
        ("ünïcödé $x^$ ok", "ünïcödé $x^$ ok"),
    ],
)
def test_safe_name(name, shown) -> None:
    assert safe_name(name) == shown
    shown.encode("utf-8")


@pytest.mark.parametrize(
    ("cell", "written"),
    [
        ("=1+1", "'=1+1"),
        ("+SUM(A1)", "'+SUM(A1)"),
        ("-2+3", "'-2+3"),
        ("@cmd", "'@cmd"),
        ("\tx", "'\\x09x"),
        ("\rx", "'\\x0dx"),
        ("a=1", "a=1"),
        (-1.5, -1.5),
        (3, 3),
        (None, None),
    ],
)
def test_spreadsheet_cell(cell, written) -> None:
    assert spreadsheet_cell(cell) == written


def test_csv_bytes_neutralises_text_and_keeps_numbers() -> None:
    table = pd.DataFrame(
        {
            "system": ["=cmd()", "-3", "ok"],
            "=x": [-1.5, 2.0, np.nan],
            "count": [-1, 0, 7],
            "flag": [True, False, True],
        }
    )
    read = pd.read_csv(io.BytesIO(csv_bytes(table)))
    assert list(read.columns) == ["system", "'=x", "count", "flag"]
    assert list(read["system"]) == ["'=cmd()", "'-3", "ok"]
    np.testing.assert_array_equal(read["'=x"], [-1.5, 2.0, np.nan])
    assert read["count"].tolist() == [-1, 0, 7] and read["flag"].tolist() == [True, False, True]
    assert list(table["system"]) == ["=cmd()", "-3", "ok"]  # the table itself is unchanged
