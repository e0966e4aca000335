"""Figures drawn with names as plain text still draw their tick labels as matplotlib means."""

from __future__ import annotations

import matplotlib
import numpy as np
from astropy.wcs import WCS
from matplotlib.figure import Figure

from protomatch._png import plain_text, png_bytes


def _figure(title: str) -> Figure:
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [52.0, -43.8]
    wcs.wcs.cdelt = [-1e-5, 1e-5]
    wcs.wcs.crpix = [16, 16]
    fig = Figure(figsize=(6, 3))
    sky = fig.add_subplot(1, 3, 1, projection=wcs)
    sky.imshow(np.ones((32, 32)))
    log = fig.add_subplot(1, 3, 2)
    log.plot([1e-6, 1e-3], [1e-4, 1e4])
    log.set_xscale("log")
    log.set_yscale("log")
    named = fig.add_subplot(1, 3, 3)
    named.bar([0, 1], [1, 2])
    named.set_xticks([0, 1], ["mass", "disk_size"])
    named.set_title(title)
    return fig


def test_tick_labels_look_the_same_with_names_drawn_as_plain_text() -> None:
    with matplotlib.rc_context({"text.parse_math": True}):
        expected = png_bytes(_figure("obs"))
    with plain_text():
        drawn = png_bytes(_figure("obs"))
    assert drawn == expected


def test_a_name_with_dollars_is_drawn_as_given() -> None:
    with plain_text():
        fig = _figure("obs_$x^$_.fits")
        png_bytes(fig)
    title = fig.axes[2].title
    assert title.get_text() == "obs_$x^$_.fits" and not title.get_parse_math()
    assert not any(t.get_parse_math() for t in fig.axes[2].get_xticklabels())
