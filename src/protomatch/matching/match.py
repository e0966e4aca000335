"""Best matches of observations in the library, and what their parameters say.

For each observation: read it, bring it to the library's pixel grid (physically when the
pixel scale and distance are known), embed it with the model, search the index, and
summarise the best matches' parameters as similarity-weighted quantiles beside the
library's own distribution (the prior). :func:`score_pairwise` is the research pipeline's
way (every target-library pair through the network), kept as a reference.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch

from protomatch._artefact import atomic_directory, provenance, write_json_atomic
from protomatch.errors import ProtomatchError
from protomatch.library.preprocess import intensity_transform
from protomatch.library.readers import (
    Observation,
    read_library_file,
    read_observation,
    sniff_format,
)
from protomatch.matching.conditioned import Beam, BeamMatchedLibrary, beam_in_library_pixels
from protomatch.matching.index import EmbeddingIndex
from protomatch.matching.observation import PreparedObservation, prepare_observation
from protomatch.matching.summary import DEFAULT_MATCHES, summarise
from protomatch.neural_nets.trained import TrainedModel
from protomatch.report.figures import STRETCH_FLOOR
from protomatch.report.html import MatchReportData, write_match_report, write_report_index
from protomatch.simulators.observations import TRUTH_FILE as MOCK_TRUTH_FILE
from protomatch.training.augment import convolve_with_beam

log = logging.getLogger(__name__)

REPORT_SCHEMA_VERSION = 1
_SHOWN_MATCHES = 11
_DISPLAY_NOISE_SIGMAS = 2.0
_OBSERVATION_CAVEAT = (
    "matching observed images is validated on mock observations of the built-in simulator "
    "only (protomatch observe, evaluate --observations): there the matches beat the library "
    "prior on envelope mass, stellar mass, temperature, luminosity and disk size, but not on "
    "age or accretion rate, which beam-smoothed, noisy images hardly constrain"
)


@dataclass(frozen=True)
class TargetResult:
    name: str
    folder: Path
    summary: Mapping[str, Any]


@dataclass(frozen=True)
class MatchResult:
    out: Path
    targets: tuple[TargetResult, ...]

    def describe(self) -> str:
        lines = []
        for target in self.targets:
            s = target.summary
            lines.append(
                f"{target.name}: {s['n_matches']} matches, best similarity "
                f"{s['best_similarity']:.3f}"
            )
            for name, stats in s["parameters"].items():
                m = stats["matches"]
                truth = stats["truth"]
                known = f"  (true {truth:.3g})" if truth is not None else ""
                lines.append(
                    f"  {name:>15}: {m['median']:.3g} [{m['q16']:.3g}, {m['q84']:.3g}] "
                    f"{stats['unit']}{known}"
                )
            lines += [f"  WARNING: {w}" for w in s["warnings"]]
        lines.append(f"report: {self.out / 'index.html'}")
        return "\n".join(lines)


def match_observations(
    index: str | Path,
    observations: Sequence[str | Path],
    out: str | Path,
    *,
    k: int = DEFAULT_MATCHES,
    threshold: float | None = None,
    distance_pc: float | None = None,
    model: str | Path | None = None,
    library: str | Path | None = None,
    include_own_system: bool = False,
    centre: Literal["source", "image"] = "source",
    overwrite: bool = False,
) -> MatchResult:
    """Match each observation against an index and write a report folder ``out``.

    A library image as target is compared with *other* systems only (its own system's
    other projections and snapshots are near-duplicates), unless ``include_own_system``.
    The library's field of view is cut around the source (its brightest point, when more
    than half a beam from the image centre) or, with ``centre="image"``, the image centre.
    """
    if not observations:
        raise ProtomatchError("give at least one observation")
    if k < 1:
        raise ProtomatchError(f"k must be >= 1, got {k}")
    if threshold is not None and not -1 <= threshold <= 1:
        raise ProtomatchError(f"threshold is a cosine similarity in [-1, 1], got {threshold}")
    if distance_pc is not None and distance_pc <= 0:
        raise ProtomatchError(f"distance must be positive (pc), got {distance_pc}")
    if centre not in ("source", "image"):
        raise ProtomatchError(f"centre must be 'source' or 'image', got {centre!r}")
    targets = [read_observation(path) for path in observations]
    opened = EmbeddingIndex.open(index, model=model, library=library)
    out = Path(out)
    results = []
    with atomic_directory(out, overwrite) as tmp:
        names = _unique_names([t.source for t in targets], [str(p) for p in observations])
        for name, observation in zip(names, targets):
            folder = Path(name) if len(targets) > 1 else Path(".")
            summary = _match_one(
                opened,
                observation,
                name,
                tmp / folder,
                _Query(k, threshold, distance_pc, include_own_system, centre),
            )
            results.append(TargetResult(name, out / folder, summary))
        if len(targets) > 1:
            write_report_index(tmp, [(r.name, Path(r.name), r.summary) for r in results])
        write_json_atomic(tmp / "manifest.json", _report_manifest(opened, results, k, threshold))
    return MatchResult(out, tuple(results))


def _report_manifest(
    index: EmbeddingIndex, results: Sequence[TargetResult], k: int, threshold: float | None
) -> dict[str, Any]:
    """What made this report: the index, model and library it searched, and the query."""
    return {
        **provenance("match-report", REPORT_SCHEMA_VERSION),
        "index": {"path": str(index.path.resolve())},
        "model": dict(index.manifest["model"]),
        "library": dict(index.manifest["library"]),
        "k": None if threshold is not None else k,
        "threshold": threshold,
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
        base = source.name.replace(":", "_")
        if ":" in Path(text).name:
            base = Path(text).name.replace(":", "_p")
        name, n = base, 2
        while name in names:
            name, n = f"{base}_{n}", n + 1
        names.append(name)
    return names


@dataclass(frozen=True)
class _Query:
    k: int
    threshold: float | None
    distance_pc: float | None
    include_own_system: bool
    centre: Literal["source", "image"]


def _match_one(
    index: EmbeddingIndex, observation: Observation, name: str, folder: Path, query: _Query
) -> dict[str, Any]:
    trained, store = index.model, index.store
    k, threshold = query.k, query.threshold
    prepared = prepare_observation(
        observation,
        trained.preprocess,
        store.au_per_pixel,
        query.distance_pc,
        store.intensity_unit,
        centre=query.centre,
    )
    image, notes = prepared.image, list(prepared.notes)
    if observation.header.get("system") is None:
        notes.append(_OBSERVATION_CAVEAT)
    brightness = _target_brightness(trained, prepared.mean_intensity, notes)
    excluded = _own_system_rows(observation, store.table, query.include_own_system, notes)
    available = len(index) - len(excluded)
    if threshold is None and k > available:
        notes.append(f"k={k} is larger than the library ({available} images): using all")
    wanted = len(index) if threshold is not None else min(k + len(excluded), len(index))
    beam = beam_in_library_pixels(observation, query.distance_pc, store.au_per_pixel)
    found = _search(index, beam, prepared, brightness, wanted, notes)
    sims, ids = found.similarities, found.ids
    keep = ~np.isin(ids, excluded)
    sims, ids = sims[keep], ids[keep]
    if threshold is None:
        sims, ids = sims[:k], ids[:k]
    if threshold is not None:
        keep = sims >= threshold
        if not keep.any():
            raise ProtomatchError(
                f"{observation.source}: no library image reaches similarity {threshold} "
                f"(best {sims.max():.3f}); lower --threshold"
            )
        sims, ids = sims[keep], ids[keep]
    matches = _matches_table(store.table, sims, ids, trained.normaliser.names)
    truth = _truth(observation, trained.normaliser.names)
    warnings = _analogue_warnings(float(sims[0]), found.analogues)
    for warning in warnings:
        log.warning("%s: %s", name, warning)
    names = trained.normaliser.names
    units = dict(trained.manifest["parameters"]["units"])
    summary = summarise(matches, store.table[list(names)], names, units, truth)
    summary.update(
        target=name,
        k=k if threshold is None else None,
        threshold=threshold,
        warnings=warnings,
        notes=notes,
    )
    shown = ids[:_SHOWN_MATCHES]
    order = np.argsort(shown)
    match_images = np.empty((len(shown), *store.images.shape[1:]), dtype=np.float32)
    match_images[order] = store.images[shown[order]]
    display = {}
    if beam is not None:  # show the matches as they were compared, the target above its noise
        with torch.no_grad():
            match_images = convolve_with_beam(torch.from_numpy(match_images), *beam).numpy()
        floor = min(max(STRETCH_FLOOR, _DISPLAY_NOISE_SIGMAS * found.noise), 0.5)
        display = {"display_floor": floor, "matches_seen_through": "the observation's beam"}
    log_params = frozenset(n for n, f in zip(names, trained.normaliser.log10) if f)
    write_match_report(
        folder,
        MatchReportData(
            target_name=name,
            target_image=image,
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
            **display,
        ),
    )
    return summary


@dataclass(frozen=True, eq=False)
class _Found:
    """Best similarities and image ids of one target, best first; what a good analogue's
    similarity is in that comparison; the noise level it was compared at (0: none)."""

    similarities: np.ndarray
    ids: np.ndarray
    analogues: Mapping[str, float]
    noise: float


def _search(
    index: EmbeddingIndex,
    beam: Beam | None,
    prepared: PreparedObservation,
    brightness: np.ndarray | None,
    wanted: int,
    notes: list[str],
) -> _Found:
    """The top ``wanted`` matches of one prepared target.

    An observation with a beam (in library pixels; it needs a distance) is compared with the
    library convolved to its beam and given its noise level, embedded anew, since noiseless
    library images are not like beam-smoothed, noisy data; otherwise the prebuilt index is
    searched.
    """
    if beam is None:
        sims, ids = index.search(index.model.embed(prepared.image[None], brightness), wanted)
        return _Found(sims[0], ids[0], index.neighbour_stats, 0.0)
    library = BeamMatchedLibrary(index.model, index.store, cache_size=1)
    scores, noise = library.noise_matched_similarities(prepared, beam)
    order = np.argsort(-scores, kind="stable")[:wanted]
    notes.append(
        f"compared with the library convolved to the observation's beam ({beam[0]:.2g} x "
        f"{beam[1]:.2g} library pixels, PA {beam[2]:.0f} deg) and at its noise level "
        f"({noise:.2g} of the peak)"
    )
    analogues = library.analogue_similarity(beam, noise)
    return _Found(scores[order], index.ids[order], analogues, noise)


def _target_brightness(
    trained: TrainedModel, mean_intensity: float | None, notes: list[str]
) -> np.ndarray | None:
    """The target's brightness for the network (the library's typical one if unknown)."""
    brightness = trained.compared_brightness(mean_intensity)
    if brightness is None:
        return None
    if brightness != mean_intensity:
        notes.append(
            "the observation's brightness could not be put in the library's intensity unit "
            "(BUNIT and beam needed): it was compared at the library's typical brightness, so "
            "parameters that set the brightness (envelope mass, luminosity) are less certain"
        )
    return np.array([brightness])


def _matches_table(
    table: pd.DataFrame, sims: np.ndarray, ids: np.ndarray, names: Sequence[str]
) -> pd.DataFrame:
    valid = ids >= 0
    sims, ids = sims[valid], ids[valid]
    rows = table.set_index("image_id").loc[ids]
    frame = pd.DataFrame(
        {
            "rank": np.arange(1, len(ids) + 1),
            "similarity": sims.astype(float),
            "image_id": ids,
            "system": rows["system"].to_numpy(),
            "snapshot": rows["snapshot"].to_numpy(),
            "projection": rows["projection"].to_numpy(),
            "source": rows["source"].to_numpy(),
        }
    )
    for name in names:
        frame[name] = rows[name].to_numpy()
    return frame


def _own_system_rows(
    observation: Observation, table: pd.DataFrame, include: bool, notes: list[str]
) -> np.ndarray:
    """Store ids of the target's own system when the target is a library image."""
    system = observation.header.get("system")
    if system is None or include:
        return np.zeros(0, dtype=np.int64)
    rows = table["image_id"].to_numpy()[table["system"].astype(str).to_numpy() == str(system)]
    if len(rows):
        notes.append(
            f"the target is an image of library system {system}: its {len(rows)} images are "
            "left out of the matches (use --include-own-system to keep them)"
        )
    return rows


def _truth(observation: Observation, names: Sequence[str]) -> dict[str, float] | None:
    """True parameters of a simulated target: a library file's, or a mock observation's."""
    if sniff_format(observation.source) == "hdf5":
        record = read_library_file(observation.source, names)
        return {name: float(record.params[name]) for name in names}
    return _mock_truth(Path(observation.source), names)


def _mock_truth(source: Path, names: Sequence[str]) -> dict[str, float] | None:
    """The row of ``truth.csv`` beside a file written by ``protomatch observe``, if any."""
    table_path = source.parent / MOCK_TRUTH_FILE
    if not table_path.is_file():
        return None
    try:
        table = pd.read_csv(table_path)
    except (ValueError, OSError, UnicodeDecodeError):
        log.warning("%s: unreadable, no true values shown for %s", table_path, source.name)
        return None
    if "file" not in table.columns or any(name not in table.columns for name in names):
        return None
    rows = table[table["file"].astype(str) == source.name]
    if len(rows) != 1:
        return None
    values = pd.to_numeric(rows.iloc[0][list(names)], errors="coerce")
    if not np.isfinite(values.to_numpy(dtype=np.float64)).all():
        return None
    return {name: float(values[name]) for name in names}


def _analogue_warnings(best: float, stats: Mapping[str, float]) -> list[str]:
    floor = stats.get("p1", math.nan)
    if math.isnan(floor) or best >= floor:
        return []
    return [
        f"no good simulated analogue: the best similarity {best:.3f} is below what 99% of "
        f"library images reach against their nearest other system, compared the same way "
        f"(1st percentile {floor:.3f}, median {stats['median']:.3f}); treat these parameters "
        "with caution"
    ]


@torch.no_grad()
def score_pairwise(
    trained: TrainedModel,
    target: np.ndarray,
    library_images: np.ndarray,
    target_intensity: float | None = None,
    library_intensity: np.ndarray | None = None,
    batch_size: int = 256,
) -> np.ndarray:
    """The research pipeline's matching: every (target, library image) pair through the network.

    Returns the predicted similarity (N,) of the prepared ``target`` (H, W) to each of
    ``library_images`` (N, H, W); brightness-aware models also need the target's and the
    library images' mean intensities. Same ranking as the index, at N forwards' cost.
    """
    network = trained.network.eval()
    device = trained.device
    n = len(library_images)
    target_input = intensity_transform(
        torch.from_numpy(target[None]).to(device), trained.preprocess
    )
    target_scalars = trained.brightness_features(
        None if target_intensity is None else np.array([target_intensity]), 1
    )
    library_scalars = trained.brightness_features(library_intensity, n)
    scores = np.empty(n, dtype=np.float32)
    for start in range(0, n, batch_size):
        batch = np.array(library_images[start : start + batch_size], dtype=np.float32)
        inputs = intensity_transform(torch.from_numpy(batch).to(device), trained.preprocess)
        targets = target_input.unsqueeze(1).expand(len(batch), -1, -1, -1)
        scalars: tuple[torch.Tensor | None, torch.Tensor | None] = (None, None)
        if target_scalars is not None and library_scalars is not None:
            scalars = (
                target_scalars.to(device).expand(len(batch), -1),
                library_scalars[start : start + len(batch)].to(device),
            )
        predicted = network(targets, inputs.unsqueeze(1), *scalars)
        scores[start : start + len(batch)] = predicted.float().cpu().numpy()
    return scores
