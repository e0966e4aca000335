"""The embedding index: the whole library embedded once, searched by inner product (FAISS).

The Siamese network's output is the cosine of two embeddings, so scoring a target against N
library images is one forward for the target and a nearest-neighbour search over the
L2-normalised library embeddings (inner product = cosine). ``index.json`` records the model
and library fingerprints; an index is refused with any other model or library.
"""

from __future__ import annotations

import io
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from tqdm import tqdm

from protomatch._artefact import atomic_directory, provenance, write_json_atomic
from protomatch._integrity import file_record, note_no_checksums, read_checked
from protomatch._locking import claims_output
from protomatch._manifests import IndexManifest, load_manifest
from protomatch.errors import InputError
from protomatch.library.store import LibraryStore
from protomatch.neural_nets.trained import TrainedModel, load_model

log = logging.getLogger(__name__)

INDEX_SCHEMA_VERSION = IndexManifest.SCHEMA_VERSION
FAISS_FILE = "faiss.index"
IDS_FILE = "ids.npy"
EMBEDDINGS_FILE = "embeddings.npy"
_NEIGHBOUR_SAMPLE = 1000
_IVF_POINTS_PER_CELL = 64


class IndexConfig(BaseModel):
    """Exact inner-product search by default.

    ``flat16`` stores the embeddings as float16: exhaustive like ``flat`` at half the memory
    and about 5x faster on large libraries, ranks equal up to float16 rounding (recall@10
    0.998 at N = 1e6 in bench/bench_search.py); ``ivf`` and ``hnsw`` are approximate.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["flat", "flat16", "ivf", "hnsw"] = "flat"
    nlist: int | None = Field(None, ge=1, description="IVF cells (default 4 sqrt(N))")
    nprobe: int = Field(16, ge=1)
    hnsw_m: int = Field(32, ge=4)
    ef_search: int = Field(128, ge=1)
    batch_size: int = Field(256, ge=1)


def make_faiss_index(embeddings: np.ndarray, config: IndexConfig) -> Any:
    """A FAISS inner-product index over ``embeddings`` (N, D) float32, L2-normalised.

    Parameters
    ----------
    embeddings
        (N, D) float32 unit-norm library embeddings, in store row order.
    config
        The index kind and its search settings; an ``ivf`` index is trained on a sample
        of ``embeddings`` first.

    Returns
    -------
    faiss.Index
        An index holding all N vectors; its inner products are cosine similarities in
        [-1, 1] and its row numbers are the store rows.
    """
    import faiss

    n, dim = embeddings.shape
    index: faiss.Index
    if config.kind == "flat":
        index = faiss.IndexFlatIP(dim)
    elif config.kind == "flat16":
        index = faiss.IndexScalarQuantizer(
            dim, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT
        )
    elif config.kind == "hnsw":
        graph = faiss.IndexHNSWFlat(dim, config.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        graph.hnsw.efSearch = config.ef_search
        index = graph
    else:
        # FAISS wants >= 39 training points per cell
        nlist = config.nlist or max(1, min(int(4 * math.sqrt(n)), n // 39))
        nlist = min(nlist, n)
        cells = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
        cells.train(_training_sample(embeddings, _IVF_POINTS_PER_CELL * nlist))
        cells.nprobe = min(config.nprobe, nlist)
        index = cells
    index.add(embeddings)
    return index


def _training_sample(embeddings: np.ndarray, size: int, seed: int = 0) -> np.ndarray:
    """k-means on every vector of a 1e6 library takes minutes; a sample trains as well."""
    if len(embeddings) <= size:
        return embeddings
    rows = np.sort(np.random.default_rng(seed).choice(len(embeddings), size, replace=False))
    return np.ascontiguousarray(embeddings[rows])


@dataclass(frozen=True)
class IndexResult:
    """An index folder written by :func:`build_index`, with its size and neighbour statistics."""

    out: Path
    n_images: int
    dim: int
    kind: str
    neighbour_similarity: dict[str, float]

    def describe(self) -> str:
        """What was indexed and how close library images come to another system."""
        q = self.neighbour_similarity
        return (
            f"indexed {self.n_images} library images ({self.kind}, {self.dim}-d embeddings)\n"
            f"library images' best match in another system: median similarity "
            f"{q['median']:.3f}, 1st percentile {q['p1']:.3f}\n"
            f"index: {self.out}"
        )


@claims_output("index", inputs=("model", "library"))
def build_index(
    model: str | Path,
    library: str | Path,
    out: str | Path,
    *,
    config: IndexConfig | None = None,
    overwrite: bool = False,
) -> IndexResult:
    """Embed every library image with ``model`` and write an index folder ``out``.

    Parameters
    ----------
    model
        Model folder (``protomatch train``); its input size must be the store's image size.
    library
        Library store (``protomatch ingest``).
    out
        Index folder to write (atomically; must be empty or absent unless ``overwrite``).
    config
        Index kind and settings; exact inner-product search when None.
    overwrite
        Replace a non-empty ``out``.

    Returns
    -------
    IndexResult
        The folder, image count, embedding size, kind and neighbour statistics.
    """
    import faiss

    config = config or IndexConfig()
    trained = load_model(model)
    store = LibraryStore.open(library)
    trained.check_store(store)
    embeddings = embed_store(trained, store, config.batch_size)
    ids = store.table["image_id"].to_numpy(dtype=np.int64)
    systems = store.table["system"].astype(str).to_numpy()
    stats = neighbour_similarity(embeddings, systems)
    with atomic_directory(out, overwrite) as tmp:
        faiss.write_index(make_faiss_index(embeddings, config), str(tmp / FAISS_FILE))
        np.save(tmp / IDS_FILE, ids, allow_pickle=False)
        np.save(tmp / EMBEDDINGS_FILE, embeddings, allow_pickle=False)
        files = {name: file_record(tmp / name) for name in (FAISS_FILE, IDS_FILE, EMBEDDINGS_FILE)}
        write_json_atomic(
            tmp / "index.json",
            {
                **provenance("index", INDEX_SCHEMA_VERSION),
                "config": config.model_dump(mode="json"),
                "n_images": len(ids),
                "dim": int(embeddings.shape[1]),
                "model": {"path": str(Path(model).resolve()), "fingerprint": trained.fingerprint},
                "library": {"path": str(store.path.resolve()), "fingerprint": store.fingerprint},
                "neighbour_similarity": stats,
                "files": files,
            },
        )
    return IndexResult(Path(out), len(ids), int(embeddings.shape[1]), config.kind, stats)


def embed_store(trained: TrainedModel, store: LibraryStore, batch_size: int = 256) -> np.ndarray:
    """Embeddings (N, D) float32 of every store image, streamed in batches.

    Parameters
    ----------
    trained
        The model; brightness-aware models get each image's ``mean_intensity``.
    store
        The library store: N linear, peak-1 (H, W) images.
    batch_size
        Images read and embedded at once.

    Returns
    -------
    numpy.ndarray
        (N, D) float32 L2-normalised embeddings, in store row order.
    """
    n = len(store)
    out = np.empty((n, trained.encoder_config.embedding_dim), dtype=np.float32)
    for start in tqdm(range(0, n, batch_size), desc="embedding library", leave=False, disable=None):
        stop = min(start + batch_size, n)
        brightness = store.table["mean_intensity"].to_numpy()[start:stop]
        out[start:stop] = trained.embed(store.images[start:stop], brightness, batch_size)
    return out


def neighbour_similarity(
    embeddings: np.ndarray,
    systems: np.ndarray,
    sample: int = _NEIGHBOUR_SAMPLE,
    seed: int = 0,
    queries: Callable[[np.ndarray], np.ndarray] | None = None,
) -> dict[str, float]:
    """Quantiles of each sampled library image's best similarity to *another* system.

    This is what a good simulated analogue looks like; a target whose best match falls far
    below it has no close counterpart in the library. ``queries(rows)`` gives the sampled
    images' query embeddings when they differ from their library ones (e.g. another noise
    realisation); by default the library embeddings themselves are the queries.

    Parameters
    ----------
    embeddings
        (N, D) float32 unit-norm library embeddings.
    systems
        (N,) system name of each row; matches within a system are left out.
    sample
        Library images drawn as queries (at most N, without replacement).
    seed
        Seed of the draw.
    queries
        Given the (n,) sampled store rows (in random order), returns their (n, D) query
        embeddings in that order; None: ``embeddings[rows]``.

    Returns
    -------
    dict of str to float
        Cosine similarities in [-1, 1] under ``p1``, ``p5`` and ``median``; NaN when there
        are fewer than two systems.
    """
    if len(set(systems.tolist())) < 2:
        return {"p1": math.nan, "p5": math.nan, "median": math.nan}
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(embeddings), size=min(sample, len(embeddings)), replace=False)
    query_vectors = embeddings[picks] if queries is None else queries(picks)
    best = np.full(len(picks), -np.inf, dtype=np.float32)
    for start in range(0, len(embeddings), 8192):
        block = embeddings[start : start + 8192]
        sims = query_vectors @ block.T
        sims[systems[picks][:, None] == systems[start : start + 8192][None, :]] = -np.inf
        best = np.maximum(best, sims.max(axis=1))
    best = best[np.isfinite(best)]
    return {
        "p1": float(np.quantile(best, 0.01)),
        "p5": float(np.quantile(best, 0.05)),
        "median": float(np.median(best)),
    }


def read_index_files(path: Path, manifest: IndexManifest) -> tuple[Any, np.ndarray]:
    """The FAISS index and store ids of an index folder, checked against ``index.json``.

    Parameters
    ----------
    path
        The index folder.
    manifest
        Its validated ``index.json``.

    Returns
    -------
    faiss_index : faiss.Index
        The index of ``manifest.n_images`` vectors of ``manifest.dim`` dimensions.
    ids : numpy.ndarray
        (n_images,) int store row of each vector, each in [0, n_images).

    Raises
    ------
    InputError
        If a file differs from its checksum, cannot be read or disagrees with ``index.json``.
    """
    import faiss

    faiss_bytes = read_checked(path / FAISS_FILE, manifest.files)
    ids_bytes = read_checked(path / IDS_FILE, manifest.files)
    try:
        faiss_index = faiss.deserialize_index(np.frombuffer(faiss_bytes, dtype=np.uint8))
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1][:200]
        raise InputError(path / FAISS_FILE, f"is not a readable FAISS index ({first})") from None
    try:
        ids = np.load(io.BytesIO(ids_bytes), allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise InputError(path / IDS_FILE, f"is not a readable .npy file ({exc})") from None
    if faiss_index.ntotal != manifest.n_images or faiss_index.d != manifest.dim:
        raise InputError(
            path / FAISS_FILE,
            f"holds {faiss_index.ntotal} vectors of dimension {faiss_index.d}; index.json "
            f"says {manifest.n_images} of {manifest.dim}",
        )
    _check_ids(path / IDS_FILE, ids, manifest.n_images)
    return faiss_index, ids


def _check_ids(path: Path, ids: np.ndarray, n: int) -> None:
    """Refuse ids that are not n integer store rows in 0 .. n-1."""
    if ids.shape != (n,) or ids.dtype.kind not in "iu":
        raise InputError(path, f"holds {ids.dtype} ids of shape {ids.shape}, not {n} store rows")
    if n and not 0 <= ids.min() <= ids.max() < n:
        raise InputError(path, f"holds ids outside the library's rows 0 .. {n - 1}")


class EmbeddingIndex:
    """An index folder opened with the model and library it was built from (checked)."""

    def __init__(
        self,
        path: Path,
        manifest: dict[str, Any],
        faiss_index: Any,
        ids: np.ndarray,
        model: TrainedModel,
        store: LibraryStore,
    ) -> None:
        self.path = path
        self.manifest = manifest
        self._faiss = faiss_index
        self.ids = ids
        self.model = model
        self.store = store

    @classmethod
    def open(
        cls,
        path: str | Path,
        model: str | Path | None = None,
        library: str | Path | None = None,
    ) -> EmbeddingIndex:
        """Open an index; ``model``/``library`` override the recorded paths (e.g. moved).

        Parameters
        ----------
        path
            Index folder written by :func:`build_index`.
        model
            Model folder; None: the path recorded in ``index.json``.
        library
            Library store; None: the path recorded in ``index.json``.

        Returns
        -------
        EmbeddingIndex
            The index with its model and store, whose fingerprints must match the recorded
            ones (otherwise :class:`~protomatch.errors.InputError`).
        """
        path = Path(path)
        manifest = load_manifest(path / "index.json", IndexManifest)
        if not manifest.has_checksums:
            note_no_checksums(path, "index")
        trained = load_model(model or manifest.model.path)
        if trained.fingerprint != manifest.model.fingerprint:
            raise InputError(
                path,
                f"index was built by model {manifest.model.fingerprint}, not by "
                f"{model or manifest.model.path} ({trained.fingerprint}); rebuild it",
            )
        store = LibraryStore.open(library or manifest.library.path)
        if store.fingerprint != manifest.library.fingerprint:
            raise InputError(
                path,
                f"index was built from library {manifest.library.fingerprint}, not from "
                f"{store.path} ({store.fingerprint}); rebuild it",
            )
        faiss_index, ids = read_index_files(path, manifest)
        if len(store) != manifest.n_images:
            raise InputError(path, "index and library disagree on the number of images")
        if manifest.dim != trained.encoder_config.embedding_dim:
            raise InputError(path, "index and model disagree on the embedding size")
        return cls(path, manifest.as_dict(), faiss_index, ids, trained, store)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def neighbour_stats(self) -> dict[str, float]:
        """Quantiles (p1, p5, median) of library images' best similarity to another system."""
        return dict(self.manifest["neighbour_similarity"])

    def search(self, embeddings: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` similarities (Q, k) and store image ids (Q, k) for query embeddings.

        Parameters
        ----------
        embeddings
            (Q, D) unit-norm query embeddings (cast to float32).
        k
            Matches per query; capped at the library size N.

        Returns
        -------
        similarities : numpy.ndarray
            (Q, min(k, N)) float32 cosine similarities in [-1, 1], best first.
        ids : numpy.ndarray
            (Q, min(k, N)) int64 store image ids (``image_id``), in the same order; -1 where
            an approximate index found fewer than k (its similarity is then -inf).
        """
        k = min(k, len(self))
        sims, rows = self._faiss.search(np.ascontiguousarray(embeddings, dtype=np.float32), k)
        empty = rows < 0  # FAISS's mark of an unfilled slot; ids[-1] would be a real image
        return np.where(empty, -np.inf, sims).astype(np.float32), np.where(
            empty, -1, self.ids[np.where(empty, 0, rows)]
        )
