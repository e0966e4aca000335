from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from protomatch.errors import ProtomatchError
from protomatch.library.params import ParameterNormaliser, similarity_labels
from protomatch.training.pairs import (
    PairBatchDataset,
    PairConfig,
    PairSampler,
    SplitConfig,
    split_by_system,
)


@pytest.fixture
def table() -> pd.DataFrame:
    """20 systems x 3 snapshots x 4 projections; parameters vary with system and snapshot."""
    rows = []
    for system in range(20):
        for snapshot in range(3):
            for projection in range(1, 5):
                rows.append(
                    {
                        "system": str(system),
                        "snapshot": snapshot,
                        "projection": projection,
                        "a": np.sin(system) + snapshot,
                        "b": np.cos(system * 1.7) - snapshot,
                    }
                )
    frame = pd.DataFrame(rows)
    frame.insert(0, "image_id", np.arange(len(frame)))
    return frame


def test_no_system_is_in_two_splits(table: pd.DataFrame) -> None:
    split = split_by_system(table["system"], SplitConfig(train=0.6, validation=0.2, test=0.2))
    parts = [set(split.train), set(split.validation), set(split.test)]
    assert parts[0].isdisjoint(parts[1]) and parts[0].isdisjoint(parts[2])
    assert parts[1].isdisjoint(parts[2])
    assert set.union(*parts) == set(table["system"])
    assert [len(p) for p in parts] == [12, 4, 4]
    rows = {name: set(split.rows(table, name)) for name in ("train", "validation", "test")}
    assert sum(len(r) for r in rows.values()) == len(table)


def test_split_is_reproducible_and_seed_dependent(table: pd.DataFrame) -> None:
    first = split_by_system(table["system"], SplitConfig(seed=3))
    assert first == split_by_system(table["system"], SplitConfig(seed=3))
    assert first != split_by_system(table["system"], SplitConfig(seed=4))


def test_too_few_systems_is_a_clear_error() -> None:
    with pytest.raises(ProtomatchError, match="2 system"):
        split_by_system(["a", "b"], SplitConfig())


def test_bad_fractions_are_refused() -> None:
    with pytest.raises(ValueError, match="sum to 1"):
        SplitConfig(train=0.5, validation=0.1, test=0.1)


def _sampler(table: pd.DataFrame, balanced: bool = False, seed: int = 0) -> PairSampler:
    z = table[["a", "b"]].to_numpy()
    config = PairConfig(pairs_per_epoch=1000, batch_size=64, balanced=balanced)
    return PairSampler(table, z, None, config, seed=seed)


def test_pairs_are_labelled_by_parameter_cosine(table: pd.DataFrame) -> None:
    batch = next(_sampler(table).epoch(0))
    by_id = table.set_index("image_id")
    z_a = by_id.loc[batch.index_a, ["a", "b"]].to_numpy()
    z_b = by_id.loc[batch.index_b, ["a", "b"]].to_numpy()
    assert batch.label == pytest.approx(similarity_labels(z_a, z_b).numpy())
    assert len(batch.index_a) == 64


def test_pairs_are_fresh_each_epoch_and_deterministic(table: pd.DataFrame) -> None:
    sampler = _sampler(table)
    epoch0 = np.concatenate([b.index_a for b in sampler.epoch(0)])
    epoch1 = np.concatenate([b.index_a for b in sampler.epoch(1)])
    again = np.concatenate([b.index_a for b in _sampler(table).epoch(0)])
    assert len(epoch0) == 1000 and len(sampler) == 16
    assert not np.array_equal(epoch0, epoch1)
    assert np.array_equal(epoch0, again)


def test_each_image_of_a_pair_shows_a_random_projection(table: pd.DataFrame) -> None:
    indices = np.concatenate([b.index_a for b in _sampler(table).epoch(0)])
    projections = table.set_index("image_id").loc[indices, "projection"]
    assert set(projections) == {1, 2, 3, 4}


def test_balanced_sampling_flattens_the_label_distribution(table: pd.DataFrame) -> None:
    z = ParameterNormaliser.fit(table[["a", "b"]].to_numpy(), ["a", "b"]).transform(
        table[["a", "b"]].to_numpy()
    )
    config = PairConfig(pairs_per_epoch=2000, batch_size=100, balanced=False, bins=10)

    def bin_shares(balanced: bool) -> np.ndarray:
        sampler = PairSampler(table, z, None, config.model_copy(update={"balanced": balanced}), 0)
        labels = np.concatenate([b.label for b in sampler.epoch(0)])
        counts, _ = np.histogram(labels, bins=10, range=(-1, 1))
        return counts / counts.sum()

    plain, balanced = bin_shares(False), bin_shares(True)
    occupied = plain > 0
    assert balanced.max() < plain.max()
    assert balanced[occupied].min() > plain[occupied].min()


def test_dataset_reads_batches_from_the_image_array(table: pd.DataFrame) -> None:
    images = np.arange(len(table) * 4, dtype=np.float32).reshape(len(table), 2, 2)
    batches = list(_sampler(table).epoch(0))
    features = np.arange(len(table), dtype=np.float32)[:, None]
    images_a, images_b, labels, features_a, features_b = PairBatchDataset(
        images, batches, features
    )[1]
    assert features_a[:, 0].tolist() == batches[1].index_a.tolist()
    assert features_b[:, 0].tolist() == batches[1].index_b.tolist()
    assert PairBatchDataset(images, batches)[1][3].shape == (64, 0)
    assert images_a.shape == (64, 2, 2)
    assert np.array_equal(images_a.numpy(), images[batches[1].index_a])
    assert np.array_equal(images_b.numpy(), images[batches[1].index_b])
    assert np.array_equal(labels.numpy(), batches[1].label)
