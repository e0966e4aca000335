"""What an evaluation on mock observations says of a model, carried into match reports.

``protomatch evaluate MODEL STORE --observations OBS -o EVAL`` ends with a per-parameter
verdict in ``EVAL/metrics.json``: whether the model's best matches recover each parameter
better than the strongest simple baseline on that parameter. ``protomatch match --evaluation
EVAL`` reads it here, refuses an evaluation of another model or library, and puts the verdict
beside each parameter's estimate, so a parameter where the network does not beat the baseline
says so where the estimate is read. The same evaluation fits the interval calibration
(``EVAL/calibration.json``) that match applies to observations ranked as evaluated.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from protomatch._manifests import CalibrationManifest, EvaluationManifest, load_manifest
from protomatch.calibration.intervals import IntervalCalibration
from protomatch.errors import InputError

__all__ = [
    "CALIBRATION_FILE",
    "CALIBRATION_KIND",
    "EVALUATION_KIND",
    "EVALUATION_SCHEMA_VERSION",
    "METRICS_FILE",
    "read_calibrations",
    "read_validation",
]

#: The manifest kind and version of ``evaluate --observations``'s metrics.json.
EVALUATION_KIND = EvaluationManifest.KIND
EVALUATION_SCHEMA_VERSION = EvaluationManifest.SCHEMA_VERSION
METRICS_FILE = "metrics.json"
#: The interval calibrations fitted by ``evaluate --observations``, beside its metrics.
CALIBRATION_FILE = "calibration.json"
CALIBRATION_KIND = CalibrationManifest.KIND


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
    metrics = load_manifest(path, EvaluationManifest)
    _check_made_with(path, metrics, model_fingerprint, library_fingerprint)
    if metrics.verdict is None:
        raise InputError(
            path, "has no per-parameter verdict; rerun protomatch evaluate --observations"
        )
    return {"folder": str(Path(folder).resolve()), **metrics.verdict.model_dump()}


def read_calibrations(
    folder: str | Path, model_fingerprint: str, library_fingerprint: str
) -> dict[str, IntervalCalibration]:
    """The interval calibrations an observation evaluation fitted, by ranking, checked.

    Parameters
    ----------
    folder
        Output folder of ``protomatch evaluate --observations``.
    model_fingerprint, library_fingerprint
        The fingerprints of the model and library store being matched with.

    Returns
    -------
    dict
        Evaluated method (``protomatch_fused``, ``protomatch_beam_noise``) -> its calibration.

    Raises
    ------
    InputError
        If the folder has no calibration file (an evaluation from before calibration), one
        of another model or library, or one that does not read as a calibration.
    """
    path = Path(folder) / CALIBRATION_FILE
    if not path.is_file():
        raise InputError(
            path.parent, f"has no {CALIBRATION_FILE}; rerun protomatch evaluate --observations"
        )
    record = load_manifest(path, CalibrationManifest)
    _check_made_with(path, record, model_fingerprint, library_fingerprint)
    try:
        return {m: IntervalCalibration.from_record(c) for m, c in record.calibrations.items()}
    except (TypeError, ValueError, AttributeError, KeyError, OverflowError) as error:
        raise InputError(path, f"is not a valid calibration: {error}") from None


def _check_made_with(
    path: Path,
    record: EvaluationManifest | CalibrationManifest,
    model_fingerprint: str,
    library_fingerprint: str,
) -> None:
    """Refuse an evaluation artefact of another model or library."""
    evaluated = record.model.fingerprint
    if evaluated != model_fingerprint:
        raise InputError(
            path,
            f"evaluates model {evaluated}, not the index's model {model_fingerprint}; "
            "evaluate this model (protomatch evaluate MODEL STORE --observations OBS)",
        )
    library = record.library.fingerprint
    if library != library_fingerprint:
        raise InputError(
            path, f"was made with library {library}, not the index's {library_fingerprint}"
        )
