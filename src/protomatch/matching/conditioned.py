"""Compare an observation with the library seen through the observation's own beam.

A real observation is the sky convolved with the telescope's beam; the library is not. Matched
naively, the beam makes every source look bigger and smoother and drives the match. Here the
library is convolved with the observation's beam instead (:class:`BeamMatchedLibrary`), so the
two images differ only in what the physics does.

Conventions
-----------
The beam of a FITS image (``BMAJ``/``BMIN`` FWHM, ``BPA`` east of north) is measured on the
sky; :func:`beam_in_library_pixels` turns it into FWHMs in library pixels (arcsec x distance
[pc] = AU, / AU per library pixel) and a position angle in the image array's frame, the one
of :func:`protomatch.training.augment.convolve_with_beam` (from +row through -column). The sky
directions come from the celestial WCS's pixel-to-sky matrix (CDELT, PC or CD, so rotated and
mirrored grids are handled): standard images have north up and east to the left and keep the
PA; a mirrored grid negates it; a grid rotated by θ turns it by θ.
:func:`prepare_observation` cuts and resizes without flipping, so the same PA holds on the
prepared observation and on the library images it is compared with.

The dihedral transforms (:func:`dihedral_image`, :func:`dihedral_beam`) turn an image and its
beam together: rotating the image content by ``90° k`` counter-clockwise (origin-lower display)
adds ``90° k`` to the PA, and a left-right flip negates it (flip first, then rotate).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from protomatch.errors import InputError
from protomatch.library.preprocess import PreprocessConfig, intensity_transform
from protomatch.library.readers import Observation
from protomatch.library.store import LibraryStore
from protomatch.matching.index import neighbour_similarity
from protomatch.matching.observation import PreparedObservation, clipped_mean, header_distance
from protomatch.matching.summary import unit_rows
from protomatch.neural_nets.trained import TrainedModel
from protomatch.training.augment import convolve_with_beam

__all__ = [
    "DIHEDRAL",
    "Beam",
    "BeamMatchedLibrary",
    "array_position_angle",
    "beam_in_library_pixels",
    "dihedral_beam",
    "dihedral_image",
    "pixel_vectors",
]

log = logging.getLogger(__name__)

#: (FWHM major [px], FWHM minor [px], PA [deg] from +row through -column).
Beam = tuple[float, float, float]
#: The 8 orientations of the square: (quarter turns counter-clockwise, left-right flip first).
DIHEDRAL: tuple[tuple[int, bool], ...] = tuple((k, f) for f in (False, True) for k in range(4))
_FWHM_STEP_PX = 0.25
_PA_STEP_DEG = 10.0
_NOISE_STEP_DEX = 0.04  # ~10 % steps in the noise rms
_NOISE_SEED = 20261129


def beam_in_library_pixels(
    observation: Observation, distance_pc: float | None, library_au_per_pixel: float | None
) -> Beam | None:
    """The observation's beam in library pixels, or None when it cannot be known.

    Parameters
    ----------
    observation
        Read by :func:`protomatch.library.readers.read_observation`; ``beam_arcsec`` holds
        (BMAJ [arcsec], BMIN [arcsec], BPA [deg east of north]).
    distance_pc
        Distance [pc]; None falls back on the header's ``DISTANCE`` keyword.
    library_au_per_pixel
        Pixel side of the library store's images [AU].

    Returns
    -------
    (FWHM major [library px], FWHM minor [library px], PA [deg] in the array frame of
    :func:`protomatch.training.augment.convolve_with_beam`, in [0, 180)), or None without a beam,
    a distance or the library's pixel scale.
    """
    distance = distance_pc or header_distance(observation)
    if observation.beam_arcsec is None or not distance or not library_au_per_pixel:
        return None
    bmaj, bmin, bpa = observation.beam_arcsec
    scale = float(distance) / float(library_au_per_pixel)  # arcsec -> AU -> library px
    major, minor = max(bmaj, bmin) * scale, min(bmaj, bmin) * scale
    if bmin > bmaj:  # a header with BMIN > BMAJ: the major axis is the other one
        bpa += 90.0
    return (
        float(major),
        float(minor),
        float(array_position_angle(observation.sky_per_pixel, bpa) % 180.0),
    )


def array_position_angle(
    sky_per_pixel: tuple[tuple[float, float], ...] | None, sky_pa_deg: float
) -> float:
    """A sky position angle (east of north) in the array frame (from +row through -column).

    ``sky_per_pixel`` is the observation's (east, north) offset per (column, row) step
    (:attr:`protomatch.library.readers.Observation.sky_per_pixel`); without it the array is taken
    as north up, east left.
    """
    if sky_per_pixel is None:
        return float(sky_pa_deg)
    angle = np.deg2rad(sky_pa_deg)
    column, row = np.linalg.solve(np.asarray(sky_per_pixel), [np.sin(angle), np.cos(angle)])
    return float(np.rad2deg(np.arctan2(-column, row)))


def dihedral_image(image: np.ndarray, quarter_turns: int, flip: bool) -> np.ndarray:
    """(…, H, W) image(s) flipped left-right (if ``flip``), then turned ``90° k`` CCW."""
    out = image[..., ::-1] if flip else image
    return np.ascontiguousarray(np.rot90(out, quarter_turns, axes=(-1, -2)))


def dihedral_beam(beam: Beam, quarter_turns: int, flip: bool) -> Beam:
    """The beam of :func:`dihedral_image` of an image observed with ``beam``."""
    major, minor, pa = beam
    pa = -pa if flip else pa
    return major, minor, float((pa + 90.0 * quarter_turns) % 180.0)


def noise_level(image: np.ndarray) -> float:
    """Robust noise rms of a prepared (peak-1) observation, relative to its peak.

    1.4826 x the median absolute deviation of the non-blank pixels: the source covers few
    pixels, so the spread of the rest is the noise. Blank pixels (exactly 0: NaN borders,
    padding) are left out.
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


def beam_key(beam: Beam | None) -> Beam | None:
    """``beam`` on the cache grid: FWHMs to 0.25 px (at least 0.25), PA to 10° in [0, 180).

    A beam whose axes round to the same width is circular: its PA becomes 0.
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
        size = trained.encoder_config.input_size
        if store.images.shape[-1] != size:
            raise InputError(
                store.path,
                f"holds {store.images.shape[-1]} px images but the model takes {size} px",
            )
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

    def embeddings(self, beam: Beam | None, noise: float = 0.0) -> np.ndarray:
        """(N, D) float32 L2-normalised embeddings of the library convolved with ``beam``.

        ``beam`` is (FWHM major [px], FWHM minor [px], PA [deg]) in library pixels, snapped
        to the cache grid; None: the library as stored. ``noise`` > 0 adds beam-correlated
        Gaussian noise of that rms relative to each convolved image's peak (the
        observation's :func:`noise_level`), so the library shows the observation's noise
        floor; the noise is the same for every call (fixed seed). The same array object is
        returned while the key stays in the cache (do not modify it).
        """
        key = beam_key(beam)
        noise_key = _noise_key(noise) if key is not None else 0.0
        if noise_key:
            level = 10**noise_key
            return self._embeddings.get(
                (key, noise_key),
                lambda: self._compute(
                    key, lambda images, a, b: self._embed_noisy(images, a, b, key, level)
                ),
            )
        return self._embeddings.get(key, lambda: self._compute(key, self._embed_block))

    def convolved_pixels(self, beam: Beam | None) -> np.ndarray:
        """(N, H*W) float32 unit rows of the library's model-input pixels through ``beam``.

        The pixel-space baseline: the intensity stage of :func:`pixel_vectors` applied to
        the beam-convolved library (None: as stored). Cached like :meth:`embeddings`.
        """
        key = beam_key(beam)
        return self._pixels.get(key, lambda: self._compute(key, self._pixel_block))

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
        """(stop - start, H, W) float32 library images ``start:stop`` through ``beam``."""
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
        self, images: np.ndarray, start: int, stop: int, beam: Beam, level: float
    ) -> np.ndarray:
        noise = _correlated_noise((_NOISE_SEED, start), stop - start, images.shape[1:], beam)
        return self._embed_with_noise(images, np.arange(start, stop), noise, level)

    def _embed_with_noise(
        self, images: np.ndarray, rows: np.ndarray, noise: np.ndarray, level: float
    ) -> np.ndarray:
        """Embed convolved library ``images`` (rows ``rows``) plus ``level`` x peak x noise."""
        peaks = images.reshape(len(images), -1).max(axis=1)
        noisy = images + level * peaks[:, None, None] * noise
        # The same noise-clipped brightness as the observation's (PreparedObservation).
        clipped = self._peak[rows] * clipped_mean(noisy, level * peaks)
        brightness = np.maximum(clipped, 1e-12 * self._mean_intensity[rows])
        return self._trained.embed(noisy, brightness, batch_size=self._block)

    def analogue_similarity(self, beam: Beam, noise: float) -> dict[str, float]:
        """What a good analogue's similarity looks like at this beam and noise level.

        Quantiles (p1, p5, median) of the best similarity of sampled library images to the
        noise-matched library images of *other* systems, each sampled image convolved,
        given *another* noise realisation and embedded as an observation would be
        (:func:`protomatch.matching.index.neighbour_similarity`). Noisy comparisons reach lower
        similarities than the noiseless index, so an observation is judged against these.
        """
        key = (beam_key(beam), _noise_key(noise))
        if key not in self._analogue:
            library = self.embeddings(beam, noise)
            level = 10 ** key[1] if key[1] else 0.0

            def queries(rows: np.ndarray) -> np.ndarray:
                images = np.array(self._store.images[np.sort(rows)], dtype=np.float32)
                images = images[np.argsort(np.argsort(rows))]
                with torch.no_grad():
                    images = convolve_with_beam(torch.from_numpy(images), *key[0]).numpy()
                shape = images.shape[1:]
                fresh = _correlated_noise((_NOISE_SEED + 1, 0), len(rows), shape, key[0])
                return self._embed_with_noise(images, rows, fresh, level)

            self._analogue[key] = neighbour_similarity(library, self._systems, queries=queries)
        return dict(self._analogue[key])

    def noise_matched_similarities(
        self, prepared: PreparedObservation, beam: Beam
    ) -> tuple[np.ndarray, float]:
        """(N,) cosine of an observation to the library through its beam and at its noise.

        The library is convolved with ``beam``, given beam-correlated noise at the
        observation's :func:`noise_level`, and both sides compare brightness as the mean of
        the pixels above the same multiple of that noise (:func:`clipped_mean`). Returns the
        similarities and the noise level (rms relative to the peak).
        """
        noise = noise_level(prepared.image)
        brightness = self._trained.compared_brightness(
            prepared.clipped_intensity(noise) if noise > 0 else prepared.mean_intensity
        )
        intensity = None if brightness is None else np.array([brightness])
        query = self._trained.embed(prepared.image[None], intensity)[0]
        return self.embeddings(beam, noise) @ query, noise

    def _pixel_block(self, images: np.ndarray, start: int, stop: int) -> np.ndarray:
        return pixel_vectors(images, self._trained.preprocess)


def _correlated_noise(
    seed: tuple[int, ...], count: int, shape: tuple[int, ...], beam: Beam
) -> np.ndarray:
    """``count`` unit-rms noise images of ``shape``, correlated on the beam's scale."""
    rng = np.random.default_rng(list(seed))
    white = torch.from_numpy(rng.standard_normal((count, *shape)).astype(np.float32))
    with torch.no_grad():
        smooth = convolve_with_beam(white, *beam)
    rms = smooth.flatten(1).std(dim=1).clamp_min(1e-12)[:, None, None]
    return (smooth / rms).numpy()


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
