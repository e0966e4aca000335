"""Readers: HDF5 library files, catalog libraries, observations, and every bad input."""

from __future__ import annotations

import json
import pathlib
import pickle
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from protomatch.errors import InputError
from protomatch.library import schema
from protomatch.library.readers import (
    discover_library,
    read_library_file,
    read_library_image,
)
from protomatch.matching.observation import read_observation

PARAMS = {name: float(i + 1) for i, name in enumerate(schema.DEFAULT_PARAMETERS)}


def _blob(side: int = 24, width: float = 4.0) -> np.ndarray:
    y, x = np.mgrid[0:side, 0:side] - side / 2
    return np.exp(-(x**2 + y**2) / (2 * width**2)) + 1e-3


def write_library_file(
    path: Path,
    *,
    images: dict[str, np.ndarray] | None = None,
    params: dict[str, float] | None = None,
    au_per_pixel: float | None = 10.0,
) -> Path:
    """Write one schema file; ``images``/``params`` override or (value None) drop entries."""
    path.parent.mkdir(parents=True, exist_ok=True)
    datasets = {schema.projection_dataset(k): _blob(width=2.0 + k) for k in range(1, 9)}
    datasets.update(images or {})
    values = {**PARAMS, **(params or {})}
    with h5py.File(path, "w") as handle:
        for name, data in datasets.items():
            if data is not None:
                handle[name] = data
        for name, value in values.items():
            if value is not None:
                handle[name] = value
        handle["extra_dataset"] = np.arange(5)
        handle.attrs["code_version"] = "ramses-x"
        if au_per_pixel is not None:
            handle.attrs[schema.PIXEL_SCALE_ATTRIBUTE] = au_per_pixel
    return path


class _Tripwire:
    """Unpickling this creates ``marker``: proof that nothing was unpickled if it is absent."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Callable[..., object], tuple[object, ...]]:
        return pathlib.Path.touch, (pathlib.Path(self.marker),)


def _pickle_bytes(marker: Path) -> bytes:
    return pickle.dumps(_Tripwire(marker), protocol=4)


def test_tripwire_fires_when_unpickled(tmp_path: Path) -> None:
    marker = tmp_path / "fired"
    pickle.loads(_pickle_bytes(marker))  # our own bytes: proves the tripwire is real
    assert marker.exists()


# --------------------------------------------------------------------------- library files


def test_read_library_file(tmp_path: Path) -> None:
    path = write_library_file(schema.library_file_path(tmp_path, 24, 444))
    record = read_library_file(path)
    assert record.images.shape == (8, 24, 24) and record.images.dtype == np.float32
    assert record.params == PARAMS
    assert (record.system, record.snapshot, record.au_per_pixel) == ("24", 444, 10.0)
    np.testing.assert_allclose(record.images[2], _blob(width=5.0), rtol=1e-6)


def test_read_library_file_custom_parameter_names(tmp_path: Path) -> None:
    path = write_library_file(tmp_path / "x.hdf5", params={"spin": 0.5})
    record = read_library_file(path, ("spin", "mass"))
    assert record.params == {"spin": 0.5, "mass": PARAMS["mass"]}
    assert (record.system, record.snapshot) == ("x", 0)


def test_discover_hdf5_tree(tmp_path: Path) -> None:
    for system, snapshot in [(10, 2), (3, 7), (3, 1)]:
        write_library_file(schema.library_file_path(tmp_path, system, snapshot))
    (tmp_path / "notes.hdf5").write_bytes(b"ignored")
    layout = discover_library(tmp_path)
    assert layout.form == "hdf5" and len(layout) == 3
    assert [p.name for p in layout.files] == [
        "output_000001_isink_3_data.hdf5",
        "output_000007_isink_3_data.hdf5",
        "output_000002_isink_10_data.hdf5",
    ]
    assert layout.param_names == schema.DEFAULT_PARAMETERS
    assert layout.units["accretion_rate"] == "Msun/yr"


def _catalog_library(root: Path, fmt: str) -> Path:
    """Two FITS HDUs, one gzipped FITS and a .npy stack, with a catalog in ``fmt``."""
    root.mkdir(parents=True, exist_ok=True)
    hdus = fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(_blob(width=3)), fits.ImageHDU(_blob())])
    hdus.writeto(root / "pair.fits")
    fits.PrimaryHDU(_blob(width=6)).writeto(root / "one.fits.gz")
    np.save(root / "stack.npy", np.stack([_blob(width=2), _blob(width=7)]))
    table = pd.DataFrame(
        {
            "file": ["pair.fits", "pair.fits", "one.fits.gz", "stack.npy"],
            "hdu": [1, 2, None, None],
            "projection": [None, None, None, 2],
            "system": ["a", "a", "b", "c"],
            "snapshot": [1, 2, 1, 5],
            "mass [Msun]": [0.1, 0.2, 0.3, 0.4],
            "inclination": [10, 20, 30, 40],
            "comment": ["x", "y", "z", "w"],
        }
    )
    if fmt == "csv":
        table.to_csv(root / "catalog.csv", index=False)
    else:
        table.to_parquet(root / "catalog.parquet", index=False)
    return root


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_discover_catalog_and_read_each_image(tmp_path: Path, fmt: str) -> None:
    layout = discover_library(_catalog_library(tmp_path, fmt))
    assert layout.form == "catalog" and len(layout) == 4
    assert layout.param_names == ("mass", "inclination")
    assert dict(layout.units) == {"mass": "Msun", "inclination": ""}
    first, second, gz, stack = layout.images
    assert (first.system, first.snapshot, first.hdu, first.params["mass"]) == ("a", 1, 1, 0.1)
    assert (stack.projection, stack.snapshot) == (2, 5)
    np.testing.assert_allclose(read_library_image(first), _blob(width=3), rtol=1e-6)
    np.testing.assert_allclose(read_library_image(second), _blob(), rtol=1e-6)
    np.testing.assert_allclose(read_library_image(gz), _blob(width=6), rtol=1e-6)
    np.testing.assert_allclose(read_library_image(stack), _blob(width=7), rtol=1e-6)


def test_catalog_missing_columns(tmp_path: Path) -> None:
    pd.DataFrame({"file": ["a.npy"], "mass": [1.0]}).to_csv(tmp_path / "catalog.csv", index=False)
    with pytest.raises(InputError, match=r"catalog\.csv: missing required column\(s\) 'system'"):
        discover_library(tmp_path)
    pd.DataFrame({"file": ["a.npy"], "system": [1]}).to_csv(tmp_path / "catalog.csv", index=False)
    with pytest.raises(InputError, match="no numeric parameter columns"):
        discover_library(tmp_path)


def test_catalog_row_with_nan_parameter(tmp_path: Path) -> None:
    np.save(tmp_path / "a.npy", _blob())
    pd.DataFrame({"file": ["a.npy"], "system": [1], "mass": [np.nan]}).to_csv(
        tmp_path / "catalog.csv", index=False
    )
    (image,) = discover_library(tmp_path).images
    with pytest.raises(InputError, match=r"a\.npy: .*non-finite value for parameter 'mass'"):
        read_library_image(image)


def test_no_library_found(tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("hello")
    with pytest.raises(InputError, match="holds no library"):
        discover_library(tmp_path)
    with pytest.raises(InputError, match="does not exist"):
        discover_library(tmp_path / "missing")


# --------------------------------------------------------------------------- observations


def _celestial_wcs(pixel_arcsec: float, naxis: int = 2) -> WCS:
    wcs = WCS(naxis=naxis)
    wcs.wcs.ctype = ["RA---SIN", "DEC--SIN", "FREQ", "STOKES"][:naxis]
    wcs.wcs.cdelt = [-pixel_arcsec / 3600, pixel_arcsec / 3600, 1e9, 1][:naxis]
    wcs.wcs.crval = [246.0, -24.0, 2.3e11, 1][:naxis]
    wcs.wcs.crpix = [16, 16, 1, 1][:naxis]
    wcs.wcs.cunit = ["deg", "deg", "Hz", ""][:naxis]
    return wcs


def test_fits_observation_wcs_beam_and_header(tmp_path: Path) -> None:
    header = _celestial_wcs(0.02).to_header()
    header.update(BMAJ=0.1 / 3600, BMIN=0.05 / 3600, BPA=30.0, BUNIT="Jy/beam", OBJECT="IRAS")
    image = _blob(32)
    image[0, :] = np.nan
    fits.PrimaryHDU(image.astype(np.float32), header=header).writeto(tmp_path / "obs.fits")
    obs = read_observation(tmp_path / "obs.fits")
    assert obs.image.shape == (32, 32) and obs.image.dtype == np.float32
    assert np.isnan(obs.image[0]).all()
    assert obs.pixel_scale_arcsec == pytest.approx(0.02)
    assert obs.beam_arcsec == pytest.approx((0.1, 0.05, 30.0))
    assert obs.header["BUNIT"] == "Jy/beam" and obs.header["OBJECT"] == "IRAS"
    json.dumps(dict(obs.header))


def test_fits_observation_with_rotated_cd_matrix(tmp_path: Path) -> None:
    scale, angle = 0.05 / 3600, np.deg2rad(25)
    header = fits.Header()
    header.update(CTYPE1="RA---TAN", CTYPE2="DEC--TAN", CRVAL1=10.0, CRVAL2=20.0)
    header.update(CRPIX1=8.0, CRPIX2=8.0, CUNIT1="deg", CUNIT2="deg")
    header.update(CD1_1=-scale * np.cos(angle), CD1_2=scale * np.sin(angle))
    header.update(CD2_1=scale * np.sin(angle), CD2_2=scale * np.cos(angle))
    fits.PrimaryHDU(_blob(16), header=header).writeto(tmp_path / "cd.fits")
    obs = read_observation(tmp_path / "cd.fits")
    assert obs.pixel_scale_arcsec == pytest.approx(0.05)
    assert obs.beam_arcsec is None


def test_fits_radio_cube_with_degenerate_axes(tmp_path: Path) -> None:
    header = _celestial_wcs(0.01, naxis=4).to_header()
    data = _blob(20)[None, None].astype(np.float32)  # (stokes, freq, y, x)
    fits.PrimaryHDU(data, header=header).writeto(tmp_path / "cube.fits")
    obs = read_observation(tmp_path / "cube.fits")
    assert obs.image.shape == (20, 20)
    np.testing.assert_allclose(obs.image, _blob(20), rtol=1e-6)
    assert obs.pixel_scale_arcsec == pytest.approx(0.01)


def test_npy_and_library_projection_observations(tmp_path: Path) -> None:
    np.save(tmp_path / "obs.npy", _blob(20, 3.0)[:, :18])
    assert read_observation(tmp_path / "obs.npy").image.shape == (20, 18)
    lib = write_library_file(schema.library_file_path(tmp_path, 5, 9))
    by_syntax = read_observation(f"{lib}:3")
    by_argument = read_observation(lib, projection=3)
    np.testing.assert_array_equal(by_syntax.image, by_argument.image)
    np.testing.assert_allclose(by_syntax.image, _blob(width=5.0), rtol=1e-6)
    assert by_syntax.library_image is not None and by_syntax.library_image.projection == 3
    assert by_syntax.au_per_pixel == 10.0 and by_syntax.header == {}
    with pytest.raises(InputError, match="name a projection"):
        read_observation(lib)
    with pytest.raises(InputError, match="has no projection 9"):
        read_observation(f"{lib}:9")


# --------------------------------------------------------------------------- bad inputs


def _schema_path(tmp_path: Path) -> Path:
    return schema.library_file_path(tmp_path, 1, 1)


def _truncated_hdf5(tmp_path: Path) -> Path:
    path = write_library_file(_schema_path(tmp_path))
    path.write_bytes(path.read_bytes()[:1500])
    return path


BAD_LIBRARY_FILES: dict[str, tuple[Callable[[Path], Path], str]] = {
    "empty": (lambda d: _touch(_schema_path(d), b""), "is empty"),
    "truncated": (_truncated_hdf5, "cannot be read as HDF5"),
    "missing scalar": (
        lambda d: write_library_file(_schema_path(d), params={"age": None}),
        "missing scalar dataset 'age'",
    ),
    "missing projection": (
        lambda d: write_library_file(_schema_path(d), images={"intensity_projection_5": None}),
        "missing projection dataset 'intensity_projection_5'",
    ),
    "nan parameter": (
        lambda d: write_library_file(_schema_path(d), params={"mass": np.nan}),
        "parameter 'mass' is not finite",
    ),
    "all zero": (
        lambda d: write_library_file(
            _schema_path(d), images={"intensity_projection_2": np.zeros((24, 24))}
        ),
        "'intensity_projection_2' is all zero",
    ),
    "all nan": (
        lambda d: write_library_file(
            _schema_path(d), images={"intensity_projection_3": np.full((24, 24), np.nan)}
        ),
        "no finite pixels",
    ),
    "non-square": (
        lambda d: write_library_file(
            _schema_path(d), images={"intensity_projection_1": _blob(24)[:, :20]}
        ),
        r"not square \(24x20 px\)",
    ),
    "3-D image": (
        lambda d: write_library_file(
            _schema_path(d), images={"intensity_projection_1": np.ones((2, 24, 24))}
        ),
        "not a 2-D image",
    ),
    "random bytes": (
        lambda d: _touch(_schema_path(d), np.random.bytes(4000)),
        "unrecognised contents",
    ),
    "text": (lambda d: _touch(_schema_path(d), b"hello world\n"), "is a text file"),
}


def _touch(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("case", sorted(BAD_LIBRARY_FILES))
def test_bad_library_file(tmp_path: Path, case: str) -> None:
    make, problem = BAD_LIBRARY_FILES[case]
    path = make(tmp_path)
    with pytest.raises(InputError, match=problem) as info:
        read_library_file(path)
    message = str(info.value)
    assert path.name in message and "\n" not in message


def _fits_text(d: Path) -> Path:
    return _touch(d / "obs.fits", b"this is not an image\n" * 10)


def _fits_1d(d: Path) -> Path:
    fits.PrimaryHDU(np.arange(10.0)).writeto(d / "line.fits")
    return d / "line.fits"


def _fits_3d(d: Path) -> Path:
    fits.PrimaryHDU(np.random.rand(3, 8, 8)).writeto(d / "cube.fits")
    return d / "cube.fits"


def _fits_zero(d: Path) -> Path:
    fits.PrimaryHDU(np.zeros((8, 8))).writeto(d / "zero.fits")
    return d / "zero.fits"


def _fits_nan(d: Path) -> Path:
    fits.PrimaryHDU(np.full((8, 8), np.nan)).writeto(d / "nan.fits")
    return d / "nan.fits"


def _fits_truncated(d: Path) -> Path:
    fits.PrimaryHDU(np.random.rand(64, 64)).writeto(d / "cut.fits")
    return _touch(d / "cut.fits", (d / "cut.fits").read_bytes()[:3000])


def _npy_object(d: Path) -> Path:
    np.save(d / "objects.npy", np.array([_Tripwire(d / "marker")], dtype=object))
    return d / "objects.npy"


def _npy_strings(d: Path) -> Path:
    np.save(d / "strings.npy", np.array([["a", "b"], ["c", "d"]]))
    return d / "strings.npy"


BAD_OBSERVATIONS: dict[str, tuple[Callable[[Path], Path], str]] = {
    "empty fits": (lambda d: _touch(d / "e.fits", b""), "is empty"),
    "text fits": (_fits_text, "is a text file"),
    "1-D fits": (_fits_1d, "expected a 2-D image"),
    "3-D fits": (_fits_3d, "3 non-degenerate axes"),
    "zero fits": (_fits_zero, "is all zero"),
    "nan fits": (_fits_nan, "no finite pixels"),
    "truncated fits": (_fits_truncated, "is truncated: its header declares"),
    "random fits": (lambda d: _touch(d / "r.fits", np.random.bytes(999)), "unrecognised"),
    "random npy": (lambda d: _touch(d / "r.npy", np.random.bytes(999)), "unrecognised"),
    "random hdf5": (lambda d: _touch(d / "r.hdf5", np.random.bytes(999)), "unrecognised"),
    "object npy": (_npy_object, "object array; protomatch never unpickles"),
    "string npy": (_npy_strings, "non-numeric type"),
    "pickle npy": (
        lambda d: _touch(d / "p.npy", _pickle_bytes(d / "marker")),
        "looks like a Python pickle; protomatch never unpickles files",
    ),
    "pickle fits": (
        lambda d: _touch(d / "p.fits", _pickle_bytes(d / "marker")),
        "looks like a Python pickle",
    ),
    "missing": (lambda d: d / "nowhere.fits", "does not exist"),
}


@pytest.mark.parametrize("case", sorted(BAD_OBSERVATIONS))
def test_bad_observation(tmp_path: Path, case: str) -> None:
    make, problem = BAD_OBSERVATIONS[case]
    path = make(tmp_path)
    with pytest.raises(InputError, match=problem) as info:
        read_observation(path)
    message = str(info.value)
    assert path.name in message and "\n" not in message
    assert not (tmp_path / "marker").exists()


def test_pickle_named_like_library_file_is_never_unpickled(tmp_path: Path) -> None:
    path = _touch(_schema_path(tmp_path), _pickle_bytes(tmp_path / "marker"))
    with pytest.raises(InputError, match="looks like a Python pickle"):
        read_library_file(path)
    with pytest.raises(InputError, match="looks like a Python pickle"):
        read_observation(f"{path}:1")
    assert not (tmp_path / "marker").exists()
