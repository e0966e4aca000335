"""``protomatch verify``: re-hash every file of an artefact and check what it holds.

Loading an artefact checks its small files whole and a store's images block by block as
they are read (see :mod:`protomatch._integrity`); ``verify`` checks everything at once: the
SHA-256 of every file the manifest lists, every block of a store's images, that a store
holds no NaN or infinite value, and that the artefact still opens.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import numpy as np

from protomatch._artefact import read_json
from protomatch._integrity import sha256_file
from protomatch._manifests import (
    EvaluationManifest,
    IndexManifest,
    Manifest,
    ModelManifest,
    ReportManifest,
    StoreManifest,
    load_manifest,
)
from protomatch.errors import InputError

__all__ = ["FileCheck", "VerifyResult", "verify_artefact"]

#: Manifest file and model of each kind ``verify`` checks, by the kind's name.
_KINDS: Mapping[str, tuple[str, type[Manifest]]] = MappingProxyType(
    {
        StoreManifest.KIND: ("manifest.json", StoreManifest),
        ModelManifest.KIND: ("model.json", ModelManifest),
        IndexManifest.KIND: ("index.json", IndexManifest),
        EvaluationManifest.KIND: ("metrics.json", EvaluationManifest),
        ReportManifest.KIND: ("manifest.json", ReportManifest),
    }
)
#: Images scanned for NaN/inf at once.
_SCAN_ROWS = 4096


@dataclass(frozen=True)
class FileCheck:
    """The verdict on one file (or one property) of an artefact."""

    name: str
    ok: bool
    detail: str

    def line(self) -> str:
        """``OK   name: detail`` or ``BAD  name: detail``."""
        return f"{'OK ' if self.ok else 'BAD'}  {self.name}: {self.detail}"


@dataclass(frozen=True)
class VerifyResult:
    """What :func:`verify_artefact` found.

    Attributes
    ----------
    path
        The artefact folder.
    kind
        Its manifest's kind (e.g. ``"library-store"``).
    checks
        One verdict per file and per content check, in order.
    """

    path: Path
    kind: str
    checks: tuple[FileCheck, ...]

    @property
    def ok(self) -> bool:
        """True if every check passed."""
        return all(check.ok for check in self.checks)

    def describe(self) -> str:
        """One line per check, then the overall verdict."""
        bad = sum(not check.ok for check in self.checks)
        verdict = "all checks passed" if not bad else f"{bad} problem(s) found"
        lines = [check.line() for check in self.checks]
        return "\n".join([*lines, f"{self.path} ({self.kind}): {verdict}"])


def verify_artefact(path: str | Path) -> VerifyResult:
    """Fully check an artefact folder: every file's SHA-256 and what the files hold.

    Parameters
    ----------
    path
        A library store, model, index, observation evaluation or match report folder (or
        its manifest file).

    Returns
    -------
    VerifyResult
        One verdict per file and content check; ``ok`` only if all passed. An artefact
        written before checksums has a failed ``checksums`` check (its files cannot be
        confirmed), beside whatever can be checked without them.

    Raises
    ------
    InputError
        If the folder holds no manifest of a kind ``verify`` knows, or it does not validate.
    """
    folder = Path(path)
    if folder.is_file():
        folder = folder.parent
    name, model = _manifest_of(folder)
    manifest = load_manifest(folder / name, model)
    checks = list(_file_checks(folder, manifest))
    checks += list(_CONTENT_CHECKS.get(manifest.KIND, _no_content_checks)(folder, manifest))
    return VerifyResult(folder, manifest.KIND, tuple(checks))


def _manifest_of(folder: Path) -> tuple[str, type[Manifest]]:
    """The manifest file of ``folder`` and the model of its kind."""
    if not folder.is_dir():
        raise InputError(folder, "is not an artefact folder")
    for name in dict.fromkeys(name for name, _ in _KINDS.values()):
        if (folder / name).is_file():
            payload = read_json(folder / name)
            kind = payload.get("kind") if isinstance(payload, dict) else None
            if isinstance(kind, str) and kind in _KINDS and _KINDS[kind][0] == name:
                return _KINDS[kind]
            raise InputError(
                folder / name,
                f"is a manifest of kind {kind!r}; verify checks {', '.join(sorted(_KINDS))}",
            )
    raise InputError(folder, "holds no protomatch manifest (manifest.json, model.json ...)")


def _file_checks(folder: Path, manifest: Manifest) -> Iterator[FileCheck]:
    """Compare every recorded file's size and SHA-256 with the manifest."""
    if manifest.files is None:
        yield FileCheck(
            "checksums", False, "none recorded (written before checksums); rebuild the artefact"
        )
        return
    for name, record in manifest.files.items():
        path = folder / name
        if not path.is_file():
            yield FileCheck(name, False, "missing")
        elif path.stat().st_size != record.bytes:
            yield FileCheck(name, False, f"{path.stat().st_size} bytes, recorded {record.bytes}")
        elif sha256_file(path) != record.sha256:
            yield FileCheck(name, False, "SHA-256 differs from the manifest: corrupted or changed")
        else:
            yield FileCheck(name, True, f"SHA-256 {record.sha256[:16]}... matches")


def _store_checks(folder: Path, manifest: Manifest) -> Iterator[FileCheck]:
    """Open the store, read every image block (checking its hash) and scan for NaN/inf."""
    from protomatch.library.store import IMAGES_FILE, TABLE_FILE, LibraryStore

    try:
        store = LibraryStore.open(folder)
        images = store.images
        bad_rows = []
        for start in range(0, len(images), _SCAN_ROWS):
            block = images[start : start + _SCAN_ROWS]
            bad_rows += (start + np.flatnonzero(~np.isfinite(block).all(axis=(1, 2)))).tolist()
    except InputError as exc:
        yield _failed(exc)
        return
    blocks = "every block's SHA-256 matches, " if manifest.files is not None else ""
    yield _finite_check(IMAGES_FILE, bad_rows, f"{blocks}{len(images)} images", "image rows")
    numbers = store.table.select_dtypes("number")
    bad = numbers.columns[~np.isfinite(numbers.to_numpy(dtype=np.float64)).all(axis=0)]
    yield _finite_check(TABLE_FILE, list(bad), f"{len(numbers.columns)} numeric columns", "columns")


def _finite_check(name: str, bad: Sequence[object], what: str, where: str) -> FileCheck:
    if bad:
        shown = ", ".join(map(str, bad[:5])) + (" ..." if len(bad) > 5 else "")
        return FileCheck(name, False, f"NaN/inf in {len(bad)} {where}: {shown}")
    return FileCheck(name, True, f"{what}, all finite")


def _model_checks(folder: Path, manifest: Manifest) -> Iterator[FileCheck]:
    """Load the model: weights against fingerprint and architecture."""
    from protomatch.neural_nets.trained import WEIGHTS_FILE, load_model

    try:
        load_model(folder)
    except InputError as exc:
        yield _failed(exc)
        return
    yield FileCheck(WEIGHTS_FILE, True, "matches the fingerprint and fits the architecture")


def _index_checks(folder: Path, manifest: Manifest) -> Iterator[FileCheck]:
    """Read the FAISS index and ids; they must agree with index.json."""
    from protomatch.matching.index import FAISS_FILE, read_index_files

    assert isinstance(manifest, IndexManifest)
    try:
        faiss_index, _ = read_index_files(folder, manifest)
    except InputError as exc:
        yield _failed(exc)
        return
    yield FileCheck(
        FAISS_FILE, True, f"{faiss_index.ntotal} vectors of dimension {faiss_index.d}, ids valid"
    )


def _failed(error: InputError) -> FileCheck:
    """A failed check of the file an error names."""
    return FileCheck(error.path.name, False, error.problem)


def _no_content_checks(folder: Path, manifest: Manifest) -> Iterator[FileCheck]:
    return iter(())


_CONTENT_CHECKS: Mapping[str, Callable[[Path, Manifest], Iterator[FileCheck]]] = MappingProxyType(
    {
        StoreManifest.KIND: _store_checks,
        ModelManifest.KIND: _model_checks,
        IndexManifest.KIND: _index_checks,
    }
)
