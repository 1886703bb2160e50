"""Validation AUCs chosen by a test: the training loop's `split_metrics` replaced by a script of AUCs, epoch by epoch.

`scripted_split_metrics(aucs)` is the replacement (the n-th validation gets `aucs[n]`); `SCRIPTED_RUN` is
the preamble of a subprocess (a cluster worker, an NPU rank) that installs it from the environment variable
`SCRIPTED_VAL_AUCS` (a JSON list) and stops the process after `SCRIPTED_ALARM_S` seconds, so a process that
waits for a decision that never comes fails instead of hanging the test.
"""
from __future__ import annotations

SCRIPTED_ALARM_S = 240


def scripted_split_metrics(aucs: list[float]):
    validations = iter(aucs)

    def split_metrics(columns: dict) -> dict:
        auc = next(validations)
        return {"auc": auc, "gauc": auc, "logloss": 1.0 - auc}
    return split_metrics


SCRIPTED_RUN = f"""
import json, os, signal
from din_model.run import loop
from tests.helpers.scripted_validation import scripted_split_metrics
signal.alarm({SCRIPTED_ALARM_S})
loop.split_metrics = scripted_split_metrics(json.loads(os.environ["SCRIPTED_VAL_AUCS"]))
"""
