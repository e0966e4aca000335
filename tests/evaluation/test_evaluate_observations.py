"""Evaluation on mock observations: end to end on the tiny fixtures, and bad input."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from protomatch.errors import InputError
from protomatch.evaluation.observations import (
    DEFAULT_METHODS,
    PROTOMATCH_VARIANTS,
    ObservationEvaluation,
    ObservationEvaluationConfig,
    evaluate_observations,
)
from protomatch.simulators.observations import ObserveConfig, make_observations

SMALL = {
    "n": 5,
    "seed": 5,
    "npix_range": (40, 56),
    "snr_range": (20.0, 60.0),
    "nan_border_fraction": 0.4,
    "cube_fraction": 0.4,
}
K = 12


@pytest.fixture(scope="module")
def observations(tiny_library, tmp_path_factory):
    out = tmp_path_factory.mktemp("obs-eval") / "obs"
    make_observations(tiny_library, out, config=ObserveConfig(**SMALL), workers=1)
    return out


@pytest.fixture(scope="module")
def evaluated(tiny_model, tiny_store, observations, tmp_path_factory):
    out = tmp_path_factory.mktemp("obs-eval-out") / "eval"
    return evaluate_observations(
        tiny_model, tiny_store, observations, out, config=ObservationEvaluationConfig(k=K)
    )


@pytest.mark.slow
def test_end_to_end_metrics(evaluated, observations):
    assert isinstance(evaluated, ObservationEvaluation)
    out = evaluated.out
    for name in ("metrics.json", "metrics.md", "estimates.csv", "recovery.png", "coverage.png"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["kind"] == "observation-evaluation"
    assert metrics["k"] == K
    assert metrics["observations"]["n"] == SMALL["n"]
    assert metrics["observations"]["with_beam"] == SMALL["n"]
    assert metrics["best_protomatch"] in PROTOMATCH_VARIANTS
    truth = pd.read_csv(observations / "truth.csv")
    for name, record in metrics["parameters"].items():
        assert set(record["methods"]) == set(DEFAULT_METHODS)
        assert record["error_unit"] == ("dex" if record["log10"] else record["unit"])
        for method, scores in record["methods"].items():
            calibrated = set() if method == "prior" else {"uncalibrated", "diagnostics"}
            assert set(scores) == {
                "median_abs_error",
                "error_over_prior_spread",
                "coverage68",
                "coverage95",
                *calibrated,
            }
            assert scores["median_abs_error"] >= 0
            for key in ("coverage68", "coverage95"):
                assert 0.0 <= scores[key] <= 1.0, (name, method, key)
            # with the same truth, a 95 % interval covers at least what the 68 % one does
            assert scores["coverage95"] >= scores["coverage68"]
        # the prior's error is recomputable from the table alone
        values = truth[name].to_numpy(dtype=float)
        space = np.log10(values) if record["log10"] else values
        prior_error = np.median(np.abs(space - record["prior_median"]))
        assert record["methods"]["prior"]["median_abs_error"] == pytest.approx(prior_error)


@pytest.mark.slow
def test_estimates_table_and_markdown(evaluated):
    estimates = pd.read_csv(evaluated.out / "estimates.csv")
    n_params = len(evaluated.metrics["parameters"])
    assert len(estimates) == SMALL["n"] * len(DEFAULT_METHODS) * n_params
    ordered = estimates[["q2.5", "q16", "median", "q84", "q97.5"]].to_numpy()
    assert (np.diff(ordered, axis=1) >= -1e-9 * np.abs(ordered[:, 1:])).all()
    table = evaluated.markdown_table()
    assert table == (evaluated.out / "metrics.md").read_text()
    assert evaluated.metrics["best_protomatch"] in table
    for name in evaluated.metrics["parameters"]:
        assert f"| {name} |" in table
    assert "best protomatch variant" in evaluated.describe()
    bootstrap = evaluated.metrics["bootstrap"]
    best = evaluated.metrics["best_protomatch"]
    assert set(bootstrap["interval"]) == set(evaluated.metrics["methods"])
    assert set(bootstrap["difference"]) == set(evaluated.metrics["methods"]) - {best}
    assert f"{best} − method" in table and "95 % interval" in table
    assert "Per parameter against the strongest baseline on that parameter" in table
    assert "vs the strongest baseline" in evaluated.describe()
    for name in evaluated.metrics["parameters"]:
        assert any(
            line.startswith(f"| {name} | ")
            and " | [" in line
            and line.rstrip(" |").endswith(("better", "worse", "resolved", "constrained)"))
            for line in table.splitlines()
        )


@pytest.mark.slow
def test_best_variant_has_the_lowest_mean_relative_error(evaluated):
    from protomatch.evaluation._observation_figures import mean_relative_error

    metrics = evaluated.metrics
    errors = {
        m: mean_relative_error(metrics, m) for m in PROTOMATCH_VARIANTS if m in DEFAULT_METHODS
    }
    assert errors[metrics["best_protomatch"]] == min(errors.values())
    assert metrics["library_passes"] >= 2  # the stored library and at least one beam


@pytest.mark.slow
def test_a_chosen_subset_of_methods(tiny_model, tiny_store, observations, evaluated, tmp_path):
    chosen = ["protomatch_beam_noise", "pixels_beam"]
    subset = evaluate_observations(
        tiny_model,
        tiny_store,
        observations,
        tmp_path / "sub",
        config=ObservationEvaluationConfig(k=K, methods=chosen),
    )
    for name, record in subset.metrics["parameters"].items():
        assert list(record["methods"]) == [*chosen, "prior"]
        # the same method scores the same whatever else is evaluated beside it
        full = evaluated.metrics["parameters"][name]["methods"]
        for method in chosen:
            assert record["methods"][method] == full[method]
    assert subset.metrics["best_protomatch"] == "protomatch_beam_noise"
    # at most one noise-matched and one beam-pixel pass per observation, fewer than all methods
    assert subset.metrics["library_passes"] <= 2 * SMALL["n"]
    assert subset.metrics["library_passes"] < evaluated.metrics["library_passes"]
    assert "protomatch_beam_noise" in subset.markdown_table()


@pytest.mark.parametrize(
    ("methods", "problem"),
    [(["protomatch", "bogus"], "unknown method"), (["pixels"], "at least one protomatch")],
)
def test_bad_method_choice_is_refused(
    tiny_model, tiny_store, observations, tmp_path, methods, problem
):
    with pytest.raises(InputError, match=problem):
        evaluate_observations(
            tiny_model,
            tiny_store,
            observations,
            tmp_path / "o",
            config=ObservationEvaluationConfig(methods=methods),
        )
    assert not (tmp_path / "o").exists()


def test_folder_without_truth_is_refused(tiny_model, tiny_store, tmp_path):
    empty = tmp_path / "nothing"
    empty.mkdir()
    with pytest.raises(InputError) as info:
        evaluate_observations(tiny_model, tiny_store, empty, tmp_path / "out")
    message = str(info.value)
    assert "truth.csv" in message and "\n" not in message
    assert not (tmp_path / "out").exists()


def test_truth_problems_are_refused(tiny_model, tiny_store, observations, tmp_path):
    folder = tmp_path / "obs"
    folder.mkdir()
    truth = pd.read_csv(observations / "truth.csv")
    truth.drop(columns=["mass"]).to_csv(folder / "truth.csv", index=False)
    with pytest.raises(InputError, match="lacks column"):
        evaluate_observations(tiny_model, tiny_store, folder, tmp_path / "out")
    truth.to_csv(folder / "truth.csv", index=False)  # lists files the folder does not hold
    with pytest.raises(InputError, match="missing file"):
        evaluate_observations(tiny_model, tiny_store, folder, tmp_path / "out")
    with pytest.raises(InputError, match="not a folder"):
        evaluate_observations(tiny_model, tiny_store, tmp_path / "absent", tmp_path / "out")


def test_non_empty_output_is_refused(tiny_model, tiny_store, observations, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(InputError, match="not empty"):
        evaluate_observations(tiny_model, tiny_store, observations, out)
    assert (out / "keep.txt").read_text() == "mine"


@pytest.mark.slow
def test_scores_per_third_of_each_observing_condition(evaluated, observations):
    truth = pd.read_csv(observations / "truth.csv")
    conditions = evaluated.metrics["by_condition"]
    assert set(conditions) == {"snr", "beam_major_au"}
    for column, condition in conditions.items():
        parts = condition["parts"]
        assert sum(part["n"] for part in parts) == SMALL["n"]
        assert parts[0]["range"][0] == pytest.approx(truth[column].min())
        assert parts[-1]["range"][1] == pytest.approx(truth[column].max())
        for part in parts:
            assert set(part["methods"]) == set(DEFAULT_METHODS)
    # the prior's score in a part is recomputable from the truth table alone
    params = evaluated.metrics["parameters"]
    part = conditions["snr"]["parts"][-1]
    chosen = truth["snr"] >= part["range"][0]
    ratios = []
    for name, record in params.items():
        values = truth.loc[chosen, name].to_numpy(dtype=float)
        space = np.log10(values) if record["log10"] else values
        error = np.median(np.abs(space - record["prior_median"]))
        ratios.append(error / record["prior_spread"])
    assert part["methods"]["prior"]["error_over_prior_spread"] == pytest.approx(np.mean(ratios))
    assert "By peak S/N" in evaluated.markdown_table()


def test_bad_centre_is_refused():
    import pydantic

    with pytest.raises(pydantic.ValidationError, match="centre"):
        ObservationEvaluationConfig(centre="x")


def test_library_without_pixel_scale_is_refused_not_matched_unscaled(
    tiny_model, tiny_store, observations, tmp_path
):
    import shutil

    store = tmp_path / "store"
    shutil.copytree(tiny_store, store)
    manifest = json.loads((store / "manifest.json").read_text())
    manifest["au_per_pixel"] = None
    (store / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(InputError) as info:
        evaluate_observations(tiny_model, store, observations, tmp_path / "out")
    message = str(info.value)
    assert "--au-per-pixel" in message and "\n" not in message
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_verdict_is_against_the_strongest_baseline_of_each_parameter(evaluated):
    metrics = json.loads((evaluated.out / "metrics.json").read_text())
    verdict = metrics["verdict"]
    assert verdict["method"] == metrics["best_protomatch"]
    assert verdict["observations"] == SMALL["n"]
    baselines = [m for m in metrics["methods"] if not m.startswith("protomatch") and m != "prior"]
    for name, entry in verdict["parameters"].items():
        errors = {
            m: metrics["parameters"][name]["methods"][m]["median_abs_error"] for m in baselines
        }
        assert entry["baseline"] == min(errors, key=errors.__getitem__)
        assert entry["baseline_error"] == pytest.approx(errors[entry["baseline"]])
        low, high = entry["interval"]
        assert low <= high
        expected = "better" if high < 0 else "worse" if low > 0 else "not resolved"
        assert entry["verdict"] == expected
    assert "strongest baseline on each parameter" in evaluated.describe()


@pytest.mark.slow
def test_match_report_carries_the_verdict(
    evaluated, tiny_model, tiny_store, tiny_library, observations, tmp_path
):
    from protomatch.matching.index import build_index
    from protomatch.matching.match import MatchConfig, match_observations

    index = tmp_path / "index"
    build_index(tiny_model, tiny_store, index)
    target = [observations / "obs_000.fits"]
    result = match_observations(
        index, target, tmp_path / "r", config=MatchConfig(k=5), evaluation=evaluated.out
    )
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    verdicts = json.loads((evaluated.out / "metrics.json").read_text())["verdict"]["parameters"]
    assert summary["validation"]["parameters"] == verdicts
    page = (tmp_path / "r" / "index.html").read_text()
    assert "Validated on mock observations" in page
    assert summary["calibration"]["applied"] is True
    assert f"{SMALL['n']} mock observations" in summary["calibration"]["fitted_on"]
    assert "Intervals calibrated on" in page
    assert "intervals calibrated on" in result.describe()
    lines = result.describe().splitlines()
    for name, entry in verdicts.items():
        line = next(x for x in lines if x.strip().startswith(f"{name}:"))
        assert entry["baseline"] in line
    # a library image (no beam) is ranked another way: no verdict, and the report says why
    library_image = next(iter(sorted(tiny_library.glob("sink*/output_*_data.hdf5"))))
    result = match_observations(
        index,
        [f"{library_image}:2"],
        tmp_path / "lib",
        config=MatchConfig(k=5),
        evaluation=evaluated.out,
    )
    summary = json.loads((tmp_path / "lib" / "summary.json").read_text())
    assert "parameters" not in summary["validation"]
    assert "no beam" in summary["validation"]["not_applicable"]
    assert "No verdict for this target" in (tmp_path / "lib" / "index.html").read_text()
    assert "no verdict from --evaluation" in result.describe()
    assert summary["calibration"]["applied"] is False
    assert "no beam" in summary["calibration"]["reason"]
    # without an evaluation the report says the estimates are neither validated nor calibrated
    match_observations(index, target, tmp_path / "plain", config=MatchConfig(k=5))
    assert "Not validated" in (tmp_path / "plain" / "index.html").read_text()
    assert "Intervals NOT calibrated" in (tmp_path / "plain" / "index.html").read_text()
    plain = json.loads((tmp_path / "plain" / "summary.json").read_text())["parameters"]
    calibrated = json.loads((tmp_path / "r" / "summary.json").read_text())["parameters"]
    for name, stats in plain.items():  # the median stays; the interval is rescaled
        assert calibrated[name]["matches"]["median"] == pytest.approx(stats["matches"]["median"])


@pytest.mark.slow
def test_evaluation_of_another_model_or_without_verdict_is_refused(evaluated, tiny_store, tmp_path):
    from protomatch.matching.validation import read_validation

    metrics = json.loads((evaluated.out / "metrics.json").read_text())
    fingerprint, library = metrics["model"]["fingerprint"], metrics["library"]["fingerprint"]
    assert read_validation(evaluated.out, fingerprint, library)["parameters"]
    with pytest.raises(InputError, match="not the index's model"):
        read_validation(evaluated.out, "0" * 16, library)
    with pytest.raises(InputError, match="not the index's"):
        read_validation(evaluated.out, fingerprint, "0" * 16)
    del metrics["verdict"]
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    with pytest.raises(InputError, match="no per-parameter verdict"):
        read_validation(tmp_path, fingerprint, library)
    with pytest.raises(InputError, match="missing"):
        read_validation(tmp_path / "absent", fingerprint, library)


@pytest.mark.slow
def test_evaluation_calibrates_intervals_and_diagnoses_them(evaluated):
    metrics = json.loads((evaluated.out / "metrics.json").read_text())
    for record in metrics["parameters"].values():
        scores = record["methods"]["protomatch_fused"]
        assert set(scores["uncalibrated"]) == {"coverage68", "coverage95"}
        curve = scores["diagnostics"]["calibrated"]["coverage_curve"]
        assert len(curve["coverage"]) == len(curve["levels"])
        counts = scores["diagnostics"]["uncalibrated"]["rank_histogram"]["counts"]
        assert sum(counts) == SMALL["n"]
        assert "uncalibrated" not in record["methods"]["prior"]
    saved = json.loads((evaluated.out / "calibration.json").read_text())
    assert saved["kind"] == "interval-calibration"
    assert set(saved["calibrations"]) == {"protomatch_fused", "protomatch_beam_noise"}
    assert saved["model"]["fingerprint"] == metrics["model"]["fingerprint"]


@pytest.mark.slow
def test_a_calibration_of_another_model_or_a_broken_one_is_refused(evaluated, tmp_path):
    from protomatch.matching.validation import read_calibrations

    saved = json.loads((evaluated.out / "calibration.json").read_text())
    fingerprint, library = saved["model"]["fingerprint"], saved["library"]["fingerprint"]
    read = read_calibrations(evaluated.out, fingerprint, library)
    assert read["protomatch_fused"].n_queries == SMALL["n"]
    with pytest.raises(InputError, match="not the index's model"):
        read_calibrations(evaluated.out, "0" * 16, library)
    with pytest.raises(InputError, match=r"has no calibration\.json"):
        read_calibrations(tmp_path, fingerprint, library)
    saved["calibrations"]["protomatch_fused"]["scales"] = {"mass": [1.0, "x"]}
    (tmp_path / "calibration.json").write_text(json.dumps(saved))
    with pytest.raises(InputError, match="not a valid calibration"):
        read_calibrations(tmp_path, fingerprint, library)


@pytest.mark.slow
def test_a_batch_of_observations_is_tested_against_the_library(
    tiny_model, tiny_store, observations, tmp_path
):
    from protomatch.matching.index import build_index
    from protomatch.matching.match import MatchConfig, match_observations

    index = tmp_path / "index"
    build_index(tiny_model, tiny_store, index)
    files = sorted(observations.glob("obs_*.fits"))
    assert len(files) >= 5
    result = match_observations(index, files, tmp_path / "batch", config=MatchConfig(k=5))
    batch = json.loads((tmp_path / "batch" / "manifest.json").read_text())["batch_test"]
    assert batch["tested"] is True
    assert 0 < batch["p_value"] <= 1 and batch["n_observations"] == len(files)
    assert batch["rejected"] == (batch["p_value"] < batch["level"])
    assert "batch test (MMD" in result.describe()
    assert "batch test (MMD" in (tmp_path / "batch" / "index.html").read_text()
    # too few for a batch test: said, not tested
    few = match_observations(index, files[:2], tmp_path / "few", config=MatchConfig(k=5))
    assert few.batch_test is not None and few.batch_test["tested"] is False
    assert "no batch test" in few.describe()


@pytest.mark.slow
def test_evaluation_folder_lists_its_files_and_verifies(evaluated) -> None:
    from protomatch.verify import verify_artefact

    files = json.loads((evaluated.out / "metrics.json").read_text())["files"]
    assert {"calibration.json", "estimates.csv", "metrics.md"} <= set(files)
    result = verify_artefact(evaluated.out)
    assert result.ok and result.kind == "observation-evaluation", result.describe()
