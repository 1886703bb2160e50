"""Early stopping and the best epoch: which epoch's weights a run exports, and when its epochs stop.

- `BestEpoch`: the epoch with the highest validation AUC so far (a strict gain counts), worked out from
  the epoch records of metrics.json, so a resumed run remembers it; `patience_spent` says whether
  `[train] patience` epochs have passed without a gain.
- `early_stopping_fields`: what metrics.json says about it (`best_epoch`, `stopped_early`, `epochs_run`,
  `exported_epoch`).
- `plateau_learning_rate`: the learning rate after a plateau of validation AUC (`[train] lr_decay_factor`,
  `lr_decay_patience`), also worked out from the epoch records; the loop assigns it to the optimizer's learning-rate
  variable between epochs, and the checkpoint saves that variable, so a resumed run continues the schedule.

The best epoch's checkpoint sits in `checkpoints/best/` beside the latest ones that resume uses
(`TrainingState.save_best`). Only the process that writes the run directory validates, so it decides;
the others learn the decision through their placement (`Placement.share_from_writer`).
"""
from __future__ import annotations

import dataclasses
import math

from din_model.params import TrainParams


@dataclasses.dataclass
class BestEpoch:
    """The best validation AUC so far and its epoch (0: no epoch validated yet)."""

    epoch: int = 0
    auc: float = -math.inf

    @classmethod
    def from_records(cls, records: list[dict]) -> "BestEpoch":
        best = cls()
        for record in records:
            best.update(record)
        return best

    def update(self, record: dict) -> bool:
        """Take an epoch record (with its `val` metrics); True if its AUC is a new best."""
        auc = record.get("val", {}).get("auc")
        if auc is None or not auc > self.auc:
            return False
        self.epoch, self.auc = record["epoch"], auc
        return True

    def patience_spent(self, epoch: int, patience: int) -> bool:
        """After `epoch`, `patience` epochs (0: never) have passed without a gain."""
        return patience > 0 and self.epoch > 0 and epoch - self.epoch >= patience


def early_stopping_fields(records: list[dict], params: TrainParams) -> dict:
    """The metrics.json fields of the best epoch and of stopping early, from the epoch records."""
    best = BestEpoch.from_records(records)
    last = records[-1]["epoch"] if records else 0
    best_epoch = best.epoch or None
    return {"best_epoch": best_epoch,
            "exported_epoch": (best_epoch if params.restore_best and best_epoch else last) or None,
            "stopped_early": best.patience_spent(last, params.patience) and last < params.epochs,
            "epochs_run": len(records)}


def float32_digits(rate: float) -> float:
    """`rate` to the 7 significant digits a float32 learning-rate variable holds, so a rate read back from the
    variable and one computed from the settings compare equal when they are the same setting."""
    return float(f"{rate:.7g}")


def plateau_learning_rate(records: list[dict], params: TrainParams) -> float:
    """The learning rate for the epoch after `records`: `[train] learning_rate`, times `lr_decay_factor` each time
    `lr_decay_patience` epochs pass without a validation AUC gain, counted from the best epoch or from the last decay,
    whichever came later (so a long plateau decays again every `lr_decay_patience` epochs)."""
    rate, best, epochs_without_gain = params.learning_rate, BestEpoch(), 0
    if params.lr_decay_factor == 1.0:
        return rate
    for record in records:
        epochs_without_gain = 0 if best.update(record) else epochs_without_gain + 1
        if epochs_without_gain >= params.lr_decay_patience:
            rate, epochs_without_gain = rate * params.lr_decay_factor, 0
    return rate
