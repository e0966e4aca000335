"""The figure of the observation as read: beam ellipse, scale bar, compared field, WCS axes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from matplotlib.patches import Ellipse, Rectangle

from protomatch._png import png_bytes
from protomatch.library.fits_header import sky_per_pixel
from protomatch.report.data import ObservedView
from protomatch.report.observed import beam_ellipse_px, observation_figure, scale_bar_au

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SCALE_ARCSEC = 0.02


def _header(shape: tuple[int, int], rotation_deg: float = 0.0) -> fits.Header:
    """A celestial SIN WCS, north up and east left, turned counter-clockwise by ``rotation_deg``."""
    header = fits.Header()
    header["NAXIS"] = 2
    header["NAXIS2"], header["NAXIS1"] = shape
    header["CTYPE1"], header["CTYPE2"] = "RA---SIN", "DEC--SIN"
    header["CUNIT1"], header["CUNIT2"] = "deg", "deg"
    header["CRVAL1"], header["CRVAL2"] = 69.97, 26.05
    header["CRPIX1"], header["CRPIX2"] = shape[1] / 2, shape[0] / 2
    header["CDELT1"], header["CDELT2"] = -SCALE_ARCSEC / 3600, SCALE_ARCSEC / 3600
    cos, sin = np.cos(np.deg2rad(rotation_deg)), np.sin(np.deg2rad(rotation_deg))
    header["PC1_1"], header["PC1_2"] = cos, sin
    header["PC2_1"], header["PC2_2"] = -sin, cos
    return header


def _image(shape: tuple[int, int] = (40, 48)) -> np.ndarray:
    rows, columns = np.mgrid[: shape[0], : shape[1]]
    image = np.exp(-0.5 * (((columns - 26) / 4) ** 2 + ((rows - 20) / 2.5) ** 2))
    image = image + 0.01 * np.random.default_rng(3).standard_normal(shape)
    image[:3, :5] = np.nan  # blanked corner
    return image.astype(np.float32)


def _view(header: fits.Header | None) -> ObservedView:
    return ObservedView(
        image=_image(),
        wcs_header=header,
        au_per_pixel=2.8,
        beam_arcsec=(0.3, 0.15, 30.0),
        pixel_scale_arcsec=SCALE_ARCSEC,
        field_box=(20.0, 26.0, 24.0),
    )


def test_beam_in_pixels_north_up_east_left():
    # 0.3" x 0.15" at 0.02"/px is 15 x 7.5 px; PA 30 deg east of north turns the major axis
    # 30 deg counter-clockwise from up, i.e. 120 deg counter-clockwise from +column
    assert beam_ellipse_px((0.3, 0.15, 30.0), 0.02) == pytest.approx((15.0, 7.5, 120.0))
    # BMIN > BMAJ: the axes swap and the major axis is the other one (east-west here)
    assert beam_ellipse_px((0.1, 0.2, 0.0), 0.02) == pytest.approx((10.0, 5.0, 0.0))


def test_beam_follows_the_wcs_orientation():
    standard = sky_per_pixel(Path("a.fits"), _header((40, 48)))
    assert beam_ellipse_px((0.3, 0.15, 30.0), 0.02, standard) == pytest.approx((15, 7.5, 120))
    # the sky turned by 90 deg on the array: north points left, so a PA-0 beam lies along rows
    turned = sky_per_pixel(Path("b.fits"), _header((40, 48), rotation_deg=90.0))
    width, height, angle = beam_ellipse_px((0.3, 0.15, 0.0), 0.02, turned)
    assert (width, height) == pytest.approx((15.0, 7.5))
    assert min(angle % 180, 180 - angle % 180) == pytest.approx(0.0, abs=1e-6)
    # east to the right (mirrored): PA 30 deg turns clockwise from up
    mirrored = ((SCALE_ARCSEC, 0.0), (0.0, SCALE_ARCSEC))
    assert beam_ellipse_px((0.3, 0.15, 30.0), 0.02, mirrored)[2] == pytest.approx(60.0)


@pytest.mark.parametrize(
    ("width_au", "bar_au"),
    [(269.0, 50.0), (1000.0, 200.0), (4000.0, 1000.0), (20.0, 10.0), (5.0, None), (0.0, None)],
)
def test_scale_bar_is_a_round_length(width_au: float, bar_au: float | None):
    assert scale_bar_au(width_au) == bar_au


def _patches(fig) -> list:
    return list(fig.axes[0].patches)


def test_figure_with_wcs_draws_sky_axes_beam_and_field():
    fig = observation_figure(_view(_header((40, 48))), 1e-3, "obs.fits")
    ax = fig.axes[0]
    assert type(ax).__name__ == "WCSAxes"
    ellipses = [p for p in _patches(fig) if isinstance(p, Ellipse)]
    assert len(ellipses) == 1
    assert (ellipses[0].width, ellipses[0].height) == pytest.approx((15.0, 7.5))
    assert ellipses[0].angle == pytest.approx(120.0)
    boxes = [p for p in _patches(fig) if isinstance(p, Rectangle) and p.get_label() != ""]
    assert any(b.get_width() == pytest.approx(24.0) for b in boxes)
    assert any(t.get_text() == "20 AU" for t in ax.texts)  # 48 px x 2.8 AU = 134 AU wide
    assert png_bytes(fig)[:8] == PNG_SIGNATURE


def test_figure_without_wcs_uses_pixel_axes():
    fig = observation_figure(_view(None), 1e-3, "obs.npy")
    ax = fig.axes[0]
    assert type(ax).__name__ == "Axes"
    assert ax.get_xlabel() == "column [px]"
    assert any(isinstance(p, Ellipse) for p in _patches(fig))
    assert png_bytes(fig)[:8] == PNG_SIGNATURE


def test_figure_with_nothing_known_still_draws():
    view = ObservedView(image=np.full((8, 8), np.nan, dtype=np.float32))
    fig = observation_figure(view, 1e-4, "blank")
    assert not _patches(fig)
    assert png_bytes(fig)[:8] == PNG_SIGNATURE


def test_unusable_wcs_falls_back_to_pixel_axes():
    header = fits.Header()
    header["CTYPE1"], header["CTYPE2"] = "FREQ", "STOKES"  # no celestial axes
    fig = observation_figure(_view(header), 1e-3, "cube.fits")
    assert type(fig.axes[0]).__name__ == "Axes"


def test_observed_view_checks_its_fields():
    with pytest.raises(ValueError, match="2-D"):
        ObservedView(image=np.zeros((2, 3, 3)))
    with pytest.raises(ValueError, match="au_per_pixel"):
        ObservedView(image=np.zeros((3, 3)), au_per_pixel=0.0)


@pytest.mark.parametrize(
    ("field_box", "drawn", "caption"),
    [
        ((20.0, 26.0, 24.0), True, "dashed: the 24-pixel square compared"),
        ((20.0, 40.0, 24.0), True, "compared, blank (0) beyond the image's edges"),
        ((20.0, 24.0, 120.0), False, "larger than this image: blank (0) beyond its edges"),
    ],
)
def test_the_caption_says_when_the_compared_square_leaves_the_image(
    field_box: tuple[float, float, float], drawn: bool, caption: str
):
    view = ObservedView(image=_image(), au_per_pixel=2.8, field_box=field_box)
    fig = observation_figure(view, 1e-3, "obs.npy")
    boxes = [p for p in _patches(fig) if isinstance(p, Rectangle) and p.get_label() != ""]
    assert bool(boxes) == drawn
    assert any(caption in t.get_text() for t in fig.texts)


def test_every_caption_line_fits_inside_the_figure():
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    # a bug: the captions were one line wider than the figure, cut off at both sides
    view = ObservedView(
        image=_image(),
        au_per_pixel=8.01,
        beam_arcsec=(0.288, 0.22, 25.2),
        pixel_scale_arcsec=0.0347,
        field_box=(20.0, 24.0, 200.0),
    )
    fig = observation_figure(view, 1e-3, "obs_000.fits")
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    width = fig.bbox.width
    texts = [t for t in fig.texts if "pixel" in t.get_text()]
    assert texts
    for text in texts:
        extent = text.get_window_extent(renderer)
        assert extent.x0 >= 0 and extent.x1 <= width
