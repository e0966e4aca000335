"""What a library is: its pixel scale, intensity unit and parameters, and where each came from.

A library written by another code rarely carries protomatch's own attributes. At ingest its
description is resolved from, in order of precedence:

1. ingest options (``--au-per-pixel``, ``--field-of-view-au``, ``--intensity-unit``);
2. a description file, ``library.yaml`` in the library folder or ``--description FILE``
   (:class:`LibraryDescription`; unknown keys are an error);
3. the files' own attributes under the names in :data:`PIXEL_SCALE_ATTRIBUTES`,
   :data:`FIELD_OF_VIEW_ATTRIBUTES` and :data:`INTENSITY_UNIT_ATTRIBUTES` (case-insensitive);
4. defaults: parameter units of the HDF5 schema or of the catalog's ``name [unit]`` columns.

A pixel scale under an ambiguous name (``pixel_size``, ``pixel_scale``: AU? arcsec? cm?) is
never guessed; ingest lists such attributes so the user can say what they mean. Every value
carries its source (:class:`Known`), which the store manifest records.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydantic
import yaml

from protomatch.errors import InputError, validation_message

__all__ = [
    "DESCRIPTION_FILE",
    "FIELD_OF_VIEW_ATTRIBUTES",
    "INTENSITY_UNIT_ATTRIBUTES",
    "PIXEL_SCALE_ATTRIBUTES",
    "FileAttributes",
    "GivenFacts",
    "Known",
    "LibraryDescription",
    "ParameterDescription",
    "describe_library",
    "find_description",
    "given_facts",
    "read_description",
    "read_file_attributes",
]

#: Name of the description file looked for in the library folder.
DESCRIPTION_FILE = "library.yaml"
#: File attributes taken as the pixel side in AU (compared case-insensitively).
PIXEL_SCALE_ATTRIBUTES = ("au_per_pixel", "pixel_scale_au", "pixel_size_au", "au_per_pix")
#: File attributes taken as the image side in AU.
FIELD_OF_VIEW_ATTRIBUTES = ("field_of_view_au", "fov_au")
#: File attributes taken as the images' intensity unit.
INTENSITY_UNIT_ATTRIBUTES = ("intensity_unit", "bunit")
#: Attribute names that look like a pixel scale but do not say their unit.
_AMBIGUOUS_SCALE_WORDS = ("pix", "scale", "fov", "field", "cdelt", "dx", "resolution")


class ParameterDescription(pydantic.BaseModel, extra="forbid", frozen=True):
    """One parameter of a library: its unit and whether it is compared in log10.

    Attributes
    ----------
    unit
        Unit string shown in reports (e.g. ``"Msun"``); None keeps the default.
    log
        True: take log10 before normalising (the values must be positive); None: the
        training setting ``parameters.log10`` decides.
    """

    unit: str | None = None
    log: bool | None = None


class LibraryDescription(pydantic.BaseModel, extra="forbid", frozen=True):
    """What the user says about a library (options or ``library.yaml``); all optional.

    Attributes
    ----------
    au_per_pixel
        Pixel side of the library's images as written [AU].
    field_of_view_au
        Side of the library's images [AU] (instead of ``au_per_pixel``).
    intensity_unit
        Unit of the image values, e.g. ``"Jy/sr"`` (see :mod:`protomatch.optics.units`).
    parameters
        The parameters to use, in order, with units and log scaling (None: the library's).
    """

    au_per_pixel: float | None = pydantic.Field(None, gt=0.0, allow_inf_nan=False)
    field_of_view_au: float | None = pydantic.Field(None, gt=0.0, allow_inf_nan=False)
    intensity_unit: str | None = pydantic.Field(None, min_length=1)
    parameters: dict[str, ParameterDescription] | None = None

    @pydantic.model_validator(mode="after")
    def _one_scale(self) -> LibraryDescription:
        if self.au_per_pixel is not None and self.field_of_view_au is not None:
            raise ValueError(
                "give the pixel scale (--au-per-pixel, au_per_pixel) or the field of view "
                "(--field-of-view-au, field_of_view_au), not both"
            )
        if self.parameters is not None and not self.parameters:
            raise ValueError("parameters, when given, must name at least one parameter")
        return self


@dataclass(frozen=True)
class Known:
    """A value and where it came from, e.g. ``Known(30.0, "--au-per-pixel")``."""

    value: Any
    source: str

    def as_json(self) -> dict[str, Any]:
        """``{"value": ..., "source": ...}`` for a manifest."""
        return {"value": self.value, "source": self.source}


def find_description(root: Path, given: Path | None) -> Path | None:
    """The description file to read: ``given``, else ``root/library.yaml`` if present.

    Parameters
    ----------
    root
        The library folder.
    given
        A path from ``--description`` (must exist), or None.

    Returns
    -------
    pathlib.Path or None
        The file, or None when there is none.
    """
    if given is not None:
        if not Path(given).is_file():
            raise InputError(given, "description file does not exist")
        return Path(given)
    default = root / DESCRIPTION_FILE
    return default if default.is_file() else None


def read_description(path: Path) -> LibraryDescription:
    """Read and validate a library description file (YAML).

    Parameters
    ----------
    path
        The file.

    Returns
    -------
    LibraryDescription
        Its content.

    Raises
    ------
    InputError
        Naming the file, for YAML that does not parse or content that does not validate.
    """
    try:
        content = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise InputError(path, f"cannot be read as YAML ({exc})") from None
    if content is None:
        content = {}
    if not isinstance(content, dict):
        raise InputError(path, "must be a YAML mapping of description keys")
    try:
        return LibraryDescription.model_validate(content)
    except pydantic.ValidationError as exc:
        raise InputError(path, validation_message(exc)) from None


@dataclass(frozen=True)
class FileAttributes:
    """What a library file's attributes say about its pixel scale and unit.

    Attributes
    ----------
    au_per_pixel
        Pixel side [AU] with the attribute it came from (a field of view already divided
        by the image side), or None.
    intensity_unit
        Unit's first word with its attribute, or None.
    ambiguous
        Names of numeric attributes that look like a scale but are not taken.
    """

    au_per_pixel: Known | None = None
    intensity_unit: Known | None = None
    ambiguous: tuple[str, ...] = ()


def read_file_attributes(attrs: Mapping[str, Any], side: int) -> FileAttributes:
    """Read the recognised scale and unit attributes of one file.

    Parameters
    ----------
    attrs
        The file's attributes (an ``h5py`` ``AttributeManager`` or a dict).
    side
        Side of the file's images [pixels], to turn a field of view into a pixel scale.

    Returns
    -------
    FileAttributes
        What was recognised, and the ambiguous names left alone.
    """
    by_name = {str(name).lower(): name for name in attrs}
    scale = _first_positive(attrs, by_name, PIXEL_SCALE_ATTRIBUTES, 1.0)
    if scale is None:
        scale = _first_positive(attrs, by_name, FIELD_OF_VIEW_ATTRIBUTES, 1.0 / side)
    unit = None
    for wanted in INTENSITY_UNIT_ATTRIBUTES:
        if wanted in by_name:
            text = _text(attrs[by_name[wanted]])
            if text:
                unit = Known(text.split()[0], f"file attribute '{by_name[wanted]}'")
                break
    recognised = {*PIXEL_SCALE_ATTRIBUTES, *FIELD_OF_VIEW_ATTRIBUTES}
    ambiguous = tuple(
        sorted(
            original
            for lower, original in by_name.items()
            if lower not in recognised
            and any(word in lower for word in _AMBIGUOUS_SCALE_WORDS)
            and _number(attrs[original]) is not None
        )
    )
    return FileAttributes(scale, unit, ambiguous)


def _first_positive(
    attrs: Mapping[str, Any], by_name: Mapping[str, str], names: tuple[str, ...], factor: float
) -> Known | None:
    for wanted in names:
        if wanted not in by_name:
            continue
        value = _number(attrs[by_name[wanted]])
        if value is not None and value > 0:
            return Known(value * factor, f"file attribute '{by_name[wanted]}'")
    return None


def _number(raw: Any) -> float | None:
    try:
        value = float(np.asarray(raw).reshape(()))
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _text(raw: Any) -> str | None:
    if isinstance(raw, bytes):
        raw = raw.decode(errors="replace")
    if isinstance(raw, np.ndarray) and raw.shape == ():
        raw = raw.item()
    return raw.strip() if isinstance(raw, str) and raw.strip() else None


@dataclass(frozen=True)
class GivenFacts:
    """The pixel scale and unit the user gave (options or description file), with sources.

    Attributes
    ----------
    scale
        Pixel side [AU] (``kind="au_per_pixel"``) or image side [AU]
        (``kind="field_of_view_au"``) of the files as written, or None.
    scale_kind
        Which of the two ``scale`` is.
    unit
        The intensity unit, or None.
    """

    scale: Known | None = None
    scale_kind: str = "au_per_pixel"
    unit: Known | None = None

    def file_scale(self, side: int) -> Known | None:
        """Pixel side [AU] of a file whose images are ``side`` pixels across, or None."""
        if self.scale is None:
            return None
        value = float(self.scale.value)
        return Known(
            value / side if self.scale_kind == "field_of_view_au" else value, self.scale.source
        )


def given_facts(
    options: LibraryDescription, file: LibraryDescription, file_name: str
) -> GivenFacts:
    """Combine the options and the description file: options win, each value keeps its source.

    Parameters
    ----------
    options
        From the ingest options (sources ``--au-per-pixel`` etc.).
    file
        From the description file (empty when there is none).
    file_name
        How to name the description file as a source.

    Returns
    -------
    GivenFacts
        The scale and unit to use for every file, with their sources.
    """
    scale, kind = None, "au_per_pixel"
    for described, source in ((options, None), (file, file_name)):
        for field in ("au_per_pixel", "field_of_view_au"):
            value = getattr(described, field)
            if value is not None and scale is None:
                scale = Known(float(value), source or f"--{field.replace('_', '-')}")
                kind = field
    unit = None
    if options.intensity_unit:
        unit = Known(options.intensity_unit, "--intensity-unit")
    elif file.intensity_unit:
        unit = Known(file.intensity_unit, file_name)
    return GivenFacts(scale, kind, unit)


def describe_library(description: Mapping[str, Any]) -> list[str]:
    """Lines saying what a store knows about its library and what the unknowns disable.

    Parameters
    ----------
    description
        The ``description`` block of a store manifest.

    Returns
    -------
    list of str
        One line per fact; empty for a store written before descriptions were recorded.
    """
    if not description:
        return []
    lines = ["library description:"]
    scale = description.get("au_per_pixel")
    if scale:
        lines.append(
            f"  pixel scale: {scale['value']:.4g} AU/pixel as stored "
            f"(field {scale['field_au']:.4g} AU), from {scale['source']}"
        )
    else:
        ambiguous = description.get("unrecognised_attributes") or []
        seen = ""
        if ambiguous:
            seen = f"; the files have {', '.join(ambiguous)}, whose unit is not stated"
        lines.append(
            f"  pixel scale: UNKNOWN{seen}. Observations with a sky pixel scale cannot be "
            "matched physically (match refuses them unless --unscaled): give --au-per-pixel "
            "or --field-of-view-au, or au_per_pixel in library.yaml"
        )
    unit = description.get("intensity_unit")
    if unit:
        lines.append(f"  intensity unit: {unit['value']}, from {unit['source']}")
    else:
        lines.append(
            "  intensity unit: UNKNOWN. Observations' brightness cannot be put in the "
            "library's unit (match refuses a brightness-aware model unless --unscaled): give "
            "--intensity-unit, or intensity_unit in library.yaml"
        )
    params = description.get("parameters", {})
    shown = ", ".join(
        f"{name} [{p['unit'] or 'no unit'}]" + (" (log)" if p.get("log") else "")
        for name, p in params.items()
    )
    sources = sorted({p["source"] for p in params.values()})
    lines.append(f"  parameters: {shown}; units from {', '.join(sources)}")
    return lines
