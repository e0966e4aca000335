"""What an observation must say before it is matched, and what the user may say for it.

A match compares an observation with the library at the library's physical pixel scale,
through the observation's beam and, for brightness-aware models, at its brightness in the
library's unit. :func:`required_facts` checks that everything this needs is known and stops
with one line naming what is missing and the option that supplies it; matching without it
happens only when asked (``--unscaled``), and then the missing facts are listed for the
report. :class:`ObservationFacts` holds what the user gives on the command line (for a
``.npy`` image or a FITS file without the keywords), which :func:`with_facts` applies.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import pydantic

from protomatch.errors import InputError
from protomatch.matching.observation import Observation
from protomatch.optics.units import intensity_factor

__all__ = ["ObservationFacts", "required_facts", "with_facts"]

_UNSCALED = "or --unscaled to match without it"
#: The option that supplies each fact a header value may be invalid for.
_OPTION_FOR = {
    "distance": "--distance",
    "pixel_scale": "--pixel-scale or --au-per-pixel",
    "beam": "--beam",
}


class ObservationFacts(pydantic.BaseModel, extra="forbid", frozen=True):
    """Facts about the observation(s) given by the user; each overrides the file's.

    Attributes
    ----------
    distance_pc
        Distance of the source [pc].
    pixel_scale_arcsec
        Pixel side on the sky [arcsec] (for images without a WCS).
    au_per_pixel
        Pixel side at the source [AU] (instead of ``pixel_scale_arcsec`` and a distance).
    beam_arcsec
        (major FWHM [arcsec], minor FWHM [arcsec], PA [deg east of north]).
    intensity_unit
        Unit of the pixel values, e.g. ``"mJy/beam"``.
    """

    distance_pc: float | None = pydantic.Field(None, gt=0.0, allow_inf_nan=False)
    pixel_scale_arcsec: float | None = pydantic.Field(None, gt=0.0, allow_inf_nan=False)
    au_per_pixel: float | None = pydantic.Field(None, gt=0.0, allow_inf_nan=False)
    beam_arcsec: tuple[float, float, float] | None = None
    intensity_unit: str | None = pydantic.Field(None, min_length=1)

    @pydantic.field_validator("beam_arcsec")
    @classmethod
    def _beam(cls, beam: tuple[float, float, float] | None) -> tuple[float, float, float] | None:
        if beam is None:
            return None
        major, minor, angle = beam
        if not all(math.isfinite(v) for v in beam) or major <= 0 or minor <= 0:
            raise ValueError("give positive FWHMs (arcsec) and a finite PA (deg)")
        if minor > major:
            raise ValueError(f"minor FWHM {minor} exceeds major FWHM {major}")
        return (float(major), float(minor), float(angle))

    @pydantic.model_validator(mode="after")
    def _one_scale(self) -> ObservationFacts:
        if self.pixel_scale_arcsec is not None and self.au_per_pixel is not None:
            raise ValueError("give --pixel-scale (arcsec) or --au-per-pixel (AU), not both")
        return self


def with_facts(observation: Observation, facts: ObservationFacts) -> Observation:
    """The observation with the user's facts applied; each override is noted.

    Parameters
    ----------
    observation
        As read by :func:`protomatch.matching.observation.read_observation`.
    facts
        What the user gave.

    Returns
    -------
    Observation
        A copy with the given fields set (``distance_from="given"`` for a distance), header
        problems of the overridden keywords cleared, and a note per override.
    """
    changes: dict[str, Any] = {}
    notes = list(observation.notes)
    problems = dict(observation.problems)
    given = {
        "distance": ("distance_pc", facts.distance_pc, "--distance", " pc", "header's DISTANCE"),
        "pixel_scale": (
            "pixel_scale_arcsec",
            facts.pixel_scale_arcsec,
            "--pixel-scale",
            '"',
            "WCS pixel scale",
        ),
        "au_per_pixel": (
            "au_per_pixel",
            facts.au_per_pixel,
            "--au-per-pixel",
            " AU",
            "file's pixel scale",
        ),
        "beam": ("beam_arcsec", facts.beam_arcsec, "--beam", '"', "header's beam"),
        "intensity_unit": (
            "intensity_unit",
            facts.intensity_unit,
            "--intensity-unit",
            "",
            "header's BUNIT",
        ),
    }
    for fact, (field, value, option, unit, what) in given.items():
        if value is None:
            continue
        before = getattr(observation, field)
        if fact in problems:
            notes.append(f"{problems.pop(fact)}: ignored, {option} given")
        elif before is not None and before != value:
            was = _shown(before, unit)
            notes.append(f"{option} {_shown(value, unit)} overrides the {what} {was}")
        changes[field] = value
    if facts.distance_pc is not None:
        changes["distance_from"] = "given"
    if facts.au_per_pixel is not None and observation.library_image is None:
        problems.pop("pixel_scale", None)
    changes.update(notes=tuple(notes), problems=problems)
    return dataclasses.replace(observation, **changes)


def _shown(value: object, unit: str) -> str:
    if isinstance(value, tuple):
        return " x ".join(f"{v:g}" for v in value[:2]) + f'" PA {value[2]:g} deg'
    if isinstance(value, float):
        return f"{value:g}{unit}"
    return str(value)


def required_facts(
    observation: Observation,
    *,
    library_au_per_pixel: float | None,
    library_unit: str | None,
    store: Path,
    brightness_aware: bool,
    unscaled: bool,
) -> tuple[str, ...]:
    """Check that an observation can be matched physically; stop or list what is missing.

    Parameters
    ----------
    observation
        With the user's facts applied.
    library_au_per_pixel
        Pixel side of the library store's images [AU]; None when unknown.
    library_unit
        The library's intensity unit; None when unknown.
    store
        The library store folder (named when it lacks something).
    brightness_aware
        Whether the model compares absolute brightness (then the units must convert).
    unscaled
        Proceed without what is missing instead of stopping.

    Returns
    -------
    tuple of str
        What is missing (empty when everything is known); non-empty only when ``unscaled``.

    Raises
    ------
    InputError
        One line naming the file and what is wrong: an invalid header value (always), or
        the first missing fact and the option that supplies it (unless ``unscaled``).
    """
    for fact, problem in observation.problems.items():
        raise InputError(
            observation.source, f"{problem}; fix the header or give {_OPTION_FOR[fact]}"
        )
    if observation.library_image is not None:
        return ()
    missing = _missing(observation, library_au_per_pixel, library_unit, store, brightness_aware)
    if missing and not unscaled:
        _, path, message = missing[0]
        raise InputError(path, message)
    return tuple(what for what, _, _ in missing)


def _missing(
    observation: Observation,
    library_au_per_pixel: float | None,
    library_unit: str | None,
    store: Path,
    brightness_aware: bool,
) -> list[tuple[str, Path, str]]:
    """(what, file to name, one-line message) of every missing fact, most basic first."""
    source = observation.source
    found: list[tuple[str, Path, str]] = []
    if observation.au_per_pixel is None and observation.pixel_scale_arcsec is None:
        found.append(
            (
                "the observation's pixel scale",
                source,
                "has no pixel scale (no celestial WCS with CDELT or CD): give --pixel-scale "
                f"ARCSEC with --distance PC, or --au-per-pixel AU; {_UNSCALED}",
            )
        )
    elif observation.au_per_pixel is None and observation.distance_pc is None:
        found.append(
            (
                "the distance",
                source,
                "has no distance (no DISTANCE keyword): give --distance PC or --distance-range "
                f"LO HI; {_UNSCALED}",
            )
        )
    if library_au_per_pixel is None:
        found.append(
            (
                "the library's pixel scale",
                store,
                "records no pixel scale for its images: re-ingest with --au-per-pixel or "
                f"--field-of-view-au (or au_per_pixel in library.yaml); {_UNSCALED}",
            )
        )
    if observation.beam_arcsec is None:
        found.append(
            (
                "the beam",
                source,
                "has no beam (BMAJ/BMIN/BPA): give --beam MAJOR MINOR PA (arcsec, arcsec, deg "
                f"east of north), so the library is compared through it; {_UNSCALED}",
            )
        )
    if brightness_aware:
        found += _unit_problems(observation, library_unit, store)
    return found


def _unit_problems(
    observation: Observation, library_unit: str | None, store: Path
) -> list[tuple[str, Path, str]]:
    what = "the brightness in the library's unit"
    tail = f"the model compares absolute brightness; {_UNSCALED}"
    if observation.intensity_unit is None:
        return [
            (
                what,
                observation.source,
                f"has no intensity unit (BUNIT): give --intensity-unit; {tail}",
            )
        ]
    if library_unit is None:
        return [
            (
                what,
                store,
                "records no intensity unit: re-ingest with --intensity-unit (or intensity_unit "
                f"in library.yaml); {tail}",
            )
        ]
    factor = intensity_factor(
        observation.intensity_unit,
        library_unit,
        beam_arcsec=observation.beam_arcsec,
        pixel_scale_arcsec=observation.pixel_scale_arcsec,
    )
    if factor is None:
        return [
            (
                what,
                observation.source,
                f"intensities in {observation.intensity_unit!r} cannot be put in the library's "
                f"{library_unit!r} (a per-beam unit needs the beam, per-pixel the pixel scale); "
                f"{tail}",
            )
        ]
    return []
