"""Figures to PNG bytes without pyplot's global state (safe in notebooks and threads).

Figures show names from files and users (targets, systems, parameters, units), so text is
drawn as given: :func:`plain_text` turns off mathtext (a ``$`` in a name would be parsed as
TeX, and may fail) and LaTeX; a label of our own that needs mathtext asks for it with
``parse_math=True``.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

DPI = 110


@contextlib.contextmanager
def plain_text() -> Iterator[None]:
    """Make and draw figures whose text is never read as mathtext or LaTeX.

    Use it (also as a decorator, ``@plain_text()``) around both the making of the figures
    and their rendering: matplotlib reads the setting when each text (tick labels too) is
    made.

    Yields
    ------
    None
        Inside, ``text.parse_math`` and ``text.usetex`` are off.
    """
    with matplotlib.rc_context({"text.parse_math": False, "text.usetex": False}):
        yield


def png_bytes(fig: Figure, dpi: int = DPI) -> bytes:
    """Render a figure on an Agg canvas.

    Parameters
    ----------
    fig
        The figure.
    dpi
        Resolution, dots per inch.

    Returns
    -------
    bytes
        The PNG file's bytes (white background).
    """
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, facecolor="white")
    return buffer.getvalue()
