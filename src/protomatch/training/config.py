"""The training configuration: every setting of a run, validated, and how it is loaded.

A :class:`TrainConfig` is built from defaults, a YAML file and dotted-key overrides
(``"optim.learning_rate"``) by :func:`load_config`; the resolved config is stored in the
model's ``model.json``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from protomatch.errors import InputError, ProtomatchError, validation_message
from protomatch.library.params import ParameterConfig
from protomatch.neural_nets.encoder import EncoderConfig
from protomatch.training.augment import AugmentConfig
from protomatch.training.pairs import PairConfig, SplitConfig

__all__ = ["OptimConfig", "TrainConfig", "load_config"]


class OptimConfig(BaseModel):
    """Optimiser, learning-rate schedule and early stopping.

    Attributes
    ----------
    learning_rate
        AdamW learning rate.
    weight_decay
        AdamW weight decay.
    lr_factor
        Factor by which ReduceLROnPlateau lowers the learning rate, in (0, 1).
    lr_patience
        Epochs without improvement before the learning rate is lowered.
    patience
        Epochs without improvement before training stops.
    min_delta
        Smallest fall of the validation loss that counts as an improvement.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    learning_rate: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    lr_factor: float = Field(0.5, gt=0, lt=1)
    lr_patience: int = Field(2, ge=0)
    patience: int = Field(6, ge=1, description="epochs without improvement before stopping")
    min_delta: float = Field(1e-4, ge=0)


class TrainConfig(BaseModel):
    """Everything that defines a training run; stored resolved in ``model.json``.

    Attributes
    ----------
    encoder
        The network's architecture (its input size is taken from the store).
    parameters
        Which physical parameters define similarity and how they are normalised.
    split
        Fractions of systems for training, validation and test.
    pairs
        Pairs per epoch, batch size and balanced sampling.
    validation_pairs
        Fixed validation pairs, drawn once.
    augment
        Orientation, beam and noise augmentation of training pairs.
    optim
        Optimiser, schedule and early stopping.
    loss
        ``"contrastive"`` or ``"mse"``.
    margin
        Contrastive margin (see :class:`~protomatch.training.losses.ContrastiveLoss`).
    epochs
        Maximum number of epochs.
    pretrain_epochs
        Autoencoder pretraining epochs of the conv stages (0: none).
    freeze_encoder
        Keep the pretrained conv stages fixed.
    stretch
        Intensity stretch overriding the store's (None: the store's).
    brightness
        Also give the network each image's log mean intensity.
    device
        ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"``.
    seed
        Seed of the initialisation, pairs and augmentation.
    num_workers
        Data-loader worker processes.
    checkpoint_every
        Epochs between checkpoints.
    tensorboard
        Also log to TensorBoard.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    encoder: EncoderConfig = EncoderConfig()
    parameters: ParameterConfig = ParameterConfig()
    split: SplitConfig = SplitConfig()
    pairs: PairConfig = PairConfig()
    validation_pairs: int = Field(2048, ge=16)
    augment: AugmentConfig = AugmentConfig()
    optim: OptimConfig = OptimConfig()
    loss: Literal["contrastive", "mse"] = "contrastive"
    margin: float = Field(1.0, gt=0)
    epochs: int = Field(12, ge=1)
    pretrain_epochs: int = Field(0, ge=0)
    freeze_encoder: bool = False
    stretch: Literal["log", "asinh", "linear"] | None = None
    brightness: bool = Field(
        True,
        description="also give the network each image's log mean intensity (absolute "
        "brightness, which per-image normalisation removes)",
    )
    device: str = "auto"
    seed: int = 0
    num_workers: int = Field(0, ge=0)
    checkpoint_every: int = Field(1, ge=1)
    tensorboard: bool = False


def load_config(
    path: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    base: Mapping[str, Any] | None = None,
) -> TrainConfig:
    """Build a training config from a YAML file (or base settings), then dotted-key overrides.

    Parameters
    ----------
    path
        YAML file holding a mapping of settings (None: defaults only).
    overrides
        Settings by dotted key, e.g. ``{"optim.learning_rate": 3e-4, "epochs": 20}``;
        they win over the file.
    base
        Settings to start from instead of the defaults when no file is given (e.g. a run's
        own, to resume it); nested as :class:`TrainConfig` fields.

    Returns
    -------
    TrainConfig
        The validated config.

    Raises
    ------
    InputError
        If the file cannot be read as a YAML mapping.
    ProtomatchError
        One line naming the first invalid setting.
    """
    raw: dict[str, Any] = copy.deepcopy(dict(base or {}))
    if path is not None:
        try:
            raw = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise InputError(path, f"is not a readable YAML file ({exc})") from None
        if not isinstance(raw, dict):
            raise InputError(path, "must hold a mapping of settings")
    for dotted, value in (overrides or {}).items():
        _set_dotted(raw, dotted, value)
    try:
        return TrainConfig(**raw)
    except ValidationError as exc:
        where = f"{path}: " if path else ""
        raise ProtomatchError(
            f"{where}invalid training config: {validation_message(exc)}"
        ) from None


def _set_dotted(raw: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = raw
    for key in keys[:-1]:
        node = node.setdefault(key, {})
    node[keys[-1]] = value
