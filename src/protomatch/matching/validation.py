"""What an evaluation on mock observations says of a model, carried into match reports.

``protomatch evaluate MODEL STORE --observations OBS -o EVAL`` ends with a per-parameter
verdict in ``EVAL/metrics.json``: whether the model's best matches recover each parameter
better than the strongest simple baseline on that parameter. ``protomatch match --evaluation
EVAL`` reads it here, refuses an evaluation of another model or library, and puts the verdict
beside each parameter's estimate, so a parameter where the network does not beat the baseline
says so where the estimate is read.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from protomatch._artefact import read_manifest
from protomatch.errors import InputError

__all__ = [
    "EVALUATION_KIND",
    "EVALUATION_SCHEMA_VERSION",
    "METRICS_FILE",
    "read_validation",
]

#: The manifest kind and version of ``evaluate --observations``'s metrics.json.
EVALUATION_KIND = "observation-evaluation"
EVALUATION_SCHEMA_VERSION = 1
METRICS_FILE = "metrics.json"


def read_validation(
    folder: str | Path, model_fingerprint: str, library_fingerprint: str
) -> dict[str, Any]:
    """The verdict block of an observation evaluation of this model and library, checked.

    Parameters
    ----------
    folder
        Output folder of ``protomatch evaluate --observations``.
    model_fingerprint, library_fingerprint
        The fingerprints of the model and library store being matched with.

    Returns
    -------
    dict
        ``folder``, ``method``, ``observations`` (count), ``observations_path``, ``rule`` and
        ``parameters`` (name -> baseline, verdict, interval, errors, constrained).

    Raises
    ------
    InputError
        If the folder holds no such evaluation, one of another model or library, or one
        made before verdicts were recorded.
    """
    path = Path(folder) / METRICS_FILE
    metrics = read_manifest(path, EVALUATION_KIND, EVALUATION_SCHEMA_VERSION)
    evaluated = (metrics.get("model") or {}).get("fingerprint")
    if evaluated != model_fingerprint:
        raise InputError(
            path,
            f"evaluates model {evaluated}, not the index's model {model_fingerprint}; "
            "evaluate this model (protomatch evaluate MODEL STORE --observations OBS)",
        )
    library = (metrics.get("library") or {}).get("fingerprint")
    if library != library_fingerprint:
        raise InputError(
            path, f"was made with library {library}, not the index's {library_fingerprint}"
        )
    verdict = metrics.get("verdict")
    if not isinstance(verdict, Mapping) or not isinstance(verdict.get("parameters"), Mapping):
        raise InputError(
            path, "has no per-parameter verdict; rerun protomatch evaluate --observations"
        )
    return {"folder": str(Path(folder).resolve()), **verdict}
