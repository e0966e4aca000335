"""One way to ask for a target's best matches, whichever way the library is compared.

Two comparisons answer the same question through one interface (:class:`LibrarySearch`):

- :class:`IndexSearch`: the prebuilt FAISS index of the library as stored: one forward pass
  and an inner-product search per target (targets without a beam: library images, images
  without a known beam or distance);
- :class:`NoiseMatchedSearch`: the library convolved to the target's beam and given
  beam-correlated noise at its level, embedded anew (:class:`BeamMatchedLibrary`), ranked by
  the network's similarity fused with the pixels' (:mod:`protomatch.matching.pixels`); one
  such library serves every target of a ``match`` call, and targets observed alike share its
  cached passes.

Both return a :class:`Ranking`, with the similarity that good analogues reach in the same
comparison, against which the best match is judged.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from protomatch.errors import ProtomatchError
from protomatch.matching.conditioned import BeamMatchedLibrary
from protomatch.matching.index import EmbeddingIndex
from protomatch.matching.observation import PreparedObservation
from protomatch.matching.pixels import NETWORK_WEIGHT, fused_scores, strong_pixel_similarities

__all__ = ["EmbeddingSample", "IndexSearch", "LibrarySearch", "NoiseMatchedSearch", "Ranking"]


@dataclass(frozen=True, eq=False)
class Ranking:
    """A target's best library images, best first, and how they were compared.

    Attributes
    ----------
    similarities
        (n,) float32 cosine similarities of the network, best match first (descending unless
        the ranking was fused with the pixels' similarity).
    ids
        (n,) int64 store image ids (-1 marks an empty slot).
    analogues
        Quantiles (``p1``, ``p5``, ``median``) of the similarity that library images reach
        against their nearest other system in the same comparison.
    noise
        Noise rms relative to the peak the comparison was made at (0: none).
    notes
        What the comparison did, for the report.
    sample
        The target's embedding and library embeddings compared the same way, for the batch
        misspecification test (:mod:`~protomatch.matching.misspecification`); None when the
        comparison has no conditions to match (the plain index).
    closest
        The highest network similarity over the whole library in this comparison, when the
        ranking is not by it (fused with the pixels); NaN when ``similarities[0]`` is it.
        ``analogues`` describe this number.
    """

    similarities: np.ndarray
    ids: np.ndarray
    analogues: Mapping[str, float]
    noise: float = 0.0
    notes: tuple[str, ...] = ()
    sample: EmbeddingSample | None = None
    closest: float = math.nan


@dataclass(frozen=True, eq=False)
class EmbeddingSample:
    """A target's embedding beside library embeddings seen through its beam and noise.

    Attributes
    ----------
    query
        (D,) the target's unit embedding.
    reference
        (R, D) unit embeddings of R library images drawn at random (seeded by the target's
        pixels), convolved to its beam and noised to its level.
    """

    query: np.ndarray
    reference: np.ndarray


class LibrarySearch(Protocol):
    """Anything that ranks the library for a prepared target."""

    def best(self, prepared: PreparedObservation, wanted: int) -> Ranking:
        """The ``wanted`` best matches of ``prepared`` (an observation on the library's grid).

        Parameters
        ----------
        prepared
            The target on the library's grid (peak-1 image, intensity scale, beam in
            library pixels).
        wanted
            Number of matches.

        Returns
        -------
        Ranking
            The best library images, best first, with the analogue similarities to judge
            them against.
        """
        ...


class IndexSearch:
    """Search the library as stored through its FAISS index.

    Parameters
    ----------
    index
        An opened index with its model and library store.
    """

    def __init__(self, index: EmbeddingIndex) -> None:
        self._index = index

    def best(self, prepared: PreparedObservation, wanted: int) -> Ranking:
        """The ``wanted`` nearest library embeddings to the target's.

        Parameters
        ----------
        prepared
            The target on the library's grid; its brightness is given to brightness-aware
            models (the library's typical one when its unit is unknown).
        wanted
            Number of matches.

        Returns
        -------
        Ranking
            Judged against the index's own neighbour statistics.
        """
        model = self._index.model
        brightness = model.compared_brightness(prepared.mean_intensity)
        intensity = None if brightness is None else np.array([brightness])
        similarities, ids = self._index.search(model.embed(prepared.image[None], intensity), wanted)
        return Ranking(similarities[0], ids[0], self._index.neighbour_stats)


class NoiseMatchedSearch:
    """Compare a target with the library seen through its beam and at its noise level.

    Parameters
    ----------
    index
        An opened index; its model and store are used, its vectors are not (they are the
        noiseless library's).
    library
        The beam-matched library to use; by default one is made on first use and kept, so
        that every target searched through this object shares its cached passes.
    fused
        Rank by :func:`~protomatch.matching.pixels.fused_scores` of the network's and the
        pixels' similarity (the default, measured to beat either alone), not the network's
        alone.
    """

    def __init__(
        self,
        index: EmbeddingIndex,
        library: BeamMatchedLibrary | None = None,
        fused: bool = True,
    ) -> None:
        self._index = index
        self._library = library
        self._fused = fused

    @property
    def library(self) -> BeamMatchedLibrary:
        """The beam-matched library shared by every target searched through this object."""
        if self._library is None:
            self._library = BeamMatchedLibrary(self._index.model, self._index.store)
        return self._library

    def best(self, prepared: PreparedObservation, wanted: int) -> Ranking:
        """The ``wanted`` best matches in the beam- and noise-matched comparison.

        Parameters
        ----------
        prepared
            The target on the library's grid, with its beam in library pixels.
        wanted
            Number of matches.

        Returns
        -------
        Ranking
            Judged against library images compared the same way (a second noise
            realisation as query), with the noise level used.
        """
        beam = prepared.beam
        if beam is None:
            raise ProtomatchError("a noise-matched comparison needs the target's beam")
        query, noise = self.library.noise_matched_query(prepared)
        embeddings = self.library.embeddings(beam, noise, prepared.footprint)
        scores = embeddings @ query
        notes = [
            f"compared with the library convolved to the observation's beam ({beam[0]:.2g} x "
            f"{beam[1]:.2g} library pixels, PA {beam[2]:.0f} deg) and at its noise level "
            f"({noise:.2g} of the peak)"
        ]
        ranked_by = scores
        if self._fused:
            pixels = strong_pixel_similarities(
                self.library, prepared.image, beam, noise, prepared.footprint
            )
            ranked_by = fused_scores(scores, pixels)
            notes.append(
                f"ranked by the network's similarity and the pixels' (noise-aware asinh "
                f"stretch, best of 8 orientations), each standardised over the library, "
                f"weighted {NETWORK_WEIGHT:g} : {1 - NETWORK_WEIGHT:g}; the similarity shown "
                "is the network's"
            )
        order = np.argsort(-ranked_by, kind="stable")[:wanted]
        analogues = self.library.analogue_similarity(beam, noise, prepared.footprint)
        sample = EmbeddingSample(query, embeddings[_reference_rows(prepared, len(embeddings))])
        return Ranking(
            scores[order],
            self._index.ids[order],
            analogues,
            noise,
            tuple(notes),
            sample,
            float(scores.max()) if self._fused else math.nan,
        )


#: Library images drawn per target as the batch test's reference sample.
REFERENCE_PER_TARGET = 20


def _reference_rows(prepared: PreparedObservation, n_library: int) -> np.ndarray:
    """Distinct random library rows, seeded by the target's pixels (same target, same rows)."""
    seed = zlib.crc32(np.ascontiguousarray(prepared.image).tobytes())
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n_library, size=min(REFERENCE_PER_TARGET, n_library), replace=False))
