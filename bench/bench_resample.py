"""Resampling an observation onto the library's pixel grid: a whole-pixel cut + resize vs reproject.

An analytic source (a point-like star, an inclined disk and a wide envelope, each an
elliptical Gaussian) is integrated over the pixels of two grids: an observation's (its own
pixel scale, the source at a random sub-pixel position) and the library's (64 px across
the library's field, the source at the centre). The observation is then put on the
library's grid by

* **cut+resize**: :func:`protomatch.matching._cutout.square_field` (a square of the
  library's field in AU, at whole observation pixels) and the store's area/bilinear resize,
  what ``match`` did before it used reproject;
* **reproject**: ``reproject_exact`` (flux-conserving polygon overlap; what ``match`` does
  now, through :func:`protomatch.matching._cutout.resample_field`),
  ``reproject_adaptive`` (surface brightness, its default) and ``reproject_interp`` (bilinear), from
  the observation's WCS to a library-grid WCS centred on the same source position.

Printed per ratio of pixel scales: the RMS error against the library-grid truth in units of
the truth's peak (after the per-image peak normalisation every path applies), the error of
the image sum, and the time per image; then the ratio of each reproject variant's error and
time to cut+resize's, measured in the same run.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from astropy.wcs import WCS
from reproject import reproject_adaptive, reproject_exact, reproject_interp

from _common import print_header
from protomatch.library.preprocess import _resize
from protomatch.matching._cutout import square_field

LIBRARY_SIZE = 64
LIBRARY_AU_PER_PIXEL = 20.0
DISTANCE_PC = 140.0
SUPERSAMPLE = 8


@dataclass(frozen=True)
class Component:
    """One elliptical Gaussian: offset from the star [AU], FWHM major/minor [AU], PA, weight."""

    dx: float
    dy: float
    major: float
    minor: float
    angle: float
    weight: float


def random_source(rng: np.random.Generator) -> list[Component]:
    """A star, a disk and an envelope with random sizes and orientation."""
    angle = rng.uniform(0, np.pi)
    disk = rng.uniform(60, 200)
    envelope = rng.uniform(300, 700)
    return [
        Component(0.0, 0.0, 25.0, 25.0, 0.0, 1.0),
        Component(0.0, 0.0, disk, disk * rng.uniform(0.2, 0.9), angle, 0.6),
        Component(rng.normal(0, 30), rng.normal(0, 30), envelope, envelope * 0.7, angle, 0.3),
    ]


def render(
    source: list[Component], n: int, au_per_pixel: float, star: tuple[float, float]
) -> np.ndarray:
    """Surface brightness averaged over each pixel of an n x n grid; star at (row, column)."""
    fine = (np.arange(n * SUPERSAMPLE) + 0.5) / SUPERSAMPLE - 0.5
    rows, cols = np.meshgrid(fine, fine, indexing="ij")
    y_au, x_au = (rows - star[0]) * au_per_pixel, (cols - star[1]) * au_per_pixel
    image = np.zeros_like(rows)
    for c in source:
        dx, dy = x_au - c.dx, y_au - c.dy
        u = dx * np.cos(c.angle) + dy * np.sin(c.angle)
        v = -dx * np.sin(c.angle) + dy * np.cos(c.angle)
        sig_u, sig_v = c.major / 2.3548, c.minor / 2.3548
        image += c.weight * np.exp(-0.5 * ((u / sig_u) ** 2 + (v / sig_v) ** 2))
    return image.reshape(n, SUPERSAMPLE, n, SUPERSAMPLE).mean(axis=(1, 3))


def sky_wcs(n: int, au_per_pixel: float, star: tuple[float, float]) -> WCS:
    """A TAN WCS whose reference point (the star) is at pixel (row, column) ``star``."""
    wcs = WCS(naxis=2)
    degrees = au_per_pixel / DISTANCE_PC / 3600.0
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [150.0, -30.0]
    wcs.wcs.crpix = [star[1] + 1, star[0] + 1]
    wcs.wcs.cdelt = [-degrees, degrees]
    wcs.pixel_shape = (n, n)
    return wcs


def cut_and_resize(image: np.ndarray, obs_au: float, star: tuple[float, float]) -> np.ndarray:
    side = LIBRARY_AU_PER_PIXEL * LIBRARY_SIZE / obs_au
    field = np.nan_to_num(square_field(image.astype(np.float32), side, star), nan=0.0)
    resized = _resize(torch.from_numpy(field)[None, None], LIBRARY_SIZE)[0, 0]
    return resized.double().numpy()


def reproject_way(function: Callable, **options) -> Callable[..., np.ndarray]:
    def run(image: np.ndarray, obs_au: float, star: tuple[float, float]) -> np.ndarray:
        source = sky_wcs(image.shape[0], obs_au, star)
        centre = (LIBRARY_SIZE - 1) / 2
        target = sky_wcs(LIBRARY_SIZE, LIBRARY_AU_PER_PIXEL, (centre, centre))
        out, _ = function(
            (image, source), target, shape_out=(LIBRARY_SIZE, LIBRARY_SIZE), **options
        )
        return np.nan_to_num(out, nan=0.0)

    return run


METHODS: dict[str, Callable[..., np.ndarray]] = {
    "cut+resize": cut_and_resize,
    "reproject_exact": reproject_way(reproject_exact, parallel=False),
    "reproject_adaptive": reproject_way(reproject_adaptive),
    "reproject_interp": reproject_way(reproject_interp, order="bilinear"),
}


def errors(result: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """(RMS error / truth's peak after peak normalisation, relative error of the sum)."""
    rms = float(np.sqrt(np.mean((result / result.max() - truth / truth.max()) ** 2)))
    return rms, float(abs(result.sum() / truth.sum() - 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20, help="sources per pixel-scale ratio")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    print_header(
        "resampling an observation onto the library grid",
        [f"library {LIBRARY_SIZE} px x {LIBRARY_AU_PER_PIXEL} AU; {args.images} sources per ratio"],
    )
    ratios = (0.7, 1.37, 2.6, 4.3)
    print(f"{'obs/lib pixels':>14} {'method':>19} {'rms/peak':>9} {'sum err':>8} {'ms/image':>9}")
    totals: dict[str, list[float]] = {name: [0.0, 0.0] for name in METHODS}
    for ratio in ratios:
        obs_au = LIBRARY_AU_PER_PIXEL / ratio
        n = int(np.ceil(LIBRARY_SIZE * ratio * 1.3))
        cases = []
        for _ in range(args.images):
            source = random_source(rng)
            star = tuple(float(x) for x in (n - 1) / 2 + rng.uniform(-3, 3, size=2))
            centre = (LIBRARY_SIZE - 1) / 2
            truth = render(source, LIBRARY_SIZE, LIBRARY_AU_PER_PIXEL, (centre, centre))
            cases.append((render(source, n, obs_au, star), star, truth))
        for name, method in METHODS.items():
            rms, sums, seconds = [], [], 0.0
            for image, star, truth in cases:
                start = time.perf_counter()
                result = method(image, obs_au, star)
                seconds += time.perf_counter() - start
                r, s = errors(result, truth)
                rms.append(r)
                sums.append(s)
            totals[name][0] += float(np.mean(rms))
            totals[name][1] += seconds / len(cases)
            print(
                f"{ratio:>14.2f} {name:>19} {np.mean(rms):>9.4f} {np.mean(sums):>8.4f} "
                f"{1000 * seconds / len(cases):>9.2f}"
            )
    print("\nover all ratios, relative to cut+resize (same run):")
    base_rms, base_time = totals["cut+resize"]
    for name, (rms, seconds) in totals.items():
        print(f"  {name:>19}: error {rms / base_rms:5.2f}x, time {seconds / base_time:7.1f}x")


if __name__ == "__main__":
    main()
