"""Benchmark matching one observation: the prebuilt index vs the beam- and noise-matched library.

An observation with a beam is compared with the library convolved to its beam and noised to
its level (``BeamMatchedLibrary.noise_matched_similarities``), which embeds the whole library
anew: one library pass per observation, cached per (beam, noise) bin. This script times, per
observation, on mock observations (``protomatch observe``) of systems outside the library:

* reading and preparing the FITS file (resampling, units);
* the plain query: one embedding + an exact FAISS search of the prebuilt index (the baseline);
* the noise-matched comparison on a cold cache (a library pass);
* the same observation again (cache hit: one embedding + an inner product);
* the pixel half of ``match``'s fused ranking (:func:`protomatch.matching.pixels.
  strong_pixel_similarities`: the library convolved with each distinct turned beam, asinh
  stretch, best of 8 orientations; not cached), and its cost over the cold network pass.

It needs a trained model, its store and the simulated library, e.g. the demo's folder:

    python bench/bench_observations.py --demo protomatch-demo [--n 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np

from _common import print_header, set_threads
from protomatch.library.store import LibraryStore
from protomatch.matching.conditioned import BeamMatchedLibrary, noise_level
from protomatch.matching.observation import prepare_observation, read_observation
from protomatch.matching.pixels import strong_pixel_similarities
from protomatch.neural_nets.trained import load_model
from protomatch.simulators.observations import ObserveConfig, make_observations


def timed(fn):
    started = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", type=Path, required=True, help="folder of `protomatch demo`")
    parser.add_argument("--n", type=int, default=5, help="mock observations to time")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    args = parser.parse_args()
    set_threads(args)
    trained = load_model(args.demo / "model")
    store = LibraryStore.open(args.demo / "store")
    n_images = len(store)
    print_header(
        "one observation: prebuilt index vs beam- and noise-matched library",
        [f"library: {n_images} images of {store.images.shape[-1]} px ({args.demo / 'store'})"],
    )
    library = BeamMatchedLibrary(trained, store, cache_size=1)
    vectors = library.embeddings(None)
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    with tempfile.TemporaryDirectory() as tmp:
        observed = make_observations(
            args.demo / "library", Path(tmp) / "obs", config=ObserveConfig(n=args.n, seed=77)
        )
        rows = [
            time_one(path, trained, store, library, index)
            for path in sorted(observed.out.glob("*.fits"))
        ]
    columns = ("prepare", "index", "matched_cold", "matched_warm", "strong_pixels")
    medians = {c: statistics.median(r[c] for r in rows) * 1e3 for c in columns}
    print(f"median over {len(rows)} observations, ms per observation:")
    for column in columns:
        print(f"  {column:>13}: {medians[column]:9.1f}")
    cold = medians["matched_cold"] / medians["index"]
    print(
        f"noise-matched (library pass) / index query: {cold:.0f}x slower; "
        f"{medians['matched_cold'] / n_images * 1e3:.0f} us per library image"
    )
    warm = medians["matched_warm"] / medians["index"]
    print(f"cache hit (same beam and noise bin) / index query: {warm:.1f}x")
    fused = (medians["matched_cold"] + medians["strong_pixels"]) / medians["matched_cold"]
    print(f"fused ranking (network pass + pixel pass) / network pass alone: {fused:.2f}x")


def time_one(path, trained, store, library, index) -> dict[str, float]:
    observation = read_observation(path)
    prepared, prepare_s = timed(
        lambda: prepare_observation(
            observation, trained.preprocess, store.au_per_pixel, store.intensity_unit
        )
    )
    beam = prepared.beam
    brightness = trained.compared_brightness(prepared.mean_intensity)
    intensity = None if brightness is None else np.array([brightness])

    def query_index():
        return index.search(trained.embed(prepared.image[None], intensity), 100)

    _, index_s = timed(query_index)
    _, cold_s = timed(lambda: library.noise_matched_similarities(prepared, beam))
    _, warm_s = timed(lambda: library.noise_matched_similarities(prepared, beam))
    noise = noise_level(prepared.image)
    _, pixels_s = timed(
        lambda: strong_pixel_similarities(library, prepared.image, beam, noise, prepared.footprint)
    )
    return {
        "prepare": prepare_s,
        "index": index_s,
        "matched_cold": cold_s,
        "matched_warm": warm_s,
        "strong_pixels": pixels_s,
    }


if __name__ == "__main__":
    main()
