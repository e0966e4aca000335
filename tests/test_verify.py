"""``protomatch verify``: one line per file, OK or BAD, and a non-zero exit on any problem."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from protomatch._integrity import image_block_hashes
from protomatch.errors import InputError
from protomatch.matching.index import build_index
from protomatch.verify import verify_artefact
from tests.damage import as_written_before_checksums, copy_artefact, flip_byte, rerecord


@pytest.fixture(scope="module")
def built_index(tiny_model: Path, tiny_store: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("verify-index") / "index"
    build_index(tiny_model, tiny_store, out)
    return out


def _lines(text: str) -> list[str]:
    return text.strip().splitlines()


def test_intact_artefacts_pass(run_cli, tiny_store: Path, tiny_model: Path, built_index: Path):
    for folder, files in (
        (tiny_store, ["images.h5", "params.parquet"]),
        (tiny_model, ["model.safetensors"]),
        (built_index, ["faiss.index", "ids.npy", "embeddings.npy"]),
    ):
        status, out, _ = run_cli("verify", folder)
        assert status == 0, out
        lines = _lines(out)
        assert all(line.startswith("OK ") for line in lines[:-1]), out
        assert [line.split()[1].rstrip(":") for line in lines[: len(files)]] == files
        assert lines[-1].endswith("all checks passed")


def test_store_report_checks_nan_and_blocks(tiny_store: Path) -> None:
    result = verify_artefact(tiny_store)
    assert result.ok and result.kind == "library-store"
    assert "every block's SHA-256 matches, 192 images, all finite" in result.describe()


@pytest.mark.parametrize(
    ("kind", "name", "offset"),
    [
        ("store", "images.h5", -4000),
        ("store", "params.parquet", 4000),
        ("model", "model.safetensors", -100),
        ("index", "faiss.index", -40),
        ("index", "ids.npy", -8),
        ("index", "embeddings.npy", -8),
    ],
)
def test_a_flipped_byte_is_one_bad_line_and_exit_1(
    run_cli, tmp_path, tiny_store, tiny_model, built_index, kind, name, offset
) -> None:
    source = {"store": tiny_store, "model": tiny_model, "index": built_index}[kind]
    folder = copy_artefact(source, tmp_path / kind)
    flip_byte(folder / name, offset)
    status, out, _ = run_cli("verify", folder)
    assert status == 1
    bad = [line for line in _lines(out) if line.startswith("BAD")]
    assert bad and all(f" {name}: " in line for line in bad), out
    assert "SHA-256 differs from the manifest" in bad[0]


def test_nan_in_a_store_is_found_even_when_its_checksums_agree(tmp_path, tiny_store) -> None:
    """A store written by a buggy version: NaN pixels and a NaN parameter, hashes recomputed."""
    store = copy_artefact(tiny_store, tmp_path / "store")
    with h5py.File(store / "images.h5", "r+") as handle:
        handle["images"][17, 3, 3] = np.nan
        images = handle["images"][()]
    table = pd.read_parquet(store / "params.parquet")
    table.loc[5, "disk_size"] = np.inf
    table.to_parquet(store / "params.parquet", index=False)
    manifest = json.loads((store / "manifest.json").read_text())
    blocks = manifest["files"]["images.h5"]["blocks"]
    blocks["sha256"] = image_block_hashes(images, blocks["images_per_block"])
    (store / "manifest.json").write_text(json.dumps(manifest))
    rerecord(store / "manifest.json", "images.h5")
    rerecord(store / "manifest.json", "params.parquet")
    result = verify_artefact(store)
    bad = [c.line() for c in result.checks if not c.ok]
    assert bad == [
        "BAD  images.h5: NaN/inf in 1 image rows: 17",
        "BAD  params.parquet: NaN/inf in 1 columns: disk_size",
    ]


def test_artefact_from_before_checksums_cannot_pass(tmp_path, tiny_model) -> None:
    model = copy_artefact(tiny_model, tmp_path / "model")
    as_written_before_checksums(model / "model.json")
    result = verify_artefact(model)
    assert not result.ok
    assert [c.line()[:3] for c in result.checks] == ["BAD", "OK "]
    assert "none recorded" in result.checks[0].detail


def test_unknown_folder_is_one_line(run_cli, tmp_path) -> None:
    (tmp_path / "manifest.json").write_text(json.dumps({"kind": "library", "schema_version": 1}))
    status, _, err = run_cli("verify", tmp_path)
    assert status == 2 and len(_lines(err)) == 1
    assert "is a manifest of kind 'library'; verify checks" in err
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="holds no protomatch manifest"):
        verify_artefact(tmp_path / "empty")


def test_verify_cli_in_a_subprocess_exits_1_on_damage(tmp_path, tiny_store) -> None:
    store = copy_artefact(tiny_store, tmp_path / "store")
    flip_byte(store / "params.parquet", 4000)
    done = subprocess.run(
        [sys.executable, "-m", "protomatch", "verify", str(store)],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        timeout=300,
    )
    assert done.returncode == 1, done.stderr
    assert "BAD  params.parquet" in done.stdout and "Traceback" not in done.stderr


def test_match_report_lists_every_file_and_verifies(
    run_cli, built_index: Path, tiny_library: Path, tmp_path: Path
) -> None:
    from protomatch.matching.match import MatchConfig, match_observations

    target = f"{sorted(tiny_library.glob('sink*/output_*_data.hdf5'))[0]}:2"
    report = tmp_path / "report"
    match_observations(built_index, [target], report, config=MatchConfig(k=5))
    files = json.loads((report / "manifest.json").read_text())["files"]
    assert {"matches.csv", "index.html", "summary.json"} <= set(files)
    assert "manifest.json" not in files
    status, out, _ = run_cli("verify", report)
    assert status == 0, out
    (report / "matches.csv").write_text("file,similarity\nother.fits,0.99\n")
    status, out, _ = run_cli("verify", report)
    assert status == 1 and "BAD  matches.csv: " in out
