"""An index's FAISS file and ids are checked against index.json when it is opened."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from protomatch.errors import InputError
from protomatch.matching.index import EmbeddingIndex, build_index
from tests.damage import (
    as_written_before_checksums,
    copy_artefact,
    edit_manifest,
    flip_byte,
    rerecord,
)


@pytest.fixture(scope="module")
def built_index(tiny_model: Path, tiny_store: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("integrity-index") / "index"
    build_index(tiny_model, tiny_store, out)
    return out


@pytest.fixture
def index(built_index: Path, tmp_path: Path) -> Path:
    return copy_artefact(built_index, tmp_path / "index")


def test_index_json_records_every_file(index: Path) -> None:
    files = json.loads((index / "index.json").read_text())["files"]
    assert set(files) == {"faiss.index", "ids.npy", "embeddings.npy"}
    assert EmbeddingIndex.open(index).ids.tolist() == list(range(192))


@pytest.mark.parametrize(("name", "offset"), [("faiss.index", -40), ("ids.npy", -8)])
def test_flipped_vector_or_id_is_refused(index: Path, name: str, offset: int) -> None:
    flip_byte(index / name, offset)
    with pytest.raises(InputError, match=rf"{name}: does not match the SHA-256"):
        EmbeddingIndex.open(index)


def test_ids_outside_the_library_are_refused_even_when_recorded(index: Path) -> None:
    ids = np.arange(192)
    ids[7] = 192
    np.save(index / "ids.npy", ids)
    rerecord(index / "index.json", "ids.npy")
    with pytest.raises(
        InputError, match=r"ids\.npy: holds ids outside the library's rows 0 \.\. 191"
    ):
        EmbeddingIndex.open(index)


def test_index_from_before_checksums_opens_with_a_note(
    index: Path, caplog: pytest.LogCaptureFixture
) -> None:
    as_written_before_checksums(index / "index.json")
    with caplog.at_level(logging.WARNING):
        assert len(EmbeddingIndex.open(index)) == 192
    assert any(
        "index" in r.getMessage() and "no checksums" in r.getMessage() for r in caplog.records
    )


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"n_images": -1}, "bad field n_images: Input should be greater than or equal to 0"),
        (
            {"n_images": 191},
            r"faiss\.index: holds 192 vectors of dimension 16; index\.json says 191",
        ),
        ({"dim": 0}, "bad field dim"),
        ({"model": {"fingerprint": "x"}}, r"bad field model\.path: Field required"),
        ({"neighbour_similarity": {"p1": "high"}}, r"bad field neighbour_similarity\.p1"),
    ],
)
def test_bad_index_json_is_one_line(index: Path, fields: dict, message: str) -> None:
    edit_manifest(index / "index.json", **fields)
    with pytest.raises(InputError, match=message) as error:
        EmbeddingIndex.open(index)
    assert "\n" not in str(error.value)
