"""Ingest → library store round trip, bad files (API and CLI), fingerprints, pickling."""

from __future__ import annotations

import json
import pathlib
import pickle
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pydantic
import pytest

from protomatch.errors import InputError, ProtomatchError, validated
from protomatch.library import schema
from protomatch.library.ingest import IngestConfig, ingest_library
from protomatch.library.preprocess import PreprocessConfig, prepare_images
from protomatch.library.readers import read_library_file
from protomatch.library.store import LibraryStore

SIDE = 40


def _params(system: int, snapshot: int) -> dict[str, float]:
    return {
        "Envelope_mass": 2.0 - 0.3 * snapshot + 0.1 * system,
        "accretion_rate": 1e-6 * (1 + system),
        "temperature": 30.0 + 5 * snapshot,
        "mass": 0.1 + 0.2 * snapshot,
        "disk_size": 20.0 + 15 * system,
        "luminosity": 0.5 + system + snapshot,
        "age": 1e4 * (1 + snapshot),
    }


def make_library(
    root: Path, systems: int = 3, snapshots: int = 2, au_per_pixel: float = 10.0
) -> Path:
    """A tiny schema-conforming library: Gaussian blobs whose shape follows the parameters."""
    y, x = np.mgrid[0:SIDE, 0:SIDE] - SIDE / 2 + 0.5
    for system in range(systems):
        for snapshot in range(snapshots):
            theta = _params(system, snapshot)
            path = schema.library_file_path(root, system, snapshot)
            path.parent.mkdir(parents=True, exist_ok=True)
            with h5py.File(path, "w") as handle:
                for k in range(1, schema.N_PROJECTIONS + 1):
                    tilt = np.cos(np.pi * k / schema.N_PROJECTIONS)
                    width = theta["disk_size"] / 10
                    image = theta["luminosity"] * np.exp(
                        -(x**2 + (y / (0.3 + 0.7 * abs(tilt))) ** 2) / (2 * width**2)
                    )
                    handle[schema.projection_dataset(k)] = image
                for name, value in theta.items():
                    handle[name] = value
                handle.attrs[schema.PIXEL_SCALE_ATTRIBUTE] = au_per_pixel
    return root


@pytest.fixture
def library(tmp_path: Path) -> Path:
    return make_library(tmp_path / "lib")


def _rewrite_scalar(path: Path, name: str, value: float) -> None:
    with h5py.File(path, "r+") as handle:
        del handle[name]
        handle[name] = value


def test_ingest_round_trip(library: Path, tmp_path: Path) -> None:
    result = ingest_library(library, tmp_path / "store", config=IngestConfig(size=16), workers=1)
    assert (result.n_files, result.n_images, result.skipped) == (6, 48, ())
    assert "48 images" in result.describe()
    store = LibraryStore.open(tmp_path / "store")
    assert len(store) == 48 and store.images.shape == (48, 16, 16)
    assert isinstance(store.images, np.memmap) and not store.images.flags.writeable
    table = store.table
    assert list(table.columns) == [
        "image_id", "system", "snapshot", "projection", "source", "peak", "total_flux",
        "mean_intensity", *schema.DEFAULT_PARAMETERS,
    ]  # fmt: skip
    np.testing.assert_array_equal(table["image_id"], np.arange(48))
    assert store.systems() == ("0", "1", "2")
    assert store.param_names == schema.DEFAULT_PARAMETERS
    assert store.units == dict(schema.PARAMETER_UNITS)
    assert store.preprocess == PreprocessConfig(size=16)
    assert store.au_per_pixel == pytest.approx(10.0 * SIDE / 16)
    config = PreprocessConfig(size=16)
    files = sorted(library.rglob("*.hdf5"))
    assert len(files) == 6
    for path in files:
        rows = table[table["source"] == path.relative_to(library).as_posix()]
        assert len(rows) == 8
        record = read_library_file(path)
        expected, peaks, totals = prepare_images(record.images, config)
        ids = rows["image_id"].to_numpy()
        np.testing.assert_array_equal(store.images[ids], expected)
        np.testing.assert_allclose(rows["peak"], peaks)
        np.testing.assert_allclose(rows["total_flux"], totals)
        # the absolute brightness that peak normalisation removes is kept
        np.testing.assert_allclose(rows["mean_intensity"], peaks * expected.mean(axis=(1, 2)))
        np.testing.assert_array_equal(rows["projection"], np.arange(1, 9))
        assert rows["system"].iloc[0] == record.system
        assert store.theta()[ids[0]].tolist() == [record.params[n] for n in store.param_names]
    manifest = json.loads((tmp_path / "store" / "manifest.json").read_text())
    assert manifest["kind"] == "library-store" and manifest["schema_version"] == 2
    assert manifest["counts"] == {"files": 6, "images": 48, "skipped": 0}
    assert manifest["source"] == str(library.resolve())
    assert manifest["preprocess"]["stretch"] == "log"
    assert manifest["fingerprint"] == store.fingerprint == result.fingerprint


def test_images_are_contiguous_and_memory_mappable(library: Path, tmp_path: Path) -> None:
    ingest_library(library, tmp_path / "store", config=IngestConfig(size=16), workers=1)
    with h5py.File(tmp_path / "store" / "images.h5", "r") as handle:
        dataset = handle["images"]
        assert dataset.chunks is None and dataset.compression is None
        assert dataset.id.get_offset() is not None
        in_memory = dataset[()]
    np.testing.assert_array_equal(LibraryStore.open(tmp_path / "store").images, in_memory)


def test_pickling_a_store_does_not_copy_images(library: Path, tmp_path: Path) -> None:
    ingest_library(library, tmp_path / "store", config=IngestConfig(size=32), workers=1)
    store = LibraryStore.open(tmp_path / "store")
    payload = pickle.dumps(store)
    assert len(payload) < 1000 < store.images.nbytes
    clone = pickle.loads(payload)
    np.testing.assert_array_equal(clone.images, store.images)
    assert clone.fingerprint == store.fingerprint and len(clone.table) == len(store)


def test_fingerprint_stable_and_content_sensitive(library: Path, tmp_path: Path) -> None:
    first = ingest_library(library, tmp_path / "a", config=IngestConfig(size=16), workers=1)
    second = ingest_library(library, tmp_path / "b", config=IngestConfig(size=16), workers=1)
    assert first.fingerprint == second.fingerprint
    _rewrite_scalar(schema.library_file_path(library, 1, 1), "mass", 9.0)
    changed = ingest_library(library, tmp_path / "c", config=IngestConfig(size=16), workers=1)
    assert changed.fingerprint != first.fingerprint


def test_parallel_ingest_matches_serial(library: Path, tmp_path: Path) -> None:
    serial = ingest_library(library, tmp_path / "serial", config=IngestConfig(size=16), workers=1)
    parallel = ingest_library(
        library, tmp_path / "parallel", config=IngestConfig(size=16), workers=2
    )
    assert parallel.fingerprint == serial.fingerprint
    a, b = LibraryStore.open(tmp_path / "serial"), LibraryStore.open(tmp_path / "parallel")
    np.testing.assert_array_equal(a.images, b.images)
    pd.testing.assert_frame_equal(a.table, b.table)


def _break_two_files(library: Path) -> tuple[Path, Path]:
    truncated = schema.library_file_path(library, 0, 1)
    truncated.write_bytes(truncated.read_bytes()[:2000])
    nan_param = schema.library_file_path(library, 2, 0)
    _rewrite_scalar(nan_param, "age", float("nan"))
    return truncated, nan_param


def test_bad_file_stops_ingest_and_writes_nothing(library: Path, tmp_path: Path) -> None:
    truncated, _ = _break_two_files(library)
    with pytest.raises(InputError, match="cannot be read as HDF5") as info:
        ingest_library(library, tmp_path / "store", config=IngestConfig(size=16), workers=1)
    assert truncated.name in str(info.value)
    assert not (tmp_path / "store").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".store")]


def test_skip_bad_ingests_the_rest(library: Path, tmp_path: Path) -> None:
    truncated, nan_param = _break_two_files(library)
    result = ingest_library(
        library, tmp_path / "store", config=IngestConfig(size=16, skip_bad=True), workers=1
    )
    assert (result.n_files, result.n_images, len(result.skipped)) == (4, 32, 2)
    assert "skipped 2" in result.describe()
    skipped = pd.read_csv(tmp_path / "store" / "skipped.csv")
    assert list(skipped.columns) == ["file", "problem"]
    assert set(skipped["file"]) == {
        truncated.relative_to(library).as_posix(),
        nan_param.relative_to(library).as_posix(),
    }
    assert skipped["problem"].str.contains("parameter 'age' is not finite").any()
    store = LibraryStore.open(tmp_path / "store")
    assert len(store) == 32 and store.manifest["counts"]["skipped"] == 2


def test_all_files_bad(tmp_path: Path) -> None:
    library = make_library(tmp_path / "lib", systems=1, snapshots=2)
    for path in library.rglob("*.hdf5"):
        path.write_bytes(b"")
    with pytest.raises(InputError, match="no usable images"):
        ingest_library(library, tmp_path / "store", config=IngestConfig(skip_bad=True), workers=1)
    assert not (tmp_path / "store").exists()


def test_output_rules(library: Path, tmp_path: Path) -> None:
    out = tmp_path / "store"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(InputError, match="not empty"):
        ingest_library(library, out, config=IngestConfig(size=16), workers=1)
    assert (out / "keep.txt").exists()
    ingest_library(library, out, config=IngestConfig(size=16), workers=1, overwrite=True)
    assert not (out / "keep.txt").exists()
    with pytest.raises(ProtomatchError, match="workers"):
        ingest_library(library, tmp_path / "x", workers=0)


def test_bad_settings_are_refused_in_one_line() -> None:
    with pytest.raises(pydantic.ValidationError, match="stretch"):
        IngestConfig(stretch="sqrt")
    with pytest.raises(pydantic.ValidationError, match="extra"):
        IngestConfig(sise=32)
    with pytest.raises(ProtomatchError) as info:
        validated(IngestConfig, size=4)
    assert str(info.value) == "size: Input should be greater than or equal to 16"


def test_open_rejects_non_stores(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not a library store"):
        LibraryStore.open(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=r"manifest\.json: missing"):
        LibraryStore.open(tmp_path / "empty")


def test_catalog_library_ingest(tmp_path: Path) -> None:
    root = tmp_path / "generic"
    root.mkdir()
    y, x = np.mgrid[0:30, 0:30] - 15.0
    rows = []
    for i in range(4):
        np.save(root / f"img{i}.npy", np.exp(-(x**2 + y**2) / (2 * (2 + i) ** 2)))
        rows.append({"file": f"img{i}.npy", "system": f"s{i // 2}", "mass [Msun]": 0.1 * (i + 1)})
    pd.DataFrame(rows).to_csv(root / "catalog.csv", index=False)
    result = ingest_library(
        root, tmp_path / "store", config=IngestConfig(size=16, crop_fraction=0.8), workers=1
    )
    store = LibraryStore.open(result.path)
    assert store.param_names == ("mass",) and store.units == {"mass": "Msun"}
    assert store.systems() == ("s0", "s1")
    np.testing.assert_allclose(store.theta()[:, 0], [0.1, 0.2, 0.3, 0.4])
    assert store.preprocess.crop_fraction == 0.8 and store.au_per_pixel is None
    assert store.table["source"].tolist() == [f"img{i}.npy" for i in range(4)]


# --------------------------------------------------------------------------- command line


def _cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "protomatch", "ingest", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def _assert_one_line_error(run: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert run.returncode != 0
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith("protomatch: error:")
    assert "Traceback" not in run.stderr
    for needle in needles:
        assert needle in lines[0]


def test_cli_refuses_pickle_without_unpickling(tmp_path: Path) -> None:
    library = make_library(tmp_path / "lib", systems=2, snapshots=1)
    marker = tmp_path / "marker"
    evil = schema.library_file_path(library, 1, 0)
    evil.write_bytes(pickle.dumps(_Tripwire(marker), protocol=4))
    run = _cli(library, "-o", tmp_path / "store")
    _assert_one_line_error(run, evil.name, "looks like a Python pickle")
    assert not (tmp_path / "store").exists() and not marker.exists()


@pytest.mark.parametrize(
    ("damage", "needle"),
    [("truncate", "cannot be read as HDF5"), ("nan", "parameter 'mass' is not finite")],
)
def test_cli_bad_file_one_line(tmp_path: Path, damage: str, needle: str) -> None:
    library = make_library(tmp_path / "lib", systems=2, snapshots=1)
    bad = schema.library_file_path(library, 0, 0)
    if damage == "truncate":
        bad.write_bytes(bad.read_bytes()[:1000])
    else:
        _rewrite_scalar(bad, "mass", float("nan"))
    run = _cli(library, "-o", tmp_path / "store", "--size", "16", "--workers", "1")
    _assert_one_line_error(run, bad.name, needle)
    assert not (tmp_path / "store").exists()


def test_cli_skip_bad(tmp_path: Path) -> None:
    library = make_library(tmp_path / "lib", systems=2, snapshots=2)
    bad = schema.library_file_path(library, 1, 1)
    bad.write_text("not hdf5 at all\n")
    run = _cli(library, "-o", tmp_path / "store", "--size", "16", "--skip-bad")
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr
    assert "skipped 1" in run.stdout
    skipped = pd.read_csv(tmp_path / "store" / "skipped.csv")
    assert skipped["file"].tolist() == [bad.relative_to(library).as_posix()]
    assert skipped["problem"].str.contains("text file").all()
    assert len(LibraryStore.open(tmp_path / "store")) == 24


class _Tripwire:
    """Unpickling this creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return pathlib.Path.touch, (pathlib.Path(self.marker),)


def test_tripwire_is_live(tmp_path: Path) -> None:
    pickle.loads(pickle.dumps(_Tripwire(tmp_path / "fired"), protocol=4))
    assert (tmp_path / "fired").exists()
