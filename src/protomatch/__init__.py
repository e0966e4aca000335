"""protomatch: match observed images of protostellar systems to a library of simulations."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
