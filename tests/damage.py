"""Ways to damage an artefact on disk, for the integrity tests: flipped bytes, old manifests."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from protomatch._integrity import file_record


def copy_artefact(source: Path, target: Path) -> Path:
    """A private copy of an artefact folder that a test may damage."""
    shutil.copytree(source, target)
    return target


def flip_byte(path: Path, offset: int, mask: int = 0x10) -> None:
    """XOR one byte of ``path`` (``offset`` may be negative: from the end)."""
    data = bytearray(path.read_bytes())
    data[offset % len(data)] ^= mask
    path.write_bytes(bytes(data))


def edit_manifest(path: Path, **fields: Any) -> dict[str, Any]:
    """Set top-level fields of a JSON manifest (None deletes the field); return it."""
    manifest = json.loads(path.read_text())
    for key, value in fields.items():
        if value is None:
            manifest.pop(key, None)
        else:
            manifest[key] = value
    path.write_text(json.dumps(manifest, indent=2))
    return manifest


def as_written_before_checksums(manifest: Path) -> None:
    """Make a manifest look as protomatch wrote it before checksums: version 1, no files."""
    edit_manifest(manifest, schema_version=1, files=None)


def rerecord(manifest: Path, name: str) -> None:
    """Record ``name``'s current SHA-256 in the manifest, as if it had been written so."""
    content = json.loads(manifest.read_text())
    record = content["files"][name]
    content["files"][name] = {**record, **file_record(manifest.parent / name)}
    manifest.write_text(json.dumps(content, indent=2))
