from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from protomatch.demo import (
    check_demo_output,
    demo_config,
    is_demo_folder,
    run_demo,
    write_demo_manifest,
)
from protomatch.errors import InputError
from protomatch.simulators.library import SimulateConfig
from protomatch.training.config import load_config
from tests.conftest import tiny_training_overrides


@pytest.mark.slow
def test_demo_runs_the_whole_pipeline_on_a_held_out_system(tmp_path: Path) -> None:
    overrides = tiny_training_overrides(epochs=2)
    overrides.pop("device")
    training = load_config(None, overrides)
    library = SimulateConfig(systems=8, snapshots=3, size=32, seed=3)
    result = run_demo(tmp_path / "demo", workers=1, library=library, training=training)
    out = tmp_path / "demo"
    held_out, mock = result.report.targets
    summary = json.loads((held_out.folder / "summary.json").read_text())
    split = json.loads((out / "model" / "model.json").read_text())["split"]
    target_system = summary["target"].split("_isink_")[1].split("_")[0]
    assert target_system in split["test"]
    assert summary["parameters"]["disk_size"]["truth"] is not None
    # the mock observation is matched at its beam and noise, with its truth shown
    observed = json.loads((mock.folder / "summary.json").read_text())
    assert any("convolved to the observation's beam" in note for note in observed["notes"])
    assert observed["parameters"]["disk_size"]["truth"] is not None
    # both are reported with the verdict of the demo's validation on other mocks
    validation = json.loads((out / "validation" / "metrics.json").read_text())["verdict"]
    assert observed["validation"]["parameters"] == validation["parameters"]
    assert observed["validation"]["observations"] == 30
    assert any("the pixels'" in note for note in observed["notes"])
    assert (out / "report" / "index.html").is_file()
    assert (out / "evaluation" / "metrics.md").is_file()
    assert (out / "library" / "preview.png").is_file()
    assert "report:" in result.describe() and "demo finished" in result.describe()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["kind"] == "demo" and manifest["finished"] is True
    assert set(manifest["seconds"]) == set(result.seconds)
    # a second run reuses the simulated library
    again = run_demo(out, workers=1, library=library, training=training)
    assert "simulate" not in again.seconds


# --------------------------------------------------------------------------- the demo's folder


def _cli_demo(out: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "protomatch", "demo", "-o", str(out)]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def test_cli_demo_refuses_a_non_empty_folder_it_did_not_write(tmp_path: Path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    run = _cli_demo(out)
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith("protomatch: error:")
    assert str(out) in lines[0] and "not empty" in lines[0]
    assert sorted(p.name for p in out.iterdir()) == ["thesis.tex"]
    assert (out / "thesis.tex").read_text() == "precious"


def test_demo_refuses_a_file_and_a_foreign_folder(tmp_path: Path) -> None:
    afile = tmp_path / "file.txt"
    afile.write_text("x")
    with pytest.raises(InputError, match="not a folder"):
        check_demo_output(afile)
    store = tmp_path / "store"
    store.mkdir()
    (store / "manifest.json").write_text(json.dumps({"kind": "library-store"}))
    assert not is_demo_folder(store)
    with pytest.raises(InputError, match=f"{store}: is not empty"):
        run_demo(store)  # refused before any stage runs
    assert sorted(p.name for p in store.iterdir()) == ["manifest.json"]


@pytest.mark.parametrize("make", [False, True], ids=["absent", "empty"])
def test_demo_accepts_an_absent_or_empty_folder(tmp_path: Path, make: bool) -> None:
    out = tmp_path / "demo"
    if make:
        out.mkdir()
    check_demo_output(out)
    assert not is_demo_folder(out)


def test_a_folder_the_demo_wrote_is_recognised_and_accepted(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    write_demo_manifest(out, SimulateConfig(systems=8, snapshots=3, size=32), demo_config())
    (out / "library").mkdir()
    (out / "store").mkdir()
    (out / "store" / "images.h5").write_bytes(b"")
    assert is_demo_folder(out)
    check_demo_output(out)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["kind"] == "demo" and manifest["finished"] is False
    assert manifest["settings"]["library"]["systems"] == 8
    assert manifest["settings"]["training"]["epochs"] == demo_config().epochs


def test_a_demo_folder_from_before_the_manifest_is_still_recognised(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    (out / "library").mkdir(parents=True)
    (out / "model").mkdir()
    (out / "library" / "manifest.json").write_text(json.dumps({"kind": "simulated-library"}))
    assert is_demo_folder(out)
    check_demo_output(out)
    (out / "notes.txt").write_text("mine")  # anything else: not the demo's
    assert not is_demo_folder(out)
    with pytest.raises(InputError, match="not empty"):
        check_demo_output(out)


def test_a_broken_manifest_is_not_a_demo_folder(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    out.mkdir()
    (out / "manifest.json").write_text("{not json")
    assert not is_demo_folder(out)
    (out / "manifest.json").write_text("[1, 2]")
    assert not is_demo_folder(out)
