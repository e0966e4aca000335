r"""Figures to PNG bytes without pyplot's global state (safe in notebooks and threads).

Figures show names from files and users (targets, systems, parameters, units), so text is
drawn as given: :func:`plain_text` turns off mathtext (a ``$`` in a name would be parsed as
TeX, and may fail) and LaTeX; a label of our own that needs mathtext asks for it with
``parse_math=True``. Tick labels are written by matplotlib's and astropy's formatters, in
mathtext (``$\mathdefault{10^{-4}}$``, ``$\mathregular{^h}$``), so :func:`png_bytes` reads
them as mathtext again, numeric ones only (labels the caller gives may hold names).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import LogFormatter, ScalarFormatter

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
    _formatted_labels_as_math(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, facecolor="white")
    return buffer.getvalue()


def _formatted_labels_as_math(fig: Figure) -> None:
    """Let the tick labels that formatters write (in mathtext) be read as mathtext.

    Ticks are made lazily, so every tick the locators ask for is made here, before drawing.
    Only numeric formatters are trusted; labels the caller gave (``set_xticks(x, names)``)
    stay plain text.
    """
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            axis.offsetText.set_parse_math(True)
            for ticks, formatter in (
                (axis.get_major_ticks(), axis.get_major_formatter()),
                (axis.get_minor_ticks(), axis.get_minor_formatter()),
            ):
                if isinstance(formatter, (ScalarFormatter, LogFormatter)):
                    for tick in ticks:
                        tick.label1.set_parse_math(True)
                        tick.label2.set_parse_math(True)
        for coord in getattr(ax, "coords", ()):  # astropy's WCSAxes draws its own tick labels
            coord.set_ticklabel(parse_math=True)
