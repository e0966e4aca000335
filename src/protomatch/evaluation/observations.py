"""Evaluate parameter recovery on mock observations: beam, noise, another pixel scale.

:func:`evaluate_observations` reads the FITS files and ``truth.csv`` written by
``protomatch observe`` (systems outside the library), brings each observation onto the
library's grid and unit (:func:`protomatch.matching.observation.prepare_observation`)
and estimates its parameters with the chosen methods below (default
:data:`DEFAULT_METHODS`: all but the two beam-turned 8-orientation variants and ``npe``),
from the similarity-weighted quantiles of its top ``k`` library matches (weights = cosine
similarity):

* ``protomatch`` - the model's embedding of the observation against the stored library;
* ``protomatch_beam`` - against the library convolved with the observation's beam
  (:class:`protomatch.matching.conditioned.BeamMatchedLibrary`);
* ``protomatch_beam_noise`` - against the library convolved with the beam and given
  beam-correlated noise at the observation's level, brightness clipped at twice the noise
  on both sides: what ``protomatch match`` does for an observation with a beam;
* ``*_d8max`` / ``*_d8mean`` - the same, made blind to the sky orientation: the observation
  is compared in the 8 orientations of the square (rot90 x flip), each against the library
  through the equally turned beam, and per library image the maximum (or the mean) of the 8
  similarities is kept. The mean ranks and weighs exactly like the renormalised average of
  the 8 embeddings when the library side does not change with the orientation;
* ``pixels`` / ``pixels_beam`` - nearest neighbours by cosine of the model-input pixels
  (intensity-transformed), against the stored / beam-convolved library;
* ``npe`` - not from matches: neural posterior estimation with sbi (:mod:`._npe`), a flow
  with a CNN embedding trained on the training systems' images through the network's own
  augmentation; the quantiles of its posterior samples. Optional (``protomatch[sbi]``),
  trained once per run, not in :data:`DEFAULT_METHODS`;
* ``prior`` - the library's own quantiles, the same for every observation.

Per parameter and method: the median absolute error of the weighted median against the truth
(dex for parameters the model log-scales) and the coverage of the 68 % and 95 % intervals,
over all observations and per third of the peak S/N and of the beam size. The output
folder (written atomically) holds ``metrics.json``, ``metrics.md``, ``estimates.csv`` (every
observation's quantiles per method) and two figures.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd
import pydantic
from tqdm import tqdm

from protomatch import _artefact
from protomatch._integrity import folder_records
from protomatch._locking import claims_output
from protomatch._text import csv_bytes
from protomatch.calibration.intervals import (
    CALIBRATION_FOLDS,
    IntervalCalibration,
    grid_levels,
    group_folds,
)
from protomatch.errors import InputError
from protomatch.evaluation import recovery as R
from protomatch.evaluation._markdown import json_safe
from protomatch.evaluation._npe import NpeEstimator, require_sbi, train_npe
from protomatch.evaluation._observation_figures import (
    describe,
    markdown_tables,
    render_figures,
    verdict_block,
)
from protomatch.library.store import LibraryStore
from protomatch.matching.conditioned import BeamMatchedLibrary, noise_level, pixel_vectors
from protomatch.matching.facts import required_facts
from protomatch.matching.observation import (
    Centre,
    PreparedObservation,
    prepare_observation,
    read_observation,
)
from protomatch.matching.pixels import NETWORK_WEIGHT, fused_scores, strong_pixel_similarities
from protomatch.matching.summary import DEFAULT_MATCHES, QUANTILES
from protomatch.matching.validation import (
    CALIBRATION_FILE,
    CALIBRATION_KIND,
    EVALUATION_KIND,
    EVALUATION_SCHEMA_VERSION,
)
from protomatch.neural_nets.trained import TrainedModel, load_model
from protomatch.optics.beam import Beam
from protomatch.simulators.truth import read_truth

__all__ = [
    "DEFAULT_METHODS",
    "METHODS",
    "ObservationEvaluation",
    "ObservationEvaluationConfig",
    "evaluate_observations",
]

log = logging.getLogger(__name__)

KIND = EVALUATION_KIND
SCHEMA_VERSION = EVALUATION_SCHEMA_VERSION
METHODS = MappingProxyType(
    {
        "protomatch": "embedding cosine vs the stored (unconvolved) library",
        "protomatch_d8max": "as protomatch, max similarity over the 8 orientations",
        "protomatch_d8mean": "as protomatch, mean similarity over the 8 orientations",
        "protomatch_beam": "embedding cosine vs the library convolved to the observation's beam",
        "protomatch_beam_d8max": "as protomatch_beam, max over the 8 orientations (beam turned)",
        "protomatch_beam_d8mean": "as protomatch_beam, mean over the 8 orientations (beam turned)",
        "protomatch_beam_noise": "as protomatch_beam, with the observation's noise level added "
        "to the convolved library (beam-correlated)",
        "protomatch_fused": "protomatch's ranking in match: protomatch_beam_noise and "
        "pixels_strong standardised over the library and added (network weight "
        f"{NETWORK_WEIGHT}); matches weighted by the network's cosine",
        "pixels": "pixel cosine (model-input pixels) vs the stored library",
        "pixels_beam": "pixel cosine vs the library convolved to the observation's beam",
        "pixels_strong": "the strongest simple baseline: pixel correlation after a noise-aware "
        "asinh stretch, vs the library convolved to the beam, best over the 8 orientations",
        "npe": "neural posterior estimation (sbi): a flow with a CNN embedding trained on the "
        "training systems' images with the network's beam, noise and orientation augmentation; "
        "quantiles of its posterior samples",
        "prior": "the library's median and quantiles",
    }
)
#: protomatch's ranking of an observation with a beam, and its network part.
FUSED = "protomatch_fused"
NETWORK_PART = "protomatch_beam_noise"
PROTOMATCH_VARIANTS = tuple(m for m in METHODS if m.startswith("protomatch"))
#: Methods that estimate the quantiles directly, not from library matches.
DIRECT_METHODS = ("npe",)
#: Methods evaluated unless asked otherwise: all but the two that turn the beam-convolved
#: library 8 ways (8 library passes per observation; measured not to help) and the optional
#: ``npe`` (needs sbi; trains a network).
DEFAULT_METHODS = tuple(
    m for m in METHODS if not m.startswith("protomatch_beam_d8") and m not in DIRECT_METHODS
)


@dataclass(frozen=True)
class ObservationEvaluation:
    """What :func:`evaluate_observations` measured (``metrics`` as in metrics.json) and where."""

    metrics: Mapping[str, Any] = field(repr=False)
    out: Path

    def describe(self) -> str:
        """A few lines: best variant, errors against the prior, files written."""
        return describe(self.metrics, self.out)

    def markdown_table(self) -> str:
        """metrics.md: the README table and the table of every method."""
        return markdown_tables(self.metrics)


class ObservationEvaluationConfig(pydantic.BaseModel, extra="forbid", frozen=True):
    """How mock observations are matched when scoring recovery.

    Attributes
    ----------
    k
        Best matches summarised per observation (at most the library's size).
    methods
        Names from :data:`METHODS` to evaluate (the prior always is); None:
        :data:`DEFAULT_METHODS`.
    centre
        Where the library's field is cut from each observation, as in ``protomatch match``.
    """

    k: int = pydantic.Field(DEFAULT_MATCHES, ge=1)
    methods: tuple[str, ...] | None = None
    centre: Centre = "source"


@claims_output(KIND, inputs=("model", "library", "observations_dir"))
def evaluate_observations(
    model: str | Path,
    library: str | Path,
    observations_dir: str | Path,
    out: str | Path,
    *,
    config: ObservationEvaluationConfig | None = None,
    overwrite: bool = False,
) -> ObservationEvaluation:
    """Recover the parameters of mock observations with every method; write ``out``.

    Parameters
    ----------
    model
        Model folder (or its model.json) written by ``protomatch train``.
    library
        Library store written by ``protomatch ingest`` (with its AU per pixel for the beam).
    observations_dir
        Folder written by ``protomatch observe``: FITS files and ``truth.csv`` (columns
        ``file``, the model's parameters, optionally ``distance_pc`` [pc]).
    out
        Output folder (atomic; must be empty or absent unless ``overwrite``).
    config
        k, methods and centre (:class:`ObservationEvaluationConfig`); defaults when None.
    overwrite
        Replace a non-empty ``out``.

    Returns
    -------
    ObservationEvaluation
        The metrics record and the output folder.
    """
    started = time.perf_counter()
    config = config or ObservationEvaluationConfig()
    out = Path(out)
    methods = _chosen_methods(config.methods, Path(observations_dir))
    _artefact.ensure_writable_output(out, overwrite)
    trained, store = load_model(model), LibraryStore.open(library)
    names = trained.normaliser.names
    trained.check_store(store)
    truth = read_truth(Path(observations_dir), names)
    beamed = BeamMatchedLibrary(trained, store)
    k = min(config.k, len(store))
    npe = train_npe(trained, store) if "npe" in methods else None
    run = _Run(trained, store, beamed, k, methods, config.centre, npe)
    rankings: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {m: [] for m in run.methods}
    records = []
    for row in tqdm(truth.to_dict("records"), desc="observations"):
        record, ranked = run.observation(Path(observations_dir), row)
        records.append(record)
        for method, result in ranked.items():
            rankings[method].append(result)
    stacked = {
        m: (np.stack([s for s, _ in r]), np.stack([i for _, i in r])) for m, r in rankings.items()
    }
    direct = {"npe": np.stack(run.npe_grids)} if npe is not None else {}
    recovery, fitted = _recovery(trained, store, truth, stacked, direct)
    estimates = fitted.quantiles
    best = _best_variant(recovery)
    conditions = _by_condition(trained, recovery, truth, estimates)
    bootstrap = _bootstrap(trained, recovery, truth, estimates, best)
    calibrations = {
        m: {
            **_calibration(names, fitted, m, Path(observations_dir)).record(),
            "cross_fitted": {
                n: {c: recovery[n]["methods"][m][c] for c in ("coverage68", "coverage95")}
                for n in names
            },
        }
        for m in (FUSED, NETWORK_PART)
        if m in estimates
    }
    metrics = json_safe(
        {
            **_artefact.provenance(KIND, SCHEMA_VERSION),
            "model": {"path": str(Path(model).resolve()), "fingerprint": trained.fingerprint},
            "library": {
                "path": str(store.path.resolve()),
                "fingerprint": store.fingerprint,
                "n_images": len(store),
                "au_per_pixel": store.au_per_pixel,
            },
            "observations": _observations_record(Path(observations_dir), records),
            "k": k,
            "methods": {m: METHODS[m] for m in methods},
            "best_protomatch": best,
            "note": "errors: median absolute error of the weighted median of the top-k matches "
            "(weights: similarity over the system's count among the matches) over the "
            "observations (dex for log-scaled parameters); coverage: fraction of observations "
            "whose truth lies in the 16-84 % / 2.5-97.5 % interval, each interval calibrated "
            f"on the other {CALIBRATION_FOLDS - 1} of {CALIBRATION_FOLDS} folds of the "
            "observations' systems ('uncalibrated': before)",
            "parameters": recovery,
            "by_condition": conditions,
            "bootstrap": bootstrap,
            "library_passes": beamed.misses,
            "seconds": round(time.perf_counter() - started, 1),
            **({"npe": npe.record} if npe is not None else {}),
        }
    )
    metrics["verdict"] = json_safe(verdict_block(metrics))
    figures = render_figures(metrics, truth, estimates, names, trained.normaliser.log10)
    with _artefact.atomic_directory(out, overwrite) as tmp:
        for name, png in figures.items():
            _artefact.write_bytes_atomic(tmp / name, png)
        metrics["figures"] = sorted(figures)
        estimates_table = _estimates_table(truth, estimates, names, trained.normaliser.log10)
        (tmp / "estimates.csv").write_bytes(csv_bytes(estimates_table))
        _artefact.write_json_atomic(
            tmp / CALIBRATION_FILE,
            {
                **_artefact.provenance(CALIBRATION_KIND, SCHEMA_VERSION),
                "model": metrics["model"],
                "library": metrics["library"],
                "calibrations": calibrations,
            },
        )
        _artefact.write_bytes_atomic(tmp / "metrics.md", markdown_tables(metrics).encode())
        metrics["files"] = folder_records(tmp)  # metrics.json, written last, lists the rest
        _artefact.write_json_atomic(tmp / "metrics.json", metrics)
    return ObservationEvaluation(metrics, out)


# --------------------------------------------------------------------------- inputs


def _chosen_methods(methods: Sequence[str] | None, folder: Path) -> tuple[str, ...]:
    """The methods to evaluate, in :data:`METHODS` order, with the prior and a protomatch one."""
    if methods is None:
        return DEFAULT_METHODS
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise InputError(
            folder, f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(METHODS)}"
        )
    if not any(m in PROTOMATCH_VARIANTS for m in methods):
        raise InputError(folder, "choose at least one protomatch method to evaluate")
    if "npe" in methods:
        require_sbi()
    return tuple(m for m in METHODS if m in methods or m == "prior")


# --------------------------------------------------------------------------- matching


class _Run:
    """Everything shared by the observations: model, library, plain vectors, k."""

    def __init__(
        self,
        trained: TrainedModel,
        store: LibraryStore,
        beamed: BeamMatchedLibrary,
        k: int,
        methods: Sequence[str],
        centre: Centre = "source",
        npe: NpeEstimator | None = None,
    ) -> None:
        self.trained, self.store, self.beamed, self.k = trained, store, beamed, k
        self.methods = [m for m in methods if m not in ("prior", *DIRECT_METHODS)]
        self.centre = centre
        self.npe = npe
        self.npe_grids: list[np.ndarray] = []  # (P, 1 + 2G) per observation, error space

    def observation(
        self, folder: Path, row: Mapping[Hashable, Any]
    ) -> tuple[dict[str, Any], dict[str, tuple[np.ndarray, np.ndarray]]]:
        """Top-k (similarities, library rows) of one observation for every matched method.

        The NPE's quantile grids, when it is evaluated, are kept in ``npe_grids``.
        """
        observation = read_observation(folder / str(row["file"])).at_distance(_distance(row))
        required_facts(
            observation,
            library_au_per_pixel=self.store.au_per_pixel,
            library_unit=self.store.intensity_unit,
            store=self.store.path,
            brightness_aware=self.trained.brightness is not None,
            unscaled=False,
        )
        prepared = prepare_observation(
            observation,
            self.trained.preprocess,
            self.store.au_per_pixel,
            self.store.intensity_unit,
            centre=self.centre,
        )
        beam = prepared.beam
        brightness = self.trained.compared_brightness(prepared.mean_intensity)
        record = {
            "file": str(row["file"]),
            "beam_px": None if beam is None else [round(v, 3) for v in beam],
            "brightness_known": prepared.mean_intensity is not None,
        }
        if self.npe is not None:
            self.npe_grids.append(self.npe.quantile_grids(prepared.image[None])[0])
        sims = self._similarities(prepared, brightness, beam)
        return record, {m: self._ranked(sims, m) for m in self.methods}

    def _ranked(
        self, sims: Callable[[str], np.ndarray], method: str
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (weights, rows) of a method; the fused one weighs by the network's cosine."""
        if method != FUSED:
            return _top_k(sims(method), self.k)
        _, rows = _top_k(sims(method), self.k)
        return sims(NETWORK_PART)[rows].astype(np.float64), rows

    def _similarities(
        self, prepared: PreparedObservation, brightness: float | None, beam: Beam | None
    ) -> Callable[[str], np.ndarray]:
        """Similarity to every library image by method; each library pass made only if asked."""
        image = prepared.image

        @functools.cache
        def oriented(through_beam: bool, all_orientations: bool) -> np.ndarray:
            chosen = beam if through_beam else None
            return self.beamed.similarities(image, brightness, chosen, dihedral=all_orientations)

        @functools.cache
        def query_pixels() -> np.ndarray:
            return pixel_vectors(image[None], self.trained.preprocess)[0]

        @functools.cache
        def by_method(method: str) -> np.ndarray:
            if method == FUSED:
                return fused_scores(by_method(NETWORK_PART), by_method("pixels_strong"))
            if method == "protomatch_beam_noise":
                if beam is None:
                    return oriented(False, False)[:, 0]
                return self.beamed.noise_matched_similarities(prepared, beam)[0]
            if method == "pixels_strong":
                return self._strong_pixels(prepared, beam)
            if method.startswith("pixels"):
                if method == "pixels_beam":
                    pixels = self.beamed.convolved_pixels(beam, prepared.footprint)
                else:
                    pixels = self.beamed.convolved_pixels(None)
                return pixels @ query_pixels()
            reduce = method.rsplit("_", 1)[-1]
            sims = oriented("_beam" in method, reduce in ("d8max", "d8mean"))
            if reduce == "d8max":
                return sims.max(axis=1)
            return sims.mean(axis=1) if reduce == "d8mean" else sims[:, 0]

        return by_method

    def _strong_pixels(self, prepared: PreparedObservation, beam: Beam | None) -> np.ndarray:
        """The strongest simple baseline (:mod:`~protomatch.matching.pixels`)."""
        noise = noise_level(prepared.image)
        return strong_pixel_similarities(
            self.beamed, prepared.image, beam, noise, prepared.footprint
        )


def _distance(row: Mapping[Hashable, Any]) -> float | None:
    """The row's positive ``distance_pc`` [pc], None if absent, not a number or not positive."""
    given = row.get("distance_pc")
    value = np.nan if given is None else pd.to_numeric(given, errors="coerce")
    return float(value) if np.isfinite(value) and value > 0 else None


def _top_k(similarity: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(k,) best similarities and their library rows, best first."""
    rows = np.argpartition(-similarity, k - 1)[:k]
    rows = rows[np.argsort(-similarity[rows], kind="stable")]
    return similarity[rows].astype(np.float64), rows.astype(np.int64)


# --------------------------------------------------------------------------- metrics


@dataclass(frozen=True)
class _Estimates:
    """Every method's estimates of every observation, before and after calibration."""

    quantiles: dict[str, np.ndarray]  # method -> (Q, P, 5) scored (cross-fitted calibrated)
    raw: dict[str, np.ndarray]  # method -> (Q, P, 1 + 2G) grids before calibration
    truths: np.ndarray  # (Q, P) error space
    spreads: list[float]  # prior spread per parameter


def _recovery(
    trained: TrainedModel,
    store: LibraryStore,
    truth: pd.DataFrame,
    rankings: Mapping[str, tuple[np.ndarray, np.ndarray]],
    direct: Mapping[str, np.ndarray] | None = None,
) -> tuple[dict[str, Any], _Estimates]:
    """Scores per parameter and method, and every method's estimates (error space).

    ``rankings`` give each method's top-k matches (weighted per system); ``direct`` the
    (Q, P, 1 + 2G) grids of methods that estimate without matches (:data:`DIRECT_METHODS`).
    Every method's intervals are calibrated by cross-fitting over :data:`CALIBRATION_FOLDS`
    folds of the observations' systems (each observation by scales fitted on the others).
    """
    names, flags = trained.normaliser.names, trained.normaliser.log10
    units = dict(trained.manifest.get("parameters", {}).get("units", {}))
    theta = store.theta()[:, [store.param_names.index(n) for n in names]]
    systems = store.table["system"].astype(str).to_numpy()
    folds = group_folds(_observed_systems(truth), CALIBRATION_FOLDS)
    direct = direct or {}
    record: dict[str, Any] = {}
    parts: list[R.Recovered] = []
    truths = np.empty((len(truth), len(names)))
    for p, (name, log10) in enumerate(zip(names, flags)):
        values = R.error_space(theta[:, p], log10)
        truths[:, p] = R.error_space(truth[name].to_numpy(dtype=np.float64), log10)
        prior = np.quantile(values[np.isfinite(values)], grid_levels())  # the whole library's
        recovered = R.parameter_recovery(
            values,
            truths[:, p],
            prior,
            rankings,
            systems=systems,
            folds=folds,
            direct={m: g[:, p] for m, g in direct.items()},
        )
        parts.append(recovered)
        record[name] = {
            "unit": units.get(name, ""),
            "log10": bool(log10),
            "error_unit": "dex" if log10 else units.get(name, ""),
            "prior_spread": recovered.recovery["prior_spread"],
            "prior_median": float(prior[0]),
            "methods": recovered.recovery["methods"],
        }
    methods = list(parts[0].grids)
    estimates = _Estimates(
        quantiles={m: np.stack([r.quantiles(m) for r in parts], axis=1) for m in methods},
        raw={m: np.stack([r.raw[m] for r in parts], axis=1) for m in methods},
        truths=truths,
        spreads=[r.recovery["prior_spread"] for r in parts],
    )
    return record, estimates


def _observed_systems(truth: pd.DataFrame) -> list[str]:
    """Each observation's system (its file when truth.csv names no system)."""
    column = "system" if "system" in truth.columns else "file"
    return truth[column].astype(str).tolist()


def _calibration(
    names: Sequence[str], estimates: _Estimates, method: str, folder: Path
) -> IntervalCalibration:
    """A method's interval calibration fitted on all the evaluated observations."""
    return IntervalCalibration.fit(
        {n: estimates.raw[method][:, p] for p, n in enumerate(names)},
        {n: estimates.truths[:, p] for p, n in enumerate(names)},
        dict(zip(names, estimates.spreads)),
        fitted_on=f"{len(estimates.truths)} mock observations ({folder.name})",
        ranking=method,
    )


#: truth.csv columns whose thirds get their own scores (observing conditions).
CONDITIONS = MappingProxyType({"snr": "peak S/N", "beam_major_au": "beam major FWHM [AU]"})


def _by_condition(
    trained: TrainedModel,
    recovery: Mapping[str, Any],
    truth: pd.DataFrame,
    estimates: Mapping[str, np.ndarray],
) -> dict[str, dict[str, Any]]:
    """Mean error / prior spread per method in each third of every observing condition.

    For each :data:`CONDITIONS` column of ``truth`` (when present and numeric), the
    observations are split at its terciles; each part gets the mean over parameters of the
    error over the prior's spread and of the 68 % coverage, per method.
    """
    truths = _true_values(trained, truth)
    spreads = [recovery[name]["prior_spread"] for name in trained.normaliser.names]
    record: dict[str, dict[str, Any]] = {}
    for column in CONDITIONS:
        if column not in truth.columns:
            continue
        values = pd.to_numeric(truth[column], errors="coerce").to_numpy(dtype=np.float64)
        if not np.isfinite(values).all() or len(values) < 3:
            continue
        edges = np.quantile(values, [0.0, 1 / 3, 2 / 3, 1.0])
        parts = np.clip(np.searchsorted(edges[1:-1], values, side="right"), 0, 2)
        record[column] = {
            "label": CONDITIONS[column],
            "parts": [
                _part_scores(estimates, truths, spreads, parts == b, (edges[b], edges[b + 1]))
                for b in range(3)
            ],
        }
    return record


def _true_values(trained: TrainedModel, truth: pd.DataFrame) -> np.ndarray:
    """(Q, P) true parameters in error space (log10 for log-scaled parameters)."""
    names, flags = trained.normaliser.names, trained.normaliser.log10
    return np.stack(
        [R.error_space(truth[n].to_numpy(dtype=np.float64), f) for n, f in zip(names, flags)], 1
    )


def _bootstrap(
    trained: TrainedModel,
    recovery: Mapping[str, Any],
    truth: pd.DataFrame,
    estimates: Mapping[str, np.ndarray],
    best: str,
) -> dict[str, object]:
    """Bootstrap intervals of each method's mean error / prior spread, and paired to ``best``."""
    spreads = [recovery[name]["prior_spread"] for name in trained.normaliser.names]
    median = R.quantile_index("median")
    medians = {method: values[:, :, median] for method, values in estimates.items()}
    return R.bootstrap_relative_error(medians, _true_values(trained, truth), spreads, best)


def _part_scores(
    estimates: Mapping[str, np.ndarray],
    truths: np.ndarray,
    spreads: Sequence[float],
    chosen: np.ndarray,
    bounds: tuple[float, float],
) -> dict[str, Any]:
    methods = {}
    for method, values in estimates.items():
        scores = [
            R.recovery_scores(values[chosen, p], truths[chosen, p], spread)
            for p, spread in enumerate(spreads)
        ]
        methods[method] = {
            key: float(np.nanmean([s[key] for s in scores]))
            for key in ("error_over_prior_spread", "coverage68")
        }
    return {
        "range": [float(bounds[0]), float(bounds[1])],
        "n": int(chosen.sum()),
        "methods": methods,
    }


def _best_variant(recovery: Mapping[str, Any]) -> str:
    """The protomatch variant with the lowest mean error over the prior's spread."""

    def mean_error(method: str) -> float:
        ratios = [r["methods"][method]["error_over_prior_spread"] for r in recovery.values()]
        finite = [v for v in ratios if v is not None and np.isfinite(v)]
        return float(np.mean(finite)) if finite else np.inf

    evaluated = next(iter(recovery.values()))["methods"]
    return min((m for m in PROTOMATCH_VARIANTS if m in evaluated), key=mean_error)


def _observations_record(folder: Path, records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    manifest: dict[str, Any] = {}
    try:
        manifest = _artefact.read_manifest(folder / "manifest.json", "observations", 1)
    except InputError:
        log.warning("%s: no observe manifest; recording the folder only", folder)
    with_beam = sum(r["beam_px"] is not None for r in records)
    return {
        "path": str(folder.resolve()),
        "n": len(records),
        "with_beam": with_beam,
        "brightness_known": sum(bool(r["brightness_known"]) for r in records),
        "created_utc": manifest.get("created_utc"),
        "config": manifest.get("config"),
        "per_observation": list(records),
    }


def _estimates_table(
    truth: pd.DataFrame,
    estimates: Mapping[str, np.ndarray],
    names: Sequence[str],
    log10: Sequence[bool],
) -> pd.DataFrame:
    """One row per (observation, method, parameter): truth and quantiles, physical units."""
    frames = []
    for method, values in estimates.items():
        for p, (name, flag) in enumerate(zip(names, log10)):
            physical = np.power(10.0, values[:, p]) if flag else values[:, p]
            frame = pd.DataFrame(physical, columns=list(QUANTILES))
            frame.insert(0, "truth", truth[name].to_numpy(dtype=np.float64))
            frame.insert(0, "parameter", name)
            frame.insert(0, "method", method)
            frame.insert(0, "file", truth["file"].astype(str).to_numpy())
            frames.append(frame)
    return pd.concat(frames, ignore_index=True)
