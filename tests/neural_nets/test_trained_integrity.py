"""A model's weights are checked against model.json; a bad model.json is one line."""

from __future__ import annotations

import json
import logging
import resource
from pathlib import Path

import pytest
import torch

from protomatch.errors import InputError
from protomatch.neural_nets.trained import load_model
from tests.damage import as_written_before_checksums, copy_artefact, edit_manifest, flip_byte


@pytest.fixture
def model(tiny_model: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny model."""
    return copy_artefact(tiny_model, tmp_path / "model")


def _manifest(model: Path) -> dict:
    return json.loads((model / "model.json").read_text())


def test_model_json_records_the_weights(model: Path) -> None:
    manifest = _manifest(model)
    record = manifest["files"]["model.safetensors"]
    assert record["bytes"] == (model / "model.safetensors").stat().st_size
    assert record["sha256"][:16] == manifest["fingerprint"]
    assert manifest["schema_version"] == 2


@pytest.mark.parametrize("offset", [9, 200, -5, -1000])
def test_flipped_weight_byte_is_refused(model: Path, offset: int) -> None:
    flip_byte(model / "model.safetensors", offset)
    with pytest.raises(InputError, match=r"model\.safetensors: does not match the SHA-256"):
        load_model(model)


def test_model_from_before_checksums_is_checked_by_its_fingerprint(model: Path) -> None:
    """Models always recorded the weights' SHA-256 prefix as fingerprint: that still guards."""
    as_written_before_checksums(model / "model.json")
    assert load_model(model).fingerprint == _manifest(model)["fingerprint"]
    flip_byte(model / "model.safetensors", -1000)
    with pytest.raises(InputError, match="does not match the model's fingerprint"):
        load_model(model)


def test_a_fingerprint_unlike_the_recorded_weights_is_refused(model: Path) -> None:
    edit_manifest(model / "model.json", fingerprint="0123456789abcdef")
    with pytest.raises(InputError, match="does not match the model's fingerprint"):
        load_model(model)


def test_checkpoint_weights_are_checked(model: Path) -> None:
    from protomatch.neural_nets.trained import load_checkpoint

    trained = load_model(model)
    optimizer = torch.optim.AdamW(trained.network.parameters())
    assert load_checkpoint(model / "checkpoints", trained.network, optimizer)["epoch"] >= 1
    flip_byte(model / "checkpoints" / "last.safetensors", -100)
    with pytest.raises(InputError, match=r"last\.safetensors: does not match the SHA-256"):
        load_checkpoint(model / "checkpoints", trained.network, optimizer)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"architecture": None}, "bad field architecture: Field required"),
        ({"preprocessing": {"size": "big"}}, "bad field preprocessing.size"),
        ({"fingerprint": 12}, "bad field fingerprint: Input should be a valid string"),
        ({"parameters": {"names": []}}, "bad field parameters.normalisation: Field required"),
        ({"library": "store"}, "bad field library: Input should be a valid dictionary"),
        ({"kind": "index"}, "is not a protomatch model manifest"),
        ({"schema_version": 99}, "model schema version 99 is newer than this protomatch"),
        ({"schema_version": "2"}, "has no integer schema_version"),
    ],
)
def test_bad_model_json_field_is_one_line(model: Path, fields: dict, message: str) -> None:
    edit_manifest(model / "model.json", **fields)
    with pytest.raises(InputError, match=message) as error:
        load_model(model)
    assert "\n" not in str(error.value) and "model.json" in str(error.value)


def test_weights_of_another_length_is_refused_naming_the_field(model: Path) -> None:
    manifest = _manifest(model)
    manifest["parameters"]["weights"] = manifest["parameters"]["weights"][:-1]
    (model / "model.json").write_text(json.dumps(manifest))
    with pytest.raises(InputError, match="bad field parameters: weights: one weight per"):
        load_model(model)


def test_huge_architecture_is_refused_without_allocating_it(model: Path) -> None:
    """A model.json claiming a 10^6-wide network must not build it before the shape check."""
    manifest = _manifest(model)
    manifest["architecture"]["hidden_dim"] = 10**6
    manifest["architecture"]["channels"] = [10**5, 10**5]
    (model / "model.json").write_text(json.dumps(manifest))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(InputError, match="weights do not fit the architecture"):
        load_model(model)
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kib < 200_000  # the real network would need hundreds of GB


def test_architecture_too_large_to_describe_is_one_line(model: Path) -> None:
    """Found by the fuzz tests: an input size of 2^63 overflowed inside torch."""
    manifest = _manifest(model)
    manifest["architecture"]["input_size"] = 2**63
    (model / "model.json").write_text(json.dumps(manifest))
    with pytest.raises(InputError, match=r"model\.json: architecture cannot be built"):
        load_model(model)


def test_loading_logs_no_note_for_current_models(
    model: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        load_model(model)
    assert not caplog.records
