"""The one-command demo: simulate → ingest → train → index → observe → match → evaluate.

Everything runs on the built-in simulator, sized so the whole pipeline takes a few minutes
on two CPU cores. Each stage's artefact lands in its own sub-folder of ``out``, and an
existing library of the same settings is reused. Two targets are matched: a library
projection of a system held out from training, and a mock interferometric observation (FITS,
beam, noise; ``protomatch observe``) of a system outside the library.
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

from protomatch.errors import ProtomatchError
from protomatch.evaluation.library import EvaluationResult, evaluate_model
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
        ``observations``, ``report``, ``evaluation``); an existing library of the same
        settings is reused, everything else is replaced.
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
    """
    out = Path(out)
    seconds: dict[str, float] = {}
    library = library or DEMO_LIBRARY
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
        config = training or demo_config()
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
    with _stage("match", seconds):
        report = match_observations(out / "index", [target, mock], out / "report", overwrite=True)
    with _stage("evaluate", seconds):
        evaluation = evaluate_model(
            out / "model", out / "store", out / "evaluation", overwrite=True
        )
    return DemoResult(out, report, evaluation, seconds)


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
