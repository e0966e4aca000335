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
