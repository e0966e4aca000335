"""A store's checksums: flipped bytes are refused, old stores load with a note, no NaN/inf."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from protomatch._integrity import image_block_hashes, nonfinite_problem
from protomatch.errors import InputError
from protomatch.library import schema
from protomatch.library.ingest import IngestConfig, ingest_library
from protomatch.library.store import LibraryStore
from tests.damage import as_written_before_checksums, copy_artefact, edit_manifest, flip_byte
from tests.library.test_store import make_library

PER_BLOCK = 10  # images per hashed block in the re-blocked store below


@pytest.fixture
def store(tiny_store: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny store (192 images of 32 px, one 1 MiB block)."""
    return copy_artefact(tiny_store, tmp_path / "store")


@pytest.fixture
def reblocked(store: Path) -> Path:
    """The store with its images hashed in blocks of 10, so blocks can be told apart."""
    with h5py.File(store / "images.h5", "r") as handle:
        images = handle["images"][()]
    manifest = json.loads((store / "manifest.json").read_text())
    manifest["files"]["images.h5"]["blocks"] = {
        "images_per_block": PER_BLOCK,
        "sha256": image_block_hashes(images, PER_BLOCK),
    }
    (store / "manifest.json").write_text(json.dumps(manifest))
    return store


def _image_offset(store: Path, row: int) -> int:
    with h5py.File(store / "images.h5", "r") as handle:
        dataset = handle["images"]
        return int(dataset.id.get_offset()) + row * dataset[0].nbytes


def test_manifest_records_every_file(store: Path) -> None:
    files = json.loads((store / "manifest.json").read_text())["files"]
    assert set(files) == {"images.h5", "params.parquet"}
    assert files["images.h5"]["bytes"] == (store / "images.h5").stat().st_size
    assert files["images.h5"]["blocks"]["images_per_block"] == 256  # 1 MiB of 32 px images


def test_flipped_parquet_byte_is_refused(store: Path) -> None:
    flip_byte(store / "params.parquet", 4000)  # inside a data page
    with pytest.raises(InputError, match=r"params\.parquet: does not match the SHA-256"):
        LibraryStore.open(store)


def test_flipped_image_byte_is_refused_when_its_block_is_read(reblocked: Path) -> None:
    flip_byte(reblocked / "images.h5", _image_offset(reblocked, 43) + 100)
    opened = LibraryStore.open(reblocked)  # opening reads no image
    assert opened.images[0:40].shape == (40, 32, 32)  # blocks 0-3 are intact
    assert opened.images[[5, 61, 99]].shape == (3, 32, 32)
    for key in (43, slice(35, 45), [1, 45], np.arange(192) == 49, -150, (Ellipsis, 0)):
        with pytest.raises(InputError, match=r"images\.h5: images 40 to 49 differ from their"):
            opened.images[key]


def test_checked_images_read_like_the_dataset(reblocked: Path) -> None:
    with h5py.File(reblocked / "images.h5", "r") as handle:
        expected = handle["images"][()]
    images = LibraryStore.open(reblocked).images
    for key in (3, -1, slice(5, 27, 4), slice(None, None, -7), [0, 0, 150], (slice(2, 4), 5)):
        np.testing.assert_array_equal(images[key], expected[key])
    mask = expected.sum(axis=(1, 2)) > np.median(expected.sum(axis=(1, 2)))
    np.testing.assert_array_equal(images[mask], expected[mask])
    assert type(images[2:4]) is np.ndarray  # plain views out, no checking subclass


@pytest.mark.parametrize("fraction", np.linspace(0.0, 0.999, 23))
def test_no_flipped_byte_of_images_h5_passes_silently(store: Path, fraction: float) -> None:
    """Anywhere in the file: refused on reading, or the images read are exactly the originals."""
    with h5py.File(store / "images.h5", "r") as handle:
        original = handle["images"][()]
    flip_byte(store / "images.h5", int(fraction * (store / "images.h5").stat().st_size))
    try:
        read = LibraryStore.open(store).images[:]
    except InputError as error:
        assert "images.h5" in str(error)
    else:
        np.testing.assert_array_equal(read, original)


def test_store_from_before_checksums_loads_with_a_note(
    store: Path, caplog: pytest.LogCaptureFixture
) -> None:
    as_written_before_checksums(store / "manifest.json")
    with caplog.at_level(logging.WARNING):
        opened = LibraryStore.open(store)
    assert len(opened.images[:]) == 192
    notes = [r.getMessage() for r in caplog.records]
    assert any("carries no checksums" in note for note in notes), notes


def test_current_store_without_checksums_is_refused(store: Path) -> None:
    edit_manifest(store / "manifest.json", files=None)
    with pytest.raises(InputError, match="bad field files: missing"):
        LibraryStore.open(store)


def test_an_absurd_block_size_is_one_line(store: Path) -> None:
    # found by the long fuzz run: 2**63 images per block overflowed numpy's indices
    manifest = json.loads((store / "manifest.json").read_text())
    manifest["files"]["images.h5"]["blocks"]["images_per_block"] = 2**63
    (store / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(InputError, match="images_per_block"):
        LibraryStore.open(store).images[0:1]


def test_images_h5_of_another_shape_is_refused(store: Path) -> None:
    edit_manifest(store / "manifest.json", image_shape=[191, 32, 32])
    with pytest.raises(InputError, match=r"holds images \(192, 32, 32\), its manifest says"):
        LibraryStore.open(store)


def _library_with_bad_pixel(root: Path, value: float) -> Path:
    make_library(root)
    path = schema.library_file_path(root, 1, 0)
    with h5py.File(path, "a") as handle:
        name = schema.projection_dataset(3)
        image = handle[name][()]
        image[5, 7] = value
        del handle[name]
        handle[name] = image
    return path


@pytest.mark.parametrize("value", [np.inf, -np.inf])
def test_ingest_refuses_an_infinite_pixel(tmp_path: Path, value: float) -> None:
    bad = _library_with_bad_pixel(tmp_path / "library", value)
    with pytest.raises(InputError, match="'intensity_projection_3' has 1 infinite pixel") as error:
        ingest_library(tmp_path / "library", tmp_path / "store", workers=1)
    assert error.value.path == bad
    assert not (tmp_path / "store").exists()


def test_a_nan_pixel_is_stored_as_blank_never_as_nan(tmp_path: Path) -> None:
    _library_with_bad_pixel(tmp_path / "library", np.nan)
    ingest_library(
        tmp_path / "library", tmp_path / "store", config=IngestConfig(size=16), workers=1
    )
    opened = LibraryStore.open(tmp_path / "store")
    assert np.isfinite(opened.images[:]).all()


def test_skip_bad_leaves_the_infinite_file_out_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _library_with_bad_pixel(tmp_path / "library", np.inf)
    config = IngestConfig(size=16, skip_bad=True)
    with caplog.at_level(logging.WARNING):
        result = ingest_library(tmp_path / "library", tmp_path / "store", config=config, workers=1)
    assert result.n_images == 5 * 8 and len(result.skipped) == 1
    assert "infinite pixel" in pd.read_csv(tmp_path / "store" / "skipped.csv")["problem"][0]
    assert any("infinite pixel" in r.getMessage() for r in caplog.records)
    opened = LibraryStore.open(tmp_path / "store")
    assert np.isfinite(opened.images[:]).all()
    assert "skipped.csv" in opened.manifest["files"]


def test_nonfinite_problem_names_the_first_bad_entry() -> None:
    values = np.ones((4, 3, 3))
    assert nonfinite_problem(values, "image") is None
    values[2, 0, 0], values[2, 1, 1], values[3, 0, 0] = np.nan, np.inf, -np.inf
    assert str(nonfinite_problem(values, "image")).startswith(
        "image 3 of 4 has 2 NaN/infinite value(s)"
    )
    assert str(nonfinite_problem(np.array([1.0, np.inf]), "total flux")).startswith(
        "total flux 2 of 2 has 1"
    )
