"""``protomatch info`` and ``--version``: what an artefact knows, from its manifest only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from protomatch import __version__
from protomatch.info import describe_artefact
from tests.damage import copy_artefact, edit_manifest


def test_version_prints_the_package_version(run_cli) -> None:
    status, out, _ = run_cli("--version")
    assert status == 0
    assert out.strip() == f"protomatch {__version__}"


def test_info_on_a_store_says_where_each_fact_came_from(run_cli, tiny_store: Path) -> None:
    status, out, _ = run_cli("info", tiny_store)
    assert status == 0
    assert out.splitlines()[0] == f"{tiny_store}: library-store"
    assert "pixel scale:" in out and "from file attribute 'au_per_pixel'" in out
    assert "intensity unit: MJy/sr" in out
    assert "made by:" in out


def test_info_on_a_foreign_store_names_what_is_unknown(run_cli, tmp_path: Path) -> None:
    from tests.conftest import write_foreign_library

    library = write_foreign_library(tmp_path / "lib", attrs={"pixel_size": 20.0})
    status, _, _ = run_cli("ingest", library, "-o", tmp_path / "store", "--workers", "1")
    assert status == 0
    status, out, _ = run_cli("info", tmp_path / "store")
    assert status == 0
    assert "pixel scale: UNKNOWN" in out
    assert "intensity unit: UNKNOWN" in out
    assert "pixel_size" in out  # the ambiguous attribute is named, not guessed


def test_info_on_a_model_shows_its_library_and_parameters(run_cli, tiny_model: Path) -> None:
    status, out, _ = run_cli("info", tiny_model)
    assert status == 0
    assert out.splitlines()[0] == f"{tiny_model}: model"
    assert "library pixel scale:" in out and "AU/pixel" in out
    assert "disk_size [AU]" in out
    assert "best epoch:" in out


def test_info_says_a_model_is_unfinished(run_cli, tiny_model: Path, tmp_path: Path) -> None:
    model = copy_artefact(tiny_model, tmp_path / "model")
    assert "UNFINISHED" not in run_cli("info", model)[1]
    edit_manifest(model / "model.json", complete=False)
    status, out, _ = run_cli("info", model)
    assert status == 0 and "UNFINISHED" in out and "--resume" in out


def test_info_on_an_index_includes_its_store(tiny_model: Path, tiny_store: Path, tmp_path) -> None:
    from protomatch.matching.index import build_index

    build_index(tiny_model, tiny_store, tmp_path / "index")
    text = describe_artefact(tmp_path / "index")
    assert text.splitlines()[0].endswith(": index")
    assert "FAISS kind" in text
    assert "the library store:" in text and "pixel scale:" in text


def test_info_on_a_folder_without_manifest_is_one_line_exit_2(run_cli, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    status, out, err = run_cli("info", tmp_path / "empty")
    assert status == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1
    assert "holds no protomatch manifest" in err and "empty" in err


@pytest.mark.parametrize("content", ["{not json", "[1, 2]"])
def test_info_on_a_broken_manifest_names_the_file(run_cli, tmp_path: Path, content) -> None:
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "manifest.json").write_text(content)
    status, _, err = run_cli("info", folder)
    assert status == 2
    assert "manifest.json" in err
    assert "Traceback" not in err


def test_info_on_a_generic_artefact_lists_its_settings(tmp_path: Path) -> None:
    folder = tmp_path / "obs"
    folder.mkdir()
    payload = {"kind": "observations", "command": "protomatch observe x", "settings": {"n": 3}}
    (folder / "manifest.json").write_text(json.dumps(payload))
    text = describe_artefact(folder)
    assert text.splitlines()[0] == f"{folder}: observations"
    assert '"n": 3' in text
