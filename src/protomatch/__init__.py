"""protomatch: match observed images of protostellar systems to a library of simulations.

Every command of the ``protomatch`` CLI is also a plain function here::

    from protomatch import simulate_library, ingest_library, train_model, build_index
    from protomatch import match_observations, evaluate_model, run_demo

Names are imported on first use, so ``import protomatch`` stays fast.
"""

from __future__ import annotations

import importlib
import os
from types import MappingProxyType
from typing import Any

# torch and faiss each bring an OpenMP runtime; with the default busy-waiting their idle
# threads spin against each other, making one embed + search query 10-100x slower on few
# cores. Passive waiting must be chosen before either library is loaded.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"

_PUBLIC = MappingProxyType(
    {
        "simulate_library": "protomatch.simulators.library",
        "SimulateConfig": "protomatch.simulators.library",
        "SimulationResult": "protomatch.simulators.library",
        "ingest_library": "protomatch.library.ingest",
        "IngestConfig": "protomatch.library.ingest",
        "LibraryStore": "protomatch.library.store",
        "read_observation": "protomatch.matching.observation",
        "read_library_file": "protomatch.library.readers",
        "PreprocessConfig": "protomatch.library.preprocess",
        "ParameterNormaliser": "protomatch.library.params",
        "similarity_labels": "protomatch.library.params",
        "EncoderConfig": "protomatch.neural_nets.encoder",
        "SiameseNetwork": "protomatch.neural_nets.siamese",
        "ContrastiveLoss": "protomatch.training.losses",
        "AugmentConfig": "protomatch.training.augment",
        "TrainConfig": "protomatch.training.config",
        "load_config": "protomatch.training.config",
        "train_model": "protomatch.training.engine",
        "load_model": "protomatch.neural_nets.trained",
        "TrainedModel": "protomatch.neural_nets.trained",
        "IndexConfig": "protomatch.matching.index",
        "build_index": "protomatch.matching.index",
        "EmbeddingIndex": "protomatch.matching.index",
        "match_observations": "protomatch.matching.match",
        "MatchConfig": "protomatch.matching.match",
        "Observation": "protomatch.matching.observation",
        "PreparedObservation": "protomatch.matching.observation",
        "score_pairwise": "protomatch.matching.pairwise",
        "EvaluateConfig": "protomatch.evaluation.library",
        "evaluate_model": "protomatch.evaluation.library",
        "run_demo": "protomatch.demo",
        "evaluate_observations": "protomatch.evaluation.observations",
        "ObservationEvaluationConfig": "protomatch.evaluation.observations",
        "BeamMatchedLibrary": "protomatch.matching.conditioned",
        "ObserveConfig": "protomatch.simulators.observations",
        "make_observations": "protomatch.simulators.observations",
        "prepare_observation": "protomatch.matching.observation",
        "verify_artefact": "protomatch.verify",
        "ProtomatchError": "protomatch.errors",
        "InputError": "protomatch.errors",
    }
)

__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str) -> Any:
    """Import a public name on first use."""
    if name not in _PUBLIC:
        raise AttributeError(f"module 'protomatch' has no attribute {name!r}")
    return getattr(importlib.import_module(_PUBLIC[name]), name)


def __dir__() -> list[str]:
    """The public names."""
    return sorted(__all__)
