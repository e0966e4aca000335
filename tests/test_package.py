from __future__ import annotations

import subprocess
import sys

import pytest

import protomatch


@pytest.mark.parametrize("name", [n for n in protomatch.__all__ if n != "__version__"])
def test_every_public_name_resolves(name: str) -> None:
    assert getattr(protomatch, name) is not None


def test_unknown_attribute_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no_such_thing"):
        protomatch.no_such_thing  # noqa: B018


def test_cli_lists_every_pipeline_command() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "protomatch", "--help"], capture_output=True, text=True, check=True
    )
    for command in ("simulate", "ingest", "train", "index", "match", "evaluate", "observe", "demo"):
        assert command in done.stdout


def test_evaluate_observations_with_a_missing_folder_is_one_line(tmp_path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "protomatch",
            "evaluate",
            str(tmp_path / "model"),
            str(tmp_path / "store"),
            "--observations",
            str(tmp_path / "obs"),
            "-o",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


#: Public before the package was split into subpackages: these must keep working.
EARLIER_PUBLIC_NAMES = (
    "simulate_library",
    "SimulationResult",
    "ingest_library",
    "LibraryStore",
    "read_observation",
    "read_library_file",
    "PreprocessConfig",
    "ParameterNormaliser",
    "similarity_labels",
    "EncoderConfig",
    "SiameseNetwork",
    "ContrastiveLoss",
    "AugmentConfig",
    "TrainConfig",
    "load_config",
    "train_model",
    "load_model",
    "TrainedModel",
    "IndexConfig",
    "build_index",
    "EmbeddingIndex",
    "match_observations",
    "score_pairwise",
    "EvaluateConfig",
    "evaluate_model",
    "run_demo",
    "evaluate_observations",
    "BeamMatchedLibrary",
    "ObserveConfig",
    "make_observations",
    "prepare_observation",
    "ProtomatchError",
    "InputError",
)


@pytest.mark.parametrize("name", EARLIER_PUBLIC_NAMES)
def test_earlier_public_names_still_import(name: str) -> None:
    assert name in protomatch.__all__
    assert getattr(protomatch, name) is not None


@pytest.mark.parametrize(
    "value", ["!!python/object:os.system", "!!python/object/apply:os.system ['true']", "[1, 2"]
)
def test_set_with_a_yaml_tag_or_bad_yaml_is_one_line(run_cli, tmp_path, value) -> None:
    status, _, err = run_cli(
        "observe", tmp_path / "lib", "-o", tmp_path / "o", "--set", f"x={value}"
    )
    assert status == 2 and len(err.strip().splitlines()) == 1
    assert err.startswith("protomatch: error: --set x:") and "Traceback" not in err
