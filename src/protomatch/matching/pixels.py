"""The strongest simple baseline for an observation: pixel neighbours done as well as pixels allow.

Three things make a pixel nearest-neighbour search hard to beat on beam-smoothed, noisy
images, and this baseline does all three:

* **beam-matched**: the library is convolved with the observation's beam (in library pixels)
  and blanked outside the observation's footprint, so both sides are seen alike;
* **noise-aware stretch**: ``asinh(x / s) / asinh(1 / s)`` of the peak-normalised image, with
  the softening ``s`` at twice the observation's noise rms (at least 1 % of the peak): linear
  where the noise lies, logarithmic above, so faint envelopes count without the noise
  dominating;
* **orientation-free**: the best similarity over the 8 rotations and flips of the square,
  the library convolved with the beam turned the same way.

The similarity is the Pearson correlation of the stretched pixels.

It is also half of what ``protomatch match`` ranks an observation by: :func:`fused_scores`
adds the network's similarity and this one, each standardised over the library. Measured on
mock observations (README, "Beating the strongest simple baseline"), the two see different
things: the pixels find disk sizes that the network misses, the network the envelope,
luminosity and temperature that pixels miss, and the sum beats either alone.
"""

from __future__ import annotations

import numpy as np
import torch

from protomatch.matching.conditioned import BeamMatchedLibrary, beam_key, footprint_key
from protomatch.matching.summary import unit_rows
from protomatch.optics.beam import Beam
from protomatch.optics.orientation import DIHEDRAL, dihedral_beam, dihedral_image

__all__ = [
    "NETWORK_WEIGHT",
    "SOFTENING_FLOOR",
    "SOFTENING_NOISE_SIGMAS",
    "asinh_rows",
    "fused_scores",
    "strong_pixel_similarities",
]

#: The stretch turns from linear to logarithmic at this many noise rms ...
SOFTENING_NOISE_SIGMAS = 2.0
#: ... and never below this fraction of the peak.
SOFTENING_FLOOR = 0.01
#: The network's share of the fused score (the pixels' is the rest). Chosen on the built-in
#: library's mock observations among 0.3, 0.4, 0.5 and 0.7 (README), confirmed on the
#: independent library.
NETWORK_WEIGHT = 0.4


def fused_scores(
    network: np.ndarray, pixels: np.ndarray, network_weight: float = NETWORK_WEIGHT
) -> np.ndarray:
    """(N,) weighted sum of two similarities to the library, each standardised over it.

    Parameters
    ----------
    network, pixels
        (N,) similarities of one target to every library image (the network's cosine and
        :func:`strong_pixel_similarities`), in store row order.
    network_weight
        Share of the network's standardised similarity, in [0, 1].

    Returns
    -------
    numpy.ndarray
        (N,) float32 scores (larger: more alike); only their order is meaningful.
    """
    if not 0.0 <= network_weight <= 1.0:
        raise ValueError(f"network_weight {network_weight} must lie in [0, 1]")
    if np.shape(network) != np.shape(pixels):
        raise ValueError(f"similarities of shapes {np.shape(network)} and {np.shape(pixels)}")
    return (
        network_weight * _standardised(network) + (1.0 - network_weight) * _standardised(pixels)
    ).astype(np.float32)


def _standardised(scores: np.ndarray) -> np.ndarray:
    """Zero mean, unit spread over the finite entries; non-finite ones rank last."""
    values = np.asarray(scores, dtype=np.float64)
    finite = np.isfinite(values)
    if not finite.any():
        return np.full(values.shape, -np.inf)
    mean, spread = values[finite].mean(), values[finite].std()
    standard = (values - mean) / (spread if spread > 0 else 1.0)
    return np.where(finite, standard, -np.inf)


def asinh_rows(images: np.ndarray, softening: float) -> np.ndarray:
    """(B, H, W) linear images -> (B, H*W) centred, unit-norm rows of their asinh stretch.

    Parameters
    ----------
    images
        Linear intensities; each image is divided by its own peak first.
    softening
        Where the stretch turns logarithmic, relative to the peak (> 0).

    Returns
    -------
    numpy.ndarray
        float32 rows whose inner product is the Pearson correlation of the stretched images
        (rows of constant images are 0).
    """
    flat = torch.from_numpy(np.require(images, np.float32)).reshape(len(images), -1)
    flat = torch.nan_to_num(flat, nan=0.0)
    peaks = flat.amax(dim=1, keepdim=True).clamp_min(1e-30)
    stretched = torch.asinh(flat / peaks / softening) / float(np.arcsinh(1.0 / softening))
    return unit_rows((stretched - stretched.mean(dim=1, keepdim=True)).numpy())


def strong_pixel_similarities(
    library: BeamMatchedLibrary,
    image: np.ndarray,
    beam: Beam | None,
    noise: float,
    footprint: np.ndarray | None = None,
    block: int = 512,
) -> np.ndarray:
    """(N,) best correlation over the 8 orientations of a prepared observation to the library.

    Parameters
    ----------
    library
        The library store behind a model (only its images and beam convolution are used).
    image
        (H, W) prepared observation on the library's grid (peak 1, 0 outside its footprint).
    beam
        Its beam in library pixels (FWHM major, FWHM minor, PA [deg]); None: the library as
        stored.
    noise
        Its noise rms relative to the peak (:func:`protomatch.matching.conditioned.noise_level`).
    footprint
        (H, W) bool pixels it covers; None: all.
    block
        Library images convolved at once.

    Returns
    -------
    numpy.ndarray
        (N,) float32 in [-1, 1], in store row order.
    """
    softening = max(SOFTENING_NOISE_SIGMAS * noise, SOFTENING_FLOOR)
    best = np.full(len(library), -np.inf, dtype=np.float32)
    for turned_beam, mask, queries in _orientations(image, beam, footprint, softening):
        for start in range(0, len(library), block):
            stop = min(start + block, len(library))
            images = library.convolved_images(turned_beam, start, stop)
            if mask is not None:
                images = images * mask
            scores = (asinh_rows(images, softening) @ queries).max(axis=1)
            np.maximum(best[start:stop], scores, out=best[start:stop])
    return best


def _orientations(
    image: np.ndarray, beam: Beam | None, footprint: np.ndarray | None, softening: float
) -> list[tuple[Beam | None, np.ndarray | None, np.ndarray]]:
    """(turned beam, turned footprint, (H*W, k) stretched queries) per distinct beam and mask.

    The 8 turns of an elliptical beam give 4 distinct beams (a half turn maps it onto
    itself), of a circular one a single beam: the library is convolved once per group.
    """
    groups: dict[tuple[object, bytes | None], tuple[Beam | None, np.ndarray | None, list]] = {}
    for quarter_turns, flip in DIHEDRAL:
        query = asinh_rows(dihedral_image(image, quarter_turns, flip)[None], softening)[0]
        turned = None if beam is None else beam_key(dihedral_beam(beam, quarter_turns, flip))
        mask = None if footprint is None else dihedral_image(footprint, quarter_turns, flip)
        key = (turned, footprint_key(mask))
        groups.setdefault(key, (turned, mask, []))[2].append(query)
    return [(b, m, np.stack(queries, axis=1)) for b, m, queries in groups.values()]
