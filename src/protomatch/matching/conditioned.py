"""The library as an observation sees it: convolved to its beam, noised to its level, embedded.

A real observation is the sky convolved with the telescope's beam, with beam-correlated
noise; the library is not. Compared naively, the beam makes every source look bigger and
smoother and drives the match. :class:`BeamMatchedLibrary` convolves the library with the
observation's beam (in library pixels, :func:`protomatch.matching.observation.
beam_in_library_pixels`) and gives it noise at the observation's level, so the two images
differ only in what the physics does. Passes over the library are cached per beam and noise
level on a grid, so observations made alike share one pass.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any, overload

import numpy as np
import torch
from tqdm import tqdm

from protomatch.library.preprocess import PreprocessConfig, intensity_transform
from protomatch.library.store import LibraryStore
from protomatch.matching.index import neighbour_similarity
from protomatch.matching.observation import PreparedObservation, clipped_mean
from protomatch.matching.summary import unit_rows
from protomatch.neural_nets.trained import TrainedModel
from protomatch.optics.beam import Beam, convolve_with_beam, correlated_noise, kernel_half_width
from protomatch.optics.orientation import DIHEDRAL, dihedral_beam, dihedral_image

__all__ = ["BeamMatchedLibrary", "beam_key", "footprint_key", "noise_level", "pixel_vectors"]

log = logging.getLogger(__name__)

_FWHM_STEP_PX = 0.25
_PA_STEP_DEG = 10.0
_NOISE_STEP_DEX = 0.04  # ~10 % steps in the noise rms
_NOISE_SEED = 20261129


def noise_level(image: np.ndarray) -> float:
    """Robust noise rms of a prepared (peak-1) observation, relative to its peak.

    1.4826 x the median absolute deviation of the non-blank pixels: the source covers few
    pixels, so the spread of the rest is the noise. Blank pixels (exactly 0: NaN borders,
    padding) are left out.

    Parameters
    ----------
    image
        (H, W) prepared linear image with peak 1 (:attr:`PreparedObservation.image`).

    Returns
    -------
    float
        Noise rms relative to the peak; 0.0 when fewer than 16 pixels are non-blank.
    """
    values = np.asarray(image, dtype=np.float64)
    values = values[values != 0]
    if values.size < 16:
        return 0.0
    return float(1.4826 * np.median(np.abs(values - np.median(values))))


def _noise_key(noise: float) -> float:
    """Noise rms on a grid of 10 % steps (the cache key); 0 for none."""
    if noise <= 0:
        return 0.0
    return float(np.round(np.log10(noise) / _NOISE_STEP_DEX) * _NOISE_STEP_DEX)


@overload
def beam_key(beam: Beam) -> Beam: ...
@overload
def beam_key(beam: None) -> None: ...
def beam_key(beam: Beam | None) -> Beam | None:
    """``beam`` on the cache grid: FWHMs to 0.25 px (at least 0.25), PA to 10° in [0, 180).

    A beam whose axes round to the same width is circular: its PA becomes 0.

    Parameters
    ----------
    beam
        (FWHM major [library pixels], FWHM minor [library pixels], PA [degrees]), or None
        for the library as stored.

    Returns
    -------
    Beam or None
        The snapped (major, minor, PA) with minor <= major, or None when ``beam`` is None.
    """
    if beam is None:
        return None
    major, minor, pa = beam
    major = max(_FWHM_STEP_PX, round(major / _FWHM_STEP_PX) * _FWHM_STEP_PX)
    minor = min(major, max(_FWHM_STEP_PX, round(minor / _FWHM_STEP_PX) * _FWHM_STEP_PX))
    pa = 0.0 if minor == major else (round(pa / _PA_STEP_DEG) * _PA_STEP_DEG) % 180.0
    return float(major), float(minor), float(pa)


def pixel_vectors(images: np.ndarray, preprocess: PreprocessConfig) -> np.ndarray:
    """Unit-norm model-input pixels: (B, H, W) linear images -> (B, H*W) float32 rows.

    The intensity stage of the model (stretch, per-image standardisation), flattened and
    scaled to unit length, so an inner product is the pixel-space cosine similarity.

    Parameters
    ----------
    images
        (B, H, W) linear images (peak ~1), before any intensity stretch.
    preprocess
        The model's preprocessing; only its intensity stage (stretch, standardisation) is
        applied.

    Returns
    -------
    numpy.ndarray
        (B, H*W) float32 rows of unit L2 norm (all-zero rows stay zero).
    """
    batch = torch.from_numpy(np.require(images, np.float32, ["C"]))
    return unit_rows(intensity_transform(batch, preprocess).reshape(len(batch), -1).numpy())


class BeamMatchedLibrary:
    """A library store as it would look through a given beam, embedded by a model.

    Embeddings and pixel vectors are computed block by block (memory ~ ``block`` images) and
    kept in small least-recently-used caches keyed by the beam on a grid of 0.25 px in the
    FWHMs and 10° in the PA (:func:`beam_key`); the beam ``None`` is the library as stored.

    Parameters
    ----------
    trained
        The model; its input size must be the store's image size.
    store
        The library store (linear, peak-1 images and their mean intensities).
    cache_size
        Beams whose embeddings are kept (each N x D float32).
    pixel_cache_size
        Beams whose pixel vectors are kept (each N x H*W float32, as large as the store).
    block
        Images convolved and embedded at once.
    """

    def __init__(
        self,
        trained: TrainedModel,
        store: LibraryStore,
        *,
        cache_size: int = 8,
        pixel_cache_size: int = 1,
        block: int = 512,
    ) -> None:
        trained.check_store(store)
        if min(cache_size, pixel_cache_size, block) < 1:
            raise ValueError("cache sizes and block must be at least 1")
        self._trained = trained
        self._store = store
        self._block = block
        self._mean_intensity = store.table["mean_intensity"].to_numpy(dtype=np.float64)
        self._peak = store.table["peak"].to_numpy(dtype=np.float64)
        self._systems = store.table["system"].astype(str).to_numpy()
        self._analogue: dict[Any, dict[str, float]] = {}
        self._embeddings = _LRU(cache_size)
        self._pixels = _LRU(pixel_cache_size)

    def __len__(self) -> int:
        return len(self._store)

    @property
    def misses(self) -> int:
        """Library passes computed so far (cache misses, embeddings and pixels)."""
        return self._embeddings.misses + self._pixels.misses

    def embeddings(
        self, beam: Beam | None, noise: float = 0.0, footprint: np.ndarray | None = None
    ) -> np.ndarray:
        """(N, D) float32 L2-normalised embeddings of the library convolved with ``beam``.

        ``beam`` is (FWHM major [px], FWHM minor [px], PA [deg]) in library pixels, snapped
        to the cache grid; None: the library as stored. ``noise`` > 0 adds beam-correlated
        Gaussian noise of that rms relative to each convolved image's peak (the
        observation's :func:`noise_level`), so the library shows the observation's noise
        floor; the noise is the same for every call (fixed seed). The same array object is
        returned while the key stays in the cache (do not modify it).

        Parameters
        ----------
        beam
            (FWHM major [library pixels], FWHM minor [library pixels], PA [degrees]), or
            None for the library as stored (then ``noise`` is ignored).
        noise
            Noise rms relative to each convolved image's peak; 0 for none. Snapped to a
            grid of ~10 % steps.
        footprint
            (H, W) bool: with a beam and noise, every noisy library image is blanked (0)
            outside it, as an observation covering only part of the field is; None: the
            whole field.

        Returns
        -------
        numpy.ndarray
            (N, D) float32 unit-norm embeddings in store row order, read-only.
        """
        key = beam_key(beam)
        noise_key = _noise_key(noise)
        if key is None or not noise_key:
            return self._embeddings.get(key, lambda: self._compute(key, self._embed_block))
        through: Beam = key
        level = 10**noise_key
        return self._embeddings.get(
            (key, noise_key, footprint_key(footprint)),
            lambda: self._compute(
                through,
                lambda images, a, b: self._embed_noisy(images, a, b, through, level, footprint),
            ),
        )

    def convolved_pixels(
        self, beam: Beam | None, footprint: np.ndarray | None = None
    ) -> np.ndarray:
        """(N, H*W) float32 unit rows of the library's model-input pixels through ``beam``.

        The pixel-space baseline: the intensity stage of :func:`pixel_vectors` applied to
        the beam-convolved library (None: as stored). Cached like :meth:`embeddings`.

        Parameters
        ----------
        beam
            (FWHM major [library pixels], FWHM minor [library pixels], PA [degrees]), or
            None for the library as stored.
        footprint
            (H, W) bool: images blanked (0) outside it; None: the whole field.

        Returns
        -------
        numpy.ndarray
            (N, H*W) float32 unit rows in store row order, read-only; an inner product of
            two rows is their pixel-space cosine similarity in [-1, 1].
        """
        key = beam_key(beam)

        def block(images: np.ndarray, start: int, stop: int) -> np.ndarray:
            return self._pixel_block(_blanked(images, footprint), start, stop)

        return self._pixels.get((key, footprint_key(footprint)), lambda: self._compute(key, block))

    def similarities(
        self,
        image: np.ndarray,
        mean_intensity: float | None,
        beam: Beam | None,
        *,
        dihedral: bool = True,
    ) -> np.ndarray:
        """Cosine similarity of a prepared observation to every library image, per orientation.

        Parameters
        ----------
        image
            (H, W) prepared linear image (peak 1) on the library's grid.
        mean_intensity
            Its mean intensity in the library's unit (needed by brightness-aware models).
        beam
            The observation's beam in library pixels, or None to compare with the library as
            stored.
        dihedral
            Compare in the 8 orientations of :data:`DIHEDRAL`, each against the library
            through the equally turned beam; otherwise only as given.

        Returns
        -------
        (N, 8) float32, column g for orientation ``DIHEDRAL[g]`` (column 0: as given), or
        (N, 1) without ``dihedral``.
        """
        orientations = DIHEDRAL if dihedral else DIHEDRAL[:1]
        turned = np.stack([dihedral_image(image, q, f) for q, f in orientations])
        brightness = None if mean_intensity is None else np.full(len(turned), mean_intensity)
        queries = self._trained.embed(turned, brightness)
        columns = []
        for (quarter_turns, flip), query in zip(orientations, queries):
            turned_beam = None if beam is None else dihedral_beam(beam, quarter_turns, flip)
            columns.append(self.embeddings(turned_beam) @ query)
        return np.stack(columns, axis=1)

    def convolved_images(self, beam: Beam | None, start: int, stop: int) -> np.ndarray:
        """(stop - start, H, W) float32 library images ``start:stop`` through ``beam``.

        Parameters
        ----------
        beam
            (FWHM major [library pixels], FWHM minor [library pixels], PA [degrees]),
            snapped to the cache grid; None for the images as stored.
        start, stop
            Row range of the store (0-based, ``stop`` excluded).

        Returns
        -------
        numpy.ndarray
            (stop - start, H, W) float32 linear images; convolution preserves flux, so
            their peaks are no longer 1.
        """
        images = np.array(self._store.images[start:stop], dtype=np.float32)
        key = beam_key(beam)
        if key is None:
            return images
        with torch.no_grad():
            return convolve_with_beam(torch.from_numpy(images), *key).numpy()

    def _blocks(self, key: Beam | None) -> Iterator[tuple[int, int, np.ndarray]]:
        for start in range(0, len(self), self._block):
            stop = min(start + self._block, len(self))
            yield start, stop, self.convolved_images(key, start, stop)

    def _compute(
        self, key: Beam | None, per_block: Callable[[np.ndarray, int, int], np.ndarray]
    ) -> np.ndarray:
        log.debug("library through beam %s", key)
        blocks = tqdm(
            self._blocks(key),
            total=-(-len(self) // self._block),
            desc="library through the beam",
            unit="block",
            leave=False,
            disable=None,  # off when not on a terminal
        )
        parts = [per_block(images, start, stop) for start, stop, images in blocks]
        return np.concatenate(parts)

    def _embed_block(self, images: np.ndarray, start: int, stop: int) -> np.ndarray:
        brightness = self._mean_intensity[start:stop]
        return self._trained.embed(images, brightness, batch_size=self._block)

    def _embed_noisy(
        self,
        images: np.ndarray,
        start: int,
        stop: int,
        beam: Beam,
        level: float,
        footprint: np.ndarray | None,
    ) -> np.ndarray:
        shape = (images.shape[1], images.shape[2])
        noise = _correlated_noise((_NOISE_SEED, start), stop - start, shape, beam)
        return self._embed_with_noise(images, np.arange(start, stop), noise, level, footprint)

    def _embed_with_noise(
        self,
        images: np.ndarray,
        rows: np.ndarray,
        noise: np.ndarray,
        level: float,
        footprint: np.ndarray | None,
    ) -> np.ndarray:
        """Embed convolved library ``images`` (rows ``rows``) noised and blanked like a target.

        Noise: ``level`` x each image's peak x ``noise``; blank (0) outside ``footprint``.
        """
        peaks = images.reshape(len(images), -1).max(axis=1)
        noisy = _blanked(images + level * peaks[:, None, None] * noise, footprint)
        # The same noise-clipped brightness as the observation's (PreparedObservation).
        clipped = self._peak[rows] * clipped_mean(noisy, level * peaks)
        brightness = np.maximum(clipped, 1e-12 * self._mean_intensity[rows])
        return self._trained.embed(noisy, brightness, batch_size=self._block)

    def analogue_similarity(
        self, beam: Beam, noise: float, footprint: np.ndarray | None = None
    ) -> dict[str, float]:
        """What a good analogue's similarity looks like at this beam and noise level.

        Quantiles (p1, p5, median) of the best similarity of sampled library images to the
        noise-matched library images of *other* systems, each sampled image convolved,
        given *another* noise realisation and embedded as an observation would be
        (:func:`protomatch.matching.index.neighbour_similarity`). Noisy comparisons reach lower
        similarities than the noiseless index, so an observation is judged against these.

        Parameters
        ----------
        beam
            (FWHM major [library pixels], FWHM minor [library pixels], PA [degrees]).
        noise
            Noise rms relative to the peak (the observation's :func:`noise_level`); 0 for
            none.
        footprint
            The observation's footprint on the library grid (both sides blanked outside
            it), or None for the whole field.

        Returns
        -------
        dict of str to float
            Cosine similarities in [-1, 1] under ``p1``, ``p5`` and ``median``; NaN when the
            library has fewer than two systems. A copy of the cached values.
        """
        key = (beam_key(beam), _noise_key(noise), footprint_key(footprint))
        if key not in self._analogue:
            library = self.embeddings(beam, noise, footprint)
            level = 10 ** key[1] if key[1] else 0.0

            def queries(rows: np.ndarray) -> np.ndarray:
                images = np.array(self._store.images[np.sort(rows)], dtype=np.float32)
                images = images[np.argsort(np.argsort(rows))]
                with torch.no_grad():
                    images = convolve_with_beam(torch.from_numpy(images), *key[0]).numpy()
                shape = (images.shape[1], images.shape[2])
                fresh = _correlated_noise((_NOISE_SEED + 1, 0), len(rows), shape, key[0])
                return self._embed_with_noise(images, rows, fresh, level, footprint)

            self._analogue[key] = neighbour_similarity(library, self._systems, queries=queries)
        return dict(self._analogue[key])

    def noise_matched_similarities(
        self, prepared: PreparedObservation, beam: Beam
    ) -> tuple[np.ndarray, float]:
        """(N,) cosine of an observation to the library through its beam and at its noise.

        The library is convolved with ``beam``, given beam-correlated noise at the
        observation's :func:`noise_level`, and both sides compare brightness as the mean of
        the pixels above the same multiple of that noise (:func:`clipped_mean`).

        Parameters
        ----------
        prepared
            The observation on the library's grid (peak-1 image, intensity scale).
        beam
            Its beam: (FWHM major [library pixels], FWHM minor [library pixels], PA
            [degrees]), normally ``prepared.beam``.

        Returns
        -------
        similarities : numpy.ndarray
            (N,) float32 cosine similarities in [-1, 1], in store row order.
        noise : float
            The observation's noise rms relative to its peak; at 0 the library is compared
            without noise and with the plain mean intensity.
        """
        query, noise = self.noise_matched_query(prepared)
        return self.embeddings(beam, noise, prepared.footprint) @ query, noise

    def noise_matched_query(self, prepared: PreparedObservation) -> tuple[np.ndarray, float]:
        """The observation's embedding as :meth:`noise_matched_similarities` compares it.

        Returns
        -------
        query : numpy.ndarray
            (D,) float32 unit embedding.
        noise : float
            Its noise rms relative to the peak (:func:`noise_level`).
        """
        noise = noise_level(prepared.image)
        brightness = self._trained.compared_brightness(
            prepared.clipped_intensity(noise) if noise > 0 else prepared.mean_intensity
        )
        intensity = None if brightness is None else np.array([brightness])
        return self._trained.embed(prepared.image[None], intensity)[0], noise

    def _pixel_block(self, images: np.ndarray, start: int, stop: int) -> np.ndarray:
        return pixel_vectors(images, self._trained.preprocess)


def footprint_key(footprint: np.ndarray | None) -> bytes | None:
    """A hashable, compact key of a footprint mask (None: the whole field)."""
    if footprint is None:
        return None
    mask = np.asarray(footprint, dtype=bool)
    return bytes(np.array(mask.shape, dtype=np.int64)) + np.packbits(mask).tobytes()


def _blanked(images: np.ndarray, footprint: np.ndarray | None) -> np.ndarray:
    """``images`` set to 0 outside ``footprint`` (unchanged when it is None)."""
    return images if footprint is None else images * np.asarray(footprint, dtype=images.dtype)


def _correlated_noise(
    seed: tuple[int, ...], count: int, shape: tuple[int, int], beam: Beam
) -> np.ndarray:
    """``count`` unit-rms noise images of ``shape``, correlated on the beam's scale."""
    rng = np.random.default_rng(list(seed))
    pad = kernel_half_width(beam[0])
    white = rng.standard_normal((count, shape[0] + 2 * pad, shape[1] + 2 * pad))
    with torch.no_grad():
        noise = correlated_noise(torch.from_numpy(white.astype(np.float32)), shape, *beam)
    return noise.numpy()


class _LRU:
    """A small least-recently-used cache of computed arrays (one per instance, not global)."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._items: OrderedDict[Any, np.ndarray] = OrderedDict()
        self.misses = 0

    def get(self, key: Any, compute: Callable[[], np.ndarray]) -> np.ndarray:
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        self.misses += 1
        value = compute()
        value.setflags(write=False)
        self._items[key] = value
        if len(self._items) > self._size:
            self._items.popitem(last=False)
        return value
