from __future__ import annotations

import json
from pathlib import Path

import pytest

from protomatch.demo import run_demo
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
    assert (out / "report" / "index.html").is_file()
    assert (out / "evaluation" / "metrics.md").is_file()
    assert (out / "library" / "preview.png").is_file()
    assert "report:" in result.describe() and "demo finished" in result.describe()
    # a second run reuses the simulated library
    again = run_demo(out, workers=1, library=library, training=training)
    assert "simulate" not in again.seconds
