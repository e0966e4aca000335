"""Tests for the encoder, Siamese network, autoencoder and device selection."""

from __future__ import annotations

import json
import math

import pydantic
import pytest
import torch

from protomatch.errors import ProtomatchError
from protomatch.neural_nets.encoder import Encoder, EncoderConfig, check_architecture
from protomatch.neural_nets.siamese import (
    AutoEncoder,
    SiameseNetwork,
    select_device,
    siamese_from_autoencoder,
)
from protomatch.training.losses import ContrastiveLoss

SMALL = EncoderConfig(input_size=32, channels=(4, 8), hidden_dim=16, embedding_dim=8)


def _images(batch: int, size: int = 32) -> torch.Tensor:
    return torch.randn(batch, 1, size, size)


# --- configuration --------------------------------------------------------------------------


def test_default_config_shapes() -> None:
    config = EncoderConfig()
    assert config.latent_shape == (64, 4, 4)
    assert check_architecture(config) == (64, 4, 4)


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        (
            {"input_size": 60},
            "input_size 60 cannot pass 4 stride-2 stages: use a multiple of 16 (>= 32)",
        ),
        ({"input_size": 16}, "1x1 latent image"),
        (
            {"input_size": 44, "channels": (8, 8, 8)},
            "input_size 44 cannot pass 3 stride-2 stages: use a multiple of 8 (>= 16)",
        ),
        ({"kernel_size": 4}, "kernel_size 4 must be a positive odd number"),
        ({"channels": ()}, "channels is empty"),
        ({"channels": (8, 0)}, "must all be positive"),
        ({"dropout": 1.0}, "dropout 1.0 must be in [0, 1)"),
        ({"dropout": -0.1}, "dropout -0.1 must be in [0, 1)"),
        ({"embedding_dim": 0}, "embedding_dim 0 must be a positive integer"),
        ({"activation": "tanh"}, "activation"),
        ({"unknown_field": 1}, "Extra inputs are not permitted"),
    ],
)
def test_bad_architecture_has_clear_message(fields: dict, expected: str) -> None:
    with pytest.raises(pydantic.ValidationError) as info:
        EncoderConfig(**fields)
    assert expected in str(info.value)


def test_check_architecture_catches_unvalidated_config() -> None:
    config = EncoderConfig.model_construct(input_size=36, channels=(8, 8, 8))
    with pytest.raises(ValueError, match="use a multiple of 8"):
        check_architecture(config)
    with pytest.raises(ValueError, match="use a multiple of 8"):
        Encoder(config)


def test_allowed_sizes_from_the_message_work() -> None:
    for size in (32, 48, 64, 80):
        encoder = Encoder(EncoderConfig(input_size=size, channels=(2, 2, 2, 2), hidden_dim=4))
        encoder.eval()
        assert encoder(_images(1, size)).shape == (1, 128)


def test_config_json_round_trip_rebuilds_the_same_network() -> None:
    config = EncoderConfig(
        input_size=32, channels=(4, 8), activation="elu", dropout=0.2, downsample="maxpool"
    )
    text = json.dumps(config.model_dump())
    rebuilt_config = EncoderConfig.model_validate(json.loads(text))
    assert rebuilt_config == config
    assert isinstance(rebuilt_config.channels, tuple)
    original = SiameseNetwork.from_config(config).eval()
    rebuilt = SiameseNetwork.from_config(rebuilt_config).eval()
    rebuilt.load_state_dict(original.state_dict())
    x = _images(3)
    assert torch.equal(original.embed(x), rebuilt.embed(x))


def test_config_is_frozen() -> None:
    with pytest.raises(pydantic.ValidationError):
        SMALL.input_size = 64  # type: ignore[misc]


# --- encoder --------------------------------------------------------------------------------


@pytest.mark.parametrize("downsample", ["stride", "maxpool"])
@pytest.mark.parametrize("batch_norm", [True, False])
def test_encoder_shapes(downsample: str, batch_norm: bool) -> None:
    config = SMALL.model_copy(update={"downsample": downsample, "batch_norm": batch_norm})
    encoder = Encoder(config)
    x = _images(5)
    assert encoder.latent(x).shape == (5, 8, 8, 8)
    assert encoder(x).shape == (5, 8)


def test_encoder_rejects_wrong_image_size() -> None:
    with pytest.raises(ProtomatchError, match=r"shape \(B, 1, 32, 32\); got \(2, 1, 64, 64\)"):
        Encoder(SMALL)(_images(2, 64))


def test_he_init_applied() -> None:
    config = EncoderConfig(input_size=32, channels=(16, 32), hidden_dim=64, embedding_dim=8)
    he = Encoder(config)
    conv = he.features.stages[1][0]
    fan_in = 16 * 3 * 3
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2.0 / fan_in), rel=0.05)
    hidden = he.head[0]
    assert hidden.weight.std().item() == pytest.approx(math.sqrt(2.0 / (32 * 8 * 8)), rel=0.05)
    assert torch.count_nonzero(hidden.bias) == 0
    # PyTorch's default (uniform, gain sqrt(1/3)) has std 1/sqrt(3 fan_in): a factor sqrt(6) less.
    default = Encoder(config.model_copy(update={"init": "default"}))
    default_std = default.features.stages[1][0].weight.std().item()
    assert default_std == pytest.approx(1.0 / math.sqrt(3 * fan_in), rel=0.05)


def test_he_init_leaky_relu_gain() -> None:
    config = EncoderConfig(input_size=32, channels=(16, 32), activation="leaky_relu")
    conv = Encoder(config).features.stages[1][0]
    gain = math.sqrt(2.0 / (1 + 0.01**2))
    assert conv.weight.std().item() == pytest.approx(gain / math.sqrt(144), rel=0.05)


# --- Siamese network ------------------------------------------------------------------------


def test_siamese_prediction_is_cosine_of_embeddings() -> None:
    network = SiameseNetwork.from_config(SMALL).eval()
    a, b = _images(6), _images(6)
    with torch.no_grad():
        pred = network(a, b)
        emb_a, emb_b = network.embed(a), network.embed(b)
        raw_a, raw_b = network.encoder(a), network.encoder(b)
    assert pred.shape == (6,)
    assert torch.allclose(emb_a.norm(dim=1), torch.ones(6), atol=1e-6)
    assert torch.allclose(pred, (emb_a * emb_b).sum(1), atol=1e-6)
    assert torch.allclose(pred, torch.cosine_similarity(raw_a, raw_b, dim=1), atol=1e-5)
    assert torch.allclose(pred, network(b, a), atol=1e-6)
    assert bool(((pred >= -1) & (pred <= 1)).all())
    assert torch.allclose(network(a, a), torch.ones(6), atol=1e-5)


def test_batched_forward_equals_separate_forwards_in_eval_mode() -> None:
    # In train mode batch norm would normalise with the statistics of the concatenated
    # 2B batch, so only eval mode gives exact equality with two separate forwards.
    network = SiameseNetwork.from_config(SMALL)
    a, b = _images(4), _images(4)
    network.train()
    network(a, b)  # move running statistics away from their initial values
    network.eval()
    with torch.no_grad():
        joint = network(a, b)
        separate = (network.embed(a) * network.embed(b)).sum(1)
    assert torch.allclose(joint, separate, atol=1e-6)


def test_siamese_rejects_mismatched_pairs() -> None:
    network = SiameseNetwork.from_config(SMALL)
    with pytest.raises(ProtomatchError, match="paired batches differ"):
        network(_images(3), _images(2))


def _toy_problem(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian blobs of random width; the label is the blob width in [0, 1]."""
    width = torch.rand(n)
    coords = torch.arange(32, dtype=torch.float32) - 15.5
    r2 = coords[None, :, None] ** 2 + coords[None, None, :] ** 2
    sigma = 1.5 + 6.0 * width
    images = torch.exp(-r2 / (2 * sigma[:, None, None] ** 2))
    return images[:, None], width


def test_training_steps_lower_contrastive_loss() -> None:
    config = EncoderConfig(input_size=32, channels=(4, 8), hidden_dim=32, embedding_dim=8)
    network = SiameseNetwork.from_config(config)
    images, width = _toy_problem(32)
    loss_fn = ContrastiveLoss()
    generator = torch.Generator().manual_seed(1)
    first = torch.randint(0, 32, (64,), generator=generator)
    second = torch.randint(0, 32, (64,), generator=generator)
    truth = 1.0 - 2.0 * (width[first] - width[second]).abs()  # in [-1, 1]
    optimiser = torch.optim.Adam(network.parameters(), lr=3e-3)

    def evaluate() -> float:
        network.eval()
        with torch.no_grad():
            value = loss_fn(network(images[first], images[second]), truth).total.item()
        network.train()
        return value

    before = evaluate()
    for _ in range(40):
        optimiser.zero_grad()
        loss_fn(network(images[first], images[second]), truth).total.backward()
        optimiser.step()
    after = evaluate()
    assert after < 0.7 * before


# --- autoencoder ----------------------------------------------------------------------------


@pytest.mark.parametrize("downsample", ["stride", "maxpool"])
def test_autoencoder_reconstructs_shape(downsample: str) -> None:
    autoencoder = AutoEncoder(SMALL.model_copy(update={"downsample": downsample}))
    x = _images(3)
    assert autoencoder.latent(x).shape == (3, 8, 8, 8)
    assert autoencoder(x).shape == x.shape
    loss = autoencoder.reconstruction_loss(x)
    assert loss.ndim == 0
    loss.backward()
    assert all(p.grad is not None for p in autoencoder.parameters())


def test_autoencoder_training_lowers_reconstruction_loss() -> None:
    autoencoder = AutoEncoder(SMALL)
    images, _ = _toy_problem(16)
    optimiser = torch.optim.Adam(autoencoder.parameters(), lr=1e-2)
    before = autoencoder.reconstruction_loss(images).item()
    for _ in range(30):
        optimiser.zero_grad()
        autoencoder.reconstruction_loss(images).backward()
        optimiser.step()
    assert autoencoder.reconstruction_loss(images).item() < 0.5 * before


@pytest.mark.parametrize("freeze", [True, False])
def test_siamese_from_autoencoder_copies_and_freezes(freeze: bool) -> None:
    autoencoder = AutoEncoder(SMALL)
    with torch.no_grad():
        for p in autoencoder.features.parameters():
            p.add_(1.0)  # make the weights distinguishable from a fresh initialisation
    autoencoder.train()
    autoencoder(_images(4))  # give batch norm non-default running statistics
    network = siamese_from_autoencoder(autoencoder, freeze=freeze)

    ae_state = autoencoder.features.state_dict()
    for name, value in network.encoder.features.state_dict().items():
        assert torch.equal(value, ae_state[name]), name
    for p in network.encoder.features.parameters():
        assert p.requires_grad is (not freeze)
    assert all(p.requires_grad for p in network.encoder.head.parameters())

    network.train()
    assert network.encoder.head.training
    assert network.encoder.features.training is (not freeze)
    optimiser = torch.optim.SGD([p for p in network.parameters() if p.requires_grad], lr=0.1)
    network(_images(4), _images(4)).sum().backward()
    optimiser.step()
    unchanged = all(
        torch.equal(v, ae_state[k]) for k, v in network.encoder.features.state_dict().items()
    )
    assert unchanged is freeze


def test_unfreeze_restores_training() -> None:
    network = siamese_from_autoencoder(AutoEncoder(SMALL), freeze=True).train()
    network.freeze_features(False)
    assert network.encoder.features.training
    assert all(p.requires_grad for p in network.parameters())


def test_load_encoder_from_mismatched_autoencoder() -> None:
    network = SiameseNetwork.from_config(SMALL)
    other = AutoEncoder(SMALL.model_copy(update={"channels": (4, 16)}))
    with pytest.raises(ProtomatchError, match="differing: channels"):
        network.load_encoder_from(other)


# --- device ---------------------------------------------------------------------------------


def test_select_device() -> None:
    assert select_device("cpu") == torch.device("cpu")
    assert select_device("auto").type in {"cpu", "cuda", "mps"}
    with pytest.raises(ProtomatchError, match="unknown device 'gpu'"):
        select_device("gpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA present")
def test_forced_unavailable_cuda_is_clear() -> None:
    with pytest.raises(ProtomatchError, match="CUDA is not available"):
        select_device("cuda")


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="MPS present")
def test_forced_unavailable_mps_is_clear() -> None:
    with pytest.raises(ProtomatchError, match="MPS is not available"):
        select_device("mps")


def test_scalar_features_join_the_embedding() -> None:
    config = EncoderConfig(
        input_size=32, channels=(4, 8), hidden_dim=16, embedding_dim=8, scalar_inputs=1
    )
    network = SiameseNetwork.from_config(config).eval().requires_grad_(False)
    images = torch.randn(3, 1, 32, 32)
    dim = network.embed(images, torch.zeros(3, 1))
    bright = network.embed(images, torch.full((3, 1), 3.0))
    assert dim.shape == (3, 8)
    assert not torch.allclose(dim, bright)
    pred = network(images, images, torch.zeros(3, 1), torch.full((3, 1), 3.0))
    assert pred == pytest.approx((dim * bright).sum(1), abs=1e-5)
    with pytest.raises(ProtomatchError, match="1 scalar feature"):
        network.embed(images)
