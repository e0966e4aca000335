"""Calibration: honest parameter intervals, and diagnostics saying whether they are."""

from protomatch.calibration.intervals import CREDIBILITY, IntervalCalibration

__all__ = ["CREDIBILITY", "IntervalCalibration"]
