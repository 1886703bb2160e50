"""One run directory's layout: the paths inside it and its metrics.json.

`RunFiles`: the paths of a run directory (`params.json checkpoints/ saved_model/ tensorboard/
metrics.json curves.png`); `read_metrics` its metrics.json (empty before the first epoch);
`training_complete` whether it says training is done (TensorFlow-free: the Luigi tasks' completeness
check and the "up to date" summary must not start TensorFlow);
`CHECKPOINT_NAME` the prefix of the checkpoint files, `BEST_CHECKPOINT_DIR` the folder of the best
epoch's checkpoint inside `checkpoints/`.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from din_model.params import TrainParams

CHECKPOINT_NAME = "ckpt"
BEST_CHECKPOINT_DIR = "best"


class RunFiles:
    """Paths inside one run directory."""

    def __init__(self, run_dir: str | Path):
        self.root = Path(run_dir)
        self.params = self.root / "params.json"
        self.checkpoints = self.root / "checkpoints"
        self.saved_model = self.root / "saved_model"
        self.tensorboard = self.root / "tensorboard"
        self.metrics = self.root / "metrics.json"
        self.curves = self.root / "curves.png"


def read_metrics(path: str | Path) -> dict:
    path = Path(path)
    return json.loads(path.read_text()) if path.is_file() else {}


def training_complete(metrics_path: str | Path, params: TrainParams) -> bool:
    """metrics.json says training finished with all `params.epochs` epochs, or stopped early."""
    document = read_metrics(metrics_path)
    return bool(document.get("training_done")) and (len(document.get("epochs", [])) >= params.epochs
                                                    or bool(document.get("stopped_early")))
