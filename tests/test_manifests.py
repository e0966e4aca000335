"""The validated manifest models: a wrong or missing field is one line naming the field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from protomatch._artefact import MAX_MANIFEST_BYTES, read_json
from protomatch._manifests import BY_KIND, StoreManifest, load_manifest
from protomatch.errors import InputError
from protomatch.library.store import LibraryStore


@pytest.fixture
def store_manifest(tiny_store: Path, tmp_path: Path) -> Path:
    path = tmp_path / "manifest.json"
    path.write_text((tiny_store / "manifest.json").read_text())
    return path


def _edit(path: Path, **fields: object) -> None:
    manifest = json.loads(path.read_text())
    manifest.update(fields)
    path.write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"au_per_pixel": "50"}, "bad field au_per_pixel: Input should be a valid number"),
        ({"au_per_pixel": -2.0}, "bad field au_per_pixel: Input should be greater than 0"),
        ({"au_per_pixel": float("inf")}, "bad field au_per_pixel: Input should be a finite number"),
        ({"parameters": "mass"}, "bad field parameters: Input should be a valid list"),
        ({"image_shape": [10, 32]}, "bad field image_shape: List should have at least 3 items"),
        ({"image_shape": [10, 32, 16]}, "bad field image_shape: images must be square"),
        ({"preprocess": {"size": 8}}, r"bad field preprocess\.size: Input should be greater"),
        ({"units": {"mass": 1}}, r"bad field units\.mass: Input should be a valid string"),
        ({"counts": {"images": -3}}, r"bad field counts\.images: Input should be greater"),
        (
            {"description": {"parameters": {"mass": {"log": "yes"}}}},
            r"description\.parameters\.mass\.log",
        ),
        ({"files": {"images.h5": {"sha256": "abc", "bytes": 1}}}, r"files\.images\.h5\.sha256"),
        ({"files": {"../../etc/passwd": {"sha256": "0" * 64, "bytes": 1}}}, "not a path inside"),
        ({"files": {"/dev/zero": {"sha256": "0" * 64, "bytes": 0}}}, "not a path inside"),
    ],
)
def test_bad_store_field_is_one_line_naming_it(store_manifest: Path, fields, message) -> None:
    _edit(store_manifest, **fields)
    with pytest.raises(InputError, match=message) as error:
        load_manifest(store_manifest, StoreManifest)
    assert str(error.value).startswith(str(store_manifest)) and "\n" not in str(error.value)


def test_missing_field_is_named(store_manifest: Path) -> None:
    manifest = json.loads(store_manifest.read_text())
    del manifest["fingerprint"]
    store_manifest.write_text(json.dumps(manifest))
    with pytest.raises(InputError, match="bad field fingerprint: Field required"):
        load_manifest(store_manifest, StoreManifest)


def test_unknown_fields_are_kept(store_manifest: Path) -> None:
    _edit(store_manifest, note_from_a_newer_release={"a": 1})
    manifest = load_manifest(store_manifest, StoreManifest)
    assert manifest.as_dict()["note_from_a_newer_release"] == {"a": 1}


def test_a_string_au_per_pixel_stops_the_store_opening(tiny_store: Path, tmp_path: Path) -> None:
    import shutil

    store = Path(shutil.copytree(tiny_store, tmp_path / "store"))
    _edit(store / "manifest.json", au_per_pixel="50 AU")
    with pytest.raises(InputError, match="bad field au_per_pixel"):
        LibraryStore.open(store)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1" * 5000, "is not valid JSON"),
        ("[" * 100_000 + "]" * 100_000, "is not valid JSON"),
        ('{"kind": "library-store"', "is not valid JSON"),
        ("\udcff", "is not valid JSON"),
    ],
)
def test_hostile_json_is_one_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "manifest.json"
    path.write_bytes(text.encode("utf-8", "surrogateescape"))
    with pytest.raises(InputError, match=message) as error:
        load_manifest(path, StoreManifest)
    assert "\n" not in str(error.value)


def test_oversized_manifest_is_refused_before_reading(tmp_path: Path) -> None:
    path = tmp_path / "manifest.json"
    with path.open("wb") as handle:
        handle.truncate(MAX_MANIFEST_BYTES + 1)
    with pytest.raises(InputError, match="too large for a manifest"):
        read_json(path)


def test_every_kind_has_one_model() -> None:
    assert set(BY_KIND) == {
        "library-store",
        "model",
        "index",
        "observation-evaluation",
        "interval-calibration",
        "match-report",
    }
    assert all(kind == model.KIND for kind, model in BY_KIND.items())
