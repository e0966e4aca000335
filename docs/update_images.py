"""Copy the README's figures from a demo folder into docs/images.

``python docs/update_images.py protomatch-demo`` after ``protomatch demo -o protomatch-demo``:
the README's figures are the demo's own outputs, copied under stable names. The demo matches
two targets, a library image (first) and a mock observation (second), in that order in the
report's manifest.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

IMAGES = Path(__file__).resolve().parent / "images"


def figure_sources(demo: Path) -> dict[str, Path]:
    """README figure name -> the demo output it is copied from.

    Parameters
    ----------
    demo
        A folder written by ``protomatch demo``.

    Returns
    -------
    dict
        File name in docs/images -> path in ``demo``.
    """
    targets = json.loads((demo / "report" / "manifest.json").read_text())["targets"]
    library_target, observation = (demo / "report" / t["folder"] for t in targets[:2])
    return {
        "preview.png": demo / "library" / "preview.png",
        "training_curve.png": demo / "model" / "training_curve.png",
        "matches.png": library_target / "matches.png",
        "parameters.png": library_target / "parameters.png",
        "observation.png": observation / "observation.png",
        "observation_matches.png": observation / "matches.png",
        "observation_parameters.png": observation / "parameters.png",
        "observation_corner.png": observation / "corner.png",
        "recovery.png": demo / "evaluation" / "recovery.png",
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Copy every figure, or none when one is missing."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("demo", type=Path, help="folder written by protomatch demo")
    args = parser.parse_args(argv)
    try:
        sources = figure_sources(args.demo)
    except (OSError, KeyError, ValueError) as exc:
        print(f"update_images: {args.demo} is not a finished demo folder ({exc})", file=sys.stderr)
        return 2
    missing = [str(path) for path in sources.values() if not path.is_file()]
    if missing:
        print(f"update_images: missing {', '.join(missing)}", file=sys.stderr)
        return 2
    for name, source in sources.items():
        shutil.copyfile(source, IMAGES / name)
        print(f"{source} -> docs/images/{name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
