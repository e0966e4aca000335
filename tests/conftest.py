"""Shared fixtures: every test starts from the same seeds and a single torch thread.

Property-based tests (hypothesis) run under the ``ci`` profile: a bounded, reproducible
number of examples. ``HYPOTHESIS_PROFILE=long`` runs 2000 random examples per test.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

_HEALTH = [HealthCheck.too_slow, HealthCheck.data_too_large]
settings.register_profile(
    "ci",
    max_examples=40,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=_HEALTH,
)
settings.register_profile(
    "long", max_examples=2000, deadline=None, database=None, suppress_health_check=_HEALTH
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(autouse=True)
def _seed_everything() -> None:
    random.seed(0)
    np.random.seed(0)
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a hard requirement
        return
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def tiny_library(tmp_path_factory: pytest.TempPathFactory):
    """A simulated library of 8 systems x 3 snapshots x 8 projections at 32 px."""
    from protomatch.simulators.library import SimulateConfig, simulate_library

    root = tmp_path_factory.mktemp("tiny") / "library"
    config = SimulateConfig(systems=8, snapshots=3, size=32, seed=11)
    simulate_library(root, config=config, workers=1)
    return root


@pytest.fixture(scope="session")
def tiny_store(tiny_library, tmp_path_factory: pytest.TempPathFactory):
    """The tiny library ingested at 32 px."""
    from protomatch.library.ingest import IngestConfig, ingest_library

    out = tmp_path_factory.mktemp("tiny-store") / "store"
    ingest_library(tiny_library, out, config=IngestConfig(size=32), workers=1)
    return out


def tiny_training_overrides(**extra):
    """A training configuration small enough for a test: seconds on one core."""
    settings = {
        "epochs": 3,
        "pairs.pairs_per_epoch": 256,
        "pairs.batch_size": 32,
        "validation_pairs": 64,
        "encoder.channels": [8, 16],
        "encoder.hidden_dim": 32,
        "encoder.embedding_dim": 16,
        "split.train": 0.5,
        "split.validation": 0.25,
        "split.test": 0.25,
        "device": "cpu",
    }
    settings.update(extra)
    return settings


@pytest.fixture(scope="session")
def tiny_model(tiny_store, tmp_path_factory: pytest.TempPathFactory):
    """A model trained for a few epochs on the tiny store."""
    from protomatch.training.config import load_config
    from protomatch.training.engine import train_model

    out = tmp_path_factory.mktemp("tiny-model") / "model"
    train_model(tiny_store, out, config=load_config(None, tiny_training_overrides()))
    return out


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch):
    """Run ``protomatch ARGS...`` in this process: returns (exit status, stdout, stderr)."""
    import sys

    from protomatch.cli import main

    def run(*args: object) -> tuple[int, str, str]:
        capsys.readouterr()
        monkeypatch.setattr(sys, "argv", ["protomatch", *map(str, args)])
        try:
            main()
            status = 0
        except SystemExit as stop:
            status = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
        out, err = capsys.readouterr()
        return status, out, err

    return run


def write_foreign_library(
    root: Path, attrs: dict[str, object] | None = None, systems: int = 2, side: int = 40
) -> Path:
    """A research-schema library as another code writes it: float64 Jy/sr, no protomatch attrs.

    Each system's images are round Gaussians whose width grows with the system number and
    the projection; every parameter is drawn uniformly in [1, 10].
    """
    import h5py

    from protomatch.library import schema

    rng = np.random.default_rng(3)
    y, x = np.mgrid[0:side, 0:side] - side / 2
    for system in range(1, systems + 1):
        for snapshot in (10, 20):
            path = schema.library_file_path(root, system, snapshot)
            path.parent.mkdir(parents=True, exist_ok=True)
            with h5py.File(path, "w") as handle:
                for k in range(1, 9):
                    width = 2.0 + k + system
                    image = 1e6 * np.exp(-(x**2 + y**2) / (2 * width**2)) + 1.0
                    handle[schema.projection_dataset(k)] = image.astype(np.float64)
                for name in schema.DEFAULT_PARAMETERS:
                    handle[name] = float(rng.uniform(1, 10))
                for key, value in (attrs or {}).items():
                    handle.attrs[key] = value
    return root
