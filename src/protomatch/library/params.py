"""Physical parameters θ: normalisation and the weak-supervision similarity label.

The label of a pair of images is the cosine similarity of their *normalised* parameter
vectors (see ``docs/architecture.md``). Normalisation statistics are fitted on the training
split only and travel with the model, so a model labels and reports parameters the same way
everywhere.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from protomatch.errors import ProtomatchError

#: A parameter spanning at least this ratio (max / min, all positive) is log-scaled by "auto".
_MULTI_DECADE_RATIO = 100.0


class ParameterConfig(BaseModel):
    """Which parameters define similarity, how they are scaled, and how much each counts.

    ``log10="auto"`` takes log10 of every parameter that is positive and spans two decades
    or more in the training split (accretion rate, luminosity, age in the default library).

    Attributes
    ----------
    names
        Parameters that define similarity (None: all of the library's).
    method
        ``zscore`` (mean and standard deviation) or ``minmax`` (training range to [-1, 1]).
    log10
        ``"auto"`` or the names of the parameters to log-scale.
    weights
        Weight of a parameter in the similarity label (1 when not given).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    names: tuple[str, ...] | None = None
    method: Literal["zscore", "minmax"] = "zscore"
    log10: Literal["auto"] | tuple[str, ...] = "auto"
    weights: dict[str, float] = Field(default_factory=dict)


@dataclass(frozen=True)
class ParameterNormaliser:
    """Maps raw parameters θ (physical units) to normalised values, per parameter.

    ``z = (f(θ) - centre) / scale`` with ``f = log10`` where ``log10`` is set; z-score uses
    the mean and standard deviation, min-max maps the training range onto [-1, 1] so the
    cosine label keeps its sign structure.

    Attributes
    ----------
    names
        Parameter names, in column order.
    log10
        Per parameter: whether log10 is taken first.
    centre, scale
        Per parameter, in the (log10-)scaled units.
    method
        ``"zscore"`` or ``"minmax"``.
    """

    names: tuple[str, ...]
    log10: tuple[bool, ...]
    centre: tuple[float, ...]
    scale: tuple[float, ...]
    method: str

    @classmethod
    def fit(
        cls,
        theta: np.ndarray,
        names: Sequence[str],
        method: str = "zscore",
        log10: Literal["auto"] | Sequence[str] = "auto",
    ) -> ParameterNormaliser:
        """Fit the normalisation, normally on the training split only.

        Parameters
        ----------
        theta
            (N, P) raw parameters in physical units, N >= 2, all finite.
        names
            The P parameter names.
        method
            ``"zscore"`` or ``"minmax"``.
        log10
            ``"auto"`` (positive parameters spanning >= 2 decades) or names to log-scale.

        Returns
        -------
        ParameterNormaliser
            The fitted normalisation.

        Raises
        ------
        ProtomatchError
            For too few rows, non-finite values, an unknown method or log10 name, or a
            log-scaled parameter with values <= 0.
        """
        theta = np.asarray(theta, dtype=np.float64)
        names = tuple(names)
        if theta.ndim != 2 or theta.shape[1] != len(names) or theta.shape[0] < 2:
            raise ProtomatchError(
                f"need at least two parameter rows of {len(names)} values to fit a "
                f"normalisation, got shape {theta.shape}"
            )
        if not np.isfinite(theta).all():
            raise ProtomatchError("parameters contain NaN or infinite values")
        flags = _log10_flags(theta, names, log10)
        values = _apply_log(theta, flags, names)
        if method == "zscore":
            centre, scale = values.mean(axis=0), values.std(axis=0)
        elif method == "minmax":
            low, high = values.min(axis=0), values.max(axis=0)
            centre, scale = (low + high) / 2, (high - low) / 2
        else:
            raise ProtomatchError(f"unknown normalisation {method!r}: use zscore or minmax")
        scale = np.where(scale > 0, scale, 1.0)
        return cls(names, flags, tuple(centre.tolist()), tuple(scale.tolist()), method)

    def transform(self, theta: np.ndarray) -> np.ndarray:
        """Normalise raw parameters.

        Parameters
        ----------
        theta
            (N, P) raw parameters in physical units, columns in ``names`` order.

        Returns
        -------
        numpy.ndarray
            (N, P) float64 normalised parameters.
        """
        theta = np.asarray(theta, dtype=np.float64)
        values = _apply_log(theta, self.log10, self.names)
        return (values - np.asarray(self.centre)) / np.asarray(self.scale)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable record of the normalisation (see :meth:`from_dict`)."""
        return {
            "names": list(self.names),
            "log10": list(self.log10),
            "centre": list(self.centre),
            "scale": list(self.scale),
            "method": self.method,
        }

    @classmethod
    def from_dict(cls, payload: Mapping[str, Any]) -> ParameterNormaliser:
        """Rebuild a normalisation from :meth:`to_dict`'s record.

        Parameters
        ----------
        payload
            The record, e.g. read from ``model.json``.

        Returns
        -------
        ParameterNormaliser
            The normalisation.

        Raises
        ------
        ProtomatchError
            For a malformed record.
        """
        try:
            return cls(
                names=tuple(payload["names"]),
                log10=tuple(bool(v) for v in payload["log10"]),
                centre=tuple(float(v) for v in payload["centre"]),
                scale=tuple(float(v) for v in payload["scale"]),
                method=str(payload["method"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ProtomatchError(f"malformed parameter normalisation record: {exc}") from None


def _log10_flags(
    theta: np.ndarray, names: tuple[str, ...], log10: Literal["auto"] | Sequence[str]
) -> tuple[bool, ...]:
    if log10 == "auto":
        positive = np.asarray((theta > 0).all(axis=0))
        ratio = np.where(positive, theta.max(axis=0) / np.where(positive, theta.min(axis=0), 1), 1)
        return tuple(bool(p and r >= _MULTI_DECADE_RATIO) for p, r in zip(positive, ratio))
    unknown = set(log10) - set(names)
    if unknown:
        raise ProtomatchError(f"log10 names unknown parameters: {', '.join(sorted(unknown))}")
    return tuple(name in log10 for name in names)


def _apply_log(theta: np.ndarray, flags: Sequence[bool], names: Sequence[str]) -> np.ndarray:
    values = theta.copy()
    for column, (flag, name) in enumerate(zip(flags, names)):
        if not flag:
            continue
        if (values[:, column] <= 0).any():
            raise ProtomatchError(f"parameter {name!r} is log-scaled but has values <= 0")
        values[:, column] = np.log10(values[:, column])
    return values


def weight_vector(names: Sequence[str], weights: Mapping[str, float]) -> np.ndarray:
    """The weight of each parameter in the similarity label.

    Parameters
    ----------
    names
        The P parameter names.
    weights
        Weights by name; a name not given weighs 1.

    Returns
    -------
    numpy.ndarray
        (P,) float64 weights.

    Raises
    ------
    ProtomatchError
        For an unknown name, a negative weight or all weights zero.
    """
    unknown = set(weights) - set(names)
    if unknown:
        raise ProtomatchError(f"weights name unknown parameters: {', '.join(sorted(unknown))}")
    vector = np.array([float(weights.get(name, 1.0)) for name in names])
    if (vector < 0).any() or not vector.any():
        raise ProtomatchError("parameter weights must be >= 0 and not all zero")
    return vector


def similarity_labels(
    z_a: torch.Tensor | np.ndarray,
    z_b: torch.Tensor | np.ndarray,
    weights: torch.Tensor | np.ndarray | None = None,
) -> torch.Tensor:
    """Ground-truth similarity of pairs: cosine of weighted normalised parameter vectors.

    Parameters
    ----------
    z_a, z_b
        (B, P) normalised parameters of the two sides of B pairs.
    weights
        (P,) non-negative weights multiplying each component before the cosine.

    Returns
    -------
    torch.Tensor
        (B,) float32 in [-1, 1]; 0 where either vector is zero (no direction, no similarity).
    """
    a, b = _as_float64_tensor(z_a), _as_float64_tensor(z_b)
    if weights is not None:
        w = _as_float64_tensor(weights)
        a, b = a * w, b * w
    norms = a.norm(dim=-1) * b.norm(dim=-1)
    dot = (a * b).sum(dim=-1)
    cosine = torch.where(norms > 0, dot / norms.clamp_min(1e-300), torch.zeros_like(dot))
    return cosine.clamp(-1.0, 1.0).to(torch.float32)


def _as_float64_tensor(values: torch.Tensor | np.ndarray) -> torch.Tensor:
    if isinstance(values, torch.Tensor):
        return values.to(torch.float64)
    return torch.from_numpy(np.array(values, dtype=np.float64))
