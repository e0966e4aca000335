"""The NPE baseline (sbi): a posterior that learns from images, and its place in evaluate."""

from __future__ import annotations

import importlib.util
import json
import sys

import numpy as np
import pandas as pd
import pytest

from protomatch.errors import OptionalDependencyError
from protomatch.evaluation._npe import NpeSettings, fit_npe, require_sbi
from protomatch.evaluation.observations import (
    DEFAULT_METHODS,
    METHODS,
    ObservationEvaluationConfig,
    evaluate_observations,
)
from protomatch.evaluation.recovery import quantile_index
from protomatch.library.preprocess import PreprocessConfig
from protomatch.training.augment import AugmentConfig

needs_sbi = pytest.mark.skipif(
    importlib.util.find_spec("sbi") is None, reason="sbi is not installed (protomatch[sbi])"
)
SIZE = 16
#: Small enough to train in a few seconds on one core.
TINY = NpeSettings(
    hidden_features=16,
    transforms=2,
    channels=(8, 16),
    hidden_dim=32,
    embedding_dim=8,
    batch_size=64,
    learning_rate=3e-3,
    max_epochs=25,
    stop_after_epochs=25,
    validation_copies=1,
    samples=300,
    seed=3,
)
CLEAN = AugmentConfig(rotate=False, flip=False, beam=False, noise=False)


def blobs(theta: np.ndarray) -> np.ndarray:
    """(N, SIZE, SIZE) elliptical Gaussians whose x and y widths are set by theta[:, 0], [:, 1]."""
    y, x = np.mgrid[0:SIZE, 0:SIZE] - (SIZE - 1) / 2
    sx = 2.5 + 1.0 * theta[:, 0, None, None]
    sy = 2.5 + 1.0 * theta[:, 1, None, None]
    return np.exp(-0.5 * ((x / sx) ** 2 + (y / sy) ** 2)).astype(np.float32)


def draw(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    theta = np.random.default_rng(seed).uniform(-1.5, 1.5, size=(n, 2))
    return blobs(theta), theta


@pytest.fixture(scope="module")
def fitted():
    images, theta = draw(512, 0)
    held_images, held_theta = draw(128, 1)
    preprocess = PreprocessConfig(size=SIZE, stretch="linear")
    return fit_npe(images, theta, held_images, held_theta, preprocess, CLEAN, TINY)


def ordered(quantiles: np.ndarray) -> np.ndarray:
    """(..., 5) quantiles in increasing level order: q2.5, q16, median, q84, q97.5."""
    return quantiles[..., [quantile_index(n) for n in ("q2.5", "q16", "median", "q84", "q97.5")]]


@needs_sbi
def test_the_posterior_median_beats_the_prior_where_the_image_tells_theta(fitted) -> None:
    images, theta = draw(64, 2)
    quantiles = fitted.quantiles(images)
    assert quantiles.shape == (64, 2, 5)
    median = quantiles[..., quantile_index("median")]
    npe_error = np.median(np.abs(median - theta), axis=0)
    prior_error = np.median(np.abs(np.median(draw(512, 0)[1], axis=0) - theta), axis=0)
    # the prior's median error is ~0.75 here; the widths are read off the image
    assert (npe_error < 0.5 * prior_error).all(), (npe_error, prior_error)


@needs_sbi
def test_quantiles_are_finite_and_ordered(fitted) -> None:
    quantiles = ordered(fitted.quantiles(draw(16, 4)[0]))
    assert np.isfinite(quantiles).all()
    assert (np.diff(quantiles, axis=-1) >= 0).all()
    assert (quantiles[..., -1] > quantiles[..., 0]).all()  # not collapsed to a point


@needs_sbi
def test_quantiles_are_in_the_error_space(fitted) -> None:
    import dataclasses

    shifted = dataclasses.replace(fitted, centre=np.array([1.0, -2.0]), scale=np.array([2.0, 0.5]))
    images = draw(4, 5)[0]
    expected = np.array([1.0, -2.0])[:, None] + np.array([2.0, 0.5])[:, None] * fitted.quantiles(
        images
    )
    np.testing.assert_allclose(shifted.quantiles(images), expected, rtol=1e-6, atol=1e-9)


@needs_sbi
def test_the_same_seed_gives_the_same_posterior(fitted) -> None:
    images, theta = draw(512, 0)
    held_images, held_theta = draw(128, 1)
    preprocess = PreprocessConfig(size=SIZE, stretch="linear")
    again = fit_npe(images, theta, held_images, held_theta, preprocess, CLEAN, TINY)
    queries = draw(8, 6)[0]
    np.testing.assert_array_equal(again.quantiles(queries), fitted.quantiles(queries))
    assert again.record["best_validation_loss"] == fitted.record["best_validation_loss"]


@needs_sbi
def test_augmented_training_runs_and_records_how(fitted) -> None:
    images, theta = draw(128, 7)
    held_images, held_theta = draw(32, 8)
    preprocess = PreprocessConfig(size=SIZE)
    settings = TINY.model_copy(update={"max_epochs": 2, "validation_copies": 2})
    estimator = fit_npe(
        images, theta, held_images, held_theta, preprocess, AugmentConfig(), settings
    )
    record = estimator.record
    assert record["epochs"] == 2
    assert record["train_images"] == 128 and record["validation_images"] == 64
    assert record["augment"] == AugmentConfig().model_dump(mode="json")
    assert np.isfinite(estimator.quantiles(held_images[:3])).all()


def test_npe_is_optional_and_not_a_default() -> None:
    assert "npe" in METHODS and "npe" not in DEFAULT_METHODS


def test_without_sbi_asking_for_npe_is_refused_in_one_line(monkeypatch, tmp_path) -> None:
    monkeypatch.setitem(sys.modules, "sbi", None)  # ``import sbi`` now raises ImportError
    with pytest.raises(OptionalDependencyError) as info:
        require_sbi()
    message = str(info.value)
    assert "pip install 'protomatch[sbi]'" in message and "\n" not in message
    with pytest.raises(OptionalDependencyError, match=r"protomatch\[sbi\]"):
        evaluate_observations(
            tmp_path / "model",
            tmp_path / "store",
            tmp_path / "obs",
            tmp_path / "out",
            config=ObservationEvaluationConfig(methods=("protomatch", "npe")),
        )
    assert not (tmp_path / "out").exists()


def test_without_sbi_the_command_line_says_what_to_install(monkeypatch, run_cli, tmp_path) -> None:
    monkeypatch.setitem(sys.modules, "sbi", None)
    status, _, err = run_cli(
        "evaluate", tmp_path / "m", tmp_path / "s", "-o", tmp_path / "out",
        "--observations", tmp_path, "--method", "protomatch", "--method", "npe",
    )  # fmt: skip
    assert status != 0
    assert err.strip().count("\n") == 0 and "pip install 'protomatch[sbi]'" in err


# --------------------------------------------------------------------------- in evaluate

SMALL = {"n": 4, "seed": 6, "npix_range": (40, 56), "snr_range": (20.0, 60.0)}


@pytest.fixture(scope="module")
def evaluated(tiny_model, tiny_store, tiny_library, tmp_path_factory):
    from protomatch.simulators.observations import ObserveConfig, make_observations

    observations = tmp_path_factory.mktemp("npe-obs") / "obs"
    make_observations(tiny_library, observations, config=ObserveConfig(**SMALL), workers=1)
    out = tmp_path_factory.mktemp("npe-eval") / "eval"
    config = ObservationEvaluationConfig(k=12, methods=("protomatch_beam_noise", "npe"))
    return evaluate_observations(tiny_model, tiny_store, observations, out, config=config)


@needs_sbi
@pytest.mark.slow
def test_npe_is_scored_like_every_other_method(evaluated, tiny_model) -> None:
    metrics = json.loads((evaluated.out / "metrics.json").read_text())
    assert list(metrics["methods"]) == ["protomatch_beam_noise", "npe", "prior"]
    for record in metrics["parameters"].values():
        assert list(record["methods"]) == ["protomatch_beam_noise", "npe", "prior"]
        keys = set(record["methods"]["protomatch_beam_noise"])
        assert set(record["methods"]["npe"]) == keys  # scores, coverage before calibration, ...
        assert keys == set(record["methods"]["prior"]) | {"uncalibrated", "diagnostics"}
        scores = record["methods"]["npe"]
        assert scores["median_abs_error"] >= 0 and 0 <= scores["coverage68"] <= 1
    # a baseline in the bootstrap, the verdict and the tables
    assert "npe" in metrics["bootstrap"]["parameter_difference"]
    assert "npe" in metrics["by_condition"]["snr"]["parts"][0]["methods"]
    assert "npe" in evaluated.markdown_table()
    # trained on the model's training systems only
    split = json.loads((tiny_model / "model.json").read_text())["split"]
    assert metrics["npe"]["train_systems"] == len(split["train"])
    assert metrics["npe"]["validation_systems"] == len(split["validation"])
    assert metrics["npe"]["seconds"] > 0
    estimates = pd.read_csv(evaluated.out / "estimates.csv")
    npe = estimates[estimates["method"] == "npe"]
    assert len(npe) == SMALL["n"] * len(metrics["parameters"])
    levels = npe[["q2.5", "q16", "median", "q84", "q97.5"]].to_numpy()
    assert np.isfinite(levels).all() and (np.diff(levels, axis=1) >= 0).all()


@needs_sbi
@pytest.mark.slow
def test_npe_can_be_the_strongest_baseline(evaluated) -> None:
    from protomatch.evaluation._observation_figures import parameter_verdicts, strongest_baseline

    metrics = json.loads(json.dumps(evaluated.metrics))
    for record in metrics["parameters"].values():
        record["methods"]["npe"]["error_over_prior_spread"] = 0.0
        record["methods"]["npe"]["median_abs_error"] = 0.0
    assert strongest_baseline(metrics) == "npe"
    verdicts = parameter_verdicts(metrics)
    assert set(verdicts) == set(metrics["parameters"])
    assert {v["baseline"] for v in verdicts.values()} == {"npe"}
