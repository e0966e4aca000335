"""Evaluate a trained model on systems it never saw: similarity, retrieval, parameter recovery.

``evaluate_model(MODEL, LIBRARY, OUT)`` works on the model's *test* systems (its
``manifest["split"]["test"]``), or, for a library other than the one it was trained on, on
every system outside the model's training and validation splits. It measures

* **similarity** of random test pairs: the network's prediction (cosine of embeddings)
  against the weak label, with MSE, the trivial predictor's MSE, Spearman's rho and the
  research pipeline's accuracy (pairs predicted in [0.9, 1] that are within 0.1 of the truth);
* **retrieval**: each query image against the library images of *other* systems (its own
  system's other projections and snapshots are near-duplicates and are left out):
  precision@k and nDCG@k for the network and three baselines on the same queries and
  candidates - raw-pixel cosine, a PCA embedding of the pixels fitted on training-split
  images, and a random ranking;
* **parameter recovery**: similarity-weighted quantiles of the top matches' parameters
  against the query's true values (errors in dex for log-scaled parameters), beside the
  prior (the library's median) and the pixel and PCA nearest-neighbour baselines, with the
  coverage of the 68 % and 95 % intervals.

The output folder holds ``metrics.json``, ``metrics.md`` (tables for a README) and PNG
figures. The library is streamed in blocks, so memory stays bounded for large libraries:
that pass, with the pixel and PCA baselines and the rankings of every method, is in
:mod:`protomatch.evaluation._baselines`; the metric functions are in
:mod:`protomatch.evaluation.metrics` and :mod:`protomatch.evaluation.recovery`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field, field_validator

from protomatch import _artefact
from protomatch._locking import claims_output
from protomatch.calibration.intervals import CALIBRATION_FOLDS, group_folds
from protomatch.errors import InputError, ProtomatchError
from protomatch.evaluation import metrics as M
from protomatch.evaluation import recovery as R
from protomatch.evaluation._baselines import library_pass, method_rankings, pca_fit_rows
from protomatch.evaluation._library_figures import (
    FigureData,
    describe_metrics,
    markdown_tables,
    render_figures,
)
from protomatch.evaluation._markdown import json_safe
from protomatch.library.store import LibraryStore
from protomatch.matching.summary import DEFAULT_MATCHES, QUANTILES, unit_rows
from protomatch.neural_nets.trained import TrainedModel, load_model
from protomatch.training.pairs import PairConfig, PairSampler

log = logging.getLogger(__name__)

EVALUATION_SCHEMA_VERSION = 1
METHODS = ("protomatch", "pixels", "pixels_strong", "pca", "random")
#: "oracle" ranks by the true similarity itself: the best any network could do with the label.
RECOVERY_METHODS = ("protomatch", "pixels", "pixels_strong", "pca", "oracle")


class EvaluateConfig(BaseModel, extra="forbid", frozen=True):
    """What the evaluation measures and on how much data.

    Attributes
    ----------
    pairs : int
        Random test pairs for the similarity metrics.
    k : tuple of int
        Cut-offs of precision@k and nDCG@k (sorted, distinct).
    k_recovery : int
        Best matches summarised for parameter recovery.
    relevance_threshold : float
        True similarity of a relevant candidate, in [-1, 1].
    max_queries : int
        Evaluated images used as queries (a seeded random subset if there are more).
    pca_components : int
        Components of the PCA baseline.
    seed : int
        Seed of the query subset, the pairs, the PCA fit and the random ranking.
    batch_size : int
        Images embedded per batch.
    """

    pairs: int = Field(4000, ge=2, description="random test pairs for the similarity metrics")
    k: tuple[int, ...] = Field((10, 50), description="cut-offs of precision@k and nDCG@k")
    k_recovery: int = Field(
        DEFAULT_MATCHES, ge=1, description="matches summarised for parameter recovery"
    )
    relevance_threshold: float = Field(0.9, ge=-1.0, le=1.0)
    max_queries: int = Field(500, ge=1, description="test images used as queries")
    pca_components: int = Field(32, ge=1)
    seed: int = 0
    batch_size: int = Field(256, ge=1)

    @field_validator("k")
    @classmethod
    def _positive_cutoffs(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if not value or min(value) < 1:
            raise ValueError("give at least one cut-off k, each >= 1")
        return tuple(sorted(set(value)))


@dataclass(frozen=True)
class EvaluationResult:
    """What :func:`evaluate_model` measured and where.

    Attributes
    ----------
    metrics : Mapping
        The metrics record, as in metrics.json.
    out : Path
        The output folder.
    """

    metrics: Mapping[str, Any] = field(repr=False)
    out: Path

    def describe(self) -> str:
        """A compact human summary: the main numbers and the files written."""
        return describe_metrics(self.metrics, self.out)

    def markdown_table(self) -> str:
        """The Markdown tables of metrics.md (methods x metrics; recovery per parameter)."""
        return markdown_tables(self.metrics)


@claims_output("evaluation", inputs=("model", "library"))
def evaluate_model(
    model: str | Path,
    library: str | Path,
    out: str | Path,
    *,
    config: EvaluateConfig | None = None,
    overwrite: bool = False,
) -> EvaluationResult:
    """Evaluate ``model`` on the unseen systems of ``library``; write the folder ``out``.

    Parameters
    ----------
    model : str or Path
        Model folder (or its model.json) written by ``protomatch train``.
    library : str or Path
        Library store folder written by ``protomatch ingest``.
    out : str or Path
        Output folder (written atomically; must be empty or absent unless ``overwrite``).
    config : EvaluateConfig, optional
        Pairs, cut-offs, query count, PCA size, seed (default :class:`EvaluateConfig`).
    overwrite : bool
        Replace a non-empty ``out``.

    Returns
    -------
    EvaluationResult
        The metrics record (as in metrics.json) and the output folder.
    """
    started = time.perf_counter()
    config = config or EvaluateConfig()
    out = Path(out)
    _artefact.ensure_writable_output(out, overwrite)
    trained = load_model(model)
    store = LibraryStore.open(library)
    setup = _Setup.build(trained, store, config)
    log.info("%s", setup.summary())
    vectors = library_pass(setup)
    rankings = method_rankings(setup, vectors)
    pairs = _similarity_pairs(setup, vectors.embeddings)
    metrics: dict[str, Any] = {
        **_artefact.provenance("evaluation", EVALUATION_SCHEMA_VERSION),
        "model": {"path": str(Path(model).resolve()), "fingerprint": trained.fingerprint},
        "library": {
            "path": str(store.path.resolve()),
            "fingerprint": store.fingerprint,
            "trained_on": setup.same_library,
        },
        "config": config.model_dump(mode="json"),
        "evaluated_on": setup.record(),
        "similarity": pairs.metrics,
        "retrieval": _retrieval_metrics(setup, rankings),
    }
    recovery, recovered = _recovery_metrics(setup, rankings)
    metrics["recovery"] = recovery
    metrics["seconds"] = round(time.perf_counter() - started, 2)
    metrics = json_safe(metrics)
    figures = render_figures(_figure_data(setup, pairs, recovered, metrics))
    with _artefact.atomic_directory(out, overwrite) as tmp:
        for name, png in figures.items():
            _artefact.write_bytes_atomic(tmp / name, png)
        metrics["figures"] = sorted(figures)
        _artefact.write_json_atomic(tmp / "metrics.json", metrics)
        _artefact.write_bytes_atomic(tmp / "metrics.md", markdown_tables(metrics).encode())
    result = EvaluationResult(metrics, out)
    log.debug("%s", result.describe())
    return result


# --------------------------------------------------------------------------- setup


@dataclass(frozen=True, eq=False)
class _Setup:
    """The model, the library and which of its images are evaluated."""

    trained: TrainedModel
    store: LibraryStore
    config: EvaluateConfig
    same_library: bool
    basis: str  # "test split" or "systems unseen in training"
    systems: tuple[str, ...]  # evaluated systems
    notes: tuple[str, ...]
    group: np.ndarray  # (N,) int system code per store row
    theta: np.ndarray  # (N, P) raw parameters, the model's parameter order
    z_unit: np.ndarray  # (N, P) float32 unit rows of weighted normalised parameters
    eval_rows: np.ndarray  # store rows of the evaluated systems
    queries: np.ndarray  # (Q,) sorted store rows used as queries
    pca_rows: np.ndarray  # store rows the PCA baseline is fitted on

    @classmethod
    def build(cls, trained: TrainedModel, store: LibraryStore, config: EvaluateConfig) -> _Setup:
        trained.check_store(store)
        table = store.table
        if not np.array_equal(table["image_id"].to_numpy(), np.arange(len(table))):
            raise InputError(store.path, "image ids are not the row numbers; re-run ingest")
        names = list(trained.normaliser.names)
        theta = table[names].to_numpy(dtype=np.float64)
        try:
            z = trained.normaliser.transform(theta)
        except ProtomatchError as exc:
            raise InputError(store.path, f"parameters do not fit the model ({exc})") from None
        system = table["system"].astype(str).to_numpy()
        codes, _ = pd.factorize(system)
        same = store.fingerprint == trained.library_fingerprint
        systems, basis, notes = _evaluated_systems(trained, store, same)
        eval_rows = np.flatnonzero(np.isin(system, systems))
        if len(np.unique(codes)) < 2:
            raise InputError(store.path, "holds a single system: nothing to compare it with")
        rng = np.random.default_rng([config.seed, 0])
        queries = eval_rows
        if len(eval_rows) > config.max_queries:
            queries = np.sort(rng.choice(eval_rows, config.max_queries, replace=False))
        pca_rows, pca_note = pca_fit_rows(trained, system, systems, rng)
        if pca_note:
            notes = (*notes, pca_note)
        return cls(
            trained=trained,
            store=store,
            config=config,
            same_library=same,
            basis=basis,
            systems=systems,
            notes=notes,
            group=codes.astype(np.int64),
            theta=theta,
            z_unit=unit_rows(z, np.asarray(trained.weights)),
            eval_rows=eval_rows,
            queries=queries,
            pca_rows=pca_rows,
        )

    @property
    def k_max(self) -> int:
        return max(*self.config.k, self.config.k_recovery)

    @property
    def log10(self) -> tuple[bool, ...]:
        return self.trained.normaliser.log10

    def summary(self) -> str:
        return (
            f"evaluating on {len(self.eval_rows)} images of {len(self.systems)} {self.basis} "
            f"systems ({len(self.queries)} as queries, each against the library images of "
            "other systems)"
        )

    def record(self) -> dict[str, Any]:
        query_systems = self.store.table["system"].astype(str).to_numpy()[self.queries]
        return {
            "basis": self.basis,
            "systems": list(self.systems),
            "n_images": len(self.eval_rows),
            "n_queries": len(self.queries),
            "query_systems": sorted(set(query_systems.tolist())),
            "n_library_images": len(self.store),
            "pca_fit_images": len(self.pca_rows),
            "own_system_excluded": True,
            "notes": list(self.notes),
        }


def _evaluated_systems(
    trained: TrainedModel, store: LibraryStore, same: bool
) -> tuple[tuple[str, ...], str, tuple[str, ...]]:
    split = trained.manifest.get("split") or {}
    present = set(store.systems())
    if same:
        systems = tuple(s for s in split.get("test", []) if s in present)
        if not systems:
            raise InputError(
                store.path,
                "the model's test split has no system in this library (trained with "
                "split.test = 0?); evaluate on a library of unseen systems",
            )
        return systems, "test", ()
    seen = set(split.get("train", [])) | set(split.get("validation", []))
    systems = tuple(s for s in store.systems() if s not in seen)
    if not systems:
        raise InputError(
            store.path,
            f"every one of its {len(present)} systems is in the model's training or "
            "validation split: no unseen system to evaluate on",
        )
    note = (
        f"library {store.fingerprint} is not the one the model was trained on "
        f"({trained.library_fingerprint}): evaluated on its {len(systems)} systems whose ids "
        "are not in the model's training or validation split"
    )
    log.warning("%s", note)
    return systems, "unseen", (note,)


# --------------------------------------------------------------------------- metrics


def _retrieval_metrics(
    setup: _Setup, rankings: Mapping[str, tuple[np.ndarray, np.ndarray]]
) -> dict[str, Any]:
    config = setup.config
    query = setup.z_unit[setup.queries]
    ideal = M.gathered_similarity(query, setup.z_unit, rankings["ideal"][1])
    methods: dict[str, dict[str, float]] = {}
    for method in METHODS:
        ranked = M.gathered_similarity(query, setup.z_unit, rankings[method][1])
        scores: dict[str, float] = {}
        for k in config.k:
            scores[f"precision@{k}"] = float(
                np.nanmean(M.precision_at_k(ranked, config.relevance_threshold, k))
            )
            scores[f"ndcg@{k}"] = float(np.nanmean(M.ndcg_at_k(ranked, ideal, k)))
        methods[method] = scores
    return {
        "note": "each query is ranked against images of other systems only (its own "
        "system's projections and snapshots are near-duplicates)",
        "relevance_threshold": config.relevance_threshold,
        "relevant_fraction": M.relevant_fraction(
            query,
            setup.z_unit,
            setup.group[setup.queries],
            setup.group,
            config.relevance_threshold,
        ),
        "methods": methods,
    }


@dataclass(frozen=True)
class _Recovered:
    truth: np.ndarray  # (Q, P) in the error space
    quantiles: np.ndarray  # (Q, P, 5) protomatch's recovered quantiles, error space


def _recovery_metrics(
    setup: _Setup, rankings: Mapping[str, tuple[np.ndarray, np.ndarray]]
) -> tuple[dict[str, Any], _Recovered]:
    k, names = setup.config.k_recovery, setup.trained.normaliser.names
    units = dict(setup.trained.manifest.get("parameters", {}).get("units", {}))
    sources = {m: rankings["ideal" if m == "oracle" else m] for m in RECOVERY_METHODS}
    truth = np.empty((len(setup.queries), len(names)))
    ours = np.empty((len(setup.queries), len(names), len(QUANTILES)))
    folds = group_folds(setup.group[setup.queries].tolist(), CALIBRATION_FOLDS)
    parameters: dict[str, Any] = {}
    for p, (name, log10) in enumerate(zip(names, setup.log10)):
        values = R.error_space(setup.theta[:, p], log10)
        truth[:, p] = values[setup.queries]
        prior = R.held_out_prior(values, setup.queries, setup.group)
        recovered = R.parameter_recovery(
            values, truth[:, p], prior, sources, k, systems=setup.group, folds=folds
        )
        ours[:, p] = recovered.quantiles("protomatch")
        parameters[name] = {
            "unit": units.get(name, ""),
            "log10": bool(log10),
            "error_unit": "dex" if log10 else units.get(name, ""),
            **recovered.recovery,
        }
    record = {
        "k": k,
        "note": "weighted quantiles of the top-k matches from other systems (weights: "
        "similarity over the system's count among the matches), intervals calibrated on "
        f"the other {CALIBRATION_FOLDS - 1} of {CALIBRATION_FOLDS} folds of the evaluated "
        "systems ('uncalibrated': before); errors are median absolute errors over the "
        "queries (dex for log-scaled parameters); prior = median of the other systems' "
        "images; oracle = top-k by the true similarity label itself (what a perfect "
        "network would recover)",
        "parameters": parameters,
    }
    return record, _Recovered(truth, ours)


@dataclass(frozen=True)
class _Pairs:
    index_a: np.ndarray
    index_b: np.ndarray
    predicted: np.ndarray
    true: np.ndarray
    metrics: dict[str, Any]


def _similarity_pairs(setup: _Setup, embeddings: np.ndarray) -> _Pairs:
    """Random pairs of evaluated images: predicted (cosine of embeddings) vs true labels."""
    table = setup.store.table.iloc[setup.eval_rows].reset_index(drop=True)
    z = setup.trained.normaliser.transform(setup.theta[setup.eval_rows])
    n = setup.config.pairs
    sampler = PairSampler(
        table,
        z,
        np.asarray(setup.trained.weights),
        PairConfig(pairs_per_epoch=n, batch_size=n),
        seed=setup.config.seed,
    )
    batch = next(iter(sampler.epoch(0)))
    predicted = np.einsum(
        "nd,nd->n", embeddings[batch.index_a], embeddings[batch.index_b], dtype=np.float64
    )
    predicted = np.clip(predicted, -1.0, 1.0)
    metrics = M.similarity_metrics(predicted, batch.label)
    metrics["note"] = (
        "pairs of evaluated images drawn like training's validation pairs: two random "
        "(system, snapshot) units, each seen in a random projection"
    )
    return _Pairs(batch.index_a, batch.index_b, predicted, batch.label.astype(np.float64), metrics)


# --------------------------------------------------------------------------- output


def _figure_data(
    setup: _Setup, pairs: _Pairs, recovered: _Recovered, metrics: Mapping[str, Any]
) -> FigureData:
    return FigureData(
        images=setup.store.images,
        systems=setup.store.table["system"].astype(str).to_numpy(),
        pair_a=pairs.index_a,
        pair_b=pairs.index_b,
        predicted=pairs.predicted,
        true=pairs.true,
        names=tuple(setup.trained.normaliser.names),
        log10=tuple(setup.log10),
        truth=recovered.truth,
        quantiles=recovered.quantiles,
        metrics=metrics,
    )
