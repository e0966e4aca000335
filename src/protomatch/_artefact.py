"""Atomic writes, JSON manifests and fingerprints shared by every artefact.

Every artefact protomatch writes (library, store, model, index, report) is a folder with a
``manifest.json`` (or ``<name>.json``) saying what made it. Files appear atomically: they are
written to a temporary sibling and renamed, so an interrupted run never leaves a half-written
file under the final name. A temporary's name carries the pid of the process writing it
(``.NAME.pid<PID>.<random>.tmp``), so one left by a killed run is provably stale once that
process is gone, and :func:`remove_stale_temporaries` removes it.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from protomatch import __version__
from protomatch.errors import InputError

#: The name of a temporary: ``.NAME.pid<PID>.<random>.tmp``.
_TEMPORARY = re.compile(r"\.(?P<name>.+)\.pid(?P<pid>\d+)\.[^.]*\.tmp")
#: The largest manifest read (a store of 10^6 images records about 1 MB of checksums).
MAX_MANIFEST_BYTES = 64 * 2**20


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` if the block succeeds.

    Parameters
    ----------
    path
        The final file; its folder is created if needed.

    Returns
    -------
    Iterator of pathlib.Path
        The temporary file to write (removed if the block fails).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=_temporary_prefix(path), suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_current_umask())  # mkstemp makes owner-only files
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_directory(path: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; move it to ``path`` if the block succeeds.

    Parameters
    ----------
    path
        The final folder.
    overwrite
        Replace an existing non-empty ``path``; otherwise that is refused.

    Returns
    -------
    Iterator of pathlib.Path
        The temporary folder to fill (removed if the block fails).

    Raises
    ------
    InputError
        If ``path`` is not empty (or not a folder) and ``overwrite`` is false.
    """
    path = Path(path)
    ensure_writable_output(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=_temporary_prefix(path), suffix=".tmp", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_current_umask())
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _temporary_prefix(path: Path) -> str:
    """The start of a temporary's name for ``path``: ``.NAME.pid<PID>.``."""
    return f".{path.name}.pid{os.getpid()}."


def remove_stale_temporaries(folder: Path, name: str | None = None) -> list[Path]:
    """Remove the temporaries in ``folder`` whose writing process is gone.

    A temporary of a live process (another run, or this one) is never touched; nor is one
    without a pid in its name (it cannot be proven stale).

    Parameters
    ----------
    folder
        The folder to look in (nothing happens if it is not one).
    name
        Only temporaries for this file or folder name (None: any).

    Returns
    -------
    list of pathlib.Path
        The removed temporaries.
    """
    if not folder.is_dir():
        return []
    removed = []
    for entry in folder.iterdir():
        match = _TEMPORARY.fullmatch(entry.name)
        if match is None or name not in (None, match["name"]) or _running(int(match["pid"])):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


def _running(pid: int) -> bool:
    """Whether process ``pid`` exists (always True where that cannot be asked safely)."""
    if pid == os.getpid() or os.name != "posix":
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def ensure_writable_output(path: Path, overwrite: bool) -> None:
    """Refuse to replace a non-empty output unless ``overwrite`` is set.

    Parameters
    ----------
    path
        The output file or folder.
    overwrite
        Whether replacing it is allowed.

    Raises
    ------
    InputError
        If ``path`` is a file or a non-empty folder and ``overwrite`` is false.
    """
    if path.exists() and not path.is_dir():
        if not overwrite:
            raise InputError(path, "exists and is not a folder; pass --overwrite to replace it")
    elif path.is_dir() and any(path.iterdir()) and not overwrite:
        raise InputError(path, "is not empty; pass --overwrite to replace it")


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Write a file atomically (see :func:`atomic_path`).

    Parameters
    ----------
    path
        The file.
    data
        Its contents.
    """
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_json_atomic(path: str | Path, payload: Any) -> None:
    """Write indented JSON atomically; arrays and paths are converted.

    Parameters
    ----------
    path
        The file.
    payload
        JSON-serialisable data (numpy arrays and scalars, and paths, are allowed).
    """
    text = json.dumps(payload, indent=2, sort_keys=False, default=_json_default) + "\n"
    write_bytes_atomic(path, text.encode())


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot serialise {type(value).__name__} to JSON")


def provenance(kind: str, schema_version: int) -> dict[str, Any]:
    """The fields every manifest starts with: what it is and what made it.

    Parameters
    ----------
    kind
        The artefact kind (e.g. ``"model"``).
    schema_version
        Version of its layout.

    Returns
    -------
    dict
        kind, schema_version, protomatch_version, created_utc and command.
    """
    return {
        "kind": kind,
        "schema_version": schema_version,
        "protomatch_version": __version__,
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(Path(sys.argv[0]).name.split() + sys.argv[1:]),
    }


def read_manifest(path: str | Path, kind: str, schema_version: int) -> dict[str, Any]:
    """Read a JSON manifest and check it describes an artefact this version can read.

    Parameters
    ----------
    path
        The manifest file.
    kind
        The artefact kind it must declare.
    schema_version
        The newest layout version this version reads.

    Returns
    -------
    dict
        The manifest.

    Raises
    ------
    InputError
        If the file is missing, not JSON, of another kind or of a newer version.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, f"missing; this does not look like a protomatch {kind}")
    manifest = read_json(path)
    if not isinstance(manifest, dict) or manifest.get("kind") != kind:
        raise InputError(path, f"is not a protomatch {kind} manifest")
    found = manifest.get("schema_version")
    if not isinstance(found, int):
        raise InputError(path, "has no integer schema_version")
    if found > schema_version:
        raise InputError(
            path,
            f"{kind} schema version {found} is newer than this protomatch "
            f"({__version__}) reads (up to {schema_version}); upgrade protomatch",
        )
    return manifest


def read_json(path: Path, max_bytes: int = MAX_MANIFEST_BYTES) -> Any:
    """Parse a JSON file of at most ``max_bytes``, any problem as one line.

    Parameters
    ----------
    path
        The file.
    max_bytes
        Larger files are refused before reading.

    Returns
    -------
    Any
        The parsed JSON (NaN and Infinity, as Python's ``json`` writes them, are accepted).

    Raises
    ------
    InputError
        If the file cannot be read, is too large, is not UTF-8 JSON or nests too deeply.
    """
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise InputError(
                path, f"is {size} bytes, too large for a manifest (at most {max_bytes})"
            )
        return json.loads(path.read_bytes().decode("utf-8"))
    except OSError as exc:
        raise InputError(path, f"cannot be read ({exc.strerror or exc})") from None
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        # ValueError covers JSONDecodeError and integers of more digits than Python parses
        raise InputError(path, f"is not valid JSON ({str(exc)[:200]})") from None


def fingerprint_bytes(chunks: Iterable[bytes]) -> str:
    """A short, stable content hash.

    Parameters
    ----------
    chunks
        The content, in order.

    Returns
    -------
    str
        The first 16 hex digits of its SHA-256.
    """
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
    return digest.hexdigest()[:16]
