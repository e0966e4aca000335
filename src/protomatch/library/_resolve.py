"""Resolve a library's description for ingest: options over the description file over defaults."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from protomatch.errors import InputError
from protomatch.library.description import (
    GivenFacts,
    Known,
    LibraryDescription,
    given_facts,
    read_description,
)
from protomatch.library.readers import LibraryLayout


@dataclass(frozen=True)
class ResolvedDescription:
    """The layout to ingest (parameters as described) and the facts given for every file.

    Attributes
    ----------
    layout
        The discovered library with its parameter names and units as described.
    given
        Pixel scale and unit from the options or the description file.
    unit_sources
        Where each parameter's unit came from.
    log10
        Parameters the description says to compare in log10 (True) or linearly (False).
    description_file
        The description file read, if any.
    """

    layout: LibraryLayout
    given: GivenFacts
    unit_sources: dict[str, str]
    log10: dict[str, bool]
    description_file: Path | None

    def manifest(
        self, scale: Known | None, unit: Known | None, ambiguous: list[str], size: int
    ) -> dict[str, Any]:
        """The store manifest's ``description`` block.

        Parameters
        ----------
        scale
            The stored images' AU per pixel and its source (None: unknown).
        unit
            The intensity unit and its source (None: unknown).
        ambiguous
            File attributes that look like a scale but were not taken.
        size
            Side of the stored images [pixels].

        Returns
        -------
        dict
            JSON-ready: ``au_per_pixel`` (value, source, field_au), ``intensity_unit``
            (value, source), ``parameters`` (unit, source, log), ``unrecognised_attributes``,
            ``description_file``.
        """
        return {
            "au_per_pixel": None
            if scale is None
            else {**scale.as_json(), "field_au": float(scale.value) * size},
            "intensity_unit": None if unit is None else unit.as_json(),
            "parameters": {
                name: {
                    "unit": self.layout.units.get(name, ""),
                    "source": self.unit_sources[name],
                    "log": self.log10.get(name),
                }
                for name in self.layout.param_names
            },
            "unrecognised_attributes": ambiguous,
            "description_file": None
            if self.description_file is None
            else str(self.description_file.resolve()),
        }


def resolve_description(
    layout: LibraryLayout, options: LibraryDescription, description_file: Path | None
) -> ResolvedDescription:
    """Combine the options, the description file and the discovered layout.

    Parameters
    ----------
    layout
        From :func:`protomatch.library.readers.discover_library`.
    options
        What the ingest options say (they win).
    description_file
        The description file, or None.

    Returns
    -------
    ResolvedDescription
        The layout to ingest and the facts given for every file.

    Raises
    ------
    InputError
        Naming the description file, when it is invalid or names parameters a catalog lacks.
    """
    described = LibraryDescription()
    name = "the description"
    if description_file is not None:
        described = read_description(description_file)
        name = description_file.name
    given = given_facts(options, described, name)
    parameters = options.parameters or described.parameters
    default_source = "the library schema" if layout.form == "hdf5" else "the catalog columns"
    if parameters is None:
        sources = {
            p: default_source if layout.units.get(p) else "nowhere" for p in layout.param_names
        }
        return ResolvedDescription(layout, given, sources, {}, description_file)
    if layout.form == "catalog":
        missing = [p for p in parameters if p not in layout.param_names]
        if missing:
            raise InputError(
                description_file or layout.root,
                f"names parameters the catalog lacks: {', '.join(missing)} "
                f"(catalog has {', '.join(layout.param_names)})",
            )
    units, sources = {}, {}
    for param, about in parameters.items():
        if about.unit is not None:
            units[param], sources[param] = about.unit, name
        else:
            units[param] = layout.units.get(param, "")
            sources[param] = default_source if units[param] else "nowhere"
    log10 = {p: about.log for p, about in parameters.items() if about.log is not None}
    chosen = dataclasses.replace(layout, param_names=tuple(parameters), units=units)
    return ResolvedDescription(chosen, given, sources, log10, description_file)
