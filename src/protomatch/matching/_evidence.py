"""What the evidence says about one target's estimates: verdicts, calibration, terminal lines.

The match summary carries an evaluation's per-parameter verdict and an interval calibration
(both from ``protomatch evaluate --observations``, read by
:mod:`protomatch.matching.validation`) only for targets ranked the way the evaluation
ranked its mock observations; this decides which applies and words the estimate lines.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from protomatch.calibration.intervals import IntervalCalibration
from protomatch.matching.observation import PreparedObservation
from protomatch.report.data import verdict_phrase

__all__ = [
    "CALIBRATED_METHOD",
    "calibration_for",
    "estimate_lines",
    "validation_for",
    "verdict_suffix",
]


def estimate_lines(summary: Mapping[str, Any]) -> list[str]:
    """Median and 16-84 % interval per parameter (and the truth when known)."""
    lines = []
    for name, stats in summary["parameters"].items():
        m = stats["matches"]
        truth = stats["truth"]
        known = f"  (true {truth:.3g})" if truth is not None else ""
        lines.append(
            f"  {name:>15}: {m['median']:.3g} [{m['q16']:.3g}, {m['q84']:.3g}] "
            f"{stats['unit']}{known}{verdict_suffix(summary.get('validation'), name)}"
        )
    distance = summary.get("distance")
    if distance:
        lines.append(
            f"  {'distance':>15}: {distance['median']:.3g} [{distance['q16']:.3g}, "
            f"{distance['q84']:.3g}] pc preferred by the matches (best at {distance['best']:.3g})"
        )
    return lines


def validation_for(
    validation: Mapping[str, Any] | None, prepared: PreparedObservation
) -> Mapping[str, Any] | None:
    """The evaluation's verdict if it applies to this target, else why it does not.

    The verdict scores observations matched through their beam; a target without a beam
    (a library image, an image of unknown resolution) is ranked another way.
    """
    if validation is None or prepared.beam is not None:
        return validation
    return {
        "not_applicable": "the evaluation scored observations matched through their beam; "
        "this target has no beam and is ranked by the network alone (evaluate on library "
        "test systems, protomatch evaluate MODEL STORE, measures that case)"
    }


#: The evaluated method whose calibration applies to each ranking of an observation with a beam.
CALIBRATED_METHOD = MappingProxyType(
    {"fused": "protomatch_fused", "network": "protomatch_beam_noise"}
)


def calibration_for(
    calibrations: Mapping[str, IntervalCalibration],
    prepared: PreparedObservation,
    ranking: str,
) -> tuple[IntervalCalibration | None, dict[str, Any]]:
    """The interval calibration that applies to this target, and what the report says of it.

    Calibrations are fitted on mock observations ranked through their beam; they apply to a
    target with a beam ranked the same way, not to a library image or an image without one.
    """
    method = CALIBRATED_METHOD[ranking]
    calibration = calibrations.get(method)
    if calibration is None:
        reason = (
            "no --evaluation given"
            if not calibrations
            else f"the evaluation did not calibrate {method}"
        )
        return None, {"applied": False, "reason": reason}
    if prepared.beam is None:
        return None, {
            "applied": False,
            "reason": "calibrated on observations matched through their beam; this target "
            "has no beam",
        }
    return calibration, {
        "applied": True,
        "fitted_on": calibration.fitted_on,
        "n_queries": calibration.n_queries,
        "ranking": calibration.ranking,
    }


def verdict_suffix(validation: Mapping[str, Any] | None, name: str) -> str:
    """The verdict against the strongest baseline to append to a parameter line ("" if none)."""
    entry = None if validation is None else validation.get("parameters", {}).get(name)
    if validation is None or entry is None:
        return ""
    return f"; {verdict_phrase(entry, validation['observations'])}"
