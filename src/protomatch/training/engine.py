"""The training engine: weakly supervised Siamese metric learning on a library store.

Reads a store, splits it by system, fits the parameter normalisation on the training split,
optionally pretrains the encoder as an autoencoder, then trains the Siamese network on fresh
random pairs each epoch (AdamW, ReduceLROnPlateau, early stopping). Every epoch writes a
metrics row and a resumable checkpoint; the best epoch by validation loss is the model.
Randomness is keyed on (seed, epoch), so a resumed run repeats an uninterrupted one exactly.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from tqdm import tqdm

from protomatch._artefact import ensure_writable_output, write_bytes_atomic
from protomatch.errors import InputError, ProtomatchError
from protomatch.library.params import ParameterConfig, ParameterNormaliser, weight_vector
from protomatch.library.preprocess import intensity_transform
from protomatch.library.store import LibraryStore
from protomatch.neural_nets.networks import (
    AutoEncoder,
    EncoderConfig,
    SiameseNetwork,
    select_device,
)
from protomatch.neural_nets.trained import (
    load_checkpoint,
    save_checkpoint,
    save_model,
    update_model_manifest,
)
from protomatch.training.augment import AugmentConfig, augment_pair
from protomatch.training.losses import make_loss
from protomatch.training.pairs import (
    PairBatchDataset,
    PairConfig,
    PairSampler,
    SplitConfig,
    split_by_system,
)

log = logging.getLogger(__name__)

METRIC_COLUMNS = (
    "epoch",
    "train_loss",
    "train_similar",
    "train_dissimilar",
    "val_loss",
    "val_similar",
    "val_dissimilar",
    "val_mse",
    "val_mse_trivial",
    "learning_rate",
    "seconds",
)


class OptimConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    learning_rate: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    lr_factor: float = Field(0.5, gt=0, lt=1)
    lr_patience: int = Field(2, ge=0)
    patience: int = Field(6, ge=1, description="epochs without improvement before stopping")
    min_delta: float = Field(1e-4, ge=0)


class TrainConfig(BaseModel):
    """Everything that defines a training run; stored resolved in model.json."""

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
    path: Path | None = None, overrides: Mapping[str, Any] | None = None
) -> TrainConfig:
    """A TrainConfig from a YAML file, then dotted-key overrides (``"optim.learning_rate"``)."""
    raw: dict[str, Any] = {}
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
        raise ProtomatchError(f"{where}invalid training config: {_first_error(exc)}") from None


def _set_dotted(raw: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = raw
    for key in keys[:-1]:
        node = node.setdefault(key, {})
    node[keys[-1]] = value


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    location = ".".join(str(part) for part in error["loc"]) or "config"
    return f"{location}: {error['msg']}"


@dataclass
class TrainResult:
    out: Path
    epochs_run: int
    best_epoch: int
    best_val_loss: float
    val_mse: float
    val_mse_trivial: float
    seconds: float
    history: list[dict[str, float]] = field(repr=False, default_factory=list)

    def describe(self) -> str:
        return (
            f"trained {self.epochs_run} epoch(s) in {self.seconds:.0f} s; best epoch "
            f"{self.best_epoch} (validation loss {self.best_val_loss:.4f})\n"
            f"validation MSE of predicted vs true similarity: {self.val_mse:.4f} "
            f"(trivial predictor, the mean label: {self.val_mse_trivial:.4f})\n"
            f"model: {self.out}"
        )


EpochCallback = Callable[[int, Mapping[str, float]], None]


def train_model(
    library: str | Path,
    out: str | Path,
    config: TrainConfig | None = None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    on_epoch_end: EpochCallback | None = None,
) -> TrainResult:
    """Train a Siamese network on a library store and write the model folder ``out``."""
    config = config or TrainConfig()
    out = Path(out)
    if not resume:
        ensure_writable_output(out, overwrite)
    elif not (out / "checkpoints" / "last.json").is_file():
        raise InputError(out, "has no checkpoint to resume from (checkpoints/last.json)")
    store = LibraryStore.open(library)
    run = _Run.prepare(store, config, out)
    return run.fit(resume, on_epoch_end)


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
    split: Any
    sampler: PairSampler
    validation: list[Any]
    preprocess: Any
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
        normaliser = ParameterNormaliser.fit(
            theta[train_rows], names, config.parameters.method, config.parameters.log10
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

    def fit(self, resume: bool, on_epoch_end: EpochCallback | None) -> TrainResult:
        started = time.perf_counter()
        config = self.config
        self.out.mkdir(parents=True, exist_ok=True)
        progress: dict[str, Any] = {
            "epoch": 0,
            "best_val_loss": math.inf,
            "best_epoch": 0,
            "stale": 0,
            "history": [],
            "scheduler": None,
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
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, factor=config.optim.lr_factor, patience=config.optim.lr_patience
        )
        if progress["scheduler"]:
            scheduler.load_state_dict(progress["scheduler"])
        loss_fn = make_loss(
            config.loss, **({"margin": config.margin} if config.loss == "contrastive" else {})
        )
        writer = _tensorboard(self.out) if config.tensorboard else None
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
            self._write_metrics(progress["history"])
            if writer is not None:
                for key, value in row.items():
                    writer.add_scalar(key, value, epoch)
            if epoch % config.checkpoint_every == 0 or epoch == config.epochs:
                save_checkpoint(self.out / "checkpoints", self.network, optimizer, progress)
            log.info(_format_row(row))
            if on_epoch_end is not None:
                on_epoch_end(epoch, row)
        if writer is not None:
            writer.close()
        save_checkpoint(self.out / "checkpoints", self.network, optimizer, progress)
        self._save_model(progress, final=True)
        _plot_training_curve(progress["history"], self.out / "training_curve.png")
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

    def _batches(self, batches: list[Any], desc: str) -> Iterator[tuple[torch.Tensor, ...]]:
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
        self, epoch: int, optimizer: torch.optim.Optimizer, loss_fn: Any
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
    def _validate(self, loss_fn: Any) -> dict[str, float]:
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
        if final:
            # the best epoch's weights are already on disk; the manifest gains the history
            update_model_manifest(self.out, {"metrics": _metrics_record(progress, best)})
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
            },
            "split": self.split.to_dict(),
            "config": self.config.model_dump(mode="json"),
            "metrics": _metrics_record(progress, best),
        }

    def _write_metrics(self, history: list[Mapping[str, float]]) -> None:
        lines = [",".join(METRIC_COLUMNS)]
        lines += [",".join(f"{row[c]:.6g}" for c in METRIC_COLUMNS) for row in history]
        write_bytes_atomic(self.out / "metrics.csv", ("\n".join(lines) + "\n").encode())


def _encoder_for(store: LibraryStore, config: TrainConfig, scalar_inputs: int) -> EncoderConfig:
    """The encoder config with the store's image size as input size (validated)."""
    size = store.images.shape[-1]
    settings = {"input_size": size, "scalar_inputs": scalar_inputs}
    try:
        return EncoderConfig(**{**config.encoder.model_dump(), **settings})
    except ValidationError as exc:
        raise ProtomatchError(
            f"encoder cannot take the library's images: {_first_error(exc)}"
        ) from None


def _brightness_features(
    table: Any, train_rows: np.ndarray, enabled: bool
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
    table: Any,
    z: np.ndarray,
    weights: np.ndarray,
    split: Any,
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


def _tensorboard(out: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        from protomatch.errors import OptionalDependencyError

        raise OptionalDependencyError("tensorboard", "tensorboard") from None
    return SummaryWriter(log_dir=str(out / "tensorboard"))


def _format_row(row: Mapping[str, float]) -> str:
    return (
        f"epoch {row['epoch']:>3}: train loss {row['train_loss']:.4f}, "
        f"validation loss {row['val_loss']:.4f}, validation MSE {row['val_mse']:.4f} "
        f"(trivial {row['val_mse_trivial']:.4f}), lr {row['learning_rate']:.2g}, "
        f"{row['seconds']:.1f} s"
    )


def _metrics_record(
    progress: Mapping[str, Any], best: Mapping[str, float] | None
) -> dict[str, Any]:
    return {
        "epochs_run": progress["epoch"],
        "best_epoch": progress["best_epoch"],
        "best": dict(best) if best else None,
        "history": list(progress["history"]),
    }


def _plot_training_curve(history: list[Mapping[str, float]], path: Path) -> None:
    """Loss and similarity MSE per epoch, with the trivial predictor for reference."""
    from matplotlib.figure import Figure

    from protomatch._png import png_bytes

    epochs = [row["epoch"] for row in history]
    fig = Figure(figsize=(9, 3.4), layout="constrained")
    ax_loss, ax_mse = fig.subplots(1, 2)
    ax_loss.plot(epochs, [r["train_loss"] for r in history], "o-", label="training")
    ax_loss.plot(epochs, [r["val_loss"] for r in history], "s-", label="validation")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="Siamese loss")
    ax_loss.legend()
    ax_mse.plot(epochs, [r["val_mse"] for r in history], "s-", color="C1", label="network")
    trivial = [r["val_mse_trivial"] for r in history]
    ax_mse.plot(epochs, trivial, "--", color="grey", label="trivial (mean label)")
    ax_mse.set(xlabel="epoch", ylabel="MSE", title="validation: predicted vs true similarity")
    ax_mse.legend()
    write_bytes_atomic(path, png_bytes(fig))
