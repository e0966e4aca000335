"""``protomatch info``: what an artefact (store, model, index, report, ...) knows and what made it.

Only the JSON manifests are read (never weights or pickles). An index also shows its model
and library store when they are still where it recorded them, so one command answers "what
pixel scale and unit will ``match`` use?".
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from protomatch._artefact import read_json
from protomatch._manifests import BY_KIND, load_manifest
from protomatch.errors import InputError
from protomatch.library.description import describe_library

__all__ = ["describe_artefact"]

#: Manifest files looked for in an artefact folder, in order.
_MANIFESTS = ("index.json", "model.json", "manifest.json")


def describe_artefact(path: str | Path) -> str:
    """Lines describing an artefact folder: kind, provenance and what it knows.

    Parameters
    ----------
    path
        A folder written by protomatch (library, store, model, index, observations, report).

    Returns
    -------
    str
        The description, one fact per line.

    Raises
    ------
    InputError
        If the folder holds no protomatch manifest, or it is not valid JSON.
    """
    folder = Path(path)
    manifest = _read_manifest(folder)
    kind = str(manifest.get("kind", "unknown"))
    lines = [f"{folder}: {kind}", *_provenance_lines(manifest)]
    describe = {"library-store": _store_lines, "model": _model_lines, "index": _index_lines}
    lines += describe.get(kind, _generic_lines)(manifest)
    return "\n".join(lines)


def _read_manifest(folder: Path) -> dict[str, Any]:
    if not folder.is_dir():
        raise InputError(folder, "is not a folder written by protomatch")
    for name in _MANIFESTS:
        candidate = folder / name
        if candidate.is_file():
            payload = read_json(candidate)
            if not isinstance(payload, dict):
                raise InputError(candidate, "is not a JSON object")
            kind = payload.get("kind")
            model = BY_KIND.get(kind) if isinstance(kind, str) else None
            return payload if model is None else load_manifest(candidate, model).as_dict()
    raise InputError(folder, f"holds no protomatch manifest ({', '.join(_MANIFESTS)})")


def _provenance_lines(manifest: Mapping[str, Any]) -> list[str]:
    return [
        f"  made by: {manifest.get('command', '?')}",
        f"  created: {manifest.get('created_utc', '?')} with protomatch "
        f"{manifest.get('protomatch_version', '?')}",
    ]


def _store_lines(manifest: Mapping[str, Any]) -> list[str]:
    counts = manifest.get("counts", {})
    shape = manifest.get("image_shape", [0, 0, 0])
    lines = [
        f"  source: {manifest.get('source')} ({manifest.get('form')})",
        f"  images: {counts.get('images')} of {shape[-1]} x {shape[-1]} px from "
        f"{counts.get('files')} inputs ({counts.get('skipped', 0)} skipped)",
        f"  fingerprint: {manifest.get('fingerprint')}",
    ]
    description = manifest.get("description")
    if description:
        return lines + [f"  {line}" for line in describe_library(description)]
    scale, unit = manifest.get("au_per_pixel"), manifest.get("intensity_unit")
    return [
        *lines,
        f"  pixel scale: {'UNKNOWN' if scale is None else f'{scale:.4g} AU/pixel'} "
        "(source not recorded: written before library descriptions)",
        f"  intensity unit: {unit or 'UNKNOWN'}",
        f"  parameters: {', '.join(manifest.get('parameters', []))}",
    ]


def _model_lines(manifest: Mapping[str, Any]) -> list[str]:
    params = manifest.get("parameters", {})
    flags = params.get("normalisation", {}).get("log10", [])
    units = params.get("units", {})
    shown = ", ".join(
        f"{name} [{units.get(name) or 'no unit'}]" + (" (log10)" if log else "")
        for name, log in zip(params.get("names", []), flags)
    )
    library = manifest.get("library", {})
    metrics = manifest.get("metrics") or {}
    best = metrics.get("best") or {}
    scale = library.get("au_per_pixel")
    lines = [
        f"  trained on: {library.get('path')} (fingerprint {library.get('fingerprint')})",
        f"  library pixel scale: {'UNKNOWN' if scale is None else f'{scale:.4g} AU/pixel'}",
        f"  parameters: {shown}",
        f"  brightness-aware: {'yes' if manifest.get('brightness') else 'no'}",
        f"  epochs: {metrics.get('epochs_run')} run, best {metrics.get('best_epoch')}",
    ]
    if best:
        numbers = ", ".join(f"{k} {v:.4g}" for k, v in best.items() if isinstance(v, float))
        lines.append(f"  best epoch: {numbers}")
    if manifest.get("complete") is False:
        lines.append(
            "  UNFINISHED: training was killed or is still running (finish it with train --resume)"
        )
    return lines


def _index_lines(manifest: Mapping[str, Any]) -> list[str]:
    config = manifest.get("config", {})
    model, library = manifest.get("model", {}), manifest.get("library", {})
    lines = [
        f"  {manifest.get('n_images')} embeddings of dimension {manifest.get('dim')}, "
        f"FAISS kind {config.get('kind')}",
        f"  model: {model.get('path')} (fingerprint {model.get('fingerprint')})",
        f"  library store: {library.get('path')} (fingerprint {library.get('fingerprint')})",
    ]
    store_path = Path(str(library.get("path", "")))
    if (store_path / "manifest.json").is_file():
        store = _read_manifest(store_path)
        lines += ["  the library store:", *(f"  {line}" for line in _store_lines(store))]
    else:
        lines.append("  (the library store is not where the index recorded it)")
    return lines


def _generic_lines(manifest: Mapping[str, Any]) -> list[str]:
    skip = {"kind", "schema_version", "command", "created_utc", "protomatch_version"}
    return [
        f"  {key}: {_short(value)}"
        for key, value in manifest.items()
        if (key not in skip and not isinstance(value, (dict, list))) or key == "settings"
    ]


def _short(value: Any, limit: int = 100) -> str:
    text = json.dumps(value) if isinstance(value, (dict, list)) else str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
