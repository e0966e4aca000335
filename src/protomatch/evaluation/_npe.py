"""Neural posterior estimation (NPE) with sbi: a baseline that learns p(theta | image) directly.

Where protomatch and the other baselines estimate an observation's parameters from its best
library matches, NPE fits a conditional density q(theta | x) to the library itself and reads
the quantiles off samples of it (Papamakarios & Murray 2016; Greenberg et al. 2019, as
implemented by the ``sbi`` package's ``NPE``):

* **theta**: the parameters the model compares, normalised as the model's labels are
  (log10 first where its normaliser says so, then its z-score or min-max), so the
  posterior's samples map back to the error space by ``centre + scale * z``;
* **x**: the store's linear images after the model's intensity stretch and per-image
  standardisation, i.e. exactly what the Siamese network is given;
* **density estimator**: a masked autoregressive flow (``maf``, or a neural spline flow
  ``nsf``) whose conditioning comes from an embedding net, protomatch's own
  :class:`~protomatch.neural_nets.encoder.Encoder` (a smaller head), trained jointly with
  the flow by sbi's maximum-likelihood loss;
* **augmentation**: every training batch is drawn afresh through the network's own
  augmentation (:func:`protomatch.training.augment.augment_batch` with the model's
  ``AugmentConfig``: any rotation, flip, a beam and beam-correlated noise at a random S/N,
  a quarter left clean), so each epoch sees new observing conditions and the flow learns
  what a beam-smoothed, noisy image still says about theta;
* **split**: fitted on the model's *training* systems only; the epoch kept is the one with
  the lowest loss on the model's *validation* systems, each seen in fixed augmented copies
  (the network selected its epoch on the same systems). Without them in the store, a
  seventh of the training systems is held out instead.

For an observation, the prepared image that the network embeds
(:func:`protomatch.matching.observation.prepare_observation`: cut, resampled to the
library's pixel scale, peak 1, blank outside its footprint) is stretched the same way and
the posterior sampled straight from the flow (not truncated to the library's parameter
range, which can take unbounded time for an image unlike any training image); the quantiles
of the samples are returned in the error space. sbi is an optional dependency
(``pip install 'protomatch[sbi]'``), imported only when NPE is used.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
import warnings
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import pydantic
import torch
from torch import nn
from torch.utils.data import DataLoader, RandomSampler, TensorDataset

from protomatch.calibration.intervals import grid_levels, standard_quantiles
from protomatch.errors import OptionalDependencyError, ProtomatchError
from protomatch.library.preprocess import PreprocessConfig, intensity_transform
from protomatch.library.store import LibraryStore
from protomatch.neural_nets.encoder import Encoder, EncoderConfig
from protomatch.neural_nets.trained import TrainedModel
from protomatch.training.augment import AugmentConfig, augment_batch

__all__ = ["NpeEstimator", "NpeSettings", "fit_npe", "require_sbi", "train_npe"]

log = logging.getLogger(__name__)

#: Share of the training systems held out to choose the epoch when the store has none of
#: the model's validation systems.
_FALLBACK_VALIDATION = 1 / 7


class NpeSettings(pydantic.BaseModel, extra="forbid", frozen=True):
    """Sizes of the NPE baseline; the defaults train in about 4-5 minutes on 2 CPU cores.

    Attributes
    ----------
    flow
        sbi's density estimator: ``"maf"`` (masked autoregressive flow) or ``"nsf"``
        (neural spline flow).
    hidden_features, transforms
        Width and number of the flow's transforms.
    channels
        Channels of the embedding CNN's stages (each halves the image), at most as many
        stages as leave a latent image of 4 x 4 pixels.
    hidden_dim, embedding_dim
        The embedding CNN's hidden layer and output size.
    batch_size, learning_rate
        Training batches (images) and Adam's learning rate.
    max_epochs, stop_after_epochs
        At most this many epochs; stop earlier when the validation loss has not improved
        for ``stop_after_epochs``.
    validation_copies
        Fixed augmented copies of each validation image.
    samples
        Posterior samples drawn per observation.
    seed
        Seed of the initialisation, batches, augmentation and sampling.
    """

    flow: Literal["maf", "nsf"] = "maf"
    hidden_features: int = pydantic.Field(64, ge=1)
    transforms: int = pydantic.Field(5, ge=1)
    channels: tuple[int, ...] = (16, 32, 64, 64)
    hidden_dim: int = pydantic.Field(128, ge=1)
    embedding_dim: int = pydantic.Field(32, ge=1)
    batch_size: int = pydantic.Field(128, ge=2)
    learning_rate: float = pydantic.Field(1e-3, gt=0)
    max_epochs: int = pydantic.Field(50, ge=1)
    stop_after_epochs: int = pydantic.Field(10, ge=1)
    validation_copies: int = pydantic.Field(2, ge=1)
    samples: int = pydantic.Field(2000, ge=10)
    seed: int = 0


def require_sbi() -> None:
    """Refuse, in one line naming the extra, when sbi cannot be imported.

    Raises
    ------
    OptionalDependencyError
        When ``import sbi`` fails.
    """
    try:
        import sbi  # type: ignore[import-untyped]  # noqa: F401
    except ImportError:
        raise OptionalDependencyError("sbi", "sbi") from None


@dataclasses.dataclass(frozen=True, eq=False)
class NpeEstimator:
    """A trained NPE posterior and how to bring its samples to the error space.

    Attributes
    ----------
    posterior
        sbi's ``DirectPosterior`` over the normalised parameters.
    preprocess
        The intensity stretch applied to every image before the embedding net.
    centre, scale
        (P,) error-space value of a normalised parameter is ``centre + scale * z``.
    settings
        The sizes it was trained with.
    record
        What it was trained on and how training went (JSON-safe).
    """

    posterior: Any
    preprocess: PreprocessConfig
    centre: np.ndarray
    scale: np.ndarray
    settings: NpeSettings
    record: dict[str, Any]

    def samples(self, images: np.ndarray) -> np.ndarray:
        """Posterior samples of the normalised parameters for each image.

        Parameters
        ----------
        images
            (Q, S, S) linear images (peak 1, as in the store or prepared observations).

        Returns
        -------
        numpy.ndarray
            (Q, samples, P) float64 normalised parameters; the same for the same images
            and seed.
        """
        inputs = _inputs(torch.as_tensor(np.asarray(images, dtype=np.float32)), self.preprocess)
        drawn = []
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(self.settings.seed)
            for x_o in inputs:
                # Straight from the flow: rejecting samples outside the library's range (sbi's
                # default) can take unbounded time for an image unlike the training set.
                with warnings.catch_warnings():
                    warnings.filterwarnings("ignore", message=".*reject_outside_prior")
                    theta = self.posterior.sample(
                        (self.settings.samples,),
                        x=x_o[None],
                        show_progress_bars=False,
                        reject_outside_prior=False,
                    )
                drawn.append(theta.double().numpy())
        size = (0, self.settings.samples, len(self.centre))
        return np.stack(drawn) if drawn else np.zeros(size)

    def quantile_grids(self, images: np.ndarray) -> np.ndarray:
        """Posterior quantile grids in the error space (dex for log-scaled parameters).

        Parameters
        ----------
        images
            (Q, S, S) linear images (peak 1).

        Returns
        -------
        numpy.ndarray
            (Q, P, 1 + 2G) float64 at
            :func:`protomatch.calibration.intervals.grid_levels`.
        """
        values = self.centre + self.scale * self.samples(images)
        return np.moveaxis(np.quantile(values, grid_levels(), axis=1), 0, -1)

    def quantiles(self, images: np.ndarray) -> np.ndarray:
        """(Q, P, 5) median, q16, q84, q2.5, q97.5 of :meth:`quantile_grids`."""
        return standard_quantiles(self.quantile_grids(images))


def train_npe(
    trained: TrainedModel, store: LibraryStore, settings: NpeSettings | None = None
) -> NpeEstimator:
    """Train the NPE baseline on a model's training systems of a store.

    Parameters
    ----------
    trained
        The model: its parameters and their normalisation, split, preprocessing and
        augmentation settings.
    store
        The library store it was trained on (other stores: their systems outside the
        model's validation and test splits).
    settings
        Sizes and seed (None: :class:`NpeSettings` defaults).

    Returns
    -------
    NpeEstimator
        The posterior, ready for :meth:`NpeEstimator.quantiles`.
    """
    require_sbi()
    settings = settings or NpeSettings()
    names = trained.normaliser.names
    theta = trained.normaliser.transform(
        store.theta()[:, [store.param_names.index(n) for n in names]]
    )
    train, validation, note = _split_rows(trained, store)
    usable = np.isfinite(theta).all(axis=1)
    train, validation = train[usable[train]], validation[usable[validation]]
    if len(train) < 2 or len(validation) < 1:
        raise ProtomatchError(
            f"npe needs training and validation images with finite parameters; {store.path} "
            f"has {len(train)} and {len(validation)}"
        )
    augment = AugmentConfig.model_validate(
        (trained.manifest.get("config") or {}).get("augment", {})
    )
    rows = np.concatenate([train, validation])
    images = np.asarray(store.images[np.sort(rows)], dtype=np.float32)[np.argsort(np.argsort(rows))]
    log.info(
        "npe: training on %d images of the training systems (%d validation images)",
        len(train),
        len(validation),
    )
    estimator = fit_npe(
        images[: len(train)],
        theta[train],
        images[len(train) :],
        theta[validation],
        trained.preprocess,
        augment,
        settings,
    )
    systems = store.table["system"].astype(str).to_numpy()
    estimator.record.update(
        {
            "train_systems": len(set(systems[train].tolist())),
            "validation_systems": len(set(systems[validation].tolist())),
            "split_note": note,
        }
    )
    estimator = dataclasses.replace(  # samples of z -> error space: centre + scale * z
        estimator,
        centre=np.asarray(trained.normaliser.centre, dtype=np.float64),
        scale=np.asarray(trained.normaliser.scale, dtype=np.float64),
    )
    record = estimator.record
    log.info(
        "npe: trained %d epochs in %.0f s (best validation loss %.3f at epoch %d)",
        record["epochs"],
        record["seconds"],
        record["best_validation_loss"],
        record["best_epoch"],
    )
    return estimator


def fit_npe(
    images: np.ndarray,
    theta: np.ndarray,
    validation_images: np.ndarray,
    validation_theta: np.ndarray,
    preprocess: PreprocessConfig,
    augment: AugmentConfig,
    settings: NpeSettings | None = None,
) -> NpeEstimator:
    """Fit q(theta | x) with sbi's NPE on augmented images; choose the epoch on validation.

    Parameters
    ----------
    images
        (N, S, S) linear training images (peak ~1); augmented afresh in every batch.
    theta
        (N, P) their normalised parameters (finite).
    validation_images, validation_theta
        (M, S, S) and (M, P): images whose loss, over ``settings.validation_copies``
        fixed augmented copies, chooses the epoch kept.
    preprocess
        Intensity stretch applied after augmentation (the model's).
    augment
        Orientation, beam and noise augmentation (the model's training settings).
    settings
        Sizes and seed (None: :class:`NpeSettings` defaults).

    Returns
    -------
    NpeEstimator
        With ``centre`` 0 and ``scale`` 1: quantiles of the normalised parameters.
    """
    require_sbi()
    from sbi.neural_nets import posterior_nn  # type: ignore[import-untyped]
    from sbi.utils import BoxUniform  # type: ignore[import-untyped]

    settings = settings or NpeSettings()
    started = time.perf_counter()
    theta_t = torch.as_tensor(np.asarray(theta, dtype=np.float32))
    images_t = torch.as_tensor(np.asarray(images, dtype=np.float32))
    low, high = theta_t.amin(dim=0), theta_t.amax(dim=0)
    margin = 0.1 * (high - low).clamp_min(1e-3)
    prior = BoxUniform(low=low - margin, high=high + margin)  # sbi's API wants one
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        validation = _fixed_copies(
            validation_images, validation_theta, preprocess, augment, settings
        )
        train_loader = DataLoader(
            TensorDataset(theta_t, images_t),
            batch_size=min(settings.batch_size, len(images_t)),
            sampler=RandomSampler(
                range(len(images_t)), generator=torch.Generator().manual_seed(settings.seed)
            ),
            drop_last=True,
            collate_fn=_AugmentedBatches(preprocess, augment, settings.seed),
        )
        builder = posterior_nn(
            model=settings.flow,
            z_score_theta="independent",
            z_score_x="none",  # every image is already standardised by the stretch
            hidden_features=settings.hidden_features,
            num_transforms=settings.transforms,
            embedding_net=_ImageEmbedding(_embedding_config(images_t.shape[-1], settings)),
        )
        inference = _trainer(train_loader, validation, settings)(
            prior=prior,
            density_estimator=builder,
            show_progress_bars=False,
            tracker=_NoTracking(),  # sbi's default writes TensorBoard logs to ./sbi-logs
        )
        # sbi holds the clean simulations (network shapes, theta z-scoring); the batches
        # it trains on come from the loaders, augmented
        inference.append_simulations(theta_t, _inputs(images_t, preprocess))
        with warnings.catch_warnings():  # reaching max_epochs is the budget, not a problem
            warnings.filterwarnings("ignore", message="Maximum number of epochs")
            estimator = inference.train(
                training_batch_size=settings.batch_size,
                learning_rate=settings.learning_rate,
                stop_after_epochs=settings.stop_after_epochs,
                max_num_epochs=settings.max_epochs - 1,  # sbi counts 0 to this, inclusive
            )
        posterior = inference.build_posterior(estimator)
    summary = inference.summary
    losses = [float(v) for v in summary["validation_loss"]]
    best = int(np.argmin(losses)) + 1 if losses else 0
    record = {
        "flow": settings.flow,
        "settings": settings.model_dump(mode="json"),
        "augment": augment.model_dump(mode="json"),
        "train_images": len(images_t),
        "validation_images": len(validation[0]),
        "augmentation": "fresh per batch (every epoch) for training; "
        f"{settings.validation_copies} fixed copies per validation image",
        "epochs": len(losses),
        "best_epoch": best,
        "best_validation_loss": min(losses) if losses else math.nan,
        "seconds": round(time.perf_counter() - started, 1),
    }
    size = theta_t.shape[1]
    return NpeEstimator(posterior, preprocess, np.zeros(size), np.ones(size), settings, record)


# --------------------------------------------------------------------------- parts


def _inputs(images: torch.Tensor, preprocess: PreprocessConfig) -> torch.Tensor:
    """(B, S, S) linear images -> (B, S, S) float32 stretched, standardised network inputs."""
    return intensity_transform(images, preprocess).float()


class _AugmentedBatches:
    """A collate function: stack (theta, image) items, augment and stretch the images.

    Parameters
    ----------
    preprocess
        The intensity stretch.
    augment
        The augmentation.
    seed
        Seed of its own generator (independent of the global one).
    """

    def __init__(self, preprocess: PreprocessConfig, augment: AugmentConfig, seed: int) -> None:
        self.preprocess, self.augment = preprocess, augment
        self.generator = torch.Generator().manual_seed(seed * 7919 + 1)

    def __call__(
        self, items: Sequence[tuple[torch.Tensor, torch.Tensor]]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        theta = torch.stack([t for t, _ in items])
        images = augment_batch(torch.stack([x for _, x in items]), self.augment, self.generator)
        masks = torch.ones((len(items), 1), dtype=torch.bool)  # all drawn from the prior
        return theta, _inputs(images, self.preprocess), masks


def _fixed_copies(
    images: np.ndarray,
    theta: np.ndarray,
    preprocess: PreprocessConfig,
    augment: AugmentConfig,
    settings: NpeSettings,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(theta, inputs, prior masks) of ``validation_copies`` augmented copies of each image."""
    collate = _AugmentedBatches(preprocess, augment, settings.seed + 1)
    theta_t = torch.as_tensor(np.asarray(theta, dtype=np.float32))
    images_t = torch.as_tensor(np.asarray(images, dtype=np.float32))
    parts = [
        collate(list(zip(theta_t[start : start + 256], images_t[start : start + 256])))
        for _ in range(settings.validation_copies)
        for start in range(0, len(images_t), 256)
    ]
    theta_v, inputs, masks = (torch.cat(column) for column in zip(*parts))
    return theta_v, inputs, masks


def _trainer(
    train_loader: DataLoader,
    validation: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    settings: NpeSettings,
) -> Any:
    """The NPE trainer class of sbi, fed by our loaders (fresh augmentation, held-out systems).

    sbi splits the simulations it holds at random into training and validation rows;
    here the images of one system are near-duplicates, so the validation rows are those of
    other systems, and the training images are augmented anew in every batch. Everything
    else (network, loss, optimiser, early stopping, keeping the best epoch) is sbi's.
    """
    from sbi.inference import NPE  # type: ignore[import-untyped]

    batch = min(settings.batch_size, len(validation[0]))
    validation_loader = DataLoader(TensorDataset(*validation), batch_size=batch, drop_last=True)

    class _OwnLoaders(NPE):
        def get_dataloaders(self, *args: Any, **kwargs: Any) -> tuple[DataLoader, DataLoader]:
            held = len(self.get_simulations()[0])
            self.train_indices, self.val_indices = torch.arange(held), torch.arange(0)
            return train_loader, validation_loader

    return _OwnLoaders


class _NoTracking:
    """An sbi tracker that keeps nothing (the training record is ours)."""

    log_dir: str | None = None

    def log_metric(self, name: str, value: float, step: int | None = None) -> None:
        """Drop a metric."""

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        """Drop metrics."""

    def log_params(self, params: dict[str, Any]) -> None:
        """Drop parameters."""

    def add_figure(self, name: str, figure: Any, step: int | None = None) -> None:
        """Drop a figure."""

    def flush(self) -> None:
        """Nothing to write."""


class _ImageEmbedding(nn.Module):
    """protomatch's encoder on (B, S, S) images, as sbi hands them over."""

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.encoder = Encoder(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, S, S) stretched images -> (B, embedding_dim) features."""
        return self.encoder(x.reshape(len(x), 1, *x.shape[-2:]))


def _embedding_config(size: int, settings: NpeSettings) -> EncoderConfig:
    """The embedding CNN for ``size`` px images: as many stages as keep a latent of >= 4 px."""
    stages = 0
    while (
        stages < len(settings.channels)
        and size % 2 ** (stages + 1) == 0
        and size // 2 ** (stages + 1) >= 4
    ):
        stages += 1
    if stages == 0:
        raise ProtomatchError(f"npe's embedding net cannot take {size} px images (need >= 8 px)")
    return EncoderConfig(
        input_size=size,
        channels=settings.channels[:stages],
        hidden_dim=settings.hidden_dim,
        embedding_dim=settings.embedding_dim,
    )


def _split_rows(trained: TrainedModel, store: LibraryStore) -> tuple[np.ndarray, np.ndarray, str]:
    """Store rows to fit on and rows to choose the epoch on, and how they were chosen."""
    split = trained.manifest.get("split") or {}
    systems = store.table["system"].astype(str).to_numpy()
    train = np.flatnonzero(np.isin(systems, list(split.get("train", []))))
    validation = np.flatnonzero(np.isin(systems, list(split.get("validation", []))))
    if len(validation) and len(train):
        return (
            train,
            validation,
            "fitted on the model's training systems; epoch chosen on its validation systems",
        )
    if not len(train):  # another library: the systems the model's split did not hold out
        held_out = [*split.get("validation", []), *split.get("test", [])]
        train = np.flatnonzero(~np.isin(systems, held_out))
    names = np.unique(systems[train])
    if len(names) < 2:
        raise ProtomatchError(f"{store.path}: npe needs images of at least 2 systems to train on")
    chosen = max(1, round(len(names) * _FALLBACK_VALIDATION))
    held = np.random.default_rng(0).permutation(names)[:chosen]
    kept = ~np.isin(systems[train], held)
    return (
        train[kept],
        train[~kept],
        f"fitted on {len(names) - chosen} systems outside the model's validation and test "
        f"splits; epoch chosen on {chosen} more",
    )
