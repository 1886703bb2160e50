"""What a training run reports: curves.png and the TensorBoard scalars.

- `TensorBoardLog`: each epoch's train loss, speed and val metrics as TensorBoard scalars
  (event files written with TensorFlow alone, no tensorboard package needed), in one events file
  that a resumed run starts afresh with the epochs metrics.json already holds; a full disk removes
  it (metrics.json keeps every figure, the rerun writes it again) and is one error line.
- `plot_curves`: train loss / val logloss and val AUC / GAUC per epoch in a PNG,
  titled with the run id and the data it was trained on (`run_title`).
"""
from __future__ import annotations

import io
import json
from pathlib import Path

import tensorflow as tf

from din_common.atomic import remove_file, write_bytes_atomic
from din_common.disk_full import reported_disk_full


def _scalar_metadata() -> bytes:
    """Summary metadata of a TensorBoard scalar (what tensorboard's scalar op writes),
    so event files need no tensorboard package at training time."""
    from tensorflow.core.framework import summary_pb2

    return summary_pb2.SummaryMetadata(
        plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"),
        data_class=summary_pb2.DATA_CLASS_SCALAR).SerializeToString()


class TensorBoardLog:
    """The run's TensorBoard scalars: one events file, holding every epoch of `epochs` (those of metrics.json
    so far) from the start."""

    def __init__(self, directory: Path, epochs: list[dict]):
        self.directory = Path(directory)
        with reported_disk_full("TensorBoard events", self.directory, cleanup=self._remove_events):
            self._remove_events()
            self.writer = tf.summary.create_file_writer(str(self.directory))
            for record in epochs:
                self._write(record["epoch"], record)

    def write(self, epoch: int, record: dict) -> None:
        with reported_disk_full("TensorBoard events", self.directory, cleanup=self._remove_events):
            self._write(epoch, record)

    def _write(self, epoch: int, record: dict) -> None:
        scalars = {"train/loss": record["train_loss"], "train/samples_per_s": record["train_samples_per_s"],
                   **{f"val/{name}": value for name, value in record["val"].items()}}
        metadata = _scalar_metadata()
        with self.writer.as_default():
            for tag, value in scalars.items():
                tf.summary.write(tag, tf.constant(value, tf.float32), step=epoch, metadata=metadata)
        self.writer.flush()

    def _remove_events(self) -> None:
        if self.directory.is_dir():
            for path in self.directory.glob("events.out.tfevents.*"):
                remove_file(path)


def run_title(run_dir: Path) -> str:
    """`DIN run 63dfc8293945, data: data (synthetic)` for `<data_dir>/runs/<run_id>`."""
    run_dir = Path(run_dir).resolve()
    data_dir = run_dir.parent.parent
    try:
        source = json.loads((data_dir / "raw" / "manifest.json").read_text()).get("source")
    except (OSError, ValueError, AttributeError):
        source = None
    data = f"{data_dir.name} ({source})" if source else data_dir.name
    return f"DIN run {run_dir.name}, data: {data}"


def curves_figure(epochs: list[dict], title: str = ""):
    """The matplotlib figure of curves.png: train loss / val logloss and val AUC / GAUC per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot
    from matplotlib.ticker import MaxNLocator

    numbers = [record["epoch"] for record in epochs]
    figure, (loss_axes, auc_axes) = pyplot.subplots(1, 2, figsize=(9, 3.5))
    loss_axes.plot(numbers, [r["train_loss"] for r in epochs], marker="o", label="train loss")
    loss_axes.plot(numbers, [r["val"]["logloss"] for r in epochs], marker="o", label="val logloss")
    auc_axes.plot(numbers, [r["val"]["auc"] for r in epochs], marker="o", label="val AUC")
    auc_axes.plot(numbers, [r["val"]["gauc"] for r in epochs], marker="o", label="val GAUC")
    for axes, axes_title in ((loss_axes, "loss"), (auc_axes, "validation AUC")):
        axes.set_xlabel("epoch")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))  # no "1.5" epoch on short runs
        axes.set_title(axes_title)
        axes.legend()
        axes.grid(alpha=0.3)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    return figure


def plot_curves(epochs: list[dict], path: Path, title: str = "") -> None:
    """curves.png (matplotlib Agg), written atomically (rendered first: a full disk names its size)."""
    from matplotlib import pyplot

    figure = curves_figure(epochs, title)
    image = io.BytesIO()
    figure.savefig(image, format="png", dpi=100)
    pyplot.close(figure)
    write_bytes_atomic(path, image.getvalue())
