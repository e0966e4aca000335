"""Fuzzing every image and catalog reader: hostile files give a result or one ProtomatchError.

Each test starts from small valid files (or writes a header from drawn values) and mutates
bytes, truncates, or declares other shapes and types; the reader must return a result or
raise a one-line :class:`ProtomatchError`, never another exception, and its allocations
must stay bounded by the image-side limit, never by what a header claims.

The number of examples is set by the hypothesis profile (tests/conftest.py):
``HYPOTHESIS_PROFILE=long python -m pytest tests/library/test_fuzz_readers.py`` runs 2000.
"""

from __future__ import annotations

import gzip
import io
import resource
import struct
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd
import pytest
from astropy.io import fits
from hypothesis import given
from hypothesis import strategies as st

from protomatch.errors import ProtomatchError
from protomatch.library import schema
from protomatch.library._catalog import read_catalog
from protomatch.library.readers import (
    LibraryImage,
    discover_library,
    read_library_file,
    read_library_image,
)
from protomatch.matching.observation import read_observation

pytestmark = [
    pytest.mark.filterwarnings("ignore"),  # corrupt files make astropy and h5py warn
]

#: A small image-side limit, so the memory bound below is tight.
MAX_SIDE = 64
#: Largest allocation (traced by tracemalloc: numpy arrays, Python objects) one read may make.
PEAK_BYTES = 24 * 2**20
#: Largest growth of the process's peak resident memory over one test.
RSS_GROWTH_BYTES = 400 * 2**20
SIDE = 16


def _blob(side: int = SIDE) -> np.ndarray:
    y, x = np.mgrid[0:side, 0:side] - side / 2
    return (np.exp(-(x**2 + y**2) / 8.0) + 1e-3).astype(np.float32)


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: kB


def check_reader(read: Callable[[], Any]) -> None:
    """Run one read: a result or a one-line ProtomatchError, and bounded memory.

    Any other exception propagates, so hypothesis reports (and shrinks) the input.
    """
    tracemalloc.start()
    try:
        read()
    except ProtomatchError as exc:
        assert "\n" not in str(exc), str(exc)
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peak < PEAK_BYTES, f"a read allocated {peak / 2**20:.0f} MB"


@pytest.fixture(scope="module")
def rss_bound():
    """Fail the module if the process's peak memory grew by more than RSS_GROWTH_BYTES."""
    before = _peak_rss()
    yield
    assert _peak_rss() - before < RSS_GROWTH_BYTES


# --------------------------------------------------------------------------- valid seeds


def _hdf5_library_bytes() -> bytes:
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as handle:
        for k in range(1, schema.N_PROJECTIONS + 1):
            handle[schema.projection_dataset(k)] = _blob()
        for i, name in enumerate(schema.DEFAULT_PARAMETERS):
            handle[name] = float(i + 1)
        handle.attrs[schema.PIXEL_SCALE_ATTRIBUTE] = 10.0
        handle.attrs["intensity_unit"] = "Jy/sr"
    return buffer.getvalue()


def _fits_bytes(gzipped: bool = False) -> bytes:
    hdu = fits.PrimaryHDU(_blob())
    for key, value in {
        "CTYPE1": "RA---TAN",
        "CTYPE2": "DEC--TAN",
        "CDELT1": -1e-5,
        "CDELT2": 1e-5,
        "CRPIX1": 8.0,
        "CRPIX2": 8.0,
        "BMAJ": 3e-5,
        "BMIN": 2e-5,
        "BPA": 30.0,
        "BUNIT": "Jy/beam",
        "DISTANCE": 140.0,
    }.items():
        hdu.header[key] = value
    buffer = io.BytesIO()
    hdu.writeto(buffer)
    data = buffer.getvalue()
    return gzip.compress(data, mtime=0) if gzipped else data


def _npy_bytes() -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.stack([_blob(), _blob()]))
    return buffer.getvalue()


def _parquet_bytes() -> bytes:
    table = pd.DataFrame({"file": ["a.npy"], "system": ["s"], "mass [Msun]": [1.0]})
    buffer = io.BytesIO()
    table.to_parquet(buffer, index=False)
    return buffer.getvalue()


SEEDS: dict[str, Callable[[], bytes]] = {
    "hdf5": _hdf5_library_bytes,
    "fits": _fits_bytes,
    "fits.gz": lambda: _fits_bytes(gzipped=True),
    "npy": _npy_bytes,
    "parquet": _parquet_bytes,
}


class _Seeds(dict):
    """The seed files by kind; shown short in hypothesis's reports."""

    def __repr__(self) -> str:
        return f"<seeds {sorted(self)}>"


@pytest.fixture(scope="module")
def seeds() -> dict[str, bytes]:
    return _Seeds({name: make() for name, make in SEEDS.items()})


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


# --------------------------------------------------------------------------- strategies


@st.composite
def mutations(draw: st.DrawFn, size: int) -> list[tuple[int, int]]:
    """Up to 8 (position, new byte) flips of a file of ``size`` bytes."""
    flips = st.tuples(st.integers(0, size - 1), st.integers(0, 255))
    return draw(st.lists(flips, min_size=0, max_size=8))


def _mutate(original: bytes, flips: list[tuple[int, int]], keep: float) -> bytes:
    data = bytearray(original)
    for position, value in flips:
        data[position] = value
    return bytes(data[: round(keep * len(data))])


#: Fraction of the file kept: mostly all of it, sometimes a truncation.
KEEP = st.one_of(st.just(1.0), st.floats(0.0, 1.0))


def _write(folder: Path, name: str, data: bytes) -> Path:
    path = folder / name
    path.write_bytes(data)
    return path


# --------------------------------------------------------------------------- byte mutations


@given(data=st.data(), keep=KEEP)
def test_mutated_hdf5_library_file(seeds, folder, rss_bound, data, keep) -> None:
    original = seeds["hdf5"]
    mutated = _mutate(original, data.draw(mutations(len(original))), keep)
    path = _write(folder, "output_000001_isink_1_data.hdf5", mutated)
    check_reader(lambda: read_library_file(path, max_side=MAX_SIDE))
    check_reader(lambda: read_observation(f"{path}:3", max_side=MAX_SIDE))


@pytest.mark.parametrize("kind", ["fits", "fits.gz", "npy"])
@given(data=st.data(), keep=KEEP)
def test_mutated_image_file(seeds, folder, rss_bound, kind, data, keep) -> None:
    original = seeds[kind]
    mutated = _mutate(original, data.draw(mutations(len(original))), keep)
    path = _write(folder, f"image.{kind}", mutated)
    image = LibraryImage(path, "s", 0, 2, {"mass": 1.0})
    check_reader(lambda: read_library_image(image, max_side=MAX_SIDE))
    check_reader(lambda: read_observation(path, max_side=MAX_SIDE))


# --------------------------------------------------------------------------- declared shapes

#: Header values a hostile or broken file may hold, as FITS card value text.
FITS_NUMBERS = st.one_of(
    st.integers(-(2**40), 2**40).map(str),
    st.sampled_from(["0", "-1", "1", "16", "65", "100000", "99999999999999999999"]),
    st.floats(allow_nan=False, allow_infinity=False).map(lambda v: f"{v:.6E}"),
    st.sampled_from(["NAN", "INF", "-INF", "'abc'", "T", "F", "''", "1.5", "1E400"]),
)
FITS_SIDES = st.one_of(st.integers(-3, 2 * MAX_SIDE), st.sampled_from([100000, 2**31, 0]))
OPTIONAL_CARDS = (
    "BSCALE",
    "BZERO",
    "BLANK",
    "CDELT1",
    "CDELT2",
    "CRPIX1",
    "CTYPE1",
    "CUNIT1",
    "PC1_1",
    "CD1_1",
    "BMAJ",
    "BMIN",
    "BPA",
    "DISTANCE",
    "BUNIT",
    "EXTEND",
)


def _card(key: str, value: str) -> bytes:
    return f"{key:<8}= {value:>20}".ljust(80)[:80].encode("ascii")


@st.composite
def fits_files(draw: st.DrawFn) -> bytes:
    """A FITS header of drawn NAXISn, BITPIX and keywords, then drawn bytes of data."""
    naxis = draw(st.integers(0, 4))
    bitpix = draw(st.sampled_from(["8", "16", "32", "64", "-32", "-64", "0", "12", "'x'"]))
    cards = [_card("SIMPLE", "T"), _card("BITPIX", bitpix), _card("NAXIS", str(naxis))]
    cards += [_card(f"NAXIS{k}", str(draw(FITS_SIDES))) for k in range(1, naxis + 1)]
    for key in draw(st.lists(st.sampled_from(OPTIONAL_CARDS), max_size=6, unique=True)):
        cards.append(_card(key, draw(FITS_NUMBERS)))
    cards.append(b"END".ljust(80))
    header = b"".join(cards)
    header += b" " * (-len(header) % 2880)
    payload = draw(st.binary(max_size=256)) * draw(st.integers(0, 64))
    return header + payload


@given(data=fits_files())
def test_fits_headers_declaring_any_shape(folder, rss_bound, data) -> None:
    path = _write(folder, "declared.fits", data)
    check_reader(lambda: read_observation(path, max_side=MAX_SIDE))
    check_reader(lambda: read_library_image(LibraryImage(path, "s", 0, 1, {}), MAX_SIDE))


NPY_TYPES = st.sampled_from(
    ["<f4", ">f8", "|u1", "<i2", "<i8", "|b1", "|O", "<U3", "|S4", "|V8", "<c8", "<f2", "xx"]
)


@st.composite
def npy_files(draw: st.DrawFn) -> bytes:
    """A ``.npy`` header of a drawn type and shape (maybe invalid), then drawn data bytes."""
    shape = draw(st.lists(st.integers(-2, 2**33), max_size=4))
    descr = draw(NPY_TYPES)
    shape_text = "(" + "".join(f"{n}, " for n in shape) + ")"
    text = draw(
        st.one_of(
            st.just(f"{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape_text}, }}"),
            st.text(max_size=80),
        )
    )
    header = text.encode("latin1", "replace")
    header += b" " * (-(len(header) + 11) % 64) + b"\n"
    magic = b"\x93NUMPY" + bytes([draw(st.sampled_from([1, 2, 3, 9])), 0])
    length = struct.pack("<H", len(header)) if magic[6] == 1 else struct.pack("<I", len(header))
    payload = draw(st.binary(max_size=512))
    return magic + length + header + payload


@given(data=npy_files())
def test_npy_headers_declaring_any_shape(folder, rss_bound, data) -> None:
    path = _write(folder, "declared.npy", data)
    check_reader(lambda: read_observation(path, max_side=MAX_SIDE))


HDF5_TYPES = st.sampled_from(["f4", "f8", "u1", "i8", "?", "c8", "S4", "O", "compound", "f2"])


def _hdf5_type(name: str) -> Any:
    if name == "O":
        return h5py.string_dtype()
    if name == "compound":
        return np.dtype([("a", "f4"), ("b", "i4")])
    return np.dtype(name)


@st.composite
def hdf5_files(draw: st.DrawFn) -> dict[str, Any]:
    """Projection datasets of drawn shapes and types, never written (so the file stays small)."""
    shapes = st.lists(st.integers(0, 30000), min_size=0, max_size=3).map(tuple)
    return {
        "shape": draw(shapes),
        "dtype": draw(HDF5_TYPES),
        "other": draw(st.booleans()),  # the other projections: valid, or the same declaration
        "parameter_shape": draw(st.sampled_from([(), (1,), (2,), (30000, 30000)])),
    }


@given(spec=hdf5_files())
def test_hdf5_datasets_declaring_any_shape(folder, rss_bound, spec) -> None:
    path = folder / "output_000002_isink_2_data.hdf5"
    dtype = _hdf5_type(spec["dtype"])
    with h5py.File(path, "w") as handle:
        for k in range(1, schema.N_PROJECTIONS + 1):
            name = schema.projection_dataset(k)
            if k == 1 or not spec["other"]:
                chunks = True if spec["shape"] and all(spec["shape"]) else None
                handle.create_dataset(name, shape=spec["shape"], dtype=dtype, chunks=chunks)
            else:
                handle[name] = _blob()
        for name in schema.DEFAULT_PARAMETERS:
            handle.create_dataset(name, shape=spec["parameter_shape"], dtype="f8")
    check_reader(lambda: read_library_file(path, max_side=MAX_SIDE))
    check_reader(lambda: read_observation(f"{path}:1", max_side=MAX_SIDE))


# --------------------------------------------------------------------------- catalogs

CATALOG_COLUMNS = st.sampled_from(
    [
        "file",
        "system",
        "snapshot",
        "hdu",
        "projection",
        "mass [Msun]",
        "mass",
        "=HYPERLINK(1)",
        "$x^$",
        "",
        "age [yr",
    ]
)
CATALOG_CELLS = st.one_of(
    st.sampled_from(
        ["a.npy", "../a.npy", "/etc/passwd", "sub/../a.npy", "link.npy", "a.npy\x00", "1", "-1"]
    ),
    st.sampled_from(["1.5", "nan", "inf", "", "2", "0", "1e400", "=1+1", '"x,y"', "ÿ"]),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=12),
)


@st.composite
def catalog_texts(draw: st.DrawFn) -> str:
    columns = draw(st.lists(CATALOG_COLUMNS, min_size=1, max_size=6))
    rows = draw(st.lists(st.lists(CATALOG_CELLS, min_size=len(columns)), max_size=4))
    separator = draw(st.sampled_from([",", ",", ";", "\t"]))
    lines = [separator.join(columns)] + [separator.join(row) for row in rows]
    return "\n".join(lines) + draw(st.sampled_from(["\n", "", "\n\n,,"]))


@pytest.fixture(scope="module")
def catalog_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A library folder holding one valid image and a link to one outside it."""
    root = tmp_path_factory.mktemp("catalog") / "library"
    root.mkdir()
    np.save(root / "a.npy", _blob())
    np.save(root.parent / "outside.npy", _blob())
    (root / "link.npy").symlink_to(root.parent / "outside.npy")
    return root


def _read_whole_library(root: Path) -> None:
    layout = discover_library(root)
    for image in layout.images:
        read_library_image(image, MAX_SIDE)


@given(text=catalog_texts())
def test_catalog_csv_of_any_content(catalog_folder, rss_bound, text) -> None:
    (catalog_folder / "catalog.csv").write_text(text, encoding="utf-8")
    check_reader(lambda: _read_whole_library(catalog_folder))


@given(data=st.data(), keep=KEEP)
def test_mutated_catalog_parquet(seeds, folder, rss_bound, data, keep) -> None:
    original = seeds["parquet"]
    mutated = _mutate(original, data.draw(mutations(len(original))), keep)
    path = _write(folder, "catalog.parquet", mutated)
    check_reader(lambda: read_catalog(path))


# --------------------------------------------------------------------------- found by fuzzing


def _one_line_error(read: Callable[[], Any], match: str) -> None:
    with pytest.raises(ProtomatchError, match=match) as info:
        read()
    assert "\n" not in str(info.value)


def test_unparsable_fits_card_is_dropped_with_a_warning(seeds, folder, caplog) -> None:
    broken = bytearray(seeds["fits"])
    broken[490] = 0  # a NUL inside the value of CTYPE1 (card 7): astropy cannot parse it
    path = _write(folder, "card.fits", bytes(broken))
    observation = read_observation(path)
    assert observation.image.shape == (SIDE, SIDE)
    assert observation.header["BUNIT"] == "Jy/beam" and "CTYPE1" not in observation.header
    assert any("1 unreadable header card" in r.getMessage() for r in caplog.records)


def test_corrupt_gzip_stream_is_one_line(seeds, folder) -> None:
    broken = bytearray(seeds["fits.gz"])
    broken[10] = 0  # the deflate stream's first byte: zlib.error, not an OSError
    path = _write(folder, "broken.fits.gz", bytes(broken))
    _one_line_error(lambda: read_observation(path), "is a corrupt gzip file")


def test_unreadable_npy_header_is_one_line(seeds, folder) -> None:
    broken = bytearray(seeds["npy"])
    broken[8] = 1  # header length 1: numpy's header parser raises tokenize.TokenError
    path = _write(folder, "header.npy", bytes(broken))
    _one_line_error(lambda: read_observation(path), "unreadable .npy header")


def test_catalog_parser_message_is_one_line(catalog_folder) -> None:
    (catalog_folder / "catalog.csv").write_text("file\na.npy\n\n,,")  # pandas: a 2-line message
    _one_line_error(lambda: discover_library(catalog_folder), "cannot be read as a table")


@pytest.mark.parametrize(
    ("position", "value"),
    [(24, 128), (1397, 65)],  # a text cell that is not UTF-8; broken pandas metadata
)
def test_corrupt_parquet_catalog_is_one_line(seeds, folder, position, value) -> None:
    broken = bytearray(seeds["parquet"])
    broken[position] = value
    path = _write(folder, "catalog.parquet", bytes(broken))
    _one_line_error(lambda: read_catalog(path), "cannot be read as a table")
