"""Make ``validation/independent_model.py`` importable as the module ``independent_model``."""

from __future__ import annotations

import sys
from pathlib import Path

VALIDATION = Path(__file__).resolve().parents[2] / "validation"
if str(VALIDATION) not in sys.path:
    sys.path.insert(0, str(VALIDATION))
