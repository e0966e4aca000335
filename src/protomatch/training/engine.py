"""The training loop: weakly supervised Siamese metric learning on a library store.

Reads a store, splits it by system, fits the parameter normalisation on the training split,
optionally pretrains the encoder as an autoencoder, then trains the Siamese network on fresh
random pairs each epoch (AdamW, ReduceLROnPlateau, early stopping). Every epoch writes a
metrics row and a resumable checkpoint; the best epoch by validation loss is the model.
Randomness is keyed on (seed, epoch), so a resumed run repeats an uninterrupted one exactly.

The model folder is written in place (checkpoints must survive a killed run), so its
``model.json`` says ``"complete": false`` until the run has finished; only ``--resume``
takes such a folder. A new run (``--overwrite``) first empties the folder, so no checkpoint
of an earlier run can be resumed on another library.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from pydantic import ValidationError
from tqdm import tqdm

from protomatch._artefact import remove_stale_temporaries
from protomatch._locking import artefact_kind, claim_output
from protomatch.errors import InputError, ProtomatchError, validation_message
from protomatch.library.params import ParameterNormaliser, weight_vector
from protomatch.library.preprocess import PreprocessConfig, intensity_transform
from protomatch.library.store import LibraryStore
from protomatch.neural_nets.encoder import EncoderConfig
from protomatch.neural_nets.siamese import AutoEncoder, SiameseNetwork, select_device
from protomatch.neural_nets.trained import (
    load_checkpoint,
    save_checkpoint,
    save_model,
    update_model_manifest,
)
from protomatch.training.augment import augment_pair
from protomatch.training.config import TrainConfig
from protomatch.training.history import (
    format_row,
    metrics_record,
    plot_training_curve,
    tensorboard_writer,
    write_metrics,
)
from protomatch.training.losses import LossParts, make_loss
from protomatch.training.pairs import (
    PairBatch,
    PairBatchDataset,
    PairConfig,
    PairSampler,
    SystemSplit,
    split_by_system,
)
from protomatch.training.resume import mark_incomplete, resume_changes, run_record, start_clean

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What :func:`train_model` wrote and how training went.

    Attributes
    ----------
    out
        The model folder.
    epochs_run
        Epochs trained (fewer than configured after early stopping).
    best_epoch
        The epoch whose weights are the model.
    best_val_loss
        Its validation loss.
    val_mse, val_mse_trivial
        Its validation MSE of predicted vs true similarity, and that of the trivial
        predictor (the mean label).
    seconds
        Wall-clock time of the run.
    history
        One metrics row per epoch (the columns of ``metrics.csv``).
    """

    out: Path
    epochs_run: int
    best_epoch: int
    best_val_loss: float
    val_mse: float
    val_mse_trivial: float
    seconds: float
    history: list[dict[str, float]] = field(repr=False, default_factory=list)

    def describe(self) -> str:
        """A few lines for the command line: epochs, best epoch, validation MSE, folder."""
        return (
            f"trained {self.epochs_run} epoch(s) in {self.seconds:.0f} s; best epoch "
            f"{self.best_epoch} (validation loss {self.best_val_loss:.4f})\n"
            f"validation MSE of predicted vs true similarity: {self.val_mse:.4f} "
            f"(trivial predictor, the mean label: {self.val_mse_trivial:.4f})\n"
            f"model: {self.out}"
        )


#: Called after every epoch with the epoch number and its metrics row.
EpochCallback = Callable[[int, Mapping[str, float]], None]
#: A loss: predicted and true similarities (B,) → total, similar and dissimilar parts.
LossFunction = Callable[[torch.Tensor, torch.Tensor], LossParts]


def train_model(
    library: str | Path,
    out: str | Path,
    *,
    config: TrainConfig | None = None,
    resume: bool = False,
    overwrite: bool = False,
    allow_changed: Sequence[str] = (),
    on_epoch_end: EpochCallback | None = None,
) -> TrainResult:
    """Train a Siamese network on a library store and write the model folder.

    Parameters
    ----------
    library
        The library store folder (``protomatch ingest``).
    out
        The model folder to write: ``model.safetensors``, ``model.json``, ``metrics.csv``,
        ``training_curve.png`` and ``checkpoints/``.
    config
        The training settings (None: defaults, or the run's own with ``resume``); see
        :func:`~protomatch.training.config.load_config`.
    resume
        Continue from the last checkpoint in ``out``; the result equals an uninterrupted
        run. The library and settings must be the run's (:mod:`protomatch.training.resume`).
    overwrite
        Start a new run in a non-empty ``out`` (emptied first; ignored with ``resume``).
    allow_changed
        With ``resume``: settings (or ``"library"``) that may differ from the run's; the
        changes are recorded in ``model.json``.
    on_epoch_end
        Called after every epoch with the epoch number and its metrics row.

    Returns
    -------
    TrainResult
        Epochs run, best epoch and its validation metrics, timing and history.

    Raises
    ------
    InputError
        For a bad store, an output that may not be replaced or is in use, or no checkpoint
        to resume.
    ProtomatchError
        If the store cannot be trained on with this config (too few systems, missing
        parameters, an encoder that cannot take its images), or a resume differs from its
        run in a way not allowed.
    """
    out = Path(out)
    if not (resume or overwrite) and artefact_kind(out) == "model":
        raise InputError(
            out,
            "holds a model or training run; continue it with --resume, or replace it "
            "with --overwrite",
        )
    with claim_output(out, "model", overwrite=overwrite or resume, inputs=(library,)):
        store = LibraryStore.open(library)
        changes: list[dict[str, Any]] = []
        if resume:
            record = run_record(out)
            config = config or TrainConfig(**record["config"])
            changes = resume_changes(record, config, store.fingerprint, allow_changed)
            remove_stale_temporaries(out / "checkpoints")
        run = _Run.prepare(store, config or TrainConfig(), out)
        return run.fit(resume, on_epoch_end, changes)


@dataclass
class _Run:
    """The state of one training run."""

    store: LibraryStore
    config: TrainConfig
    out: Path
    device: torch.device
    network: SiameseNetwork
    normaliser: ParameterNormaliser
    weights: np.ndarray
    split: SystemSplit
    sampler: PairSampler
    validation: list[PairBatch]
    preprocess: PreprocessConfig
    brightness: ParameterNormaliser | None
    features: np.ndarray | None

    @classmethod
    def prepare(cls, store: LibraryStore, config: TrainConfig, out: Path) -> _Run:
        encoder = _encoder_for(store, config, scalar_inputs=int(config.brightness))
        names = config.parameters.names or store.param_names
        missing = set(names) - set(store.param_names)
        if missing:
            raise ProtomatchError(f"library has no parameter(s) {', '.join(sorted(missing))}")
        table = store.table
        split = split_by_system(table["system"], config.split)
        theta = table[list(names)].to_numpy(dtype=np.float64)
        train_rows = split.rows(table, "train")
        log10 = _log10_setting(store, config, theta[train_rows], names)
        normaliser = ParameterNormaliser.fit(
            theta[train_rows], names, config.parameters.method, log10
        )
        z = normaliser.transform(theta)
        brightness, features = _brightness_features(table, train_rows, config.brightness)
        weights = weight_vector(names, config.parameters.weights)
        sampler = _sampler(table, z, weights, split, "train", config.pairs, config.seed)
        val_pairs = PairConfig(
            pairs_per_epoch=config.validation_pairs, batch_size=config.pairs.batch_size
        )
        val_sampler = _sampler(table, z, weights, split, "validation", val_pairs, config.seed + 1)
        preprocess = store.preprocess
        if config.stretch is not None:
            preprocess = preprocess.model_copy(update={"stretch": config.stretch})
        torch.manual_seed(config.seed)
        device = select_device(config.device)
        network = SiameseNetwork.from_config(encoder).to(device)
        return cls(
            store,
            config,
            out,
            device,
            network,
            normaliser,
            weights,
            split,
            sampler,
            list(val_sampler.epoch(0)),
            preprocess,
            brightness,
            features,
        )

    def fit(
        self, resume: bool, on_epoch_end: EpochCallback | None, changes: list[dict[str, Any]]
    ) -> TrainResult:
        started = time.perf_counter()
        config = self.config
        if resume:
            mark_incomplete(self.out)
        else:
            start_clean(self.out)
        progress: dict[str, Any] = {
            "epoch": 0,
            "best_val_loss": math.inf,
            "best_epoch": 0,
            "stale": 0,
            "history": [],
            "scheduler": None,
            "run": self._run_record([]),
        }
        if not resume and config.pretrain_epochs:
            self._pretrain()
        elif config.pretrain_epochs and config.freeze_encoder:
            self.network.freeze_features(True)  # frozen-ness is not part of the weights
        optimizer = torch.optim.AdamW(
            [p for p in self.network.parameters() if p.requires_grad],
            lr=config.optim.learning_rate,
            weight_decay=config.optim.weight_decay,
        )
        if resume:
            progress = load_checkpoint(self.out / "checkpoints", self.network, optimizer)
            log.info("resuming after epoch %d", progress["epoch"])
            new = [{"after_epoch": progress["epoch"], **change} for change in changes]
            progress["run"] = self._run_record(progress["run"]["changes"] + new)
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, factor=config.optim.lr_factor, patience=config.optim.lr_patience
        )
        if progress["scheduler"]:
            scheduler.load_state_dict(progress["scheduler"])
        loss_fn = make_loss(
            config.loss, **({"margin": config.margin} if config.loss == "contrastive" else {})
        )
        writer = tensorboard_writer(self.out) if config.tensorboard else None
        for epoch in range(progress["epoch"] + 1, config.epochs + 1):
            if progress["stale"] >= config.optim.patience:
                break
            epoch_start = time.perf_counter()
            train_metrics = self._train_epoch(epoch, optimizer, loss_fn)
            val_metrics = self._validate(loss_fn)
            scheduler.step(val_metrics["val_loss"])
            row = {
                "epoch": epoch,
                **train_metrics,
                **val_metrics,
                "learning_rate": optimizer.param_groups[0]["lr"],
                "seconds": time.perf_counter() - epoch_start,
            }
            progress["history"].append(row)
            improved = row["val_loss"] < progress["best_val_loss"] - config.optim.min_delta
            if improved:
                progress.update(best_val_loss=row["val_loss"], best_epoch=epoch, stale=0)
                self._save_model(progress)
            else:
                progress["stale"] += 1
            progress.update(epoch=epoch, scheduler=scheduler.state_dict())
            write_metrics(self.out / "metrics.csv", progress["history"])
            if writer is not None:
                for key, value in row.items():
                    writer.add_scalar(key, value, epoch)
            if epoch % config.checkpoint_every == 0 or epoch == config.epochs:
                save_checkpoint(self.out / "checkpoints", self.network, optimizer, progress)
            log.info(format_row(row))
            if on_epoch_end is not None:
                on_epoch_end(epoch, row)
        if writer is not None:
            writer.close()
        save_checkpoint(self.out / "checkpoints", self.network, optimizer, progress)
        plot_training_curve(progress["history"], self.out / "training_curve.png")
        self._save_model(progress, final=True)
        best = next(r for r in progress["history"] if r["epoch"] == progress["best_epoch"])
        return TrainResult(
            self.out,
            progress["epoch"],
            progress["best_epoch"],
            progress["best_val_loss"],
            best["val_mse"],
            best["val_mse_trivial"],
            time.perf_counter() - started,
            progress["history"],
        )

    def _batches(self, batches: list[PairBatch], desc: str) -> Iterator[tuple[torch.Tensor, ...]]:
        loader = torch.utils.data.DataLoader(
            PairBatchDataset(self.store.images, batches, self.features),
            batch_size=None,
            num_workers=self.config.num_workers,
        )
        for batch in tqdm(loader, desc=desc, leave=False, disable=None):
            yield tuple(tensor.to(self.device) for tensor in batch)

    def _predict(
        self, batch: tuple[torch.Tensor, ...], generator: torch.Generator | None
    ) -> torch.Tensor:
        images_a, images_b, _, features_a, features_b = batch
        scalars = (features_a, features_b) if self.features is not None else (None, None)
        if generator is not None:
            images_a, images_b = augment_pair(images_a, images_b, self.config.augment, generator)
        return self.network(self._inputs(images_a), self._inputs(images_b), *scalars)

    def _inputs(self, images: torch.Tensor) -> torch.Tensor:
        return intensity_transform(images, self.preprocess).unsqueeze(1)

    def _train_epoch(
        self, epoch: int, optimizer: torch.optim.Optimizer, loss_fn: LossFunction
    ) -> dict[str, float]:
        torch.manual_seed(self.config.seed * 100_003 + epoch)
        generator = torch.Generator(device=self.device).manual_seed(self.config.seed * 7919 + epoch)
        scaler = torch.amp.GradScaler("cuda", enabled=self.device.type == "cuda")
        self.network.train()
        totals = np.zeros(3)
        count = 0
        for batch in self._batches(list(self.sampler.epoch(epoch)), f"epoch {epoch}"):
            labels = batch[2]
            with _autocast(self.device):
                pred = self._predict(batch, generator)
                parts = loss_fn(pred.float(), labels)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(parts.total).backward()
            scaler.step(optimizer)
            scaler.update()
            totals += len(labels) * np.array(
                [parts.total.item(), parts.similar.item(), parts.dissimilar.item()]
            )
            count += len(labels)
        train_loss, similar, dissimilar = totals / count
        return {"train_loss": train_loss, "train_similar": similar, "train_dissimilar": dissimilar}

    @torch.no_grad()
    def _validate(self, loss_fn: LossFunction) -> dict[str, float]:
        self.network.eval()
        preds, truths = [], []
        for batch in self._batches(self.validation, "validation"):
            preds.append(self._predict(batch, None).float())
            truths.append(batch[2])
        pred, truth = torch.cat(preds), torch.cat(truths)
        parts = loss_fn(pred, truth)
        return {
            "val_loss": parts.total.item(),
            "val_similar": parts.similar.item(),
            "val_dissimilar": parts.dissimilar.item(),
            "val_mse": torch.mean((pred - truth) ** 2).item(),
            "val_mse_trivial": torch.var(truth, unbiased=False).item(),
        }

    def _pretrain(self) -> None:
        """Step 1: train the encoder as an autoencoder on training images, then copy it."""
        config = self.config
        autoencoder = AutoEncoder(self.network.encoder.config).to(self.device)
        optimizer = torch.optim.AdamW(autoencoder.parameters(), lr=config.optim.learning_rate)
        rows = self.split.rows(self.store.table, "train")
        batch = config.pairs.batch_size
        for epoch in range(1, config.pretrain_epochs + 1):
            rng = np.random.default_rng([config.seed, 10_000 + epoch])
            order = rng.permutation(rows)
            total = 0.0
            for start in tqdm(
                range(0, len(order), batch), desc=f"pretrain {epoch}", leave=False, disable=None
            ):
                index = np.sort(order[start : start + batch])
                images = torch.from_numpy(np.asarray(self.store.images[index])).to(self.device)
                inputs = intensity_transform(images, self.preprocess).unsqueeze(1)
                loss = autoencoder.reconstruction_loss(inputs)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += loss.item() * len(index)
            log.info("pretrain epoch %d: reconstruction loss %.4f", epoch, total / len(rows))
        self.network.load_encoder_from(autoencoder, freeze=config.freeze_encoder)

    def _save_model(self, progress: Mapping[str, Any], final: bool = False) -> None:
        history = progress["history"]
        best = next((r for r in history if r["epoch"] == progress["best_epoch"]), None)
        if final:  # the best epoch's weights are on disk; last of all, say the model is whole
            update_model_manifest(self.out, {**self._manifest(progress, best), "complete": True})
            return
        save_model(self.out, self.network, self._manifest(progress, best))

    def _manifest(
        self, progress: Mapping[str, Any], best: Mapping[str, float] | None
    ) -> dict[str, Any]:
        store = self.store
        return {
            "architecture": self.network.encoder.config.model_dump(mode="json"),
            "preprocessing": self.preprocess.model_dump(mode="json"),
            "parameters": {
                "names": list(self.normaliser.names),
                "units": {n: store.units.get(n, "") for n in self.normaliser.names},
                "normalisation": self.normaliser.to_dict(),
                "weights": self.weights.tolist(),
            },
            "brightness": None if self.brightness is None else self.brightness.to_dict(),
            "library": {
                "path": str(store.path),
                "fingerprint": store.fingerprint,
                "au_per_pixel": store.au_per_pixel,
                "intensity_unit": store.intensity_unit,
            },
            "split": self.split.to_dict(),
            "config": self.config.model_dump(mode="json"),
            "changed_on_resume": progress["run"]["changes"],
            "metrics": metrics_record(progress, best),
            "complete": False,
        }

    def _run_record(self, changes: list[dict[str, Any]]) -> dict[str, Any]:
        """What a resume must match: the library, the settings, the changes allowed so far."""
        return {
            "library_fingerprint": self.store.fingerprint,
            "config": self.config.model_dump(mode="json"),
            "changes": changes,
        }


def _log10_setting(
    store: LibraryStore, config: TrainConfig, theta: np.ndarray, names: Sequence[str]
) -> Literal["auto"] | tuple[str, ...]:
    """The parameters to log-scale: the setting, or "auto" amended by the library's description.

    ``log: true`` / ``log: false`` of a parameter in ``library.yaml`` wins over "auto".
    """
    setting = config.parameters.log10
    described = store.described_log10
    if setting != "auto" or not described:
        return setting
    auto = ParameterNormaliser.fit(theta, names, config.parameters.method, "auto").log10
    return tuple(n for n, flag in zip(names, auto) if described.get(n, flag))


def _encoder_for(store: LibraryStore, config: TrainConfig, scalar_inputs: int) -> EncoderConfig:
    """The encoder config with the store's image size as input size (validated)."""
    size = store.images.shape[-1]
    settings = {"input_size": size, "scalar_inputs": scalar_inputs}
    try:
        return EncoderConfig(**{**config.encoder.model_dump(), **settings})
    except ValidationError as exc:
        raise ProtomatchError(
            f"encoder cannot take the library's images: {validation_message(exc)}"
        ) from None


def _brightness_features(
    table: pd.DataFrame, train_rows: np.ndarray, enabled: bool
) -> tuple[ParameterNormaliser | None, np.ndarray | None]:
    """Normalised log10 mean intensity per image (N, 1), statistics from training rows."""
    if not enabled:
        return None, None
    intensity = table[["mean_intensity"]].to_numpy(dtype=np.float64)
    if not (intensity > 0).all():
        raise ProtomatchError(
            "some library images have no positive mean intensity, so brightness cannot be "
            "used: train with --set brightness=false"
        )
    scaling = ParameterNormaliser.fit(
        intensity[train_rows], ["mean_intensity"], log10=("mean_intensity",)
    )
    return scaling, scaling.transform(intensity).astype(np.float32)


def _sampler(
    table: pd.DataFrame,
    z: np.ndarray,
    weights: np.ndarray,
    split: SystemSplit,
    name: str,
    pairs: PairConfig,
    seed: int,
) -> PairSampler:
    rows = split.rows(table, name)
    if len(rows) == 0:
        raise ProtomatchError(f"the {name} split is empty: the library has too few systems")
    subset = table.iloc[rows].reset_index(drop=True)
    return PairSampler(subset, z[rows], weights, pairs, seed)


def _autocast(device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """Mixed precision on CUDA only; full precision elsewhere."""
    if device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.float16)
    return contextlib.nullcontext()
