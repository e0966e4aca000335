"""Losses checked against values computed by hand on tiny tensors."""

from __future__ import annotations

import pytest
import torch

from protomatch.errors import ProtomatchError
from protomatch.training.losses import (
    LOSSES,
    ContrastiveLoss,
    LossParts,
    SimilarityMSELoss,
    cosine_to_distance,
    make_loss,
    similarity_to_target,
)


def _t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


def _parts(parts: LossParts) -> tuple[float, float, float]:
    return (parts.total.item(), parts.similar.item(), parts.dissimilar.item())


def test_distance_and_target_maps() -> None:
    assert torch.equal(cosine_to_distance(_t(1.0, 0.0, -1.0)), _t(0.0, 0.5, 1.0))
    assert torch.equal(similarity_to_target(_t(1.0, 0.0, -1.0)), _t(1.0, 0.5, 0.0))


@pytest.mark.parametrize("margin", [0.25, 0.5, 1.0])
def test_perfect_similar_pair_costs_nothing(margin: float) -> None:
    # pred = 1 → d = 0; truth = 1 → t = 1: ½·1·0² + ½·0·max(m - 0, 0)² = 0
    assert _parts(ContrastiveLoss(margin)(_t(1.0), _t(1.0))) == (0.0, 0.0, 0.0)


@pytest.mark.parametrize("margin", [0.5, 1.0])
def test_opposite_dissimilar_pair_costs_nothing_when_margin_at_most_one(margin: float) -> None:
    # pred = -1 → d = 1; truth = -1 → t = 0: ½·0·1 + ½·1·max(m - 1, 0)² = 0 for m <= 1
    assert _parts(ContrastiveLoss(margin)(_t(-1.0), _t(-1.0))) == (0.0, 0.0, 0.0)


def test_margin_above_one_still_pushes_opposite_pairs() -> None:
    # m = 1.5, d = 1, t = 0: ½·1·(1.5 - 1)² = ½·0.25 = 0.125
    total, similar, dissimilar = _parts(ContrastiveLoss(1.5)(_t(-1.0), _t(-1.0)))
    assert (similar, dissimilar) == (0.0, pytest.approx(0.125))
    assert total == pytest.approx(0.125)


def test_orthogonal_prediction_of_similar_pair() -> None:
    # pred = 0 → d = 0.5; truth = 1 → t = 1: ½·1·0.5² = ½·0.25 = 0.125; margin part ×(1-t)=0
    assert _parts(ContrastiveLoss(0.5)(_t(0.0), _t(1.0))) == pytest.approx((0.125, 0.125, 0.0))


def test_dissimilar_pair_inside_margin() -> None:
    # pred = 0.6 → d = 0.2; truth = -1 → t = 0; m = 0.5: ½·1·(0.5 - 0.2)² = ½·0.09 = 0.045
    assert _parts(ContrastiveLoss(0.5)(_t(0.6), _t(-1.0))) == pytest.approx((0.045, 0.0, 0.045))


def test_soft_label_batch_average() -> None:
    # pair 1: pred = 0.2 → d = 0.4; truth = 0.5 → t = 0.75; m = 1
    #   similar    = ½·0.75·0.4²          = ½·0.75·0.16 = 0.06
    #   dissimilar = ½·0.25·(1 - 0.4)²    = ½·0.25·0.36 = 0.045
    # pair 2: pred = -0.5 → d = 0.75; truth = 0 → t = 0.5
    #   similar    = ½·0.5·0.75²          = ½·0.5·0.5625 = 0.140625
    #   dissimilar = ½·0.5·(1 - 0.75)²    = ½·0.5·0.0625 = 0.015625
    # means: similar (0.06 + 0.140625)/2 = 0.1003125, dissimilar (0.045 + 0.015625)/2 = 0.0303125
    parts = ContrastiveLoss(1.0)(_t(0.2, -0.5), _t(0.5, 0.0))
    assert _parts(parts) == pytest.approx((0.130625, 0.1003125, 0.0303125))


def test_default_margin_is_calibrated() -> None:
    # With m = 1 the pointwise minimum is at pred = truth; check on a grid of predictions.
    loss = ContrastiveLoss()
    assert loss.margin == 1.0
    grid = torch.linspace(-1, 1, 2001)
    for truth in (-0.8, -0.2, 0.3, 0.9):
        values = torch.stack([loss(p.reshape(1), torch.tensor([truth])).total for p in grid[::10]])
        best = grid[::10][values.argmin()].item()
        assert best == pytest.approx(truth, abs=0.011)


def test_contrastive_gradient_flows_and_points_the_right_way() -> None:
    pred = torch.tensor([0.0, 0.9], requires_grad=True)
    truth = _t(1.0, -1.0)
    ContrastiveLoss(1.0)(pred, truth).total.backward()
    assert pred.grad is not None
    # d(½ t d²)/dpred = t·d·(-½): pair 1, t = 1, d = 0.5 → -0.25, averaged over 2 → -0.125
    # d(½ (1-t)(m-d)²)/dpred = -(1-t)(m-d)·(-½): pair 2, d = 0.05, m = 1 → 0.475 → /2 = 0.2375
    assert pred.grad.tolist() == pytest.approx([-0.125, 0.2375])


def test_custom_distance_is_composed() -> None:
    def linear_distance(pred: torch.Tensor) -> torch.Tensor:
        return 1.0 - pred

    # pred = 0.5 → d = 0.5 (instead of 0.25); truth = 1: ½·0.25 = 0.125
    loss = ContrastiveLoss(1.0, distance=linear_distance)
    assert loss(_t(0.5), _t(1.0)).total.item() == pytest.approx(0.125)


def test_mse_loss_and_split_by_label_sign() -> None:
    # errors: (0.5 - 1)² = 0.25 (truth ≥ 0), (0 - (-0.5))² = 0.25 (truth < 0), (0.2 - 0)² = 0.04
    # (truth = 0 counts as similar). total = 0.54 / 3 = 0.18; similar 0.29/3; dissimilar 0.25/3
    parts = SimilarityMSELoss()(_t(0.5, 0.0, 0.2), _t(1.0, -0.5, 0.0))
    assert _parts(parts) == pytest.approx((0.18, 0.29 / 3, 0.25 / 3))
    pred = torch.tensor([0.5], requires_grad=True)
    SimilarityMSELoss()(pred, _t(1.0)).total.backward()
    assert pred.grad.tolist() == pytest.approx([-1.0])  # 2·(0.5 - 1)


@pytest.mark.parametrize("loss", [ContrastiveLoss(), SimilarityMSELoss()])
def test_shape_mismatch_is_clear(loss: ContrastiveLoss | SimilarityMSELoss) -> None:
    with pytest.raises(ProtomatchError, match=r"shape \(B,\); got \(2,\) and \(3,\)"):
        loss(_t(0.0, 0.0), _t(0.0, 0.0, 0.0))


def test_registry_and_factory() -> None:
    assert set(LOSSES) == {"contrastive", "mse"}
    assert make_loss("contrastive", margin=0.5) == ContrastiveLoss(0.5)
    assert isinstance(make_loss("mse"), SimilarityMSELoss)
    with pytest.raises(TypeError):
        LOSSES["new"] = ContrastiveLoss  # type: ignore[index]


def test_factory_errors_are_clear() -> None:
    with pytest.raises(
        ProtomatchError, match="unknown loss 'hinge': choose one of contrastive, mse"
    ):
        make_loss("hinge")
    with pytest.raises(ProtomatchError, match="loss 'mse' does not take option"):
        make_loss("mse", margin=0.5)
    with pytest.raises(ProtomatchError, match=r"margin -1\.0 must be positive"):
        make_loss("contrastive", margin=-1.0)
