"""Image encoder, Siamese similarity network and autoencoder for step-1 pretraining.

Architecture
------------
An :class:`Encoder` is a stack of convolutional stages followed by a small fully connected
head::

    image (B, 1, S, S)
      └─ ConvStages: per entry c of ``channels``: conv(k) → [batch norm] → activation,
         downsampled by 2 (stride-2 conv or 2x2 max pool)
    latent image (B, C, S / 2**n, S / 2**n)
      └─ head: flatten → linear(hidden_dim) → activation → [dropout] → linear(embedding_dim)
    embedding (B, D)

The :class:`SiameseNetwork` applies ONE encoder to both images of a pair and predicts their
similarity as the cosine of the two embeddings, so matching can precompute L2-normalised
library embeddings and use an inner-product search.

The :class:`AutoEncoder` used for optional step-1 pretraining shares the :class:`ConvStages`
class with the encoder. Its bottleneck is the *latent image* only: the decoder mirrors the
conv stages (nearest upsampling + conv, which avoids the checkerboard artefacts of transposed
convolutions) and the fully connected head is not part of it. The reasoning: reconstruction
teaches generic image features, which is what the conv stages hold; the head is what turns
those features into a *similarity* embedding and is learnt from the weak labels in step 2.
:func:`siamese_from_autoencoder` therefore copies the conv stages only (optionally frozen);
the Siamese head starts from its own initialisation.

The architecture is fully described by :class:`EncoderConfig`; ``config.model_dump()`` is
JSON-serialisable and ``EncoderConfig.model_validate(json.loads(...))`` rebuilds it exactly.
"""

from __future__ import annotations

import itertools
import logging
from typing import Literal

import pydantic
import torch
import torch.nn.functional as F
from torch import nn

from protomatch.errors import ProtomatchError

__all__ = [
    "AutoEncoder",
    "ConvStages",
    "Encoder",
    "EncoderConfig",
    "SiameseNetwork",
    "check_architecture",
    "select_device",
    "siamese_from_autoencoder",
]

_log = logging.getLogger(__name__)

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
    activation: Literal["relu", "elu", "leaky_relu"] = "relu"
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


def _activation(name: str) -> nn.Module:
    if name == "relu":
        return nn.ReLU()
    if name == "elu":
        return nn.ELU()
    return nn.LeakyReLU(_LEAKY_SLOPE)


def _he_init(module: nn.Module, activation: str) -> None:
    """Kaiming-normal (fan-in) weights matched to the nonlinearity; zero biases.

    PyTorch has no gain for ELU; its positive branch is the identity, so the ReLU gain is
    the usual choice.
    """
    nonlinearity = "leaky_relu" if activation == "leaky_relu" else "relu"
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
            layers.append(_activation(config.activation))
            if config.downsample == "maxpool":
                layers.append(nn.MaxPool2d(2))
            stages.append(nn.Sequential(*layers))
            in_channels = out_channels
        self.stages = nn.Sequential(*stages)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Map (B, 1, S, S) images to (B, C, h, w) latent images."""
        return self.stages(images)


def _check_images(images: torch.Tensor, size: int) -> None:
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
            _activation(cfg.activation),
        ]
        if cfg.dropout > 0:
            head.append(nn.Dropout(cfg.dropout))
        head.append(nn.Linear(cfg.hidden_dim, cfg.embedding_dim))
        self.head = nn.Sequential(*head)
        if cfg.init == "he":
            _he_init(self, cfg.activation)

    def latent(self, images: torch.Tensor) -> torch.Tensor:
        """Latent image of (B, 1, S, S) inputs, shape (B, C, h, w)."""
        _check_images(images, self.config.input_size)
        return self.features(images)

    def forward(self, images: torch.Tensor, scalars: torch.Tensor | None = None) -> torch.Tensor:
        """Embeddings of (B, 1, S, S) inputs and their (B, scalar_inputs) features: (B, D)."""
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


class SiameseNetwork(nn.Module):
    """One shared encoder; similarity of two images = cosine of their embeddings.

    ``forward(a, b)`` runs ONE batched forward of ``torch.cat([a, b])`` through the encoder
    rather than two: half the kernel launches and better use of the hardware, and both
    branches see exactly the same weights. Mathematically it equals
    ``(embed(a) * embed(b)).sum(1)``. With batch normalisation in *training* mode the batch
    statistics are those of the concatenated 2B images, so the equality is exact in eval mode
    only (in train mode, per-half batch statistics would differ).

    Parameters
    ----------
    encoder
        The shared encoder.
    """

    def __init__(self, encoder: Encoder) -> None:
        super().__init__()
        self.encoder = encoder
        self.features_frozen = False

    @classmethod
    def from_config(cls, config: EncoderConfig | None = None) -> SiameseNetwork:
        """Build a fresh network from an architecture description."""
        return cls(Encoder(config))

    @property
    def config(self) -> EncoderConfig:
        """The encoder's architecture."""
        return self.encoder.config

    def embed(self, images: torch.Tensor, scalars: torch.Tensor | None = None) -> torch.Tensor:
        """L2-normalised embeddings of (B, 1, S, S) images (and scalar features): (B, D)."""
        return F.normalize(self.encoder(images, scalars), dim=1, eps=1e-12)

    def forward(
        self,
        images_a: torch.Tensor,
        images_b: torch.Tensor,
        scalars_a: torch.Tensor | None = None,
        scalars_b: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Predicted similarity of image pairs, shape (B,), in [-1, 1].

        Parameters
        ----------
        images_a, images_b
            (B, 1, S, S) images; row i of ``images_a`` is paired with row i of ``images_b``.
        scalars_a, scalars_b
            (B, scalar_inputs) per-image features when the encoder takes them.
        """
        if images_a.shape != images_b.shape:
            raise ProtomatchError(
                f"paired batches differ in shape: {tuple(images_a.shape)} vs "
                f"{tuple(images_b.shape)}"
            )
        scalars = None if scalars_a is None else torch.cat([scalars_a, scalars_b])
        embeddings = self.embed(torch.cat([images_a, images_b]), scalars)
        emb_a, emb_b = embeddings.split(images_a.shape[0])
        return (emb_a * emb_b).sum(dim=1).clamp(-1.0, 1.0)

    def load_encoder_from(self, autoencoder: AutoEncoder, freeze: bool = False) -> None:
        """Copy the autoencoder's conv stages into this encoder, optionally freezing them.

        Raises
        ------
        ProtomatchError
            If the two architectures' conv stages differ.
        """
        mine, theirs = self.config, autoencoder.config
        keys = ("input_size", "channels", "kernel_size", "batch_norm", "downsample", "activation")
        different = [k for k in keys if getattr(mine, k) != getattr(theirs, k)]
        if different:
            raise ProtomatchError(
                "the pretrained autoencoder's conv stages do not match this model's "
                f"architecture (differing: {', '.join(different)})"
            )
        self.encoder.features.load_state_dict(autoencoder.features.state_dict())
        self.freeze_features(freeze)

    def freeze_features(self, frozen: bool = True) -> None:
        """Freeze (or unfreeze) the conv stages.

        Frozen stages get ``requires_grad=False`` and are kept in eval mode even when the
        network is put in training mode, so their batch-norm statistics stay the pretrained
        ones.
        """
        self.features_frozen = frozen
        for parameter in self.encoder.features.parameters():
            parameter.requires_grad_(not frozen)
        self.train(self.training)

    def train(self, mode: bool = True) -> SiameseNetwork:
        """Set training mode; frozen conv stages stay in eval mode."""
        super().train(mode)
        if self.features_frozen:
            self.encoder.features.eval()
        return self


class _Decoder(nn.Module):
    """Mirror of :class:`ConvStages`: latent image (B, C, h, w) → image (B, 1, S, S)."""

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        widths = (*reversed(config.channels), 1)
        padding = config.kernel_size // 2
        stages: list[nn.Module] = []
        for index, (in_channels, out_channels) in enumerate(itertools.pairwise(widths)):
            last = index == len(widths) - 2
            layers: list[nn.Module] = [
                nn.Upsample(scale_factor=2, mode="nearest"),
                nn.Conv2d(
                    in_channels,
                    out_channels,
                    config.kernel_size,
                    padding=padding,
                    bias=last or not config.batch_norm,
                ),
            ]
            if not last:
                if config.batch_norm:
                    layers.append(nn.BatchNorm2d(out_channels))
                layers.append(_activation(config.activation))
            stages.append(nn.Sequential(*layers))
        self.stages = nn.Sequential(*stages)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        return self.stages(latent)


class AutoEncoder(nn.Module):
    """Convolutional autoencoder for step-1 pretraining; bottleneck = the latent image.

    The output layer is linear (no activation) because preprocessed images are normalised
    per image and may be negative.

    Parameters
    ----------
    config
        Architecture of the encoder to pretrain; the head fields (hidden_dim, embedding_dim,
        dropout) are not used here.
    """

    def __init__(self, config: EncoderConfig | None = None) -> None:
        super().__init__()
        self.config = config if config is not None else EncoderConfig()
        self.features = ConvStages(self.config)
        self.decoder = _Decoder(self.config)
        if self.config.init == "he":
            _he_init(self, self.config.activation)

    def latent(self, images: torch.Tensor) -> torch.Tensor:
        """Latent image of (B, 1, S, S) inputs, shape (B, C, h, w)."""
        _check_images(images, self.config.input_size)
        return self.features(images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Reconstruction of (B, 1, S, S) images, same shape."""
        return self.decoder(self.latent(images))

    def reconstruction_loss(self, images: torch.Tensor) -> torch.Tensor:
        """Mean squared reconstruction error of (B, 1, S, S) images (0-d tensor)."""
        return F.mse_loss(self(images), images)


def siamese_from_autoencoder(autoencoder: AutoEncoder, freeze: bool = False) -> SiameseNetwork:
    """A Siamese network whose conv stages start from a pretrained autoencoder's.

    Parameters
    ----------
    autoencoder
        Pretrained autoencoder; its config is reused for the new network.
    freeze
        Freeze the copied conv stages (``requires_grad=False``, kept in eval mode).
    """
    network = SiameseNetwork.from_config(autoencoder.config)
    network.to(next(autoencoder.parameters()).device)
    network.load_encoder_from(autoencoder, freeze=freeze)
    return network


def select_device(preference: str = "auto") -> torch.device:
    """Pick the torch device to run on.

    Parameters
    ----------
    preference
        ``"auto"`` (CUDA, then Apple MPS, then CPU), or force ``"cpu"``, ``"cuda"``,
        ``"cuda:N"`` or ``"mps"``.

    Raises
    ------
    ProtomatchError
        If the preference is unknown or the forced device is not available.
    """
    choice = preference.strip().lower()
    cuda_ok = torch.cuda.is_available()
    mps_ok = torch.backends.mps.is_available()
    if choice == "auto":
        device = torch.device("cuda" if cuda_ok else "mps" if mps_ok else "cpu")
        _log.info("using device %s", device)
        return device
    if choice == "cpu":
        return torch.device("cpu")
    if choice == "mps":
        if not mps_ok:
            raise ProtomatchError("device 'mps' was requested but Apple MPS is not available")
        return torch.device("mps")
    if choice == "cuda" or choice.startswith("cuda:"):
        if not cuda_ok:
            raise ProtomatchError(f"device '{preference}' was requested but CUDA is not available")
        try:
            device = torch.device(choice)
        except RuntimeError:
            raise ProtomatchError(
                f"unknown device '{preference}': use auto, cpu, cuda, cuda:N or mps"
            ) from None
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ProtomatchError(
                f"device '{preference}' was requested but only "
                f"{torch.cuda.device_count()} CUDA device(s) exist"
            )
        return device
    raise ProtomatchError(f"unknown device '{preference}': use auto, cpu, cuda, cuda:N or mps")
