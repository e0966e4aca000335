"""The Siamese similarity network, the autoencoder for step-1 pretraining, and the device.

The :class:`SiameseNetwork` applies ONE :class:`~protomatch.neural_nets.encoder.Encoder` to
both images of a pair and predicts their similarity as the cosine of the two embeddings, so
matching can precompute L2-normalised library embeddings and use an inner-product search.

The :class:`AutoEncoder` used for optional step-1 pretraining shares the
:class:`~protomatch.neural_nets.encoder.ConvStages` class with the encoder. Its bottleneck is
the *latent image* only: the decoder mirrors the conv stages (nearest upsampling + conv,
which avoids the checkerboard artefacts of transposed convolutions) and the fully connected
head is not part of it. The reasoning: reconstruction teaches generic image features, which
is what the conv stages hold; the head is what turns those features into a *similarity*
embedding and is learnt from the weak labels in step 2. :func:`siamese_from_autoencoder`
therefore copies the conv stages only (optionally frozen); the Siamese head starts from its
own initialisation.
"""

from __future__ import annotations

import itertools
import logging

import torch
import torch.nn.functional as F
from torch import nn

from protomatch.errors import ProtomatchError
from protomatch.neural_nets.encoder import (
    ConvStages,
    Encoder,
    EncoderConfig,
    check_images,
    he_init,
    make_activation,
)

__all__ = [
    "AutoEncoder",
    "SiameseNetwork",
    "select_device",
    "siamese_from_autoencoder",
]

log = logging.getLogger(__name__)


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
        """Build a fresh network from an architecture description.

        Parameters
        ----------
        config
            The encoder's architecture (None: the default one).

        Returns
        -------
        SiameseNetwork
            A network with freshly initialised weights.
        """
        return cls(Encoder(config))

    @property
    def config(self) -> EncoderConfig:
        """The encoder's architecture."""
        return self.encoder.config

    def embed(self, images: torch.Tensor, scalars: torch.Tensor | None = None) -> torch.Tensor:
        """L2-normalised embeddings of a batch.

        Parameters
        ----------
        images
            (B, 1, S, S) preprocessed images.
        scalars
            (B, scalar_inputs) per-image features when the encoder takes them.

        Returns
        -------
        torch.Tensor
            (B, D) unit-length embeddings.
        """
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
            (B, scalar_inputs) per-image features when the encoder takes them (both or
            neither).

        Returns
        -------
        torch.Tensor
            (B,) cosine similarities in [-1, 1].
        """
        if images_a.shape != images_b.shape:
            raise ProtomatchError(
                f"paired batches differ in shape: {tuple(images_a.shape)} vs "
                f"{tuple(images_b.shape)}"
            )
        if (scalars_a is None) != (scalars_b is None):
            raise ProtomatchError("give scalar features for both images of a pair, or neither")
        scalars = (
            None if scalars_a is None or scalars_b is None else torch.cat([scalars_a, scalars_b])
        )
        embeddings = self.embed(torch.cat([images_a, images_b]), scalars)
        emb_a, emb_b = embeddings.split(images_a.shape[0])
        return (emb_a * emb_b).sum(dim=1).clamp(-1.0, 1.0)

    def load_encoder_from(self, autoencoder: AutoEncoder, freeze: bool = False) -> None:
        """Copy the autoencoder's conv stages into this encoder, optionally freezing them.

        Parameters
        ----------
        autoencoder
            A (pretrained) autoencoder of the same conv architecture.
        freeze
            Freeze the copied stages (see :meth:`freeze_features`).

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

        Parameters
        ----------
        frozen
            True to freeze, False to unfreeze.
        """
        self.features_frozen = frozen
        for parameter in self.encoder.features.parameters():
            parameter.requires_grad_(not frozen)
        self.train(self.training)

    def train(self, mode: bool = True) -> SiameseNetwork:
        """Set training mode; frozen conv stages stay in eval mode.

        Parameters
        ----------
        mode
            True for training mode, False for eval mode.

        Returns
        -------
        SiameseNetwork
            This network.
        """
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
                layers.append(make_activation(config.activation))
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
            he_init(self, self.config.activation)

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

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Reconstruct a batch.

        Parameters
        ----------
        images
            (B, 1, S, S) preprocessed images.

        Returns
        -------
        torch.Tensor
            (B, 1, S, S) reconstructions.
        """
        return self.decoder(self.latent(images))

    def reconstruction_loss(self, images: torch.Tensor) -> torch.Tensor:
        """Mean squared reconstruction error of a batch.

        Parameters
        ----------
        images
            (B, 1, S, S) preprocessed images.

        Returns
        -------
        torch.Tensor
            0-d mean squared error.
        """
        return F.mse_loss(self(images), images)


def siamese_from_autoencoder(autoencoder: AutoEncoder, freeze: bool = False) -> SiameseNetwork:
    """A Siamese network whose conv stages start from a pretrained autoencoder's.

    Parameters
    ----------
    autoencoder
        Pretrained autoencoder; its config is reused for the new network.
    freeze
        Freeze the copied conv stages (``requires_grad=False``, kept in eval mode).

    Returns
    -------
    SiameseNetwork
        On the autoencoder's device, with a freshly initialised head.
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

    Returns
    -------
    torch.device
        The device.

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
        log.info("using device %s", device)
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
