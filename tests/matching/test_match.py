from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pydantic
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from protomatch._quantiles import weighted_quantiles
from protomatch.errors import InputError
from protomatch.library.store import LibraryStore
from protomatch.matching.index import EmbeddingIndex, IndexConfig, build_index
from protomatch.matching.match import MatchConfig, match_observations
from protomatch.matching.observation import prepare_observation, read_observation
from protomatch.matching.pairwise import score_pairwise
from protomatch.training.config import load_config
from protomatch.training.engine import train_model
from tests.conftest import tiny_training_overrides


@pytest.fixture(scope="module")
def tiny_index(tiny_model: Path, tiny_store: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("index") / "index"
    build_index(tiny_model, tiny_store, out)
    return out


def _library_target(library: Path, projection: int = 2) -> str:
    first = sorted(library.glob("sink*/output_*_data.hdf5"))[0]
    return f"{first}:{projection}"


def test_index_records_model_and_library(tiny_index: Path) -> None:
    manifest = json.loads((tiny_index / "index.json").read_text())
    assert manifest["kind"] == "index" and manifest["n_images"] == 8 * 3 * 8
    assert manifest["model"]["fingerprint"] and manifest["library"]["fingerprint"]
    stats = manifest["neighbour_similarity"]
    assert -1 <= stats["p1"] <= stats["median"] <= 1


def test_index_gives_the_pairwise_reference_ranking(tiny_index: Path, tiny_library: Path):
    index = EmbeddingIndex.open(tiny_index)
    observation = read_observation(_library_target(tiny_library))
    prepared = prepare_observation(
        observation, index.model.preprocess, None, index.store.intensity_unit
    )
    image, intensity = prepared.image, prepared.mean_intensity
    library_intensity = index.store.table["mean_intensity"].to_numpy()
    reference = score_pairwise(index.model, image, index.store.images, intensity, library_intensity)
    sims, ids = index.search(index.model.embed(image[None], np.array([intensity])), 10)
    assert ids[0].tolist() == np.argsort(-reference, kind="stable")[:10].tolist()
    assert sims[0] == pytest.approx(np.sort(reference)[::-1][:10], abs=1e-4)


def test_unfilled_slots_of_an_approximate_index_are_empty(
    tiny_model: Path, tiny_store: Path, tmp_path: Path
) -> None:
    """An IVF search probing one cell cannot fill k = N slots: FAISS marks the rest with row
    -1, which must come back as id -1 and similarity -inf, never as the last library image."""
    out = tmp_path / "ivf"
    build_index(tiny_model, tiny_store, out, config=IndexConfig(kind="ivf", nlist=4, nprobe=1))
    index = EmbeddingIndex.open(out)
    sims, ids = index.search(np.load(out / "embeddings.npy")[:3], len(index))
    empty = ids == -1
    assert empty.any() and (~empty).any()
    assert np.isneginf(sims[empty]).all() and np.isfinite(sims[~empty]).all()
    assert set(ids[~empty].ravel()) <= set(index.ids.tolist())


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_indexes_find_the_exact_best_match(
    kind: str, tiny_model: Path, tiny_store: Path, tmp_path: Path
) -> None:
    out = tmp_path / kind
    build_index(tiny_model, tiny_store, out, config=IndexConfig(kind=kind, nprobe=64))
    approximate = EmbeddingIndex.open(out)
    embeddings = np.load(out / "embeddings.npy")[:20]
    _, ids = approximate.search(embeddings, 1)
    assert (ids[:, 0] == np.arange(20)).mean() >= 0.9


def test_index_from_another_model_is_refused(
    tiny_index: Path, tiny_store: Path, tmp_path: Path
) -> None:
    other = tmp_path / "other-model"
    config = load_config(None, tiny_training_overrides(epochs=1, seed=9))
    train_model(tiny_store, other, config=config)
    with pytest.raises(InputError, match="built by model"):
        EmbeddingIndex.open(tiny_index, model=other)


def test_index_from_another_library_is_refused(
    tiny_index: Path, tiny_library: Path, tmp_path: Path
) -> None:
    from protomatch.library.ingest import IngestConfig, ingest_library

    other = tmp_path / "other-store"
    ingest_library(tiny_library, other, config=IngestConfig(size=32, stretch="asinh"), workers=1)
    with pytest.raises(InputError, match="built from library"):
        EmbeddingIndex.open(tiny_index, library=other)


def test_match_writes_a_report_with_truth(tiny_index: Path, tiny_library: Path, tmp_path):
    report = tmp_path / "report"
    result = match_observations(
        tiny_index, [_library_target(tiny_library)], report, config=MatchConfig(k=20)
    )
    summary = json.loads((report / "summary.json").read_text())
    assert summary["n_matches"] == 20
    mass = summary["parameters"]["mass"]
    assert mass["truth"] is not None
    assert mass["matches"]["q2.5"] <= mass["matches"]["median"] <= mass["matches"]["q97.5"]
    for name in ("matches.csv", "index.html", "matches.png", "parameters.png", "corner.png"):
        assert (report / name).is_file()
    manifest = json.loads((report / "manifest.json").read_text())
    assert manifest["kind"] == "match-report" and manifest["k"] == 20
    index_manifest = json.loads((tiny_index / "index.json").read_text())
    assert manifest["model"]["fingerprint"] == index_manifest["model"]["fingerprint"]
    assert manifest["library"]["fingerprint"] == index_manifest["library"]["fingerprint"]
    assert "report:" in result.describe()


def test_k_larger_than_the_library_is_clamped_with_a_note(tiny_index, tiny_library, tmp_path):
    match_observations(
        tiny_index, [_library_target(tiny_library)], tmp_path / "r", config=MatchConfig(k=10_000)
    )
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["n_matches"] == 7 * 3 * 8  # every image of the other seven systems
    assert any("larger than the library" in note for note in summary["notes"])


def test_library_target_is_matched_against_other_systems(tiny_index, tiny_library, tmp_path):
    target = _library_target(tiny_library)
    own = Path(target.rsplit(":", 1)[0]).parent.name.removeprefix("sink")
    match_observations(tiny_index, [target], tmp_path / "other", config=MatchConfig(k=30))
    others = pd.read_csv(tmp_path / "other" / "matches.csv")
    assert own not in set(others["system"].astype(str))
    match_observations(
        tiny_index, [target], tmp_path / "all", config=MatchConfig(k=30, include_own_system=True)
    )
    everything = pd.read_csv(tmp_path / "all" / "matches.csv")
    assert everything["system"].astype(str).iloc[0] == own
    assert everything["similarity"].iloc[0] == pytest.approx(1.0, abs=1e-4)


def test_threshold_keeps_only_close_matches(tiny_index, tiny_library, tmp_path) -> None:
    match_observations(
        tiny_index,
        [_library_target(tiny_library)],
        tmp_path / "r",
        config=MatchConfig(threshold=0.5),
    )
    sims = np.loadtxt(tmp_path / "r" / "matches.csv", delimiter=",", skiprows=1, usecols=1)
    assert (np.atleast_1d(sims) >= 0.5).all()


def test_several_observations_get_one_folder_each(tiny_index, tiny_library, tmp_path) -> None:
    targets = [_library_target(tiny_library, 1), _library_target(tiny_library, 5)]
    result = match_observations(tiny_index, targets, tmp_path / "r", config=MatchConfig(k=5))
    assert len(result.targets) == 2
    assert (tmp_path / "r" / "index.html").is_file()
    assert all((t.folder / "summary.json").is_file() for t in result.targets)


def _fits_observation(path: Path, image: np.ndarray, cdelt_deg: float | None) -> Path:
    header = fits.Header()
    if cdelt_deg is not None:
        wcs = WCS(naxis=2)
        wcs.wcs.ctype = ["RA---SIN", "DEC--SIN"]
        wcs.wcs.cdelt = [-cdelt_deg, cdelt_deg]
        wcs.wcs.crpix = [image.shape[1] / 2, image.shape[0] / 2]
        wcs.wcs.crval = [250.0, -24.0]
        header = wcs.to_header()
    fits.PrimaryHDU(image[None, None].astype(np.float32), header=header).writeto(path)
    return path


def test_fits_with_pixel_scale_and_distance_is_resampled(tiny_index, tmp_path) -> None:
    yy, xx = np.mgrid[:100, :100]
    blob = np.exp(-((xx - 50) ** 2 + (yy - 50) ** 2) / 50.0)
    blob[:5] = np.nan
    path = _fits_observation(tmp_path / "obs.fits", blob, cdelt_deg=0.05 / 3600)
    with pytest.raises(InputError, match="has no beam"):
        match_observations(tiny_index, [path], tmp_path / "r", config=MatchConfig(distance_pc=140))
    assert not (tmp_path / "r").exists()
    config = MatchConfig(k=5, distance_pc=140, unscaled=True)
    match_observations(tiny_index, [path], tmp_path / "r", config=config)
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    notes = summary["notes"]
    assert any("AU/pixel" in note for note in notes)
    assert any("validated on mock observations" in note for note in notes)
    # no BUNIT either, and the tiny model compares brightness
    assert summary["compared"]["missing"] == ["the beam", "the brightness in the library's unit"]
    assert summary["compared"]["unscaled"] is True


def test_observation_with_a_beam_is_matched_at_its_beam_and_noise(tiny_index, tmp_path) -> None:
    yy, xx = np.mgrid[:100, :100]
    image = np.exp(-((xx - 50) ** 2 + (yy - 50) ** 2) / 50.0)
    image += np.random.default_rng(0).normal(0, 0.02, image.shape)
    path = _fits_observation(tmp_path / "obs.fits", image, cdelt_deg=0.05 / 3600)
    with fits.open(path, mode="update") as hdus:
        hdus[0].header.update(BMAJ=0.4 / 3600, BMIN=0.3 / 3600, BPA=30.0, BUNIT="Jy/beam")
    config = MatchConfig(k=5, distance_pc=140, ranking="network")
    match_observations(tiny_index, [path], tmp_path / "r", config=config)
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    note = next(n for n in summary["notes"] if "convolved to the observation's beam" in n)
    assert "noise level" in note
    assert not any(
        "ranked by the network's similarity and the pixels'" in n for n in summary["notes"]
    )
    page = (tmp_path / "r" / "index.html").read_text()
    assert "shown through the observation&#x27;s beam" in page
    assert summary["n_matches"] == 5
    sims = pd.read_csv(tmp_path / "r" / "matches.csv")["similarity"].to_numpy()
    assert (np.diff(sims) <= 1e-6).all()
    compared = summary["compared"]
    assert compared["distance_pc"] == 140 and compared["distance_from"] == "given"
    assert compared["beam_au"] == pytest.approx([0.4 * 140, 0.3 * 140])
    assert compared["noise_rms"] > 0 and compared["peak_snr"] > 1
    assert compared["missing"] == [] and compared["unscaled"] is False
    with pytest.raises(InputError, match="has no distance"):
        match_observations(tiny_index, [path], tmp_path / "r2", config=MatchConfig(k=5))
    match_observations(tiny_index, [path], tmp_path / "r2", config=MatchConfig(k=5, unscaled=True))
    notes = json.loads((tmp_path / "r2" / "summary.json").read_text())["notes"]
    assert any("distance" in note and "shorter side" in note for note in notes)


def test_observation_with_a_beam_is_ranked_by_the_fused_score(tiny_index, tmp_path) -> None:
    from protomatch.matching.pixels import fused_scores, strong_pixel_similarities
    from protomatch.matching.search import NoiseMatchedSearch

    yy, xx = np.mgrid[:100, :100]
    image = np.exp(-((xx - 50) ** 2 + 3 * (yy - 50) ** 2) / 80.0)
    image += np.random.default_rng(1).normal(0, 0.02, image.shape)
    path = _fits_observation(tmp_path / "obs.fits", image, cdelt_deg=0.05 / 3600)
    with fits.open(path, mode="update") as hdus:
        hdus[0].header.update(BMAJ=0.4 / 3600, BMIN=0.3 / 3600, BPA=30.0, BUNIT="Jy/beam")
    index = EmbeddingIndex.open(tiny_index)
    observation = read_observation(path).at_distance(140.0)
    prepared = prepare_observation(
        observation, index.model.preprocess, index.store.au_per_pixel, index.store.intensity_unit
    )
    search = NoiseMatchedSearch(index)
    ranking = search.best(prepared, 8)
    network, noise = search.library.noise_matched_similarities(prepared, prepared.beam)
    pixels = strong_pixel_similarities(
        search.library, prepared.image, prepared.beam, noise, prepared.footprint
    )
    expected = np.argsort(-fused_scores(network, pixels), kind="stable")[:8]
    np.testing.assert_array_equal(ranking.ids, index.ids[expected])
    np.testing.assert_allclose(ranking.similarities, network[expected])
    assert any("the pixels'" in note for note in ranking.notes)
    network_only = NoiseMatchedSearch(index, search.library, fused=False).best(prepared, 8)
    np.testing.assert_array_equal(
        network_only.ids, index.ids[np.argsort(-network, kind="stable")[:8]]
    )
    # the no-analogue warning judges the library's closest image by the network, which the
    # fused ranking need not put first (a bug: the first fused match's similarity was used)
    assert ranking.closest == pytest.approx(float(network.max()))
    assert ranking.closest >= ranking.similarities[0]
    assert math.isnan(network_only.closest)
    # the batch test's sample: the target's embedding and 20 library embeddings, seeded by it
    assert ranking.sample is not None and ranking.sample.reference.shape[0] == 20
    again = search.best(prepared, 8).sample
    assert again is not None
    np.testing.assert_array_equal(again.reference, ranking.sample.reference)
    match_observations(tiny_index, [path], tmp_path / "r", config=MatchConfig(k=8, distance_pc=140))
    matches = pd.read_csv(tmp_path / "r" / "matches.csv")
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert any("the pixels'" in note for note in summary["notes"])
    assert len(matches) == 8


def test_physical_resampling_keeps_the_source_centred_and_scaled(tiny_store: Path) -> None:
    from protomatch.library.store import LibraryStore
    from protomatch.matching.observation import Observation

    store = LibraryStore.open(tiny_store)
    size = store.preprocess.size
    yy, xx = np.mgrid[:200, :200]
    sigma_au = 100.0
    au_per_px = 10.0
    blob = np.exp(-((xx - 99.5) ** 2 + (yy - 99.5) ** 2) / (2 * (sigma_au / au_per_px) ** 2))
    observation = Observation(blob.astype(np.float32), Path("x.npy"), au_per_pixel=au_per_px)
    image = prepare_observation(observation, store.preprocess, store.au_per_pixel).image
    assert image.shape == (size, size)
    grid = np.arange(size) - (size - 1) / 2
    weights = image / image.sum()
    centroid = (weights.sum(axis=1) @ grid, weights.sum(axis=0) @ grid)
    assert centroid == pytest.approx((0, 0), abs=0.1)
    width_px = np.sqrt(weights.sum(axis=0) @ grid**2)
    assert width_px * store.au_per_pixel == pytest.approx(sigma_au, rel=0.1)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"not an image at all", "FITS|format|recognis"),
        (np.zeros((3, 4, 5)), "dimension|axes|2-D"),
        (np.full((16, 16), np.nan), "NaN|finite|blank|positive"),
    ],
)
def test_bad_observations_are_clear_errors(tiny_index, tmp_path, content, message) -> None:
    path = tmp_path / "obs.npy"
    if isinstance(content, bytes):
        path = tmp_path / "obs.fits"
        path.write_bytes(content)
    else:
        np.save(path, content)
    with pytest.raises(InputError, match=message):
        match_observations(tiny_index, [path], tmp_path / "r", config=MatchConfig(unscaled=True))
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    "settings",
    [{"k": 0}, {"threshold": 3}, {"distance_pc": -5}, {"distance_pc": math.inf}, {"centre": "x"}],
)
def test_bad_match_settings_are_refused(settings) -> None:
    with pytest.raises(pydantic.ValidationError, match=next(iter(settings))):
        MatchConfig(**settings)


def test_cli_match_error_is_one_line(tiny_index: Path, tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "protomatch",
            "match",
            str(tiny_index),
            str(tmp_path / "nope.fits"),
            "-o",
            str(tmp_path / "r"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert "nope.fits" in done.stderr


def test_weighted_quantiles_by_hand() -> None:
    values = np.array([1.0, 2.0, 3.0, 4.0])
    assert weighted_quantiles(values, np.ones(4), [0.5])[0] == pytest.approx(2.5)
    # all weight on 4: every quantile is 4
    assert weighted_quantiles(values, np.array([0, 0, 0, 1.0]), [0.16, 0.84]) == pytest.approx(
        [4, 4]
    )
    # negative similarities count as zero weight; all-zero falls back to uniform
    assert weighted_quantiles(values, -np.ones(4), [0.5])[0] == pytest.approx(2.5)


@pytest.mark.parametrize(
    ("value", "expected"), [(140, 140.0), ("inf", None), (-3, None), ("x", None), (0, None)]
)
def test_header_distance_accepts_only_positive_finite_values(value, expected, tmp_path) -> None:
    from astropy.io import fits

    path = tmp_path / "d.fits"
    fits.PrimaryHDU(np.ones((4, 4), np.float32)).writeto(path)
    with fits.open(path, mode="update") as hdus:
        hdus[0].header["DISTANCE"] = value
    observation = read_observation(path)
    assert observation.distance_pc == expected
    assert observation.distance_from == (None if expected is None else "header DISTANCE")
    assert ("distance" in observation.problems) == (expected is None)
    given = observation.at_distance(99.0)
    assert given.distance_pc == 99.0 and "distance" not in given.problems
    assert any("DISTANCE" in note for note in given.notes)


def test_mock_observation_report_shows_the_truth_of_its_truth_csv(
    tiny_index: Path, tiny_library: Path, tmp_path: Path
) -> None:
    from protomatch.simulators.observations import ObserveConfig, make_observations

    config = {"n": 2, "seed": 9, "npix_range": (40, 48), "nan_border_fraction": 0.0}
    make_observations(tiny_library, tmp_path / "obs", config=ObserveConfig(**config), workers=1)
    truth = pd.read_csv(tmp_path / "obs" / "truth.csv").set_index("file")
    match_observations(
        tiny_index, [tmp_path / "obs" / "obs_001.fits"], tmp_path / "r", config=MatchConfig(k=5)
    )
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    for name, stats in summary["parameters"].items():
        assert stats["truth"] == pytest.approx(truth.loc["obs_001.fits", name])
    # a truth.csv that does not list the file (or lacks a parameter) shows no truth
    truth.drop(index="obs_001.fits").to_csv(tmp_path / "obs" / "truth.csv")
    match_observations(
        tiny_index, [tmp_path / "obs" / "obs_001.fits"], tmp_path / "r2", config=MatchConfig(k=5)
    )
    summary = json.loads((tmp_path / "r2" / "summary.json").read_text())
    assert all(stats["truth"] is None for stats in summary["parameters"].values())


def _offset_source(shift_px: tuple[int, int], spike: bool = False) -> np.ndarray:
    """A 200 px image with a Gaussian source (sigma 5 px) ``shift_px`` (rows, cols) from the
    centre, and optionally a single brighter noise spike elsewhere."""
    yy, xx = np.mgrid[:200, :200]
    row, col = 99.5 + shift_px[0], 99.5 + shift_px[1]
    image = np.exp(-((xx - col) ** 2 + (yy - row) ** 2) / (2 * 5.0**2))
    if spike:
        image[20, 180] = 3.0
    return image.astype(np.float32)


def _centroid(image: np.ndarray) -> tuple[float, float]:
    grid = np.arange(image.shape[0]) - (image.shape[0] - 1) / 2
    weights = image / image.sum()
    return float(weights.sum(axis=1) @ grid), float(weights.sum(axis=0) @ grid)


def test_off_centre_source_is_brought_to_the_library_centre(tiny_store: Path) -> None:
    from protomatch.library.store import LibraryStore
    from protomatch.matching.observation import Observation

    store = LibraryStore.open(tiny_store)
    scale = store.au_per_pixel / 4  # the field is 1/4 of the image
    observation = Observation(
        _offset_source((30, -40), spike=True), Path("x.npy"), au_per_pixel=scale
    )
    centred = prepare_observation(observation, store.preprocess, store.au_per_pixel)
    assert _centroid(centred.image) == pytest.approx((0, 0), abs=0.3)
    assert any("centred on the source" in note for note in centred.notes)
    as_cut = prepare_observation(observation, store.preprocess, store.au_per_pixel, centre="image")
    # 30 and -40 observation pixels are 7.5 and -10 library pixels
    assert _centroid(as_cut.image) == pytest.approx((7.5, -10), abs=0.5)
    assert not any("centred on the source" in note for note in as_cut.notes)


def test_source_within_half_a_beam_of_the_centre_is_not_moved(tiny_store: Path) -> None:
    from protomatch.library.store import LibraryStore
    from protomatch.matching.observation import Observation

    store = LibraryStore.open(tiny_store)
    scale = store.au_per_pixel / 4
    observation = Observation(_offset_source((1, 0)), Path("x.npy"), au_per_pixel=scale)
    by_source = prepare_observation(observation, store.preprocess, store.au_per_pixel)
    by_image = prepare_observation(
        observation, store.preprocess, store.au_per_pixel, centre="image"
    )
    np.testing.assert_array_equal(by_source.image, by_image.image)


def test_source_position_ignores_a_single_bright_pixel() -> None:
    from protomatch.matching.observation import source_position

    assert source_position(_offset_source((30, -40), spike=True), 6.0) == (129.0, 59.0)
    assert source_position(_offset_source((30, -40), spike=True), 0.1) == (20.0, 180.0)


def test_bad_centre_choice_is_refused(tiny_library: Path, tiny_store: Path) -> None:
    observation = read_observation(_library_target(tiny_library))
    store = LibraryStore.open(tiny_store)
    with pytest.raises(InputError, match="centre"):
        prepare_observation(observation, store.preprocess, store.au_per_pixel, centre="x")


def test_pure_noise_is_said_to_hold_no_significant_source(tiny_index, tmp_path) -> None:
    from protomatch.matching._record import MIN_PEAK_SNR, detection_warnings

    assert detection_warnings(0.0) == []  # noise not measured: no claim
    assert detection_warnings(1 / (MIN_PEAK_SNR + 1)) == []
    assert "no significant source" in detection_warnings(1 / 3.0)[0]
    rng = np.random.default_rng(4)
    white = rng.normal(size=(104, 104))
    kernel = np.exp(-(np.arange(-2, 3)[:, None] ** 2 + np.arange(-2, 3)[None, :] ** 2) / 2.0)
    noise = np.real(np.fft.ifft2(np.fft.fft2(white) * np.fft.fft2(kernel, white.shape)))[:100, :100]
    path = _fits_observation(tmp_path / "noise.fits", noise, cdelt_deg=0.05 / 3600)
    with fits.open(path, mode="update") as hdus:
        hdus[0].header.update(BMAJ=0.2 / 3600, BMIN=0.2 / 3600, BPA=0.0, BUNIT="Jy/beam")
    result = match_observations(
        tiny_index, [path], tmp_path / "r", config=MatchConfig(k=5, distance_pc=140)
    )
    warnings = result.targets[0].summary["warnings"]
    assert any("no significant source" in w for w in warnings), warnings
