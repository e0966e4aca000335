"""The image encoder: a CNN mapping an image to an embedding vector.

An :class:`Encoder` is a stack of convolutional stages followed by a small fully connected
head::

    image (B, 1, S, S)
      └─ ConvStages: per entry c of ``channels``: conv(k) → [batch norm] → activation,
         downsampled by 2 (stride-2 conv or 2x2 max pool)
    latent image (B, C, S / 2**n, S / 2**n)
      └─ head: flatten [+ scalar features] → linear(hidden_dim) → activation → [dropout]
         → linear(embedding_dim)
    embedding (B, D)

The architecture is fully described by :class:`EncoderConfig`; ``config.model_dump()`` is
JSON-serialisable and ``EncoderConfig.model_validate(json.loads(...))`` rebuilds it exactly.
"""

from __future__ import annotations

from typing import Literal

import pydantic
import torch
from torch import nn

from protomatch.errors import ProtomatchError

__all__ = [
    "Activation",
    "ConvStages",
    "Encoder",
    "EncoderConfig",
    "check_architecture",
    "check_images",
    "he_init",
    "make_activation",
]

#: Nonlinearities an encoder can use.
Activation = Literal["relu", "elu", "leaky_relu"]

_MIN_LATENT_SIZE = 2
_LEAKY_SLOPE = 0.01


def _architecture_problem(input_size: int, n_stages: int) -> str | None:
    """Say why ``input_size`` cannot pass ``n_stages`` halvings, or None if it can."""
    factor = 2**n_stages
    smallest = factor * _MIN_LATENT_SIZE
    advice = f"use a multiple of {factor} (>= {smallest})"
    if input_size % factor != 0:
        return f"input_size {input_size} cannot pass {n_stages} stride-2 stages: {advice}"
    if input_size < smallest:
        side = input_size // factor
        return (
            f"input_size {input_size} leaves a {side}x{side} latent image after {n_stages} "
            f"stride-2 stages (need >= {_MIN_LATENT_SIZE}x{_MIN_LATENT_SIZE}): {advice}, "
            "or use fewer stages"
        )
    return None


class EncoderConfig(pydantic.BaseModel, extra="forbid", frozen=True):
    """Hyperparameters of the encoder; the complete, JSON-round-trippable architecture.

    Attributes
    ----------
    input_size
        Side S of the square input image in pixels; must be a multiple of ``2**len(channels)``
        and leave a latent image of at least 2x2.
    channels
        Output channels of each conv stage; each stage halves height and width.
    kernel_size
        Odd convolution kernel size (pixels); padding ``kernel_size // 2`` keeps sizes exact.
    activation
        Nonlinearity after every conv stage and the hidden linear layer.
    batch_norm
        Batch normalisation after each convolution (the conv then has no bias).
    dropout
        Dropout probability before the embedding layer, in [0, 1).
    downsample
        ``"stride"`` (stride-2 convolution) or ``"maxpool"`` (stride-1 conv, then 2x2 max pool).
    init
        ``"he"``: Kaiming-normal weights matched to the activation, zero biases;
        ``"default"``: PyTorch's default initialisation.
    hidden_dim
        Width of the hidden fully connected layer.
    embedding_dim
        Dimension D of the embedding.
    scalar_inputs
        Number of per-image scalar features (e.g. the normalised log brightness) joined to
        the flattened latent image before the fully connected layers; 0 for none.
    """

    input_size: int = 64
    channels: tuple[int, ...] = (16, 32, 64, 64)
    kernel_size: int = 3
    activation: Activation = "relu"
    batch_norm: bool = True
    dropout: float = 0.0
    downsample: Literal["stride", "maxpool"] = "stride"
    init: Literal["default", "he"] = "he"
    hidden_dim: int = 256
    embedding_dim: int = 128
    scalar_inputs: int = pydantic.Field(0, ge=0)

    @pydantic.field_validator("channels")
    @classmethod
    def _check_channels(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if len(value) == 0:
            raise ValueError("channels is empty: give at least one conv stage, e.g. [16, 32]")
        if any(c < 1 for c in value):
            raise ValueError(f"channels {list(value)} must all be positive integers")
        return value

    @pydantic.field_validator("kernel_size")
    @classmethod
    def _check_kernel(cls, value: int) -> int:
        if value < 1 or value % 2 == 0:
            raise ValueError(
                f"kernel_size {value} must be a positive odd number (e.g. 3 or 5) so that "
                "padding keeps the image centred"
            )
        return value

    @pydantic.field_validator("dropout")
    @classmethod
    def _check_dropout(cls, value: float) -> float:
        if not 0.0 <= value < 1.0:
            raise ValueError(f"dropout {value} must be in [0, 1)")
        return value

    @pydantic.field_validator("input_size", "hidden_dim", "embedding_dim")
    @classmethod
    def _check_positive(cls, value: int, info: pydantic.ValidationInfo) -> int:
        if value < 1:
            raise ValueError(f"{info.field_name} {value} must be a positive integer")
        return value

    @pydantic.model_validator(mode="after")
    def _check_input_size(self) -> EncoderConfig:
        problem = _architecture_problem(self.input_size, len(self.channels))
        if problem is not None:
            raise ValueError(problem)
        return self

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """Shape (C, h, w) of the latent image for one input."""
        side = self.input_size // 2 ** len(self.channels)
        return (self.channels[-1], side, side)


def check_architecture(config: EncoderConfig) -> tuple[int, int, int]:
    """Check that ``config`` describes a buildable encoder and return its latent shape.

    A config made through the constructor is already validated; this also catches configs
    built with ``model_construct`` (which skips validation).

    Parameters
    ----------
    config
        The architecture.

    Returns
    -------
    tuple of int
        Latent image shape (C, h, w).

    Raises
    ------
    ValueError
        With a message saying which input sizes work.
    """
    EncoderConfig.model_validate(config.model_dump())
    return config.latent_shape


def make_activation(name: Activation) -> nn.Module:
    """A fresh activation layer.

    Parameters
    ----------
    name
        ``"relu"``, ``"elu"`` or ``"leaky_relu"`` (slope 0.01).

    Returns
    -------
    torch.nn.Module
        The layer.
    """
    if name == "relu":
        return nn.ReLU()
    if name == "elu":
        return nn.ELU()
    return nn.LeakyReLU(_LEAKY_SLOPE)


def he_init(module: nn.Module, activation: Activation) -> None:
    """Kaiming-normal (fan-in) weights matched to the nonlinearity; zero biases.

    PyTorch has no gain for ELU; its positive branch is the identity, so the ReLU gain is
    the usual choice.

    Parameters
    ----------
    module
        Every ``Conv2d`` and ``Linear`` layer in it is initialised in place.
    activation
        The nonlinearity that follows the layers.
    """
    nonlinearity: Literal["relu", "leaky_relu"] = (
        "leaky_relu" if activation == "leaky_relu" else "relu"
    )
    slope = _LEAKY_SLOPE if activation == "leaky_relu" else 0.0
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d | nn.Linear):
            nn.init.kaiming_normal_(layer.weight, a=slope, nonlinearity=nonlinearity)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)


class ConvStages(nn.Module):
    """The convolutional part of the encoder: image (B, 1, S, S) → latent image (B, C, h, w).

    Each stage is conv → [batch norm] → activation, halving H and W by a stride-2 conv or a
    2x2 max pool.

    Parameters
    ----------
    config
        Architecture; checked with :func:`check_architecture`.
    """

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        check_architecture(config)
        stages: list[nn.Module] = []
        in_channels = 1
        stride = 2 if config.downsample == "stride" else 1
        for out_channels in config.channels:
            layers: list[nn.Module] = [
                nn.Conv2d(
                    in_channels,
                    out_channels,
                    config.kernel_size,
                    stride=stride,
                    padding=config.kernel_size // 2,
                    bias=not config.batch_norm,
                )
            ]
            if config.batch_norm:
                layers.append(nn.BatchNorm2d(out_channels))
            layers.append(make_activation(config.activation))
            if config.downsample == "maxpool":
                layers.append(nn.MaxPool2d(2))
            stages.append(nn.Sequential(*layers))
            in_channels = out_channels
        self.stages = nn.Sequential(*stages)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Map images to latent images.

        Parameters
        ----------
        images
            (B, 1, S, S) preprocessed images.

        Returns
        -------
        torch.Tensor
            (B, C, h, w) latent images.
        """
        return self.stages(images)


def check_images(images: torch.Tensor, size: int) -> None:
    """Refuse a batch that is not of shape (B, 1, size, size).

    Parameters
    ----------
    images
        The batch given to a network.
    size
        The network's input side S, pixels.

    Raises
    ------
    ProtomatchError
        Stating the expected and the given shape.
    """
    if images.ndim != 4 or images.shape[1] != 1 or images.shape[2:] != (size, size):
        raise ProtomatchError(
            f"the model takes images of shape (B, 1, {size}, {size}); got {tuple(images.shape)}"
        )


class Encoder(nn.Module):
    """CNN mapping an image to an embedding vector (not normalised).

    Parameters
    ----------
    config
        Architecture; see :class:`EncoderConfig`.
    """

    def __init__(self, config: EncoderConfig | None = None) -> None:
        super().__init__()
        self.config = config if config is not None else EncoderConfig()
        cfg = self.config
        self.features = ConvStages(cfg)
        channels, height, width = cfg.latent_shape
        head: list[nn.Module] = [
            nn.Linear(channels * height * width + cfg.scalar_inputs, cfg.hidden_dim),
            make_activation(cfg.activation),
        ]
        if cfg.dropout > 0:
            head.append(nn.Dropout(cfg.dropout))
        head.append(nn.Linear(cfg.hidden_dim, cfg.embedding_dim))
        self.head = nn.Sequential(*head)
        if cfg.init == "he":
            he_init(self, cfg.activation)

    def latent(self, images: torch.Tensor) -> torch.Tensor:
        """Latent images of a batch.

        Parameters
        ----------
        images
            (B, 1, S, S) preprocessed images.

        Returns
        -------
        torch.Tensor
            (B, C, h, w) latent images.
        """
        check_images(images, self.config.input_size)
        return self.features(images)

    def forward(self, images: torch.Tensor, scalars: torch.Tensor | None = None) -> torch.Tensor:
        """Embeddings (not normalised) of a batch.

        Parameters
        ----------
        images
            (B, 1, S, S) preprocessed images.
        scalars
            (B, scalar_inputs) per-image features; required when ``scalar_inputs`` > 0.

        Returns
        -------
        torch.Tensor
            (B, D) embeddings.
        """
        flat = self.latent(images).flatten(1)
        wanted = self.config.scalar_inputs
        if wanted:
            if scalars is None or scalars.shape != (images.shape[0], wanted):
                got = None if scalars is None else tuple(scalars.shape)
                raise ProtomatchError(
                    f"this encoder takes {wanted} scalar feature(s) per image, got {got}"
                )
            flat = torch.cat([flat, scalars.to(flat.dtype)], dim=1)
        return self.head(flat)
