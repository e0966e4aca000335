"""The one-command demo: simulate, ingest, train, index, observe, validate, match, evaluate.

Everything runs on the built-in simulator, sized so the whole pipeline takes a few minutes
on two CPU cores. Each stage's artefact lands in its own sub-folder of ``out``, and an
existing library of the same settings is reused. Two targets are matched: a library
projection of a system held out from training, and a mock interferometric observation (FITS,
beam, noise; ``protomatch observe``) of a system outside the library. Before matching, the
model is validated on 30 other mock observations against the strongest simple baseline
(``evaluate --observations``); the report carries that per-parameter verdict.

The demo claims its folder with a ``manifest.json`` of kind ``"demo"`` before any stage
runs. A folder holding anything else is refused, so the demo never replaces a user's files;
a folder it wrote (even one it did not finish) is reused.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from protomatch._artefact import provenance, remove_stale_temporaries, write_json_atomic
from protomatch._locking import output_lock
from protomatch.errors import InputError, ProtomatchError
from protomatch.evaluation.library import EvaluationResult, evaluate_model
from protomatch.evaluation.observations import ObservationEvaluationConfig, evaluate_observations
from protomatch.library.ingest import IngestConfig, ingest_library
from protomatch.library.schema import library_file_path
from protomatch.matching.index import build_index
from protomatch.matching.match import MatchResult, match_observations
from protomatch.simulators.library import SimulateConfig, simulate_library
from protomatch.simulators.observations import ObserveConfig, make_observations
from protomatch.training.config import TrainConfig, load_config
from protomatch.training.engine import train_model

log = logging.getLogger(__name__)

#: The demo's library: 96 systems x 6 snapshots x 8 projections of 64 x 64 px.
DEMO_LIBRARY = SimulateConfig(systems=96, snapshots=6, size=64, seed=0)
#: One mock observation at a middling beam and signal-to-noise ratio.
DEMO_OBSERVATION = ObserveConfig(
    n=1,
    seed=2026,
    beam_range_au=(40.0, 40.0),
    snr_range=(60.0, 60.0),
    npix_range=(128, 128),
    nan_border_fraction=0.0,
)
#: Mock observations on which the demo validates the model against the strongest simple
#: baseline before matching (the verdict goes into the report; few, so the verdict is rough).
DEMO_VALIDATION = ObserveConfig(n=30, seed=21)
#: What the demo's validation compares: protomatch's ranking, its network part, the baseline.
DEMO_VALIDATION_METHODS = ("protomatch_fused", "protomatch_beam_noise", "pixels_strong")
#: Kind and layout version of the manifest that marks a folder the demo wrote.
DEMO_KIND = "demo"
DEMO_SCHEMA_VERSION = 1
#: The manifest's name in the demo folder.
DEMO_MANIFEST = "manifest.json"
#: The sub-folders the demo writes, one per stage's artefact.
DEMO_FOLDERS = (
    "library",
    "store",
    "model",
    "index",
    "observations",
    "mocks",
    "validation",
    "report",
    "evaluation",
)
#: Kind of the manifest of a library that ``protomatch simulate`` wrote.
_SIMULATED_LIBRARY_KIND = "simulated-library"

#: The demo's training settings (dotted keys) on top of the training defaults.
DEMO_TRAINING = {
    "epochs": 15,
    "pairs.pairs_per_epoch": 6144,
    "pairs.batch_size": 128,
    "validation_pairs": 2048,
    "encoder.channels": [16, 32, 64, 64],
    "encoder.embedding_dim": 64,
}


@dataclass(frozen=True)
class DemoResult:
    """What :func:`run_demo` did.

    Attributes
    ----------
    out
        The demo folder.
    report
        The match of the two targets.
    evaluation
        The evaluation on unseen systems.
    seconds
        Wall-clock seconds per stage.
    """

    out: Path
    report: MatchResult
    evaluation: EvaluationResult
    seconds: dict[str, float]

    def describe(self) -> str:
        """The match report's summary, the evaluation's path and the time per stage."""
        timing = ", ".join(f"{stage} {s:.0f} s" for stage, s in self.seconds.items())
        total = sum(self.seconds.values())
        return (
            f"{self.report.describe()}\n"
            f"validation on {DEMO_VALIDATION.n} mock observations (verdict per parameter in "
            f"the report): {self.out / 'validation' / 'metrics.md'}\n"
            f"evaluation on unseen systems: {self.evaluation.out / 'metrics.md'}\n"
            f"demo finished in {total:.0f} s ({timing})"
        )


def demo_config(**overrides: Any) -> TrainConfig:
    """The small training configuration of the demo.

    Parameters
    ----------
    **overrides
        Settings by dotted key, on top of :data:`DEMO_TRAINING`.

    Returns
    -------
    TrainConfig
        The validated config.
    """
    return load_config(None, {**DEMO_TRAINING, **overrides})


def run_demo(
    out: str | Path = "protomatch-demo",
    *,
    workers: int | None = None,
    library: SimulateConfig | None = None,
    training: TrainConfig | None = None,
) -> DemoResult:
    """Run the whole pipeline on the built-in simulator and write a report.

    Parameters
    ----------
    out
        Folder for every stage's artefact (``library``, ``store``, ``model``, ``index``,
        ``observations``, ``mocks``, ``validation``, ``report``, ``evaluation``) and the demo's
        ``manifest.json``. It
        must be absent, empty or a folder the demo wrote (:func:`is_demo_folder`); there an
        existing library of the same settings is reused, everything else is replaced.
    workers
        Worker processes for simulating and ingesting (None: the stages' defaults).
    library
        The library to simulate (None: :data:`DEMO_LIBRARY`).
    training
        The training settings (None: :func:`demo_config`).

    Returns
    -------
    DemoResult
        The match report, the evaluation and the time per stage.

    Raises
    ------
    InputError
        If ``out`` is a file, a non-empty folder the demo did not write, or in use by
        another protomatch run.
    """
    out = Path(out)
    with output_lock(out):
        check_demo_output(out)
        remove_stale_temporaries(out)
        return _run_stages(out, workers, library or DEMO_LIBRARY, training or demo_config())


def _run_stages(
    out: Path, workers: int | None, library: SimulateConfig, config: TrainConfig
) -> DemoResult:
    """Every stage of the demo into ``out``, timed (see :func:`run_demo`)."""
    seconds: dict[str, float] = {}
    write_demo_manifest(out, library, config)
    folder = out / "library"
    if not _reusable_library(folder, library):
        with _stage("simulate", seconds):
            simulate_library(folder, config=library, workers=workers, preview=True, overwrite=True)
    with _stage("ingest", seconds):
        ingest_library(
            folder,
            out / "store",
            config=IngestConfig(size=library.size),
            workers=workers,
            overwrite=True,
        )
    with _stage("train", seconds):
        trained = train_model(out / "store", out / "model", config=config, overwrite=True)
    log.info("%s", trained.describe())
    with _stage("index", seconds):
        build_index(out / "model", out / "store", out / "index", overwrite=True)
    target = _held_out_target(out / "model", folder)
    with _stage("observe", seconds):
        observed = make_observations(
            folder, out / "observations", config=DEMO_OBSERVATION, workers=1, overwrite=True
        )
    mock = sorted(observed.out.glob("*.fits"))[0]
    with _stage("validate", seconds):
        make_observations(folder, out / "mocks", config=DEMO_VALIDATION, overwrite=True)
        evaluate_observations(
            out / "model",
            out / "store",
            out / "mocks",
            out / "validation",
            config=ObservationEvaluationConfig(methods=DEMO_VALIDATION_METHODS),
            overwrite=True,
        )
    with _stage("match", seconds):
        report = match_observations(
            out / "index",
            [target, mock],
            out / "report",
            evaluation=out / "validation",
            overwrite=True,
        )
    with _stage("evaluate", seconds):
        evaluation = evaluate_model(
            out / "model", out / "store", out / "evaluation", overwrite=True
        )
    write_demo_manifest(out, library, config, seconds)
    return DemoResult(out, report, evaluation, seconds)


def is_demo_folder(path: str | Path) -> bool:
    """Whether ``path`` is a folder that :func:`run_demo` wrote.

    It is when its ``manifest.json`` declares kind ``"demo"``, or (a folder of a demo
    that predates that manifest) when it holds only the demo's stage folders and its
    ``library`` is a simulated library.

    Parameters
    ----------
    path
        A folder.

    Returns
    -------
    bool
        True for a demo folder.
    """
    path = Path(path)
    if not path.is_dir():
        return False
    manifest = _read_json(path / DEMO_MANIFEST)
    if manifest is not None:
        return manifest.get("kind") == DEMO_KIND
    entries = [entry.name for entry in path.iterdir() if not _leftover_temporary(entry.name)]
    library = _read_json(path / "library" / "manifest.json") or {}
    return (
        bool(entries)
        and set(entries) <= set(DEMO_FOLDERS)
        and library.get("kind") == _SIMULATED_LIBRARY_KIND
    )


def check_demo_output(out: str | Path) -> None:
    """Refuse an output the demo must not write into.

    Parameters
    ----------
    out
        The demo folder: absent, empty or written by the demo are accepted.

    Raises
    ------
    InputError
        Naming ``out``, if it is a file or a non-empty folder the demo did not write.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(out, "exists and is not a folder; give a new or empty folder")
    if out.is_dir() and any(out.iterdir()) and not is_demo_folder(out):
        raise InputError(
            out,
            "is not empty and is not a folder protomatch demo wrote; give a new or empty "
            "folder (the demo replaces what it finds in its folder)",
        )


def write_demo_manifest(
    out: Path,
    library: SimulateConfig,
    training: TrainConfig,
    seconds: dict[str, float] | None = None,
) -> None:
    """Mark ``out`` as a demo folder: its manifest with the demo's settings.

    Parameters
    ----------
    out
        The demo folder (created if needed).
    library
        The simulated library's settings.
    training
        The training settings.
    seconds
        Wall-clock seconds per stage, once the demo has finished (None before).
    """
    write_json_atomic(
        out / DEMO_MANIFEST,
        {
            **provenance(DEMO_KIND, DEMO_SCHEMA_VERSION),
            "folders": list(DEMO_FOLDERS),
            "settings": {
                "library": library.model_dump(mode="json"),
                "training": training.model_dump(mode="json"),
            },
            "finished": seconds is not None,
            "seconds": seconds or {},
        },
    )


def _read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object file's content; None when it is missing or not a JSON object."""
    if not path.is_file():
        return None
    try:
        content = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return content if isinstance(content, dict) else None


def _leftover_temporary(name: str) -> bool:
    """A temporary file or folder an interrupted atomic write can leave (``.name.x.tmp``)."""
    return name.startswith(".") and name.endswith(".tmp")


@contextlib.contextmanager
def _stage(name: str, seconds: dict[str, float]) -> Iterator[None]:
    log.info("demo: %s …", name)
    start = time.perf_counter()
    yield
    seconds[name] = time.perf_counter() - start


def _reusable_library(library: Path, wanted: SimulateConfig) -> bool:
    manifest = library / "manifest.json"
    if not manifest.is_file():
        return False
    try:
        settings = json.loads(manifest.read_text()).get("settings", {})
    except json.JSONDecodeError:
        return False
    same = all(settings.get(key) == value for key, value in wanted.model_dump().items())
    if same:
        log.info("demo: reusing the simulated library in %s", library)
    return same


def _held_out_target(model: Path, library: Path) -> str:
    """A projection of a mid-life snapshot of the first test system (never trained on)."""
    split = json.loads((model / "model.json").read_text())["split"]
    if not split["test"]:
        raise ProtomatchError("the demo model has no test systems to hold out")
    system = int(split["test"][0])
    files = sorted(library_file_path(library, system, 0).parent.glob("output_*_data.hdf5"))
    target = files[len(files) // 2]
    return f"{target}:3"
