from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from protomatch.errors import ProtomatchError
from protomatch.library.params import ParameterNormaliser, similarity_labels, weight_vector


def test_labels_match_hand_computed_cosines() -> None:
    z_a = np.array([[1.0, 0.0], [1.0, 1.0], [1.0, 2.0], [3.0, 4.0]])
    z_b = np.array([[0.0, 1.0], [-1.0, -1.0], [2.0, 4.0], [4.0, 3.0]])
    labels = similarity_labels(z_a, z_b)
    # orthogonal, opposite, parallel, (12 + 12) / (5 * 5)
    assert labels.tolist() == pytest.approx([0.0, -1.0, 1.0, 24 / 25])
    assert labels.dtype == torch.float32


def test_weights_scale_each_component_before_the_cosine() -> None:
    z_a, z_b = np.array([[1.0, 1.0]]), np.array([[1.0, -1.0]])
    assert similarity_labels(z_a, z_b).item() == pytest.approx(0.0)
    # weights (2, 1): (2, 1)·(2, -1) / 5 = 3 / 5
    assert similarity_labels(z_a, z_b, np.array([2.0, 1.0])).item() == pytest.approx(0.6)
    # a zero weight removes a parameter from the comparison
    assert similarity_labels(z_a, z_b, np.array([1.0, 0.0])).item() == pytest.approx(1.0)


def test_zero_vector_gives_zero_similarity_not_nan() -> None:
    labels = similarity_labels(np.zeros((1, 3)), np.ones((1, 3)))
    assert labels.item() == 0.0


def test_zscore_with_auto_log_for_multi_decade_parameters() -> None:
    theta = np.array([[1e-7, 1.0], [1e-6, 2.0], [1e-5, 3.0]])
    norm = ParameterNormaliser.fit(theta, ["accretion_rate", "mass"])
    assert norm.log10 == (True, False)
    z = norm.transform(theta)
    # log10 of the first column is -7, -6, -5: mean -6, population std sqrt(2/3)
    assert z[:, 0] == pytest.approx(np.array([-1, 0, 1]) / math.sqrt(2 / 3))
    assert z.mean(axis=0) == pytest.approx([0, 0])
    assert z.std(axis=0) == pytest.approx([1, 1])


def test_minmax_maps_training_range_to_plus_minus_one() -> None:
    theta = np.array([[0.0, 10.0], [5.0, 20.0], [10.0, 30.0]])
    norm = ParameterNormaliser.fit(theta, ["a", "b"], method="minmax", log10=())
    assert norm.transform(theta)[:, 0] == pytest.approx([-1, 0, 1])


def test_statistics_come_from_the_fitted_rows_only() -> None:
    train = np.array([[1.0], [3.0]])
    held_out = np.array([[100.0]])
    norm = ParameterNormaliser.fit(train, ["x"], log10=())
    assert norm.centre == (2.0,)
    assert norm.transform(held_out)[0, 0] == pytest.approx(98.0)


def test_normaliser_survives_a_json_round_trip() -> None:
    norm = ParameterNormaliser.fit(np.array([[1e-3, 2.0], [1.0, 4.0]]), ["l", "m"])
    again = ParameterNormaliser.from_dict(json.loads(json.dumps(norm.to_dict())))
    assert again == norm


@pytest.mark.parametrize(
    ("theta", "message"),
    [
        (np.array([[1.0, np.nan], [2.0, 3.0]]), "NaN"),
        (np.array([[1.0, 2.0]]), "at least two"),
    ],
)
def test_bad_parameters_are_refused(theta: np.ndarray, message: str) -> None:
    with pytest.raises(ProtomatchError, match=message):
        ParameterNormaliser.fit(theta, ["a", "b"])


def test_log_of_non_positive_values_is_refused() -> None:
    with pytest.raises(ProtomatchError, match="'a' is log-scaled"):
        ParameterNormaliser.fit(np.array([[0.0], [1.0]]), ["a"], log10=("a",))


def test_weight_vector_defaults_and_unknown_names() -> None:
    assert weight_vector(["a", "b"], {"b": 2.0}).tolist() == [1.0, 2.0]
    with pytest.raises(ProtomatchError, match="unknown parameters: c"):
        weight_vector(["a", "b"], {"c": 1.0})
