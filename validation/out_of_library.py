"""Measure how often protomatch notices an observation that is not like its library.

``python validation/out_of_library.py INDEX --mocks OBS --independent INDEP_OBS -o OUT``

Writes FITS observations of several kinds into ``OUT/inputs/KIND/``, each on the grid, beam,
distance, brightness and noise level of one of the mock observations in ``OBS`` (written by
``protomatch observe`` for the index's library), matches them with ``protomatch match`` in
batches, and tallies, per kind, how often the per-observation "no good simulated analogue"
warning fires and how often the batch misspecification test rejects a batch
(``OUT/detection.md`` and ``detection.json``). The kinds:

* ``in_library_observe`` - the mocks themselves (``protomatch observe``): false alarms;
* ``in_library_rendered`` - new systems of the built-in simulator drawn from its own prior,
  rendered and observed by this script (the control for the kinds below, which go through
  the same steps): false alarms;
* ``noise`` - beam-correlated noise only;
* ``point_source`` - an unresolved source;
* ``galaxy`` - an elliptical Sersic profile (index 1-4, half-light radius 5-20 % of the field);
* ``independent_model`` - observations from the independent forward model
  (``validation/independent_model.py observations``), as written;
* ``outside_range`` - the built-in simulator with cores ten times more massive and faster
  rotating than its prior allows, so stellar mass, envelope mass, disk size and luminosity
  lie outside the library's range.

Everything synthetic is smoothed with the template's beam, scaled to its peak brightness and
given beam-correlated noise at its rms.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from astropy.io import fits

from protomatch.matching.match import MatchConfig, match_observations
from protomatch.optics.beam import convolve_with_beam, correlated_noise, kernel_half_width
from protomatch.simulators.library import draw_system, render_projection, snapshot_state

KINDS = (
    "in_library_observe",
    "in_library_rendered",
    "noise",
    "point_source",
    "galaxy",
    "independent_model",
    "outside_range",
)
#: The outside-range systems: core mass and angular momentum scaled by this.
OUTSIDE_FACTOR = 10.0


@dataclasses.dataclass(frozen=True)
class Template:
    """One mock observation whose grid, beam, brightness and noise a new input copies."""

    path: Path
    npix: int
    pixel_au: float
    beam_px: tuple[float, float, float]
    peak: float
    rms: float


def read_templates(mocks: Path) -> list[Template]:
    """Every mock of ``mocks/truth.csv`` as a template."""
    truth = pd.read_csv(mocks / "truth.csv")
    templates = []
    for row in truth.to_dict("records"):
        pixel = float(row["pixel_arcsec"])
        beam = (
            float(row["beam_major_arcsec"]) / pixel,
            float(row["beam_minor_arcsec"]) / pixel,
            float(row["beam_pa_deg"]),
        )
        templates.append(
            Template(
                mocks / str(row["file"]),
                int(row["npix"]),
                float(row["pixel_au"]),
                beam,
                float(row["peak_jy_beam"]),
                float(row["noise_rms_jy_beam"]),
            )
        )
    return templates


def observed(sky: np.ndarray, template: Template, rng: np.random.Generator) -> np.ndarray:
    """``sky`` smoothed with the template's beam, scaled to its peak, plus its noise."""
    smooth = convolve_with_beam(torch.from_numpy(sky.astype(np.float64)), *template.beam_px)
    image = smooth.numpy()
    image *= template.peak / max(float(image.max()), 1e-300)
    return image + template.rms * unit_noise(template, rng)


def unit_noise(template: Template, rng: np.random.Generator) -> np.ndarray:
    """Beam-correlated noise of unit rms on the template's grid."""
    pad = kernel_half_width(template.beam_px[0]) + 1
    n = template.npix
    white = torch.from_numpy(rng.standard_normal((1, n + 2 * pad, n + 2 * pad)))
    return correlated_noise(white, (n, n), *template.beam_px)[0].numpy()


def point_source(template: Template, rng: np.random.Generator) -> np.ndarray:
    """An unresolved source at the centre: the beam itself."""
    sky = np.zeros((template.npix, template.npix))
    sky[template.npix // 2, template.npix // 2] = 1.0
    return observed(sky, template, rng)


def galaxy(template: Template, rng: np.random.Generator) -> np.ndarray:
    """An elliptical Sersic profile, centred."""
    n_index = rng.uniform(1.0, 4.0)
    radius = rng.uniform(0.05, 0.2) * template.npix
    ratio, angle = rng.uniform(0.3, 0.9), rng.uniform(0.0, math.pi)
    offsets = np.arange(template.npix) - (template.npix - 1) / 2
    y, x = np.meshgrid(offsets, offsets, indexing="ij")
    along = x * math.cos(angle) + y * math.sin(angle)
    across = -x * math.sin(angle) + y * math.cos(angle)
    r = np.hypot(along, across / ratio)
    b = 2 * n_index - 1 / 3
    return observed(np.exp(-b * ((r / radius) ** (1 / n_index) - 1)), template, rng)


def simulated(scale: float) -> Callable[[Template, np.random.Generator], np.ndarray]:
    """A new built-in system (core mass and angular momentum times ``scale``), observed."""

    def make(template: Template, rng: np.random.Generator) -> np.ndarray:
        history = draw_system(rng)
        if scale != 1.0:
            history = dataclasses.replace(
                history,
                core_mass=history.core_mass * scale,
                smooth_mass=history.smooth_mass * scale,
                max_angular_momentum=history.max_angular_momentum * scale,
            )
        age = math.exp(rng.uniform(math.log(history.first_age), math.log(history.last_age)))
        state = snapshot_state(history, age, 0)
        direction = (math.acos(rng.uniform(-1.0, 1.0)), rng.uniform(0.0, 2 * math.pi))
        sky = render_projection(
            state,
            direction,
            size=template.npix,
            fov_au=template.npix * template.pixel_au,
            position_angle=rng.uniform(0.0, 2 * math.pi),
        )
        return observed(np.asarray(sky, dtype=np.float64), template, rng)

    return make


def noise_only(template: Template, rng: np.random.Generator) -> np.ndarray:
    """No source: beam-correlated noise at the template's rms."""
    return template.rms * unit_noise(template, rng)


MAKERS: dict[str, Callable[[Template, np.random.Generator], np.ndarray]] = {
    "in_library_rendered": simulated(1.0),
    "noise": noise_only,
    "point_source": point_source,
    "galaxy": galaxy,
    "outside_range": simulated(OUTSIDE_FACTOR),
}


def write_like(template: Template, image: np.ndarray, path: Path) -> None:
    """``image`` as a FITS file with the template's header (WCS, beam, unit, distance)."""
    with fits.open(template.path) as hdus:
        header = hdus[0].header.copy()
        shape = hdus[0].data.shape
    header["OBJECT"] = path.stem
    data = image.astype(np.float32).reshape(shape)
    fits.PrimaryHDU(data=data, header=header).writeto(path, overwrite=True)


def make_inputs(
    templates: Sequence[Template], independent: Path, out: Path, n: int, controls: int
) -> dict[str, list[Path]]:
    """The FITS files of every kind (``controls`` of each in-library kind, ``n`` of others)."""
    files: dict[str, list[Path]] = {"in_library_observe": [t.path for t in templates[:controls]]}
    for k, (kind, make) in enumerate(MAKERS.items()):
        count = controls if kind.startswith("in_library") else n
        folder = out / "inputs" / kind
        folder.mkdir(parents=True, exist_ok=True)
        files[kind] = []
        for i, template in enumerate(templates[:count]):
            rng = np.random.default_rng([k, i, 2026])
            path = folder / f"{kind}_{i:03d}.fits"
            write_like(template, make(template, rng), path)
            files[kind].append(path)
    files["independent_model"] = sorted(independent.glob("obs_*.fits"))[:n]
    return {kind: files[kind] for kind in KINDS}


def _matched(
    index: Path, files: Sequence[Path], out: Path, evaluation: Path | None
) -> tuple[list[tuple[str, dict[str, Any]]], dict[str, Any]]:
    """(name, summary) per file and the batch test, read back if ``out`` is a finished report."""
    manifest = out / "manifest.json"
    if manifest.is_file():
        record = json.loads(manifest.read_text())
        names = [t["name"] for t in record["targets"]]
        if names == [f.name for f in files]:
            summaries = [
                (t["name"], json.loads((out / t["folder"] / "summary.json").read_text()))
                for t in record["targets"]
            ]
            return summaries, record.get("batch_test") or {}
    result = match_observations(
        index, files, out, config=MatchConfig(), evaluation=evaluation, overwrite=True
    )
    return [(t.name, dict(t.summary)) for t in result.targets], dict(result.batch_test or {})


def detect(
    index: Path, files: Sequence[Path], out: Path, batch: int, evaluation: Path | None
) -> dict[str, Any]:
    """Match ``files`` in batches; per-observation warnings and batch rejections."""
    warned, best, rejected, p_values, targets = [], [], [], [], []
    for b, start in enumerate(range(0, len(files), batch)):
        chunk = list(files[start : start + batch])
        summaries, test = _matched(index, chunk, out / f"batch{b:02d}", evaluation)
        for name, summary in summaries:
            warnings = summary["warnings"]
            warned.append(bool(warnings))  # no good analogue, or no significant source
            best.append(float(summary["best_similarity"]))
            targets.append(
                {
                    "name": name,
                    "best_similarity": best[-1],
                    "analogues": summary.get("analogues"),
                    "warned": warned[-1],
                }
            )
        if test.get("tested"):
            rejected.append(bool(test["rejected"]))
            p_values.append(float(test["p_value"]))
    return {
        "observations": len(warned),
        "warned": int(sum(warned)),
        "warning_rate": float(np.mean(warned)) if warned else math.nan,
        "median_best_similarity": float(np.median(best)) if best else math.nan,
        "batches": len(rejected),
        "batches_rejected": int(sum(rejected)),
        "batch_rejection_rate": float(np.mean(rejected)) if rejected else math.nan,
        "batch_p_values": p_values,
        "targets": targets,
    }


def table(results: dict[str, dict[str, Any]], batch: int) -> str:
    """The README table: per kind, warnings and batch rejections."""
    lines = [
        "| input | observations | warned (no analogue, or no source) | batches of "
        f"{batch} rejected (MMD, p < 0.05) | median best similarity |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for kind, r in results.items():
        lines.append(
            f"| {kind.replace('_', ' ')} | {r['observations']} | {r['warned']} "
            f"({r['warning_rate']:.0%}) | {r['batches_rejected']} of {r['batches']} | "
            f"{r['median_best_similarity']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Make the inputs, match them, write and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("index", type=Path, help="index folder written by protomatch index")
    parser.add_argument("--mocks", type=Path, required=True, help="protomatch observe output")
    parser.add_argument("--independent", type=Path, required=True, help="independent mocks")
    parser.add_argument("-o", "--out", type=Path, required=True, help="output folder")
    parser.add_argument("--n", type=int, default=30, help="inputs per out-of-library kind")
    parser.add_argument("--controls", type=int, default=60, help="inputs per in-library kind")
    parser.add_argument("--batch", type=int, default=10, help="observations per match call")
    parser.add_argument("--evaluation", type=Path, help="evaluate --observations folder")
    args = parser.parse_args(argv)
    templates = read_templates(args.mocks)
    if len(templates) < max(args.n, args.controls):
        parser.error(f"{args.mocks} has {len(templates)} mocks; need {max(args.n, args.controls)}")
    files = make_inputs(templates, args.independent, args.out, args.n, args.controls)
    results = {}
    for kind, paths in files.items():
        results[kind] = detect(
            args.index, paths, args.out / "reports" / kind, args.batch, args.evaluation
        )
        r = results[kind]
        print(
            f"{kind}: warned {r['warned']}/{r['observations']}, batches rejected "
            f"{r['batches_rejected']}/{r['batches']}",
            flush=True,
        )
    (args.out / "detection.json").write_text(json.dumps(results, indent=1))
    (args.out / "detection.md").write_text(table(results, args.batch))
    print(table(results, args.batch))
    return 0


if __name__ == "__main__":
    sys.exit(main())
