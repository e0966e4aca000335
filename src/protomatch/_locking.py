"""Claiming an output for one run: an OS lock, and checks that nothing else is replaced.

Every command that writes an artefact claims its output folder for the whole run
(:func:`claims_output`, or :func:`claim_output` as a context manager):

- it refuses an output that is one of the command's inputs or holds one (replacing it would
  destroy the input), whatever ``--overwrite`` says;
- it takes an exclusive lock on ``.NAME.lock`` beside the output, so a second run into the
  same output stops at once with one line instead of both finishing and one result being
  silently lost. The lock is an OS lock (``flock``; ``msvcrt.locking`` on Windows), so a
  run killed with SIGKILL releases it; the lock file is removed when the run ends;
- it refuses to replace an artefact of another kind (a store, say, where an index was
  asked for) even with ``--overwrite``: that is nearly always a wrong argument, and
  deleting the other artefact by hand is the explicit way to mean it;
- it removes temporary files and folders that killed runs left beside or inside the output
  (:func:`~protomatch._artefact.remove_stale_temporaries`).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from protomatch._artefact import ensure_writable_output, read_json, remove_stale_temporaries
from protomatch.errors import InputError

__all__ = ["artefact_kind", "claim_output", "claims_output", "output_lock"]

Params = ParamSpec("Params")
Result = TypeVar("Result")

#: Files that name an artefact's kind, in the order they are looked for.
_MANIFESTS = ("index.json", "model.json", "manifest.json", "metrics.json")
#: A training run's checkpoint record: a model folder before its first model.json.
_CHECKPOINT = Path("checkpoints") / "last.json"


def claims_output(
    kind: str, inputs: tuple[str, ...] = ()
) -> Callable[[Callable[Params, Result]], Callable[Params, Result]]:
    """Decorate a function that writes an artefact so that it claims its output for the call.

    The function must take the output as ``out`` and may take ``overwrite``; ``inputs``
    names its parameters that are input paths (a path, a list of paths, or None).

    Parameters
    ----------
    kind
        The kind of artefact the function writes (its manifest's ``kind``).
    inputs
        Names of the function's input-path parameters.

    Returns
    -------
    Callable
        A decorator; the decorated function runs inside :func:`claim_output`.
    """

    def decorate(function: Callable[Params, Result]) -> Callable[Params, Result]:
        signature = inspect.signature(function)

        @functools.wraps(function)
        def claimed(*args: Params.args, **kwargs: Params.kwargs) -> Result:
            given = signature.bind(*args, **kwargs)
            given.apply_defaults()
            values = given.arguments
            paths = _flatten(values[name] for name in inputs)
            overwrite = bool(values.get("overwrite", False))
            with claim_output(values["out"], kind, overwrite=overwrite, inputs=paths):
                return function(*args, **kwargs)

        return claimed

    return decorate


@contextlib.contextmanager
def claim_output(
    out: str | Path, kind: str, *, overwrite: bool, inputs: Iterable[str | Path] = ()
) -> Iterator[Path]:
    """Claim ``out`` for the block: refuse inputs and other kinds, lock it, clear stale temps.

    Parameters
    ----------
    out
        The output file or folder.
    kind
        The kind of artefact that will be written there.
    overwrite
        Whether an existing output of the same kind may be replaced.
    inputs
        The command's input paths.

    Returns
    -------
    Iterator of pathlib.Path
        ``out``, locked until the block ends.

    Raises
    ------
    InputError
        One line, if ``out`` is or holds an input, is in use by another run, holds another
        kind of artefact, or is not empty and ``overwrite`` is false.
    """
    out = Path(out)
    refuse_inputs(out, inputs)
    with output_lock(out):
        refuse_other_kind(out, kind)
        ensure_writable_output(out, overwrite)
        target = out.resolve()
        remove_stale_temporaries(target.parent, target.name)
        remove_stale_temporaries(target)
        yield out


def refuse_inputs(out: Path, inputs: Iterable[str | Path]) -> None:
    """Refuse an output that is one of the inputs or a folder holding one.

    Parameters
    ----------
    out
        The output.
    inputs
        The command's input paths.

    Raises
    ------
    InputError
        Naming ``out`` and the input.
    """
    target = out.resolve()
    for given in inputs:
        source = Path(given).resolve()
        if source == target:
            raise InputError(out, "is one of this command's inputs; write the output elsewhere")
        if target in source.parents:
            raise InputError(out, f"holds this command's input {given}; write the output elsewhere")


def refuse_other_kind(out: Path, kind: str) -> None:
    """Refuse an output folder that holds a protomatch artefact of another kind.

    Parameters
    ----------
    out
        The output.
    kind
        The kind that will be written.

    Raises
    ------
    InputError
        Naming ``out`` and both kinds.
    """
    found = artefact_kind(out)
    if found is not None and found != kind:
        raise InputError(
            out,
            f"holds a protomatch {found}, not the {kind} this command writes; it is not "
            "replaced, even with --overwrite: choose another output (or delete it yourself)",
        )


def artefact_kind(folder: Path) -> str | None:
    """The kind of protomatch artefact ``folder`` holds, if any.

    Parameters
    ----------
    folder
        Any path.

    Returns
    -------
    str or None
        The ``kind`` of its first manifest (index.json, model.json, manifest.json,
        metrics.json); ``"model"`` for an unfinished training run (a checkpoint but no
        model.json yet); None for anything else.
    """
    if not folder.is_dir():
        return None
    for name in _MANIFESTS:
        kind = _manifest_kind(folder / name)
        if kind is not None:
            return kind
    return "model" if (folder / _CHECKPOINT).is_file() else None


def _manifest_kind(path: Path) -> str | None:
    try:
        manifest = read_json(path)
    except InputError:
        return None
    kind = manifest.get("kind") if isinstance(manifest, dict) else None
    return kind if isinstance(kind, str) else None


@contextlib.contextmanager
def output_lock(out: str | Path) -> Iterator[None]:
    """Hold an exclusive OS lock on ``out`` (the file ``.NAME.lock`` beside it) for the block.

    Parameters
    ----------
    out
        The output file or folder; its parent folder is created if needed.

    Returns
    -------
    Iterator of None
        Locked until the block ends; the lock file is then removed.

    Raises
    ------
    InputError
        ``"OUT: is in use by another protomatch run (pid N); ..."`` if another process
        holds the lock.
    """
    out = Path(out)
    target = out.resolve()  # one lock however the output is spelt
    target.parent.mkdir(parents=True, exist_ok=True)
    lock_path = target.parent / f".{target.name}.lock"
    descriptor = _acquire(lock_path, out)
    try:
        os.ftruncate(descriptor, 0)
        os.write(descriptor, f"{os.getpid()}\n".encode())
        yield
    finally:
        if sys.platform != "win32":  # Windows cannot remove an open file; it stays
            lock_path.unlink(missing_ok=True)  # still locked: no one else holds this file
        os.close(descriptor)


def _acquire(lock_path: Path, out: Path) -> int:
    """Open and lock ``lock_path``; its descriptor, or InputError naming the holder."""
    while True:
        descriptor = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
        if not _try_lock(descriptor):
            holder = _holder(descriptor)
            os.close(descriptor)
            raise InputError(
                out,
                f"is in use by another protomatch run (pid {holder}); wait for it or "
                "choose another output",
            )
        if _is_current(descriptor, lock_path):
            return descriptor
        os.close(descriptor)  # its holder removed it as we opened it: take the new one


def _try_lock(descriptor: int) -> bool:
    """Take an exclusive lock on an open file without waiting; False if it is held."""
    try:
        if sys.platform == "win32":
            import msvcrt

            msvcrt.locking(descriptor, msvcrt.LK_NBLCK, 1)
        else:
            import fcntl

            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


def _is_current(descriptor: int, lock_path: Path) -> bool:
    """Whether the open file is still the one at ``lock_path`` (not removed meanwhile)."""
    try:
        on_disk = lock_path.stat()
    except FileNotFoundError:
        return False
    opened = os.fstat(descriptor)
    return (opened.st_dev, opened.st_ino) == (on_disk.st_dev, on_disk.st_ino)


def _holder(descriptor: int) -> str:
    """The pid the lock's holder wrote into the lock file ("?" if not written yet)."""
    try:
        os.lseek(descriptor, 0, os.SEEK_SET)
        text = os.read(descriptor, 32).decode(errors="replace").strip()
    except OSError:
        return "?"
    return text if text.isdigit() else "?"


def _flatten(values: Iterable[Any]) -> list[str | Path]:
    """Input paths from parameter values that are a path, a list of paths or None."""
    paths: list[str | Path] = []
    for value in values:
        if isinstance(value, (str, Path)):
            paths.append(value)
        elif value is not None:
            paths.extend(value)
    return paths
