"""An observed image, read once into typed fields, and brought onto the library's grid.

Units and sky geometry live here, at the edge. :func:`read_observation` turns a FITS file,
a ``.npy`` array or one projection of a library file into an :class:`Observation` whose
fields (pixel scale, beam, intensity unit, distance and where it came from, the library
image it is) are set once; nothing downstream reads headers. :func:`prepare_observation`
then cuts and resamples it to the library's field and pixel scale: a plain (size, size)
float32 linear image with peak 1, like the store's images, with its beam in library pixels
and its mean intensity in the library's unit when they can be known.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

import numpy as np

from protomatch._text import safe_name
from protomatch.errors import InputError
from protomatch.library.fits_header import (
    beam_arcsec,
    beam_problem,
    celestial_header,
    pixel_scale_arcsec,
    select_header,
    sky_per_pixel,
    wcs_scale_problem,
)
from protomatch.library.formats import (
    DEFAULT_MAX_IMAGE_SIDE,
    as_image,
    blank_infinite,
    read_fits,
    read_npy,
    sniff_format,
)
from protomatch.library.preprocess import PreprocessConfig, prepare_image
from protomatch.library.readers import read_library_projection
from protomatch.matching._cutout import (
    coverage_field,
    resample_field,
    source_position,
    square_field,
)
from protomatch.optics.beam import Beam
from protomatch.optics.orientation import array_position_angle
from protomatch.optics.units import intensity_factor

__all__ = [
    "BRIGHTNESS_CLIP_SIGMAS",
    "LibraryOrigin",
    "Observation",
    "PreparedObservation",
    "beam_in_library_pixels",
    "clipped_mean",
    "prepare_observation",
    "read_observation",
    "source_position",
    "square_field",
]

log = logging.getLogger(__name__)

Centre = Literal["source", "image"]
CENTRES: tuple[Centre, ...] = ("source", "image")


@dataclass(frozen=True)
class LibraryOrigin:
    """Which library image a target is: its system, snapshot and 1-based projection."""

    system: str
    snapshot: int
    projection: int


@dataclass(frozen=True, eq=False)
class Observation:
    """An observed image and what protomatch knows about it, each fact in its own field.

    Attributes
    ----------
    image
        (H, W) float32 intensities; may contain NaN (blanked pixels).
    source
        The file read.
    pixel_scale_arcsec
        Pixel side from the celestial WCS [arcsec]; None when unknown.
    au_per_pixel
        Pixel side [AU] recorded with a library image; None for sky images.
    beam_arcsec
        (major FWHM [arcsec], minor FWHM [arcsec], PA [deg east of north]); None when unknown.
    sky_per_pixel
        2x2 (east, north) offsets [arcsec] per (column, row) pixel step from the WCS, which
        says how the array is turned and mirrored on the sky; None when unknown.
    intensity_unit
        Unit of the pixel values (FITS ``BUNIT``, or the library's unit); None when unknown.
    distance_pc
        Distance of the source [pc]; None when unknown.
    distance_from
        Where the distance came from: ``"header DISTANCE"``, ``"given"`` or None.
    library_image
        The library image this is, when the target is one (its true parameters are known).
    header
        Selected FITS keywords, kept for display only.
    wcs_header
        The celestial WCS keywords (an ``astropy.io.fits.Header``), for drawing the image on
        the sky; None without a celestial WCS.
    problems
        Invalid header values by fact (``"distance"``, ``"pixel_scale"``, ``"beam"``): the
        message naming the keyword. A match stops on them unless the fact is given.
    notes
        What the user's facts overrode, for the report.
    """

    image: np.ndarray
    source: Path
    pixel_scale_arcsec: float | None = None
    au_per_pixel: float | None = None
    beam_arcsec: tuple[float, float, float] | None = None
    sky_per_pixel: tuple[tuple[float, float], ...] | None = None
    intensity_unit: str | None = None
    distance_pc: float | None = None
    distance_from: str | None = None
    library_image: LibraryOrigin | None = None
    header: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    wcs_header: Any = None
    problems: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    notes: tuple[str, ...] = ()

    def at_distance(self, distance_pc: float | None, given_by: str | None = None) -> Observation:
        """Return this observation at a distance given by the user (None: unchanged).

        Parameters
        ----------
        distance_pc
            Distance [pc], positive and finite; it overrides a header's ``DISTANCE``.
        given_by
            How the user gave it, for the notes (default ``--distance <value> pc``).

        Returns
        -------
        Observation
            A copy with ``distance_pc`` set, ``distance_from="given"``, and a note when it
            replaces the header's (valid or invalid) ``DISTANCE``.
        """
        if distance_pc is None:
            return self
        if not math.isfinite(distance_pc) or distance_pc <= 0:
            raise InputError(self.source, f"distance must be positive (pc), got {distance_pc}")
        problems = dict(self.problems)
        notes = list(self.notes)
        given_by = given_by or f"--distance {distance_pc:g} pc"
        if "distance" in problems:
            notes.append(f"{problems.pop('distance')}: ignored, {given_by} given")
        elif self.distance_pc is not None and self.distance_pc != distance_pc:
            notes.append(f"{given_by} overrides the header's DISTANCE {self.distance_pc:g} pc")
        return dataclasses.replace(
            self,
            distance_pc=float(distance_pc),
            distance_from="given",
            problems=MappingProxyType(problems),
            notes=tuple(notes),
        )

    @property
    def physical_pixel_au(self) -> float | None:
        """Pixel side [AU]: recorded, or the WCS pixel scale [arcsec] times the distance [pc]."""
        if self.au_per_pixel is not None:
            return self.au_per_pixel
        if self.pixel_scale_arcsec and self.distance_pc:
            return self.pixel_scale_arcsec * self.distance_pc  # 1 arcsec at 1 pc is 1 AU
        return None


def read_observation(
    path: str | Path, projection: int | None = None, max_side: int = DEFAULT_MAX_IMAGE_SIDE
) -> Observation:
    """Read an observed image and its metadata.

    Parameters
    ----------
    path
        A FITS file (2-D, or N-D with degenerate axes such as (1, 1, Ny, Nx)), a ``.npy``
        array, or a library HDF5 file with a projection (``projection=3`` or ``"f.hdf5:3"``).
    projection
        1-based projection of a library file, or plane of a 3-D FITS cube / ``.npy`` stack.
    max_side
        Largest accepted image side [pixels], checked on the file's header before its
        pixels are read.

    Returns
    -------
    Observation
        (H, W) float32 image (NaN kept; infinite pixels made NaN, with a note and a
        warning) and the typed metadata the file gives: for FITS the WCS pixel scale and
        orientation, the beam (``BMAJ``/``BMIN``/``BPA``), ``BUNIT`` and a positive
        ``DISTANCE`` [pc]; for a library file its pixel scale, unit and identity.
    """
    observation = _read_observation(path, projection, max_side)
    image, infinite = blank_infinite(observation.image)
    if not infinite:
        return observation
    note = f"{infinite} infinite pixel(s) (inf or -inf) treated as blank, like NaN"
    log.warning("%s: %s", safe_name(observation.source), note)
    return dataclasses.replace(observation, image=image, notes=(*observation.notes, note))


def _read_observation(path: str | Path, projection: int | None, max_side: int) -> Observation:
    path, projection = _split_projection(path, projection)
    fmt = sniff_format(path)
    if fmt == "hdf5":
        found = read_library_projection(path, projection, max_side)
        origin = LibraryOrigin(found.system, found.snapshot, found.projection)
        return Observation(
            found.image,
            path,
            au_per_pixel=found.au_per_pixel,
            intensity_unit=found.intensity_unit,
            library_image=origin,
        )
    if fmt == "npy":
        return Observation(as_image(path, read_npy(path, max_side), "image", projection), path)
    array, fits_header = read_fits(path, None, max_side)
    header = select_header(fits_header)
    unit = header.get("BUNIT")
    distance, distance_problem = _header_distance(fits_header)
    problems = {
        fact: problem
        for fact, problem in (
            ("distance", distance_problem),
            ("pixel_scale", wcs_scale_problem(fits_header)),
            ("beam", beam_problem(fits_header)),
        )
        if problem is not None
    }
    usable_wcs = "pixel_scale" not in problems
    return Observation(
        as_image(path, array, "image", projection),
        path,
        pixel_scale_arcsec=pixel_scale_arcsec(path, fits_header) if usable_wcs else None,
        beam_arcsec=None if "beam" in problems else beam_arcsec(fits_header),
        sky_per_pixel=sky_per_pixel(path, fits_header) if usable_wcs else None,
        intensity_unit=unit if isinstance(unit, str) and unit.strip() else None,
        distance_pc=distance,
        distance_from=None if distance is None else "header DISTANCE",
        header=MappingProxyType(header),
        wcs_header=celestial_header(path, fits_header) if usable_wcs else None,
        problems=MappingProxyType(problems),
    )


def _split_projection(path: str | Path, projection: int | None) -> tuple[Path, int | None]:
    """Accept ``file.hdf5:3`` as file ``file.hdf5`` with projection 3."""
    text = str(path)
    match = re.fullmatch(r"(.+):(\d+)", text)
    if match is None or Path(text).exists():
        return Path(text), projection
    given = int(match[2])
    if projection is not None and projection != given:
        raise InputError(match[1], f"projection given twice ({given} and {projection})")
    return Path(match[1]), given


def _header_distance(header: Mapping[str, Any]) -> tuple[float | None, str | None]:
    """(the header's ``DISTANCE`` [pc], None), (None, None) without one, or (None, problem)."""
    if "DISTANCE" not in header:
        return None, None
    value: Any = header.get("DISTANCE")
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if number and math.isfinite(value) and value > 0:
        return float(value), None
    return None, f"header DISTANCE = {value!r} is not a positive distance in pc"


def beam_in_library_pixels(
    observation: Observation, library_au_per_pixel: float | None
) -> Beam | None:
    """The observation's beam in library pixels, or None when it cannot be known.

    Parameters
    ----------
    observation
        With ``beam_arcsec`` (BMAJ [arcsec], BMIN [arcsec], BPA [deg east of north]) and a
        distance [pc].
    library_au_per_pixel
        Pixel side of the library store's images [AU].

    Returns
    -------
    Beam or None
        (FWHM major [library px], FWHM minor [library px], PA [deg] in the array frame of
        :func:`protomatch.optics.beam.convolve_with_beam`, in [0, 180)), or None without a
        beam, a distance or the library's pixel scale.
    """
    distance = observation.distance_pc
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


#: Pixels below this many noise rms are left out of a noisy image's brightness.
BRIGHTNESS_CLIP_SIGMAS = 2.0


@dataclass(frozen=True, eq=False)
class PreparedObservation:
    """An observation on the library's grid: image, intensity scale, beam and notes.

    Attributes
    ----------
    image
        (size, size) float32 linear image, peak 1, on the library's pixel grid.
    intensity_scale
        Intensity, in the library's unit, of an image value of 1; None when the units
        cannot be converted.
    beam
        The observation's beam in library pixels (:func:`beam_in_library_pixels`); None
        without a beam, a distance or the library's pixel scale.
    notes
        What was done to the image and what was missing, for the report.
    peak
        Peak of the compared field in the observation's own unit (the image value 1).
    field_box
        (centre row, centre column, side) of the compared square in the observation's
        pixels.
    footprint
        (size, size) bool: the library-grid pixels the observation covers (at least half
        of each pixel inside the image and not blank); None when it covers them all. The
        noise-matched comparison blanks the library outside it, as the observation is.
    """

    image: np.ndarray
    intensity_scale: float | None
    notes: tuple[str, ...]
    beam: Beam | None = None
    peak: float | None = None
    field_box: tuple[float, float, float] | None = None
    footprint: np.ndarray | None = None

    @property
    def mean_intensity(self) -> float | None:
        """Mean intensity over the library's field of view, in the library's unit."""
        if self.intensity_scale is None:
            return None
        return self.intensity_scale * float(self.image.mean(dtype=np.float64))

    def clipped_intensity(self, noise: float) -> float | None:
        """Mean intensity counting only pixels above ``BRIGHTNESS_CLIP_SIGMAS`` x ``noise``.

        Parameters
        ----------
        noise
            Noise rms relative to the peak.

        Returns
        -------
        float or None
            In the library's unit; None if the units are unknown or nothing is left.
        """
        if self.intensity_scale is None:
            return None
        value = self.intensity_scale * float(clipped_mean(self.image[None], noise)[0])
        return value if value > 0 else None


def clipped_mean(images: np.ndarray, noise: np.ndarray | float) -> np.ndarray:
    """Mean of each image counting only pixels above ``BRIGHTNESS_CLIP_SIGMAS`` x noise.

    On a noisy image the plain mean is dominated by the noise summed over the whole field
    (beam-correlated, so it barely averages out); the pixels that carry signal give a steadier
    brightness. Compare only values clipped the same way at the same noise level.

    Parameters
    ----------
    images
        (B, H, W) linear images.
    noise
        Noise rms, one for all or (B,), in the images' unit.

    Returns
    -------
    numpy.ndarray
        (B,) float64 clipped means.
    """
    threshold = BRIGHTNESS_CLIP_SIGMAS * np.asarray(noise, dtype=np.float64).reshape(-1, 1, 1)
    kept = np.where(images > threshold, images, 0.0)
    return kept.reshape(len(images), -1).mean(axis=1, dtype=np.float64)


def prepare_observation(
    observation: Observation,
    preprocess: PreprocessConfig,
    library_au_per_pixel: float | None,
    library_unit: str | None = None,
    centre: Centre = "source",
) -> PreparedObservation:
    """Cut, resample and convert an observation like the library's images.

    With a physical pixel scale (:attr:`Observation.physical_pixel_au`) and the library's
    AU per pixel, the library's field of view in AU is resampled flux-conservingly onto the
    library's grid (blank where the observation is smaller); otherwise a square of the
    image's shorter side is cut and resized as the library was. The square is centred on the source
    (``centre="source"``: the brightest point of the image smoothed on the beam's scale,
    where the library has its star) or on the image centre (``"image"``).

    Parameters
    ----------
    observation
        From :func:`read_observation` (with :meth:`Observation.at_distance` applied).
    preprocess
        The model's preprocessing (image size, crop, stretch).
    library_au_per_pixel
        Pixel side of the library store's images [AU]; None when unknown.
    library_unit
        The library's intensity unit (e.g. ``"MJy/sr"``); None when unknown.
    centre
        ``"source"`` or ``"image"``.

    Returns
    -------
    PreparedObservation
        The image on the library's grid, its intensity scale and beam, and notes.
    """
    if centre not in CENTRES:
        raise InputError(observation.source, f"centre must be 'source' or 'image', got {centre!r}")
    image = np.asarray(observation.image, dtype=np.float32)
    notes: list[str] = list(observation.notes)
    au_per_pixel = observation.physical_pixel_au
    middle = _cut_centre(observation, image, centre, au_per_pixel, notes)
    config = preprocess
    box_centre = middle or ((image.shape[0] - 1) / 2, (image.shape[1] - 1) / 2)
    side = float(min(image.shape))
    if au_per_pixel and library_au_per_pixel:
        field_au = library_au_per_pixel * preprocess.size
        side = field_au / float(au_per_pixel)
        grid = (float(au_per_pixel), box_centre, preprocess.size, library_au_per_pixel)
        footprint = _footprint(image, *grid)
        image = resample_field(image, *grid)
        config = preprocess.model_copy(update={"crop_fraction": 1.0})
        notes.append(
            f"resampled from {float(au_per_pixel):.3g} to the library's "
            f"{library_au_per_pixel:.3g} AU/pixel (field {field_au:.0f} AU)"
        )
        if footprint is not None:
            image = np.where(footprint, image, np.float32(np.nan))  # as the library will be
            notes.append(
                f"the observation covers {footprint.mean():.0%} of the library's field; "
                "the library is compared over the same area (blank elsewhere)"
            )
    else:
        footprint = None
        image = square_field(image, min(image.shape), middle)
        notes.append(
            f"no physical pixel scale ({_missing_scale(observation, library_au_per_pixel)} "
            "unknown): a square of the image's shorter side was cut and resized like the "
            "library images; its field of view may differ"
        )
    prepared = prepare_image(image, config)
    if prepared.peak <= 0:
        raise InputError(observation.source, "image has no positive pixel after preparation")
    factor = intensity_factor(
        observation.intensity_unit,
        library_unit,
        beam_arcsec=observation.beam_arcsec,
        pixel_scale_arcsec=observation.pixel_scale_arcsec,
    )
    scale = None if factor is None else float(prepared.peak * factor)
    beam = beam_in_library_pixels(observation, library_au_per_pixel)
    box = (float(box_centre[0]), float(box_centre[1]), side)
    return PreparedObservation(
        prepared.image, scale, tuple(notes), beam, prepared.peak, box, footprint
    )


def _footprint(
    image: np.ndarray,
    au_per_pixel: float,
    centre: tuple[float, float],
    size: int,
    library_au_per_pixel: float,
) -> np.ndarray | None:
    """Library-grid pixels at least half covered by finite pixels of ``image``; None: all."""
    fraction = coverage_field(image, au_per_pixel, centre, size, library_au_per_pixel)
    footprint = fraction >= 0.5
    return None if footprint.all() else footprint


def _missing_scale(observation: Observation, library_au_per_pixel: float | None) -> str:
    if not library_au_per_pixel:
        return "the library's AU per pixel"
    if observation.pixel_scale_arcsec:
        return "a distance (--distance)"
    return "a WCS pixel scale"


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
