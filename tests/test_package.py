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
