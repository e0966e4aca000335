"""Hostile library and observation files: sizes checked from headers, paths kept inside the
library folder, data never read from other files, infinite pixels never passed on silently."""

from __future__ import annotations

import os
import tracemalloc
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
from astropy.io import fits

from protomatch.errors import InputError
from protomatch.library import schema
from protomatch.library.formats import DEFAULT_MAX_IMAGE_SIDE
from protomatch.library.readers import (
    LibraryImage,
    discover_library,
    read_library_file,
    read_library_image,
)
from protomatch.matching.observation import read_observation
from tests.library.test_readers import write_library_file

#: What a refused read may allocate (numpy arrays and Python objects, traced).
SMALL_PEAK = 16 * 2**20


def _blob(side: int = 24) -> np.ndarray:
    y, x = np.mgrid[0:side, 0:side] - side / 2
    return (np.exp(-(x**2 + y**2) / 18.0) + 1e-3).astype(np.float32)


def _peak_of(read) -> tuple[BaseException | None, int]:
    """Run ``read``; return what it raised and the peak of its traced allocations."""
    tracemalloc.start()
    try:
        read()
        raised = None
    except Exception as exc:
        raised = exc
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return raised, peak


def huge_fits(path: Path, side: int = 100_000) -> Path:
    """A 5760-byte FITS file whose header claims a side x side float32 image."""
    header = fits.Header()
    for key, value in (("SIMPLE", True), ("BITPIX", -32), ("NAXIS", 2)):
        header[key] = value
    header["NAXIS1"] = side
    header["NAXIS2"] = side
    path.write_bytes(header.tostring().encode("ascii") + b"\0" * 2880)
    return path


def _assert_size_refusal(exc: BaseException | None, path: Path, limit: int) -> None:
    assert isinstance(exc, InputError), repr(exc)
    message = str(exc)
    assert path.name in message and f"{limit} px" in message and "--max-image-side" in message
    assert "\n" not in message


# --------------------------------------------------------------------------- sizes


def test_fits_claiming_100000_pixels_is_refused_from_its_header(tmp_path: Path) -> None:
    path = huge_fits(tmp_path / "huge.fits")
    assert path.stat().st_size == 5760
    raised, peak = _peak_of(lambda: read_observation(path))
    _assert_size_refusal(raised, path, DEFAULT_MAX_IMAGE_SIDE)
    assert "100000x100000" in str(raised)
    assert peak < SMALL_PEAK
    raised, peak = _peak_of(lambda: read_library_image(LibraryImage(path, "s", 0, 1, {})))
    _assert_size_refusal(raised, path, DEFAULT_MAX_IMAGE_SIDE)
    assert peak < SMALL_PEAK


def test_hdf5_declaring_a_20000_pixel_dataset_is_refused_before_reading(tmp_path: Path) -> None:
    path = write_library_file(schema.library_file_path(tmp_path, 1, 1))
    with h5py.File(path, "a") as handle:
        del handle[schema.projection_dataset(3)]
        handle.create_dataset(
            schema.projection_dataset(3),
            shape=(20000, 20000),
            dtype="f4",
            chunks=(1000, 1000),
            compression="gzip",
            fillvalue=1.0,
        )
    assert path.stat().st_size < 200_000
    raised, peak = _peak_of(lambda: read_library_file(path))
    _assert_size_refusal(raised, path, DEFAULT_MAX_IMAGE_SIDE)
    assert schema.projection_dataset(3) in str(raised) and peak < SMALL_PEAK
    raised, peak = _peak_of(lambda: read_observation(f"{path}:3"))
    _assert_size_refusal(raised, path, DEFAULT_MAX_IMAGE_SIDE)
    assert peak < SMALL_PEAK


def _npy_header_only(path: Path, shape: tuple[int, ...], payload: bytes = b"") -> Path:
    with path.open("wb") as stream:
        np.lib.format.write_array_header_1_0(
            stream, {"descr": "<f4", "fortran_order": False, "shape": shape}
        )
        stream.write(payload)
    return path


def test_npy_claiming_a_huge_shape_is_refused_from_its_header(tmp_path: Path) -> None:
    path = _npy_header_only(tmp_path / "huge.npy", (100_000, 100_000))
    raised, peak = _peak_of(lambda: read_observation(path))
    _assert_size_refusal(raised, path, DEFAULT_MAX_IMAGE_SIDE)
    assert peak < SMALL_PEAK


def test_npy_shorter_than_its_header_says_is_refused(tmp_path: Path) -> None:
    path = _npy_header_only(tmp_path / "cut.npy", (64, 64), payload=b"\0" * 100)
    with pytest.raises(InputError, match="is truncated: its header declares"):
        read_observation(path)


def test_a_many_plane_cube_counts_all_its_pixels(tmp_path: Path) -> None:
    path = _npy_header_only(tmp_path / "cube.npy", (64, 48, 48))
    with pytest.raises(InputError, match="64x48x48 pixels"):
        read_observation(path, max_side=48)


def test_max_image_side_is_configurable(tmp_path: Path) -> None:
    np.save(tmp_path / "40.npy", _blob(40))
    image = LibraryImage(tmp_path / "40.npy", "s", 0, 1, {"mass": 1.0})
    with pytest.raises(InputError, match="maximum image side of 32 px"):
        read_library_image(image, max_side=32)
    assert read_library_image(image, max_side=40).shape == (40, 40)
    fits.PrimaryHDU(_blob(40)).writeto(tmp_path / "40.fits")
    with pytest.raises(InputError, match="40x40 pixels"):
        read_observation(tmp_path / "40.fits", max_side=39)
    assert read_observation(tmp_path / "40.fits", max_side=40).image.shape == (40, 40)


def _catalog(root: Path, files: list[str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    table = pd.DataFrame(
        {"file": files, "system": [f"s{i}" for i in range(len(files))], "mass": 1.0}
    )
    table.to_csv(root / "catalog.csv", index=False)
    return root


def test_ingest_skip_bad_skips_a_fits_claiming_a_huge_image(tmp_path: Path, run_cli) -> None:
    root = _catalog(tmp_path / "lib", ["a.npy", "huge.fits", "b.npy", "=bad.npy"])
    np.save(root / "a.npy", _blob())
    np.save(root / "b.npy", _blob())
    huge_fits(root / "huge.fits")
    (root / "=bad.npy").write_bytes(b"\x93NUMPY garbage")

    status, _, err = run_cli("ingest", root, "-o", tmp_path / "stopped", "--workers", 1)
    assert status == 2 and len(err.strip().splitlines()) == 1
    assert "huge.fits" in err and "8192 px" in err and "--max-image-side" in err

    status, out, err = run_cli(
        "ingest", root, "-o", tmp_path / "store", "--skip-bad", "--workers", 1, "--size", 16
    )
    assert status == 0, err
    assert "ingested 2 images" in out
    skipped = pd.read_csv(tmp_path / "store" / "skipped.csv")
    assert list(skipped["file"]) == ["huge.fits", "'=bad.npy"]  # no formula for a spreadsheet
    assert "--max-image-side" in skipped["problem"].iloc[0]


def test_ingest_max_image_side_option(tmp_path: Path, run_cli) -> None:
    root = _catalog(tmp_path / "lib", ["a.npy"])
    np.save(root / "a.npy", _blob(40))
    status, _, err = run_cli(
        "ingest", root, "-o", tmp_path / "s", "--max-image-side", 32, "--workers", 1
    )
    assert status == 2 and "maximum image side of 32 px" in err
    status, _, err = run_cli(
        "ingest", root, "-o", tmp_path / "s", "--max-image-side", 40, "--workers", 1
    )
    assert status == 0, err


def test_match_max_image_side_option_refuses_before_opening_the_index(
    tmp_path: Path, run_cli
) -> None:
    np.save(tmp_path / "obs.npy", _blob(40))
    status, _, err = run_cli(
        "match", tmp_path / "no-index", tmp_path / "obs.npy", "-o", tmp_path / "r",
        "--max-image-side", 32,
    )  # fmt: skip
    assert status == 2 and len(err.strip().splitlines()) == 1
    assert "obs.npy" in err and "maximum image side of 32 px" in err
    huge = huge_fits(tmp_path / "huge.fits")
    status, _, err = run_cli("match", tmp_path / "no-index", huge, "-o", tmp_path / "r")
    assert status == 2 and len(err.strip().splitlines()) == 1
    assert "huge.fits: image declares 100000x100000 pixels" in err and "8192 px" in err


# --------------------------------------------------------------------------- other files


def test_hdf5_dataset_stored_in_another_file_is_refused(tmp_path: Path) -> None:
    secret = tmp_path / "secret.bin"
    secret.write_bytes(np.ones((24, 24), "<f4").tobytes())
    path = write_library_file(tmp_path / "external.hdf5")
    with h5py.File(path, "a") as handle:
        del handle[schema.projection_dataset(2)]
        handle.create_dataset(
            schema.projection_dataset(2), shape=(24, 24), dtype="<f4",
            external=[(str(secret), 0, 24 * 24 * 4)],
        )  # fmt: skip
    with pytest.raises(InputError, match="reads its data from other files"):
        read_library_file(path)


def test_hdf5_link_to_another_file_is_refused(tmp_path: Path) -> None:
    other = write_library_file(tmp_path / "other.hdf5")
    path = write_library_file(tmp_path / "linked.hdf5")
    with h5py.File(path, "a") as handle:
        del handle[schema.projection_dataset(1)]
        handle[schema.projection_dataset(1)] = h5py.ExternalLink(
            str(other), schema.projection_dataset(1)
        )
    with pytest.raises(InputError, match="link to another file"):
        read_library_file(path)
    with pytest.raises(InputError, match="link to another file"):
        read_observation(f"{path}:1")


# --------------------------------------------------------------------------- catalog paths


@pytest.mark.parametrize(
    "entry",
    ["../../../etc/passwd", "../outside.npy", "ABSOLUTE", "link.npy", "sub/../../outside.npy"],
)
def test_catalog_paths_outside_the_library_folder_are_refused(tmp_path: Path, entry) -> None:
    np.save(tmp_path / "outside.npy", _blob())
    if entry == "ABSOLUTE":
        entry = str(tmp_path / "outside.npy")
    root = _catalog(tmp_path / "lib", ["inside.npy", entry])
    np.save(root / "inside.npy", _blob())
    (root / "link.npy").symlink_to(tmp_path / "outside.npy")
    with pytest.raises(InputError) as info:
        discover_library(root)
    message = str(info.value)
    assert message.startswith(f"{root / 'catalog.csv'}: row 3: file {entry!r}")
    assert "outside the library folder" in message and "\n" not in message


def test_catalog_paths_inside_the_library_folder_are_read(tmp_path: Path) -> None:
    root = _catalog(tmp_path / "lib", ["sub/../a.npy", "sub/b.npy", "link.npy"])
    (root / "sub").mkdir()
    np.save(root / "a.npy", _blob())
    np.save(root / "sub" / "b.npy", _blob())
    (root / "link.npy").symlink_to(root / "sub" / "b.npy")
    layout = discover_library(root)
    assert [read_library_image(image).shape for image in layout.images] == [(24, 24)] * 3


def test_library_file_linked_from_outside_the_folder_is_refused(tmp_path: Path) -> None:
    outside = write_library_file(tmp_path / "elsewhere" / "output_000001_isink_1_data.hdf5")
    root = tmp_path / "lib"
    write_library_file(schema.library_file_path(root, 2, 1))
    link = schema.library_file_path(root, 1, 1)
    link.parent.mkdir(parents=True)
    link.symlink_to(outside)
    with pytest.raises(InputError, match="outside the library folder"):
        discover_library(root)


# --------------------------------------------------------------------------- infinite pixels


def _with_infinities(image: np.ndarray) -> np.ndarray:
    image = image.copy()
    image[0, :2] = np.inf
    image[1, 0] = -np.inf
    return image


def test_library_images_with_infinite_pixels_are_refused(tmp_path: Path) -> None:
    np.save(tmp_path / "inf.npy", _with_infinities(_blob()))
    with pytest.raises(InputError, match=r"image has 3 infinite pixel\(s\)"):
        read_library_image(LibraryImage(tmp_path / "inf.npy", "s", 0, 1, {}))
    path = write_library_file(
        tmp_path / "inf.hdf5", images={schema.projection_dataset(4): _with_infinities(_blob())}
    )
    with pytest.raises(InputError, match="has 3 infinite pixel"):
        read_library_file(path)


def test_observation_infinite_pixels_become_blank_with_a_note(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fits.PrimaryHDU(_with_infinities(_blob())).writeto(tmp_path / "inf.fits")
    observation = read_observation(tmp_path / "inf.fits")
    assert np.isnan(observation.image).sum() == 3 and not np.isinf(observation.image).any()
    assert any("3 infinite pixel(s)" in note for note in observation.notes)
    assert any(
        "inf.fits" in r.getMessage() and "3 infinite" in r.getMessage() for r in caplog.records
    )


# --------------------------------------------------------------------------- file names


@pytest.mark.skipif(os.name != "posix", reason="file names are bytes on POSIX only")
def test_library_under_a_non_utf8_folder_name_is_ingested(tmp_path: Path) -> None:
    from protomatch.library.ingest import IngestConfig, ingest_library
    from protomatch.library.store import TABLE_FILE

    root = tmp_path / "lib"
    folder = Path(os.fsdecode(bytes(root) + b"/sink\xff\x1b"))
    write_library_file(folder / "output_000001_isink_1_data.hdf5")
    ingest_library(root, tmp_path / "store", config=IngestConfig(size=16), workers=1)
    sources = pd.read_parquet(tmp_path / "store" / TABLE_FILE)["source"]
    assert set(sources) == {"sink\\xff\\x1b/output_000001_isink_1_data.hdf5"}


def test_a_file_name_in_an_error_is_one_printable_line(tmp_path: Path) -> None:
    path = Path(os.fsdecode(bytes(tmp_path) + b"/obs\xff\n.fits"))
    path.write_bytes(b"")
    with pytest.raises(InputError) as info:
        read_observation(path)
    message = str(info.value)
    assert "obs\\xff\\x0a.fits: is empty" in message and "\n" not in message
    message.encode("utf-8")  # no lone surrogate left


def test_terminal_output_shows_escape_codes_in_names_escaped(tmp_path: Path, run_cli) -> None:
    name = "red\x1b[31m.npy"
    root = _catalog(tmp_path / "lib", ["a.npy", name])
    np.save(root / "a.npy", _blob())
    (root / name).write_bytes(b"\x93NUMPY garbage")
    status, _, err = run_cli(
        "ingest", root, "-o", tmp_path / "store", "--skip-bad", "--workers", 1, "--size", 16
    )
    assert status == 0 and "red\\x1b[31m.npy" in err and "\x1b" not in err
    status, _, err = run_cli("ingest", root, "-o", tmp_path / "other", "--workers", 1)
    assert status == 2 and "red\\x1b[31m.npy" in err and "\x1b" not in err


def test_projections_of_different_shapes_are_refused(tmp_path: Path) -> None:
    path = write_library_file(
        tmp_path / "mixed.hdf5", images={schema.projection_dataset(5): _blob(20)}
    )
    with pytest.raises(InputError, match=r"projections differ in shape: \(24, 24\) and \(20, 20\)"):
        read_library_file(path)
