"""Best matches of observations in the library, and what their parameters say.

For each target: read it (:func:`~protomatch.matching.observation.read_observation`), bring
it to the library's pixel grid (physically when its pixel scale and distance are known),
rank the library through one :class:`~protomatch.matching.search.LibrarySearch` (the index,
or the library matched to the target's beam and noise), and summarise the best matches'
parameters as similarity-weighted quantiles beside the library's own distribution (the
prior).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pydantic
import torch

from protomatch._artefact import atomic_directory, provenance, write_json_atomic
from protomatch._integrity import folder_records
from protomatch._locking import claims_output
from protomatch._manifests import ReportManifest
from protomatch._text import safe_name
from protomatch.calibration.intervals import IntervalCalibration
from protomatch.errors import InputError, ProtomatchError
from protomatch.library.formats import DEFAULT_MAX_IMAGE_SIDE
from protomatch.matching._distances import distance_grid, pool_rankings, preferred_distances
from protomatch.matching._evidence import (
    calibration_for,
    estimate_lines,
    validation_for,
)
from protomatch.matching._record import (
    analogue_warnings,
    compared_block,
    detection_warnings,
    matches_table,
    observed_view,
    provenance_block,
    truth_values,
)
from protomatch.matching.facts import ObservationFacts, required_facts, with_facts
from protomatch.matching.index import EmbeddingIndex
from protomatch.matching.misspecification import batch_phrase, batch_test
from protomatch.matching.observation import (
    Centre,
    Observation,
    PreparedObservation,
    prepare_observation,
    read_observation,
)
from protomatch.matching.search import (
    EmbeddingSample,
    IndexSearch,
    LibrarySearch,
    NoiseMatchedSearch,
    Ranking,
)
from protomatch.matching.summary import DEFAULT_MATCHES, summarise
from protomatch.matching.validation import read_calibrations, read_validation
from protomatch.neural_nets.trained import TrainedModel
from protomatch.optics.beam import convolve_with_beam
from protomatch.report.data import (
    STRETCH_FLOOR,
    MatchReportData,
    calibration_phrase,
)
from protomatch.report.html import write_match_report, write_report_index

__all__ = ["MatchConfig", "MatchResult", "TargetResult", "match_observations"]

log = logging.getLogger(__name__)

REPORT_SCHEMA_VERSION = ReportManifest.SCHEMA_VERSION
_SHOWN_MATCHES = 11
_DISPLAY_NOISE_SIGMAS = 2.0
_OBSERVATION_CAVEAT = (
    "matching observed images is validated on mock observations only, of the built-in "
    "simulator and of an independently written forward model (README, 'Beating the strongest "
    "simple baseline'): on both, the fused ranking's median errors are below the strongest "
    "simple baseline's on every parameter (resolved on four of seven) and calibrated 68 % "
    "intervals hold the truth 67-70 % of the time; an observation unlike the library is "
    "often not flagged (README, 'Knowing when an observation is outside the library'); real "
    "data will be harder"
)


class MatchConfig(pydantic.BaseModel, extra="forbid", frozen=True):
    """What to match and how.

    Attributes
    ----------
    k
        Number of best matches summarised per target (ignored with ``threshold``).
    threshold
        Keep every match with a similarity of at least this cosine instead of ``k``.
    distance_pc
        Distance to the observed system(s) [pc]; overrides a header's ``DISTANCE``.
    distance_range_pc
        (low, high) [pc]: match at ``distance_steps`` log-spaced distances across the range
        and pool the matches (instead of one distance).
    distance_steps
        Number of distances tried across ``distance_range_pc``.
    facts
        Pixel scale, beam and unit of the observation(s), for files that lack them.
    unscaled
        Match even when a physical fact (pixel scale, distance, beam, unit) is missing; the
        report then says so at the top. Without it such a match stops with one line.
    include_own_system
        For a library image as target, keep its own system's other images.
    centre
        Cut the library's field around the ``"source"`` (brightest point, when more than
        half a beam off the image centre) or the ``"image"`` centre.
    ranking
        For an observation with a beam: rank by the network's similarity ``"fused"`` with
        the pixels' (:func:`protomatch.matching.pixels.fused_scores`; measured better than
        either alone) or by the ``"network"``'s alone.
    max_image_side
        Largest observation side [pixels] read; checked on each file's header before its
        pixels are read.
    """

    k: int = pydantic.Field(DEFAULT_MATCHES, ge=1)
    threshold: float | None = pydantic.Field(None, ge=-1.0, le=1.0)
    distance_pc: float | None = pydantic.Field(None, gt=0.0, allow_inf_nan=False)
    distance_range_pc: tuple[float, float] | None = None
    distance_steps: int = pydantic.Field(7, ge=2, le=50)
    facts: ObservationFacts = ObservationFacts()
    unscaled: bool = False
    include_own_system: bool = False
    centre: Centre = "source"
    ranking: Literal["fused", "network"] = "fused"
    max_image_side: int = pydantic.Field(DEFAULT_MAX_IMAGE_SIDE, ge=16)

    @pydantic.field_validator("distance_range_pc")
    @classmethod
    def _range(cls, value: tuple[float, float] | None) -> tuple[float, float] | None:
        if value is not None:
            low, high = value
            if not (math.isfinite(low) and math.isfinite(high) and 0 < low <= high):
                raise ValueError(f"give 0 < LO <= HI (pc), got {low} {high}")
        return value

    @pydantic.model_validator(mode="after")
    def _one_distance(self) -> MatchConfig:
        if self.distance_pc is not None and self.distance_range_pc is not None:
            raise ValueError("give --distance or --distance-range, not both")
        return self

    def distances(self) -> list[float | None]:
        """The distances to match each target at [pc] (None: the target's own)."""
        if self.distance_range_pc is None:
            return [self.distance_pc]
        low, high = self.distance_range_pc
        return [float(d) for d in distance_grid(low, high, self.distance_steps)]


@dataclass(frozen=True)
class TargetResult:
    """One target's report: its name, folder and summary (as in its summary.json)."""

    name: str
    folder: Path
    summary: Mapping[str, Any]


@dataclass(frozen=True)
class MatchResult:
    """The report folder written by :func:`match_observations` and each target's result."""

    out: Path
    targets: tuple[TargetResult, ...]
    batch_test: Mapping[str, Any] | None = None

    def describe(self) -> str:
        """Each target's estimates, then its warnings and notes, one line each; the report.

        A target matched without physical facts (``--unscaled``) starts with a line saying
        what was missing.
        """
        lines = []
        for target in self.targets:
            s = target.summary
            missing = s.get("compared", {}).get("missing") or []
            lines.append(
                f"{target.name}: {s['n_matches']} matches, best similarity "
                f"{s['best_similarity']:.3f}"
            )
            if missing:
                lines.append(f"  MATCHED WITHOUT {', '.join(missing).upper()} (--unscaled)")
            lines += estimate_lines(s)
            lines += [f"  WARNING: {w}" for w in s["warnings"]]
            lines += [f"  note: {n}" for n in s["notes"]]
            skipped = (s.get("validation") or {}).get("not_applicable")
            if skipped:
                lines.append(f"  note: no verdict from --evaluation: {skipped}")
            lines.append(f"  note: {calibration_phrase(s.get('calibration'))}")
        if self.batch_test is not None:
            lines.append(batch_phrase(self.batch_test))
        lines.append(f"report: {self.out / 'index.html'}")
        return "\n".join(lines)


@claims_output("match-report", inputs=("index", "observations", "model", "library", "evaluation"))
def match_observations(
    index: str | Path,
    observations: Sequence[str | Path],
    out: str | Path,
    *,
    config: MatchConfig | None = None,
    model: str | Path | None = None,
    library: str | Path | None = None,
    evaluation: str | Path | None = None,
    overwrite: bool = False,
) -> MatchResult:
    """Match each observation against an index and write a report folder ``out``.

    A library image as target is compared with *other* systems only (its own system's
    other projections and snapshots are near-duplicates), unless
    ``config.include_own_system``. An observation with a beam and a distance is compared with
    the library convolved to its beam and noised to its level; all such targets share one
    beam-matched library.

    Parameters
    ----------
    index
        Index folder written by ``protomatch index``.
    observations
        FITS files, ``.npy`` arrays or library files with a projection (``f.hdf5:3``).
    out
        Report folder (written atomically; must be empty or absent unless ``overwrite``).
    config
        What to match and how (:class:`MatchConfig`); defaults when None.
    model, library
        The model folder and library store, when moved since the index was built.
    evaluation
        Folder of ``protomatch evaluate --observations`` for this model and library: each
        parameter's verdict against the strongest baseline goes into the report
        (:mod:`protomatch.matching.validation`); without it the report says none was given.
    overwrite
        Replace a non-empty ``out``.

    Returns
    -------
    MatchResult
        The report folder and each target's summary.
    """
    config = config or MatchConfig()
    if not observations:
        raise ProtomatchError("give at least one observation")
    facts = config.facts.model_copy(update={"distance_pc": config.distance_pc})
    targets = [
        _in_distance_range(
            with_facts(read_observation(path, max_side=config.max_image_side), facts), config
        )
        for path in observations
    ]
    opened = EmbeddingIndex.open(index, model=model, library=library)
    validation, calibrations = None, {}
    if evaluation is not None:
        fingerprints = (opened.model.fingerprint, opened.store.fingerprint)
        validation = read_validation(evaluation, *fingerprints)
        calibrations = read_calibrations(evaluation, *fingerprints)
    missing = [_required(opened, target, config.unscaled) for target in targets]
    searches = _Searches(
        IndexSearch(opened), NoiseMatchedSearch(opened, fused=config.ranking == "fused")
    )
    out = Path(out)
    results, samples = [], []
    with atomic_directory(out, overwrite) as tmp:
        names = _unique_names([t.source for t in targets], [str(p) for p in observations])
        for name, observation, lacking in zip(names, targets, missing):
            folder = Path(name) if len(targets) > 1 else Path(".")
            target = _Target(observation, name, lacking, validation, calibrations)
            summary, sample = _match_one(opened, searches, target, tmp / folder, config)
            results.append(TargetResult(name, out / folder, summary))
            samples += [sample] if sample is not None else []
        batch = batch_test(samples) if len(targets) > 1 else None
        if batch is not None:
            entries = [(r.name, Path(r.name), r.summary) for r in results]
            write_report_index(tmp, entries, batch_phrase(batch))
        manifest = _report_manifest(opened, results, config)
        files = folder_records(tmp)
        write_json_atomic(tmp / "manifest.json", {**manifest, "batch_test": batch, "files": files})
    return MatchResult(out, tuple(results), batch)


def _in_distance_range(observation: Observation, config: MatchConfig) -> Observation:
    """The observation at the first distance of ``--distance-range`` (each run moves it)."""
    if config.distance_range_pc is None:
        return observation
    low, high = config.distance_range_pc
    return observation.at_distance(
        config.distances()[0], given_by=f"--distance-range {low:g}-{high:g} pc"
    )


def _moved(observation: Observation, distance_pc: float | None) -> Observation:
    """The observation at one distance of the range (None: as it is)."""
    if distance_pc is None:
        return observation
    return dataclasses.replace(observation, distance_pc=distance_pc)


def _at_best_distance(
    observation: Observation, found_at: np.ndarray, config: MatchConfig
) -> Observation:
    """The observation at the distance of the best match, for what the report shows."""
    if config.distance_range_pc is None:
        return observation
    low, high = config.distance_range_pc
    return dataclasses.replace(
        observation,
        distance_pc=float(found_at[0]),
        distance_from=f"best match's, of {config.distance_steps} in {low:g}-{high:g} pc",
    )


def _required(index: EmbeddingIndex, observation: Observation, unscaled: bool) -> tuple[str, ...]:
    """What the target lacks for a physical match (stops with one line unless ``unscaled``)."""
    missing = required_facts(
        observation,
        library_au_per_pixel=index.store.au_per_pixel,
        library_unit=index.store.intensity_unit,
        store=index.store.path,
        brightness_aware=index.model.brightness is not None,
        unscaled=unscaled,
    )
    if missing:
        log.warning(
            "%s: matching WITHOUT %s (--unscaled): the estimates may not mean what they "
            "would with it",
            observation.source.name,
            ", ".join(missing),
        )
    return missing


@dataclass(frozen=True)
class _Target:
    """One observation to match: what was read, its report name, what it lacks, the verdict."""

    observation: Observation
    name: str
    missing: tuple[str, ...]
    validation: Mapping[str, Any] | None = None
    calibrations: Mapping[str, IntervalCalibration] = field(default_factory=dict)


@dataclass(frozen=True)
class _Searches:
    """The two ways of ranking the library, made once per ``match`` call."""

    plain: IndexSearch
    noise_matched: NoiseMatchedSearch

    def for_target(self, prepared: PreparedObservation) -> LibrarySearch:
        return self.plain if prepared.beam is None else self.noise_matched


def _report_manifest(
    index: EmbeddingIndex, results: Sequence[TargetResult], config: MatchConfig
) -> dict[str, Any]:
    """What made this report: the index, model and library it searched, and the query."""
    return {
        **provenance(ReportManifest.KIND, REPORT_SCHEMA_VERSION),
        "index": {"path": str(index.path.resolve())},
        "model": dict(index.manifest["model"]),
        "library": dict(index.manifest["library"]),
        "k": None if config.threshold is not None else config.k,
        "threshold": config.threshold,
        "targets": [
            {
                "name": r.name,
                "folder": str(r.folder.name if r.folder.name else "."),
                "best_similarity": r.summary["best_similarity"],
            }
            for r in results
        ],
    }


def _unique_names(sources: Sequence[Path], given: Sequence[str]) -> list[str]:
    names: list[str] = []
    for source, text in zip(sources, given):
        base = safe_name(source.name).replace(":", "_")
        if ":" in Path(text).name:
            base = Path(text).name.replace(":", "_p")
        name, n = base, 2
        while name in names:
            name, n = f"{base}_{n}", n + 1
        names.append(name)
    return names


def _match_one(
    index: EmbeddingIndex,
    searches: _Searches,
    target: _Target,
    folder: Path,
    config: MatchConfig,
) -> tuple[dict[str, Any], EmbeddingSample | None]:
    """Match one target, write its report; its summary and its sample for the batch test."""
    trained, store = index.model, index.store
    observation, name = target.observation, target.name
    k, threshold = config.k, config.threshold
    excluded = _own_system_rows(observation, store.table, config.include_own_system, [])
    available = len(index) - len(excluded)
    wanted = len(index) if threshold is not None else min(k + len(excluded), len(index))
    runs = [
        _ranked(index, searches, _moved(observation, d), wanted, config) for d in config.distances()
    ]
    prepared, found, found_at = _pooled(runs, config)
    shown = _at_best_distance(observation, found_at, config)
    notes = list(prepared.notes)
    if observation.library_image is None:
        notes.append(_OBSERVATION_CAVEAT)
    _note_brightness(trained, prepared.mean_intensity, notes)
    _own_system_rows(observation, store.table, config.include_own_system, notes)
    if threshold is None and k > available:
        notes.append(f"k={k} is larger than the library ({available} images): using all")
    notes.extend(found.notes)
    sims, ids, kept_at = _kept(found, found_at, excluded, config, observation)
    names = trained.normaliser.names
    matches = matches_table(store.table, sims, ids, names)
    if config.distance_range_pc is not None:
        matches["distance_pc"] = kept_at
    truth = truth_values(observation, names, notes)
    # the analogues describe the library's closest image by the network's similarity
    closest = found.closest if math.isfinite(found.closest) else float(sims[0])
    warnings = detection_warnings(found.noise) + analogue_warnings(closest, found.analogues)
    for warning in warnings:
        log.warning("%s: %s", name, warning)
    units = dict(trained.manifest["parameters"]["units"])
    calibration, calibrated = calibration_for(target.calibrations, prepared, config.ranking)
    log_params = frozenset(n for n, f in zip(names, trained.normaliser.log10) if f)
    summary = summarise(
        matches,
        store.table[list(names)],
        names,
        units,
        truth,
        log10=log_params,
        calibration=calibration,
    )
    summary.update(
        target=name,
        k=k if threshold is None else None,
        threshold=threshold,
        warnings=warnings,
        analogues={key: float(v) for key, v in found.analogues.items()},
        notes=notes,
        compared=compared_block(shown, target.missing, prepared, found, store),
        provenance=provenance_block(index),
        validation=validation_for(target.validation, prepared),
        calibration=calibrated,
    )
    if config.distance_range_pc is not None:
        grid = np.array([d for d in config.distances() if d is not None])
        summary["distance"] = preferred_distances(kept_at, sims, grid)
    match_images, display = _shown_matches(store.images, ids, prepared, found)
    write_match_report(
        folder,
        MatchReportData(
            target_name=name,
            target_image=prepared.image,
            match_images=match_images,
            matches=matches,
            summary=summary,
            param_names=tuple(names),
            units=units,
            log_params=log_params,
            prior=store.table[list(names)],
            truth=truth,
            warnings=tuple(warnings),
            notes=tuple(notes),
            observed=observed_view(shown, prepared),
            **display,
        ),
    )
    return summary, found.sample


def _ranked(
    index: EmbeddingIndex,
    searches: _Searches,
    observation: Observation,
    wanted: int,
    config: MatchConfig,
) -> tuple[float | None, PreparedObservation, Ranking]:
    """The target prepared at one distance and its ranking there."""
    store = index.store
    prepared = prepare_observation(
        observation,
        index.model.preprocess,
        store.au_per_pixel,
        store.intensity_unit,
        centre=config.centre,
    )
    return observation.distance_pc, prepared, searches.for_target(prepared).best(prepared, wanted)


def _pooled(
    runs: list[tuple[float | None, PreparedObservation, Ranking]], config: MatchConfig
) -> tuple[PreparedObservation, Ranking, np.ndarray]:
    """One ranking over the distances tried, and the distance each ranked image was found at.

    The target is returned as prepared at the distance of the best match.
    """
    if len(runs) == 1:
        distance, prepared, found = runs[0]
        return prepared, found, np.full(len(found.ids), distance or math.nan)
    pooled, found_at = pool_rankings([(float(d or 0.0), found) for d, _, found in runs])
    best = float(found_at[0])
    prepared = next(p for d, p, _ in runs if d is not None and math.isclose(d, best))
    return prepared, pooled, found_at


def _kept(
    found: Ranking,
    found_at: np.ndarray,
    excluded: np.ndarray,
    config: MatchConfig,
    observation: Observation,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The matches kept: the target's own system left out, then the top k or the threshold.

    Returns their similarities, store ids and the distance [pc] each was found at.
    """
    keep = ~np.isin(found.ids, excluded) & (found.ids >= 0)
    sims, ids, at = found.similarities[keep], found.ids[keep], found_at[keep]
    if config.threshold is None:
        return sims[: config.k], ids[: config.k], at[: config.k]
    above = sims >= config.threshold
    if not above.any():
        raise InputError(
            observation.source,
            f"no library image reaches similarity {config.threshold} (best {sims.max():.3f}); "
            "lower --threshold",
        )
    return sims[above], ids[above], at[above]


def _shown_matches(
    images: np.ndarray, ids: np.ndarray, prepared: PreparedObservation, found: Ranking
) -> tuple[np.ndarray, dict[str, Any]]:
    """The best matches' images for the report, as they were compared, and display settings.

    With a beam, the matches are shown through it and the target above its noise.
    """
    shown = ids[:_SHOWN_MATCHES]
    order = np.argsort(shown)
    match_images = np.empty((len(shown), *images.shape[1:]), dtype=np.float32)
    match_images[order] = images[shown[order]]
    if prepared.beam is None:
        return match_images, {}
    with torch.no_grad():
        match_images = convolve_with_beam(torch.from_numpy(match_images), *prepared.beam).numpy()
    floor = min(max(STRETCH_FLOOR, _DISPLAY_NOISE_SIGMAS * found.noise), 0.5)
    return match_images, {
        "display_floor": floor,
        "matches_seen_through": "the observation's beam",
    }


def _note_brightness(trained: TrainedModel, mean_intensity: float | None, notes: list[str]) -> None:
    """Say so when the target's brightness could not be given to the network as it is."""
    brightness = trained.compared_brightness(mean_intensity)
    if brightness is not None and brightness != mean_intensity:
        notes.append(
            "the observation's brightness could not be put in the library's intensity unit "
            "(BUNIT and beam needed): it was compared at the library's typical brightness, so "
            "parameters that set the brightness (envelope mass, luminosity) are less certain"
        )


def _own_system_rows(
    observation: Observation, table: pd.DataFrame, include: bool, notes: list[str]
) -> np.ndarray:
    """Store ids of the target's own system when the target is a library image."""
    if observation.library_image is None or include:
        return np.zeros(0, dtype=np.int64)
    system = observation.library_image.system
    rows = table["image_id"].to_numpy()[table["system"].astype(str).to_numpy() == str(system)]
    if len(rows):
        notes.append(
            f"the target is an image of library system {system}: its {len(rows)} images are "
            "left out of the matches (use --include-own-system to keep them)"
        )
    return rows
