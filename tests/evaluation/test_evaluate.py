"""evaluate_model on the tiny simulated library and model: outputs, test systems only, errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from protomatch.errors import InputError
from protomatch.evaluation.library import EvaluateConfig, EvaluationResult, evaluate_model
from protomatch.library.ingest import IngestConfig, ingest_library

SMALL = EvaluateConfig(
    pairs=400, k=(5, 10), k_recovery=10, max_queries=30, pca_components=8, batch_size=64
)
FIGURES = (
    "similarity_hexbin.png",
    "similarity_errors.png",
    "pairs_most_similar.png",
    "pairs_middling.png",
    "pairs_least_similar.png",
    "recovery.png",
    "coverage.png",
    "calibration.png",
)


@pytest.fixture(scope="module")
def evaluation(tiny_model: Path, tiny_store: Path, tmp_path_factory) -> EvaluationResult:
    out = tmp_path_factory.mktemp("evaluation") / "eval"
    return evaluate_model(tiny_model, tiny_store, out, config=SMALL)


def _strict_json(path: Path) -> dict:
    def refuse(constant: str) -> None:
        raise ValueError(f"non-standard JSON constant {constant}")

    return json.loads(path.read_text(), parse_constant=refuse)


def _model_split(model: Path) -> dict[str, list[str]]:
    return json.loads((model / "model.json").read_text())["split"]


def _sub_library(library: Path, systems: list[str], root: Path) -> Path:
    """A library holding only ``systems`` of ``library`` (a different fingerprint)."""
    for system in systems:
        shutil.copytree(library / f"sink{system}", root / f"sink{system}")
    return root


def test_writes_metrics_tables_and_figures(evaluation: EvaluationResult) -> None:
    out = evaluation.out
    metrics = _strict_json(out / "metrics.json")
    assert metrics["kind"] == "evaluation" and metrics["schema_version"] == 1
    assert metrics["model"]["fingerprint"] and metrics["library"]["fingerprint"]
    assert metrics["config"]["k"] == [5, 10] and metrics["library"]["trained_on"] is True
    for name in FIGURES:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    assert sorted(metrics["figures"]) == sorted(FIGURES)
    table = (out / "metrics.md").read_text()
    assert table == evaluation.markdown_table()
    for text in ("| protomatch |", "| raw pixels |", "| PCA |", "| random |", "nDCG@10"):
        assert text in table
    assert "| accretion_rate [dex] |" in table and "| disk_size [AU] |" in table
    summary = evaluation.describe()
    assert str(out / "metrics.json") in summary and "own system excluded" in summary
    assert len(summary.splitlines()) <= 8


def test_evaluates_the_test_systems_only(evaluation: EvaluationResult, tiny_model: Path) -> None:
    where = evaluation.metrics["evaluated_on"]
    test = _model_split(tiny_model)["test"]
    assert where["basis"] == "test" and sorted(where["systems"]) == sorted(test)
    assert set(where["query_systems"]) <= set(test)
    assert where["n_images"] == len(test) * 3 * 8  # snapshots x projections per system
    assert where["n_queries"] == SMALL.max_queries
    assert where["own_system_excluded"] and not where["notes"]


def test_metric_values_are_sane(evaluation: EvaluationResult, tiny_model: Path) -> None:
    m = evaluation.metrics
    similarity = m["similarity"]
    assert similarity["n_pairs"] == SMALL.pairs
    assert 0 <= similarity["mse"] <= 4 and similarity["mse_trivial"] > 0
    assert -1 <= similarity["spearman"] <= 1
    assert sum(similarity["error_histogram"]["counts"]) == SMALL.pairs
    methods = m["retrieval"]["methods"]
    assert set(methods) == {"protomatch", "pixels", "pixels_strong", "pca", "random"}
    for scores in methods.values():
        assert set(scores) == {"precision@5", "ndcg@5", "precision@10", "ndcg@10"}
        assert all(0 <= value <= 1 for value in scores.values())
    names = json.loads((tiny_model / "model.json").read_text())["parameters"]["names"]
    recovery = m["recovery"]["parameters"]
    assert list(recovery) == names
    for record in recovery.values():
        assert set(record["methods"]) == {
            "protomatch",
            "pixels",
            "pixels_strong",
            "pca",
            "oracle",
            "prior",
        }
        assert record["prior_spread"] > 0
        assert record["error_unit"] == ("dex" if record["log10"] else record["unit"])
        for scores in record["methods"].values():
            assert scores["median_abs_error"] >= 0
            assert 0 <= scores["coverage68"] <= scores["coverage95"] <= 1


@pytest.mark.slow
def test_same_seed_same_numbers_and_overwrite(
    evaluation: EvaluationResult, tiny_model: Path, tiny_store: Path
) -> None:
    with pytest.raises(InputError, match="not empty"):
        evaluate_model(tiny_model, tiny_store, evaluation.out, config=SMALL)
    again = evaluate_model(tiny_model, tiny_store, evaluation.out, config=SMALL, overwrite=True)
    for key in ("similarity", "retrieval", "recovery", "evaluated_on"):
        assert again.metrics[key] == evaluation.metrics[key]


def test_a_non_model_folder_is_a_one_line_input_error(tiny_store: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError) as caught:
        evaluate_model(tiny_store, tiny_store, tmp_path / "out", config=SMALL)
    assert "model" in str(caught.value) and "\n" not in str(caught.value)
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_other_library_uses_its_unseen_systems(
    tiny_model: Path, tiny_library: Path, tmp_path: Path
) -> None:
    split = _model_split(tiny_model)
    library = _sub_library(tiny_library, [split["train"][0], split["test"][0]], tmp_path / "lib")
    store = tmp_path / "store"
    ingest_library(library, store, config=IngestConfig(size=32), workers=1)
    result = evaluate_model(tiny_model, store, tmp_path / "out", config=SMALL)
    where = result.metrics["evaluated_on"]
    assert where["basis"] == "unseen" and where["systems"] == [split["test"][0]]
    assert result.metrics["library"]["trained_on"] is False
    assert any("not the one the model was trained on" in note for note in where["notes"])


@pytest.mark.slow
def test_a_library_without_unseen_systems_is_refused(
    tiny_model: Path, tiny_library: Path, tmp_path: Path
) -> None:
    seen = _model_split(tiny_model)["train"][:2]
    store = tmp_path / "store"
    sub_library = _sub_library(tiny_library, seen, tmp_path / "lib")
    ingest_library(sub_library, store, config=IngestConfig(size=32), workers=1)
    with pytest.raises(InputError, match="no unseen system"):
        evaluate_model(tiny_model, store, tmp_path / "out", config=SMALL)
    assert not (tmp_path / "out").exists()


def test_invalid_config_is_rejected() -> None:
    with pytest.raises(ValueError, match="cut-off"):
        EvaluateConfig(k=())
    with pytest.raises(ValueError):
        EvaluateConfig(unknown=1)


def test_strong_pixel_rows_of_a_turned_image_are_the_turned_rows() -> None:
    from protomatch.evaluation._baselines import _turned_rows
    from protomatch.matching.pixels import SOFTENING_FLOOR, asinh_rows
    from protomatch.optics.orientation import DIHEDRAL, dihedral_image

    rng = np.random.default_rng(4)
    images = rng.random((3, 12, 12)).astype(np.float32)
    rows = _turned_rows(images)
    assert len(rows) == len(DIHEDRAL)
    for (turns, flip), turned in zip(DIHEDRAL, rows):
        # an image turned that way is matched perfectly by that orientation's row
        seen = np.stack([dihedral_image(i, turns, flip) for i in images])
        np.testing.assert_allclose(
            np.sum(turned * asinh_rows(seen, SOFTENING_FLOOR), axis=1), 1.0, atol=1e-5
        )
