"""An observation brought onto the library's pixel grid and intensity unit.

Units and sky geometry live here, at the edge: the result is a plain (size, size) float32
linear image with peak 1, like the store's images, plus its mean intensity in the library's
unit (the absolute brightness that per-image normalisation removes), when it can be known.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

import numpy as np

from protomatch.errors import InputError
from protomatch.library.preprocess import PreprocessConfig, prepare_image
from protomatch.library.readers import Observation
from protomatch.library.schema import PIXEL_SCALE_ATTRIBUTE
from protomatch.training.augment import FWHM_PER_SIGMA

_ARCSEC_PER_RADIAN = 180 / math.pi * 3600


#: Pixels below this many noise rms are left out of a noisy image's brightness.
BRIGHTNESS_CLIP_SIGMAS = 2.0


@dataclass(frozen=True, eq=False)
class PreparedObservation:
    """(size, size) float32 linear image (peak 1), its intensity scale, notes.

    ``intensity_scale`` is the intensity, in the library's unit, of an image value of 1 (None
    when the units cannot be converted).
    """

    image: np.ndarray
    intensity_scale: float | None
    notes: tuple[str, ...]

    @property
    def mean_intensity(self) -> float | None:
        """Mean intensity over the library's field of view, in the library's unit."""
        if self.intensity_scale is None:
            return None
        return self.intensity_scale * float(self.image.mean(dtype=np.float64))

    def clipped_intensity(self, noise: float) -> float | None:
        """Mean intensity counting only pixels above ``BRIGHTNESS_CLIP_SIGMAS`` x ``noise``.

        ``noise`` is the rms relative to the peak. None if unknown units or nothing is left.
        """
        if self.intensity_scale is None:
            return None
        value = self.intensity_scale * float(clipped_mean(self.image[None], noise)[0])
        return value if value > 0 else None


def clipped_mean(images: np.ndarray, noise: np.ndarray | float) -> np.ndarray:
    """(B,) mean of each (B, H, W) image counting pixels above ``BRIGHTNESS_CLIP_SIGMAS`` x noise.

    On a noisy image the plain mean is dominated by the noise summed over the whole field
    (beam-correlated, so it barely averages out); the pixels that carry signal give a steadier
    brightness. Compare only values clipped the same way at the same noise level.
    """
    threshold = BRIGHTNESS_CLIP_SIGMAS * np.asarray(noise, dtype=np.float64).reshape(-1, 1, 1)
    kept = np.where(images > threshold, images, 0.0)
    return kept.reshape(len(images), -1).mean(axis=1, dtype=np.float64)


def prepare_observation(
    observation: Observation,
    preprocess: PreprocessConfig,
    library_au_per_pixel: float | None,
    distance_pc: float | None,
    library_unit: str | None = None,
    centre: Literal["source", "image"] = "source",
) -> PreparedObservation:
    """Cut, resample and convert an observation like the library's images.

    With a pixel scale (arcsec from the WCS, or AU from a library file), a distance for
    arcsec, and the library's AU per pixel, a square of the library's field of view in AU is
    cut (blank where the observation is smaller) and resized; otherwise a square of the
    image's shorter side is cut and resized as the library was. The square is centred on the
    source (``centre="source"``: the brightest point of the image smoothed on the beam's
    scale, where the library has its star) or on the image centre (``"image"``).
    """
    image = np.asarray(observation.image, dtype=np.float32)
    notes: list[str] = []
    distance = distance_pc or header_distance(observation)
    au_per_pixel = observation.header.get(PIXEL_SCALE_ATTRIBUTE)
    if au_per_pixel is None and observation.pixel_scale_arcsec and distance:
        au_per_pixel = observation.pixel_scale_arcsec * distance  # 1 arcsec at 1 pc is 1 AU
    middle = _cut_centre(observation, image, centre, au_per_pixel, notes)
    config = preprocess
    if au_per_pixel and library_au_per_pixel:
        field_au = library_au_per_pixel * preprocess.size
        image = square_field(image, field_au / float(au_per_pixel), middle)
        config = preprocess.model_copy(update={"crop_fraction": 1.0})
        notes.append(
            f"resampled from {float(au_per_pixel):.3g} to the library's "
            f"{library_au_per_pixel:.3g} AU/pixel (field {field_au:.0f} AU)"
        )
    else:
        image = square_field(image, min(image.shape), middle)
        notes.append(
            f"no physical pixel scale ({_missing_scale(observation, library_au_per_pixel)} "
            "unknown): a square of the image's shorter side was cut and resized like the "
            "library images; its field of view may differ"
        )
    prepared = prepare_image(image, config)
    if prepared.peak <= 0:
        raise InputError(observation.source, "image has no positive pixel after preparation")
    factor = intensity_factor(observation, library_unit)
    scale = None if factor is None else float(prepared.peak * factor)
    return PreparedObservation(prepared.image, scale, tuple(notes))


def _missing_scale(observation: Observation, library_au_per_pixel: float | None) -> str:
    if not library_au_per_pixel:
        return "the library's AU per pixel"
    if observation.pixel_scale_arcsec:
        return "a distance (--distance)"
    return "a WCS pixel scale"


def intensity_factor(observation: Observation, library_unit: str | None) -> float | None:
    """Multiplier from the observation's intensity unit (``BUNIT``) to the library's, or None.

    Units of the form ``[prefix]Jy/beam``, ``Jy beam-1``, ``Jy/pixel`` or ``Jy/sr`` (prefix
    ``u``/``µ``, ``m``, ``k``, ``M``) are converted through Jy/sr: per beam by the beam solid
    angle ``pi bmaj bmin / (4 ln 2)``, per pixel by the WCS pixel area. Other units convert
    only to themselves (factor 1); None when either unit is unknown or not convertible.
    """
    given, target = observation.header.get("BUNIT"), library_unit
    if not isinstance(given, str) or not isinstance(target, str) or not target.strip():
        return None
    source_unit, library = _flux_density_unit(given), _flux_density_unit(target)
    if source_unit is None or library is None:
        return 1.0 if given.strip().lower() == target.strip().lower() else None
    if source_unit == library:
        return 1.0
    per_sr = _per_steradian(observation, source_unit[1])
    if library[1] != "sr" or per_sr is None:  # a library per beam or pixel: same unit only
        return None
    return source_unit[0] * per_sr / library[0]


_JY_PREFIXES = MappingProxyType(
    {"": 1.0, "u": 1e-6, "µ": 1e-6, "μ": 1e-6, "m": 1e-3, "k": 1e3, "M": 1e6}
)
_FLUX_UNIT = re.compile(
    r"(?P<prefix>[uµμmkM]?)jy\s*(?:/\s*(?P<over>beam|pixel|pix|sr)"
    r"|\s+(?P<inverse>beam|pixel|pix|sr)\s*\^?\s*-1)",
    re.IGNORECASE,
)


def _flux_density_unit(unit: str) -> tuple[float, str] | None:
    """(Jy per unit, area: "beam" | "pixel" | "sr") of a flux-density unit, or None."""
    match = _FLUX_UNIT.fullmatch(unit.strip())
    if match is None:
        return None
    prefix = match["prefix"]
    scale = _JY_PREFIXES[prefix if prefix == "M" else prefix.lower()]  # M mega, m milli
    area = (match["over"] or match["inverse"]).lower()
    return scale, "pixel" if area == "pix" else area


def beam_solid_angle_sr(major_arcsec: float, minor_arcsec: float) -> float:
    """``pi bmaj bmin / (4 ln 2)`` [sr] of a Gaussian beam with FWHMs in arcsec."""
    return math.pi * major_arcsec * minor_arcsec / (4.0 * math.log(2.0)) / _ARCSEC_PER_RADIAN**2


def _per_steradian(observation: Observation, area: str) -> float | None:
    """1 / (solid angle of one ``area``) [1/sr]: 1 for sr; None if the beam/pixel is unknown."""
    if area == "sr":
        return 1.0
    if area == "beam" and observation.beam_arcsec:
        bmaj, bmin, _ = observation.beam_arcsec
        return 1.0 / beam_solid_angle_sr(bmaj, bmin)
    if area == "pixel" and observation.pixel_scale_arcsec:
        return (_ARCSEC_PER_RADIAN / observation.pixel_scale_arcsec) ** 2
    return None


def header_distance(observation: Observation) -> float | None:
    """The header's ``DISTANCE`` keyword [pc] if it is a positive finite number, else None."""
    value = observation.header.get("DISTANCE")
    try:
        distance = float(value) if value is not None else math.nan
    except (TypeError, ValueError):
        return None
    return distance if math.isfinite(distance) and distance > 0 else None


def _cut_centre(
    observation: Observation,
    image: np.ndarray,
    centre: str,
    au_per_pixel: float | None,
    notes: list[str],
) -> tuple[float, float] | None:
    """Where to centre the cut: the source's (row, column), or None for the image centre."""
    if centre == "image":
        return None
    if centre != "source":
        raise ValueError(f"centre must be 'source' or 'image', got {centre!r}")
    beam = _beam_fwhm_px(observation)
    row, column = source_position(image, beam)
    offset = math.hypot(row - (image.shape[0] - 1) / 2, column - (image.shape[1] - 1) / 2)
    # Within half a beam of the centre, the peak's offset is not telling: keep the centre.
    if offset <= max(1.0, beam / 2):
        return None
    where = f" = {offset * float(au_per_pixel):.0f} AU" if au_per_pixel else ""
    notes.append(
        f"centred on the source (brightest point, pixel row {row:.0f}, column "
        f"{column:.0f}), {offset:.1f} pixels{where} from the image centre"
    )
    return row, column


def _beam_fwhm_px(observation: Observation) -> float:
    """The beam's major FWHM in the observation's pixels (2 px when unknown)."""
    if observation.beam_arcsec and observation.pixel_scale_arcsec:
        return max(2.0, observation.beam_arcsec[0] / observation.pixel_scale_arcsec)
    return 2.0


def source_position(image: np.ndarray, smoothing_fwhm_px: float) -> tuple[float, float]:
    """(row, column) of the brightest point of ``image`` smoothed by a Gaussian of that FWHM.

    Blank (NaN) pixels count as 0. Smoothing on the beam's scale keeps a single noise
    spike from outshining a faint, extended source.
    """
    from scipy.ndimage import gaussian_filter

    filled = np.nan_to_num(np.asarray(image, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    sigma = smoothing_fwhm_px / FWHM_PER_SIGMA
    smooth = gaussian_filter(filled, sigma, mode="constant")
    row, column = np.unravel_index(int(np.argmax(smooth)), smooth.shape)
    return float(row), float(column)


def square_field(
    image: np.ndarray, side: float, centre: tuple[float, float] | None = None
) -> np.ndarray:
    """A square of ``side`` pixels around ``centre`` (row, column; default: the image
    centre); NaN (later filled with 0) beyond the edges."""
    n = max(1, round(side))
    height, width = image.shape
    out = np.full((n, n), np.nan, dtype=np.float32)
    top, left = (height - n) // 2, (width - n) // 2
    if centre is not None:
        top, left = (math.floor(c - (n - 1) / 2 + 0.5) for c in centre)
    src_rows = slice(max(top, 0), min(top + n, height))
    src_cols = slice(max(left, 0), min(left + n, width))
    dst_rows = slice(src_rows.start - top, src_rows.stop - top)
    dst_cols = slice(src_cols.start - left, src_cols.stop - left)
    out[dst_rows, dst_cols] = image[src_rows, src_cols]
    return out
