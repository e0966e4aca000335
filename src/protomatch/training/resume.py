"""A model folder across runs: what ``--resume`` may continue, and a new run's clean start.

Every checkpoint records the run: the library store's fingerprint, the resolved training
settings and the changes allowed on earlier resumes. ``--resume`` continues a run only
with the same library and settings; a difference is refused with a line naming it, unless
``--allow-changed SETTING`` is given, and then the change is recorded in the checkpoint and
in ``model.json`` (``changed_on_resume``). Settings that only say how the run is carried
out, not what it learns (:data:`FREE_ON_RESUME`), may change freely.

A new run (``--overwrite``) empties the folder first (:func:`start_clean`), so no checkpoint
of an earlier run is left to resume; a resumed one marks its model incomplete until it has
finished (:func:`mark_incomplete`).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from protomatch._artefact import read_json
from protomatch.errors import InputError, ProtomatchError
from protomatch.neural_nets.trained import MANIFEST_FILE, update_model_manifest
from protomatch.training.config import TrainConfig

__all__ = [
    "FREE_ON_RESUME",
    "LIBRARY",
    "mark_incomplete",
    "resume_changes",
    "run_record",
    "run_settings",
    "start_clean",
]

#: Settings that may change on --resume without --allow-changed: they do not change what
#: is learned (data-loader processes, logging, how often checkpoints are written).
FREE_ON_RESUME = frozenset({"num_workers", "tensorboard", "checkpoint_every"})
#: The name ``--allow-changed`` takes for the library store.
LIBRARY = "library"
_CHECKPOINT_RECORD = Path("checkpoints") / "last.json"


def run_record(out: str | Path) -> dict[str, Any]:
    """The run record of the last checkpoint in a model folder.

    Parameters
    ----------
    out
        The model folder.

    Returns
    -------
    dict
        ``library_fingerprint``, ``config`` (the resolved settings) and ``changes`` (those
        allowed on earlier resumes).

    Raises
    ------
    InputError
        If there is no checkpoint, it is unreadable, or it predates run records.
    """
    path = Path(out) / _CHECKPOINT_RECORD
    if not path.is_file():
        raise InputError(out, f"has no checkpoint to resume from ({_CHECKPOINT_RECORD})")
    try:
        record = read_json(path)["progress"]["run"]
    except (KeyError, TypeError):
        raise InputError(
            path,
            "records no settings or library (written by an older protomatch), so resuming "
            "cannot be checked; start again with --overwrite",
        ) from None
    return dict(record)


def run_settings(out: str | Path) -> dict[str, Any]:
    """The training settings the run in ``out`` was started with (see :func:`run_record`).

    Parameters
    ----------
    out
        The model folder.

    Returns
    -------
    dict
        Nested settings, as :class:`~protomatch.training.config.TrainConfig` fields.
    """
    return dict(run_record(out)["config"])


@dataclass(frozen=True)
class _Difference:
    setting: str
    run: Any
    now: Any

    def phrase(self) -> str:
        if self.setting == LIBRARY:
            return (
                f"the library store (fingerprint {self.now}) differs from the run's "
                f"(fingerprint {self.run})"
            )
        return f"{self.setting} {_show(self.now)} differs from the run's {_show(self.run)}"

    def record(self) -> dict[str, Any]:
        return {"setting": self.setting, "from": self.run, "to": self.now}


def resume_changes(
    record: Mapping[str, Any],
    config: TrainConfig,
    library_fingerprint: str,
    allowed: Collection[str],
) -> list[dict[str, Any]]:
    """Check a resume against its run; the changes to record.

    Parameters
    ----------
    record
        The run record (:func:`run_record`).
    config
        The settings the resumed run would use.
    library_fingerprint
        Fingerprint of the library store it would train on.
    allowed
        Settings the user allows to differ (dotted keys such as ``"optim.learning_rate"``,
        a section such as ``"optim"``, or :data:`LIBRARY`).

    Returns
    -------
    list of dict
        One record per allowed difference (``setting``, ``from``, ``to``).

    Raises
    ------
    ProtomatchError
        Naming every difference that is not allowed, or an allowed name that is no setting.
    """
    settings = dict(_flatten(config.model_dump(mode="json")))
    unknown = [name for name in allowed if not _known(name, settings)]
    if unknown:
        raise ProtomatchError(f"--allow-changed: no setting {', '.join(map(repr, unknown))}")
    recorded = dict(_flatten(record["config"]))
    differences = [
        _Difference(key, recorded.get(key), settings.get(key))
        for key in dict.fromkeys([*recorded, *settings])
        if recorded.get(key) != settings.get(key) and key not in FREE_ON_RESUME
    ]
    if record["library_fingerprint"] != library_fingerprint:
        differences.insert(
            0, _Difference(LIBRARY, record["library_fingerprint"], library_fingerprint)
        )
    refused = [d for d in differences if not any(_covers(name, d.setting) for name in allowed)]
    if refused:
        raise ProtomatchError(
            "--resume: "
            + "; ".join(d.phrase() for d in refused)
            + ". Resume with the run's settings and library, or pass --allow-changed "
            "SETTING (or 'library') for each change you mean; it is recorded in model.json"
        )
    return [d.record() for d in differences]


def start_clean(out: Path) -> None:
    """Empty the model folder for a new run, so nothing of an earlier run is resumable.

    Parameters
    ----------
    out
        The model folder (created).
    """
    if out.is_dir() and not out.is_symlink():
        shutil.rmtree(out)
    elif out.exists() or out.is_symlink():
        out.unlink()
    out.mkdir(parents=True)


def mark_incomplete(out: Path) -> None:
    """Say in model.json (if there is one yet) that its model is being trained further.

    Parameters
    ----------
    out
        The model folder.
    """
    if (out / MANIFEST_FILE).is_file():
        update_model_manifest(out, {"complete": False})


def _flatten(settings: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, value) of every leaf setting."""
    for key, value in settings.items():
        if isinstance(value, Mapping) and value:
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _covers(name: str, setting: str) -> bool:
    return setting == name or setting.startswith(f"{name}.")


def _known(name: str, settings: Mapping[str, Any]) -> bool:
    return name == LIBRARY or any(_covers(name, key) for key in settings)


def _show(value: Any) -> str:
    if value is None:
        return "none"
    return value if isinstance(value, str) else json.dumps(value)
