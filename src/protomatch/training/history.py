"""The record of a training run: metrics file, log lines, manifest metrics and curves.

``metrics.csv`` (one row per epoch), the epoch log line, the ``metrics`` field of
``model.json``, the training curve and the optional TensorBoard log.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from protomatch._artefact import write_bytes_atomic
from protomatch.errors import OptionalDependencyError

#: Columns of ``metrics.csv``: one row per epoch.
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


def write_metrics(path: Path, history: Sequence[Mapping[str, float]]) -> None:
    """Write ``metrics.csv`` atomically.

    Parameters
    ----------
    path
        The CSV file.
    history
        One row per epoch with every column of :data:`METRIC_COLUMNS`.
    """
    lines = [",".join(METRIC_COLUMNS)]
    lines += [",".join(f"{row[c]:.6g}" for c in METRIC_COLUMNS) for row in history]
    write_bytes_atomic(path, ("\n".join(lines) + "\n").encode())


def format_row(row: Mapping[str, float]) -> str:
    """One epoch's metrics as a log line.

    Parameters
    ----------
    row
        The epoch's metrics (the columns of :data:`METRIC_COLUMNS`).

    Returns
    -------
    str
        Epoch, losses, validation MSE (and the trivial one), learning rate and seconds.
    """
    return (
        f"epoch {row['epoch']:>3}: train loss {row['train_loss']:.4f}, "
        f"validation loss {row['val_loss']:.4f}, validation MSE {row['val_mse']:.4f} "
        f"(trivial {row['val_mse_trivial']:.4f}), lr {row['learning_rate']:.2g}, "
        f"{row['seconds']:.1f} s"
    )


def metrics_record(progress: Mapping[str, Any], best: Mapping[str, float] | None) -> dict[str, Any]:
    """The ``metrics`` field of ``model.json``.

    Parameters
    ----------
    progress
        The run's progress (``epoch``, ``best_epoch``, ``history``).
    best
        The best epoch's metrics row, if any.

    Returns
    -------
    dict
        Epochs run, best epoch, its metrics and the whole history.
    """
    return {
        "epochs_run": progress["epoch"],
        "best_epoch": progress["best_epoch"],
        "best": dict(best) if best else None,
        "history": list(progress["history"]),
    }


def plot_training_curve(history: Sequence[Mapping[str, float]], path: Path) -> None:
    """Plot loss and similarity MSE per epoch, with the trivial predictor for reference.

    Parameters
    ----------
    history
        One metrics row per epoch.
    path
        The PNG file to write (atomically).
    """
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


def tensorboard_writer(out: Path) -> Any:
    """A TensorBoard ``SummaryWriter`` logging to ``out/tensorboard``.

    Parameters
    ----------
    out
        The model folder.

    Returns
    -------
    torch.utils.tensorboard.SummaryWriter
        The writer (close it when done).

    Raises
    ------
    OptionalDependencyError
        If TensorBoard is not installed.
    """
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise OptionalDependencyError("tensorboard", "tensorboard") from None
    return SummaryWriter(log_dir=str(out / "tensorboard"))
