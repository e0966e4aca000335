"""Benchmark training pairs per second: store loader + one batched forward vs the research way.

Same network (the demo's encoder: protomatch.demo.DEMO_TRAINING), same initial weights, same
pairs, same loss (ContrastiveLoss, margin 1) and optimiser (AdamW) on every side:

* baseline: the per-item HDF5 pair loader (two library files opened per pair, images prepared
  one by one) and two separate encoder forwards, ``network.encoder(a)`` and
  ``network.encoder(b)``, then the cosine of the two embeddings;
* store + two forwards: the store loader with the baseline's two forwards (splits the gain);
* store + batched: the store loader (intensity stretch per batch) and ``network(a, b)``, one
  forward over the concatenated pair batch, as ``protomatch.training.engine`` does.

No augmentation on any side (identical cost for all; not what is compared). Loaders run in the
main process (num_workers=0, the training default).

    python bench/bench_train.py [--quick] [--library PATH] [--steps N --baseline-steps N]
"""

from __future__ import annotations

import argparse
import copy
import logging
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
import torch.nn.functional as F

from _common import (
    add_library_arguments,
    draw_pairs,
    hdf5_loader,
    library_line,
    prepare_library,
    print_header,
    set_threads,
    stretched,
)
from protomatch.demo import demo_config
from protomatch.neural_nets.encoder import EncoderConfig
from protomatch.neural_nets.siamese import SiameseNetwork
from protomatch.training.losses import ContrastiveLoss
from protomatch.training.pairs import PairBatchDataset

Forward = Callable[[SiameseNetwork, torch.Tensor, torch.Tensor], torch.Tensor]


def batched_forward(network: SiameseNetwork, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return network(a, b)


def separate_forwards(network: SiameseNetwork, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    emb_a = network.encoder(a)
    emb_b = network.encoder(b)
    return F.cosine_similarity(emb_a, emb_b, dim=1).clamp(-1.0, 1.0)


def run_steps(
    network: SiameseNetwork,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
    forward: Forward,
    steps: int,
    warmup: int,
) -> tuple[float, float, float]:
    """Optimisation steps; returns (total s, data s, compute s) of the timed steps."""
    config = demo_config()
    optimizer = torch.optim.AdamW(
        network.parameters(), lr=config.optim.learning_rate, weight_decay=config.optim.weight_decay
    )
    loss_fn = ContrastiveLoss(margin=config.margin)
    network.train()
    iterator = iter(batches)
    data = compute = 0.0
    for step in range(warmup + steps):
        if step == warmup:
            data = compute = 0.0
            started = time.perf_counter()
        t0 = time.perf_counter()
        images_a, images_b, labels = next(iterator)
        t1 = time.perf_counter()
        pred = forward(network, images_a.unsqueeze(1), images_b.unsqueeze(1))
        loss = loss_fn(pred, labels).total
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        t2 = time.perf_counter()
        data += t1 - t0
        compute += t2 - t1
    return time.perf_counter() - started, data, compute


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="about 30 s")
    parser.add_argument("--steps", type=int, help="timed steps, store sides (default 30, quick 6)")
    parser.add_argument(
        "--baseline-steps", type=int, help="timed steps, baseline (default 10, quick 3)"
    )
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps before timing")
    add_library_arguments(parser)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    set_threads(args)
    steps = args.steps or (6 if args.quick else 30)
    base_steps = args.baseline_steps or (3 if args.quick else 10)
    warmup = args.warmup
    config = demo_config()
    batch_size = config.pairs.batch_size

    with tempfile.TemporaryDirectory(prefix="bench_train_") as tmp:
        library = prepare_library(args, Path(tmp))
        store = library.store
        encoder = EncoderConfig(**{**config.encoder.model_dump(), "input_size": args.size})
        torch.manual_seed(args.seed)
        initial = SiameseNetwork.from_config(encoder)
        n_weights = sum(p.numel() for p in initial.parameters())
        batches, normaliser = draw_pairs(store, warmup + steps, batch_size, args.seed)
        print_header(
            "bench_train: training pairs per second (forward + backward + AdamW step)",
            [
                library_line(library),
                f"network: demo encoder channels {list(encoder.channels)}, embedding "
                f"{encoder.embedding_dim}, {n_weights} weights; batches of {batch_size} pairs; "
                f"{warmup} warm-up steps excluded; contrastive loss (margin {config.margin}), "
                "AdamW",
            ],
        )
        store_batches = PairBatchDataset(store.images, batches)
        loader = torch.utils.data.DataLoader(store_batches, batch_size=None, num_workers=0)
        sides = {
            "baseline: per-item HDF5 loader + 2 separate forwards": (
                hdf5_loader(store, batches[: warmup + base_steps], normaliser, batch_size),
                separate_forwards,
                base_steps,
            ),
            "store loader + 2 separate forwards": (
                stretched(loader, store.preprocess),
                separate_forwards,
                steps,
            ),
            "store loader + 1 batched forward (new)": (
                stretched(loader, store.preprocess),
                batched_forward,
                steps,
            ),
        }
        rates = []
        for name, (batch_source, forward, n) in sides.items():
            network = copy.deepcopy(initial)
            seconds, data, compute = run_steps(network, batch_source, forward, n, warmup)
            rates.append(n * batch_size / seconds)
            print(
                f"{name:<54}: {n:3d} steps in {seconds:6.2f} s = {rates[-1]:7.1f} pairs/s "
                f"(per step: data {data / n * 1e3:6.1f} ms, compute {compute / n * 1e3:6.1f} ms)"
            )
        print(f"ratio new / baseline: {rates[2] / rates[0]:.1f}x")
        print(
            f"  of which data path (store vs HDF5, same two forwards): {rates[1] / rates[0]:.1f}x; "
            f"one batched vs two forwards, same store loader: {rates[2] / rates[1]:.2f}x"
        )
        if library.file_side <= args.size:
            print(
                f"note: library files hold {library.file_side}x{library.file_side} px images; "
                "with real 800x800 files the baseline's data time per step grows a lot"
            )


if __name__ == "__main__":
    main()
