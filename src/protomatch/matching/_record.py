"""What a target's report records besides its matches: what was compared, provenance, truth.

Used only by :mod:`protomatch.matching.match`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from protomatch.errors import InputError
from protomatch.library.readers import read_library_file
from protomatch.library.store import LibraryStore
from protomatch.matching.index import EmbeddingIndex
from protomatch.matching.observation import Observation, PreparedObservation
from protomatch.matching.search import Ranking
from protomatch.report.data import ObservedView
from protomatch.simulators.truth import truth_of

log = logging.getLogger(__name__)


def compared_block(
    observation: Observation,
    missing: tuple[str, ...],
    prepared: PreparedObservation,
    found: Ranking,
    store: LibraryStore,
) -> dict[str, Any]:
    """What was compared with the library, for the report's "what was compared" block."""
    pixel_au = observation.physical_pixel_au
    beam = observation.beam_arcsec
    distance = observation.distance_pc
    peak = prepared.peak
    noise_rms = found.noise * peak if (found.noise and peak) else None
    side = store.images.shape[-1]
    return {
        "distance_pc": distance,
        "distance_from": observation.distance_from,
        "pixel_scale_arcsec": observation.pixel_scale_arcsec,
        "observation_au_per_pixel": pixel_au,
        "library_au_per_pixel": store.au_per_pixel,
        "field_au": None if store.au_per_pixel is None else store.au_per_pixel * side,
        "beam_arcsec": None if beam is None else list(beam),
        "beam_au": None
        if beam is None or not distance
        else [beam[0] * distance, beam[1] * distance],
        "noise_rms": noise_rms,
        "noise_unit": observation.intensity_unit,
        "peak_snr": None if not found.noise else 1.0 / found.noise,
        "intensity_unit": observation.intensity_unit,
        "library_intensity_unit": store.intensity_unit,
        "unscaled": bool(missing),
        "missing": list(missing),
    }


def provenance_block(index: EmbeddingIndex) -> dict[str, Any]:
    """Where the model, index and library store of this match came from."""
    manifest = index.manifest
    return {
        "index": {
            "path": str(index.path.resolve()),
            "created": manifest.get("created_utc"),
            "kind": manifest.get("config", {}).get("kind"),
        },
        "model": {
            "path": str(index.manifest.get("model", {}).get("path")),
            "fingerprint": index.model.fingerprint,
            "created": index.model.manifest.get("created_utc"),
        },
        "library": {
            "path": str(index.store.path.resolve()),
            "fingerprint": index.store.fingerprint,
            "created": index.store.manifest.get("created_utc"),
        },
    }


def observed_view(observation: Observation, prepared: PreparedObservation) -> ObservedView:
    """The observation on its own grid, for the report's figure of what was compared."""
    return ObservedView(
        image=np.asarray(observation.image, dtype=np.float32),
        wcs_header=observation.wcs_header,
        au_per_pixel=observation.physical_pixel_au,
        beam_arcsec=observation.beam_arcsec,
        pixel_scale_arcsec=observation.pixel_scale_arcsec,
        field_box=prepared.field_box,
    )


def matches_table(
    table: pd.DataFrame, sims: np.ndarray, ids: np.ndarray, names: Sequence[str]
) -> pd.DataFrame:
    """The kept matches, best first: rank, similarity, where each image came from, parameters."""
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


def truth_values(
    observation: Observation, names: Sequence[str], notes: list[str]
) -> dict[str, float] | None:
    """True parameters of a simulated target: a library file's, or a mock observation's."""
    if observation.library_image is not None:
        record = read_library_file(observation.source, names)
        return {name: float(record.params[name]) for name in names}
    try:
        return truth_of(observation.source, names)
    except InputError as exc:
        log.warning("no true values shown for %s: %s", observation.source.name, exc)
        notes.append(f"no true values shown: {exc}")
        return None


def analogue_warnings(best: float, stats: Mapping[str, float]) -> list[str]:
    """The "no good simulated analogue" warning when the best match is below the 1st percentile."""
    floor = stats.get("p1", math.nan)
    if math.isnan(floor) or best >= floor:
        return []
    return [
        f"no good simulated analogue: the best similarity {best:.3f} is below what 99% of "
        f"library images reach against their nearest other system, compared the same way "
        f"(1st percentile {floor:.3f}, median {stats['median']:.3f}); treat these parameters "
        "with caution"
    ]


#: Below this peak signal-to-noise ratio an image holds no significant source: the maximum
#: of pure beam-correlated noise over a few thousand beams is about 4 rms.
MIN_PEAK_SNR = 5.0


def detection_warnings(noise: float) -> list[str]:
    """The "no significant source" warning when the peak is within noise of nothing.

    Parameters
    ----------
    noise
        The image's noise rms relative to its peak (0: not measured, no warning).
    """
    if not noise or 1.0 / noise >= MIN_PEAK_SNR:
        return []
    return [
        f"no significant source: the peak is only {1.0 / noise:.1f} times the noise rms (below "
        f"{MIN_PEAK_SNR:g}); the matches describe noise, not a protostar"
    ]
