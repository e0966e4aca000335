"""TrainedModel.check_store: a store the model cannot embed or describe is one clear error."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from protomatch.errors import InputError
from protomatch.library.ingest import IngestConfig, ingest_library
from protomatch.library.params import ParameterNormaliser
from protomatch.library.store import LibraryStore
from protomatch.neural_nets.trained import load_model


def test_the_training_store_fits(tiny_model: Path, tiny_store: Path) -> None:
    load_model(tiny_model).check_store(LibraryStore.open(tiny_store))


def test_other_image_size_names_the_store(tiny_model: Path, tiny_library: Path, tmp_path):
    out = tmp_path / "store16"
    ingest_library(tiny_library, out, config=IngestConfig(size=16), workers=1)
    with pytest.raises(InputError, match=r"holds 16 px images.*--size 32") as info:
        load_model(tiny_model).check_store(LibraryStore.open(out))
    assert info.value.path == out


def test_missing_parameter_names_the_store(tiny_model: Path, tiny_store: Path) -> None:
    trained = load_model(tiny_model)
    normaliser = trained.normaliser
    extended = ParameterNormaliser(
        (*normaliser.names, "magnetic_field"),
        (*normaliser.log10, False),
        (*normaliser.centre, 0.0),
        (*normaliser.scale, 1.0),
        normaliser.method,
    )
    other = dataclasses.replace(trained, normaliser=extended)
    with pytest.raises(InputError, match=r"lacks the model's parameter.*magnetic_field") as info:
        other.check_store(LibraryStore.open(tiny_store))
    assert info.value.path == tiny_store
