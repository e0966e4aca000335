"""Content hashes of artefact files: written with every artefact, checked when it is read.

Each manifest lists its artefact's data files under ``files`` (SHA-256 and size, see
:class:`protomatch._manifests.FileRecord`). Small files (weights, tables, FAISS index, ids)
are read once, hashed and parsed from the same bytes, so a flipped byte is refused before it
is used. A store's ``images.h5`` can be far larger than what one command reads, so its images
are also hashed in blocks of about 1 MiB: a command checks only the blocks it reads, once
each. ``protomatch verify`` (:func:`protomatch.verify.verify_artefact`) re-hashes everything.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from protomatch._manifests import FileRecord
from protomatch.errors import InputError

log = logging.getLogger(__name__)

__all__ = [
    "BLOCK_BYTES",
    "check_bytes",
    "corrupted",
    "file_record",
    "folder_records",
    "image_block_hashes",
    "images_per_block",
    "nonfinite_problem",
    "note_no_checksums",
    "read_checked",
    "sha256_file",
]

#: Target size of one hashed block of store images, bytes.
BLOCK_BYTES = 2**20
_READ_CHUNK = 4 * 2**20


def sha256_file(path: Path) -> str:
    """The SHA-256 of a file's bytes, read in chunks.

    Parameters
    ----------
    path
        The file.

    Returns
    -------
    str
        64 hex digits.
    """
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_READ_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def images_per_block(image_shape: Sequence[int]) -> int:
    """Images per hashed block: as many as fit in :data:`BLOCK_BYTES` (at least one).

    Parameters
    ----------
    image_shape
        (H, W) of one float32 image.

    Returns
    -------
    int
        Block length in images.
    """
    image_bytes = 4 * int(np.prod(image_shape))
    return max(1, BLOCK_BYTES // max(1, image_bytes))


def image_block_hashes(images: np.ndarray, per_block: int) -> list[str]:
    """SHA-256 of each block of ``per_block`` consecutive images.

    Parameters
    ----------
    images
        (N, H, W) little-endian float32 images (e.g. a memory map of ``images.h5``).
    per_block
        Images per block; the last block may be shorter.

    Returns
    -------
    list of str
        ceil(N / per_block) hex digests of the blocks' bytes.
    """
    return [
        hashlib.sha256(np.ascontiguousarray(images[start : start + per_block]).data).hexdigest()
        for start in range(0, len(images), per_block)
    ]


def file_record(path: Path, **extra: Any) -> dict[str, Any]:
    """The manifest record of one file: its SHA-256 and size (and ``extra`` fields).

    Parameters
    ----------
    path
        The written file.
    **extra
        More fields of the record (e.g. ``blocks`` of ``images.h5``).

    Returns
    -------
    dict
        ``sha256``, ``bytes`` and ``extra``.
    """
    return {"sha256": sha256_file(path), "bytes": path.stat().st_size, **extra}


def folder_records(folder: Path, exclude: tuple[str, ...] = ()) -> dict[str, dict[str, Any]]:
    """The record of every file under ``folder`` (e.g. a report), by relative POSIX path.

    Parameters
    ----------
    folder
        The artefact folder, complete but for its manifest.
    exclude
        Relative paths left out (the manifest itself).

    Returns
    -------
    dict
        Relative path -> :func:`file_record`, in sorted order.
    """
    paths = sorted(p for p in folder.rglob("*") if p.is_file())
    records = {p.relative_to(folder).as_posix(): p for p in paths}
    return {name: file_record(path) for name, path in records.items() if name not in exclude}


def nonfinite_problem(values: np.ndarray, what: str) -> str | None:
    """Why ``values`` may not enter a store (NaN or infinite entries), or None.

    Parameters
    ----------
    values
        (P, ...) one unit's images or per-image numbers.
    what
        How the message names them (e.g. ``"image"``).

    Returns
    -------
    str or None
        E.g. "image 2 of 8 has 3 NaN/infinite value(s); ...", naming the first bad one.
    """
    bad = ~np.isfinite(values.reshape(len(values), -1)).all(axis=1)
    if not bad.any():
        return None
    first = int(np.flatnonzero(bad)[0])
    count = int((~np.isfinite(values[first])).sum())
    return (
        f"{what} {first + 1} of {len(values)} has {count} NaN/infinite value(s); they never "
        "enter a store: fix the input, or pass --skip-bad to leave it out"
    )


def check_bytes(path: Path, data: bytes, record: FileRecord) -> None:
    """Refuse ``data`` (the bytes read from ``path``) if it differs from its record.

    Parameters
    ----------
    path
        The file, named in the message.
    data
        Its bytes as read.
    record
        Its size and SHA-256 as the manifest records them.

    Raises
    ------
    InputError
        If the size or the SHA-256 differs.
    """
    if len(data) != record.bytes:
        raise corrupted(path, f"is {len(data)} bytes, its manifest says {record.bytes}")
    if hashlib.sha256(data).hexdigest() != record.sha256:
        raise corrupted(path, "does not match the SHA-256 its manifest records")


def read_checked(path: Path, records: Mapping[str, FileRecord] | None) -> bytes:
    """Read a small artefact file whole and check it against its manifest record.

    Parameters
    ----------
    path
        The file; its record is ``records[path.name]``.
    records
        The manifest's ``files`` (None for an artefact written before checksums: the bytes
        are returned unchecked).

    Returns
    -------
    bytes
        The file's contents.

    Raises
    ------
    InputError
        If the file is missing or unreadable, has no record, or differs from its record.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError(path, "missing; the artefact is incomplete") from None
    except OSError as exc:
        raise InputError(path, f"cannot be read ({exc.strerror or exc})") from None
    if records is not None:
        record = records.get(path.name)
        if record is None:
            raise InputError(path, "has no checksum in its manifest; the artefact was altered")
        check_bytes(path, data, record)
    return data


def corrupted(path: Path, what: str) -> InputError:
    """The error for a file whose content is not what was written.

    Parameters
    ----------
    path
        The file.
    what
        How it differs.

    Returns
    -------
    InputError
        "``path``: ``what``: it is corrupted or was changed after it was written ...".
    """
    return InputError(
        path,
        f"{what}: it is corrupted or was changed after it was written; "
        f"rebuild it (protomatch verify {path.parent} checks every file)",
    )


def note_no_checksums(path: Path, kind: str) -> None:
    """Say (one line) that an artefact from before checksums is used unchecked.

    Parameters
    ----------
    path
        The artefact folder.
    kind
        What it is, e.g. ``"library store"``.
    """
    log.warning(
        "note: %s %s carries no checksums (written before they were recorded), so its "
        "files are used unchecked; rebuild it to have them checked",
        kind,
        path,
    )
