"""How much of the network and how much of the pixels to rank observations by.

``python bench/bench_fusion.py MODEL STORE OBSERVATIONS [--weights 0 0.3 0.4 0.5 0.7 1]``

For every mock observation (a folder written by ``protomatch observe`` or by
``validation/independent_model.py``), this computes once the two similarities to the whole
library that ``protomatch match`` combines: the network's (the library convolved to the
observation's beam and noised to its level) and the pixels' (noise-aware asinh stretch,
beam-matched, best of 8 orientations; :mod:`protomatch.matching.pixels`). Then, for each
network weight ``w``, it ranks the library by :func:`protomatch.matching.pixels.fused_scores`
and scores parameter recovery from the top ``k`` matches (weighted by the network's cosine,
as ``evaluate``'s ``protomatch_fused``): per parameter the median absolute error of the
weighted median, and over the parameters the mean error / prior spread and the mean 68 %
coverage. ``w = 0`` is the pixels alone (``pixels_strong`` up to its weights), ``w = 1`` the
network alone (``protomatch_beam_noise``). The last column is each row's mean error / prior
spread divided by the pixels' (``w = 0``), measured in the same run.

It chose :data:`protomatch.matching.pixels.NETWORK_WEIGHT` on the built-in library's mocks; run
it on a library you did not develop on to check the choice, not to retune it there.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from protomatch.evaluation import recovery as R
from protomatch.library.store import LibraryStore
from protomatch.matching.conditioned import BeamMatchedLibrary
from protomatch.matching.observation import prepare_observation, read_observation
from protomatch.matching.pixels import fused_scores, strong_pixel_similarities
from protomatch.neural_nets.trained import load_model
from protomatch.simulators.truth import read_truth


def _similarities(
    model: Path, store_path: Path, folder: Path, limit: int | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str], list[bool]]:
    """(Q, N) network and pixel similarities, the library's theta and the truth."""
    trained = load_model(model)
    store = LibraryStore.open(store_path)
    names = list(trained.normaliser.names)
    truth = read_truth(folder, names)
    if limit is not None:
        truth = truth.iloc[:limit]
    library = BeamMatchedLibrary(trained, store)
    network, pixels = [], []
    for row in truth.to_dict("records"):
        observation = read_observation(folder / str(row["file"]))
        if "distance_pc" in row:
            observation = observation.at_distance(float(row["distance_pc"]))
        prepared = prepare_observation(
            observation, trained.preprocess, store.au_per_pixel, store.intensity_unit
        )
        if prepared.beam is None:
            raise SystemExit(f"{row['file']}: no beam; this benchmark needs observations")
        sims, noise = library.noise_matched_similarities(prepared, prepared.beam)
        network.append(sims)
        pixels.append(
            strong_pixel_similarities(
                library, prepared.image, prepared.beam, noise, prepared.footprint
            )
        )
    theta = store.theta()[:, [store.param_names.index(n) for n in names]]
    return (
        np.stack(network),
        np.stack(pixels),
        theta,
        truth[names].to_numpy(dtype=np.float64),
        names,
        list(trained.normaliser.log10),
    )


def _scores(
    order_by: np.ndarray,
    weights: np.ndarray,
    theta: np.ndarray,
    truth: np.ndarray,
    log10: list[bool],
    k: int,
) -> np.ndarray:
    """(P, 3): median error, error / prior spread and 68 % coverage per parameter."""
    rows = np.argsort(-order_by, axis=1, kind="stable")[:, :k]
    ranked = np.take_along_axis(weights, rows, axis=1)
    out = []
    for p, flag in enumerate(log10):
        values = R.error_space(theta[:, p], flag)
        true = R.error_space(truth[:, p], flag)
        prior = np.quantile(values[np.isfinite(values)], R.LEVELS)
        record, _ = R.parameter_recovery(values, true, prior, {"m": (ranked, rows)})
        m = record["methods"]["m"]
        out.append((m["median_abs_error"], m["error_over_prior_spread"], m["coverage68"]))
    return np.array(out)


def main() -> None:
    """Parse the arguments, compute the similarities once, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("store", type=Path)
    parser.add_argument("observations", type=Path)
    parser.add_argument("--weights", type=float, nargs="+", default=[0, 0.3, 0.4, 0.5, 0.7, 1])
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--limit", type=int, default=None, help="first N observations only")
    args = parser.parse_args()
    started = time.perf_counter()
    network, pixels, theta, truth, names, log10 = _similarities(
        args.model, args.store, args.observations, args.limit
    )
    print(
        f"{len(truth)} observations x {theta.shape[0]} library images, top {args.k}; "
        f"similarities in {time.perf_counter() - started:.0f} s"
    )
    print("median absolute error per parameter (dex for log-scaled ones)")
    print(
        f"{'w':>5} "
        + " ".join(f"{n[:11]:>11}" for n in names)
        + f" {'mean/prior':>10} {'cov68':>6} {'vs pixels':>9}"
    )
    reference = None
    for w in [0.0, *[w for w in args.weights if w != 0.0]]:
        fused = np.stack([fused_scores(a, b, w) for a, b in zip(network, pixels)])
        scores = _scores(fused, network, theta, truth, log10, args.k)
        mean = float(np.nanmean(scores[:, 1]))
        reference = mean if reference is None else reference
        print(
            f"{w:5.2f} "
            + " ".join(f"{v:11.4g}" for v in scores[:, 0])
            + f" {mean:10.3f} {np.nanmean(scores[:, 2]):6.2f} {mean / reference:9.3f}"
        )


if __name__ == "__main__":
    main()
