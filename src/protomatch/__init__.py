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
        "simulate_library": "protomatch.simulate",
        "SimulationResult": "protomatch.simulate",
        "ingest_library": "protomatch.store",
        "LibraryStore": "protomatch.store",
        "read_observation": "protomatch.readers",
        "read_library_file": "protomatch.readers",
        "PreprocessConfig": "protomatch.preprocess",
        "ParameterNormaliser": "protomatch.params",
        "similarity_labels": "protomatch.params",
        "EncoderConfig": "protomatch.model",
        "SiameseNetwork": "protomatch.model",
        "ContrastiveLoss": "protomatch.losses",
        "AugmentConfig": "protomatch.augment",
        "TrainConfig": "protomatch.train",
        "load_config": "protomatch.train",
        "train_model": "protomatch.train",
        "load_model": "protomatch.modelio",
        "TrainedModel": "protomatch.modelio",
        "IndexConfig": "protomatch.index",
        "build_index": "protomatch.index",
        "EmbeddingIndex": "protomatch.index",
        "match_observations": "protomatch.match",
        "score_pairwise": "protomatch.match",
        "EvaluateConfig": "protomatch.evaluate",
        "evaluate_model": "protomatch.evaluate",
        "run_demo": "protomatch.demo",
        "evaluate_observations": "protomatch.evaluate_observations",
        "BeamMatchedLibrary": "protomatch.beam",
        "ObserveConfig": "protomatch.observe",
        "make_observations": "protomatch.observe",
        "prepare_observation": "protomatch.observation",
        "ProtomatchError": "protomatch.errors",
        "InputError": "protomatch.errors",
    }
)

__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'protomatch' has no attribute {name!r}")
    return getattr(importlib.import_module(_PUBLIC[name]), name)


def __dir__() -> list[str]:
    return sorted(__all__)
