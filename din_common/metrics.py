"""Ranking and calibration metrics in numpy: AUC, GAUC, logloss; the popularity baseline.

- `auc`: Mann-Whitney statistic with tied scores sharing their average rank.
- `gauc`: per-user AUC weighted by the user's sample count; users whose samples are
  all one class are skipped (paper eq. 1). Vectorised: one lexsort by (user, score),
  tie-averaged ranks within each user, per-user sums with `np.add.reduceat`.
- `logloss`: mean binary cross-entropy with probabilities clipped away from 0 and 1.
- `PopularityCounter`: how often each item is a positive target (np.bincount per batch).
- `rela_impr`: the DIN paper's relative improvement of one AUC over a base AUC.
"""
from __future__ import annotations

import numpy as np

LOGLOSS_EPSILON = 1e-7


def _run_starts(*keys: np.ndarray) -> np.ndarray:
    """Boolean mask: True where any of the (already sorted) keys changes value, and at 0."""
    change = np.zeros(len(keys[0]), dtype=bool)
    change[:1] = True
    for key in keys:
        change[1:] |= key[1:] != key[:-1]
    return change


def _tie_averaged_ranks(group_starts: np.ndarray, tie_starts: np.ndarray) -> np.ndarray:
    """1-based ranks within each group (rows sorted), tied rows sharing their average rank."""
    n = len(group_starts)
    position = np.arange(n)
    group_first = np.maximum.accumulate(np.where(group_starts, position, 0))
    tie_first = np.maximum.accumulate(np.where(tie_starts, position, 0))
    tie_id = np.cumsum(tie_starts) - 1
    tie_last = np.append(np.flatnonzero(tie_starts)[1:], n) - 1
    return (tie_first + tie_last[tie_id]) / 2.0 - group_first + 1.0


def _grouped_auc(groups: np.ndarray, labels: np.ndarray, scores: np.ndarray):
    """(auc per group, samples per group) for groups with both classes."""
    order = np.lexsort((scores, groups))
    groups, labels, scores = groups[order], labels[order] > 0.5, scores[order]
    group_starts = _run_starts(groups)
    ranks = _tie_averaged_ranks(group_starts, _run_starts(groups, scores))
    starts = np.flatnonzero(group_starts)
    n_pos = np.add.reduceat(labels.astype(np.float64), starts)
    n_all = np.diff(np.append(starts, len(groups))).astype(np.float64)
    n_neg = n_all - n_pos
    positive_rank_sum = np.add.reduceat(np.where(labels, ranks, 0.0), starts)
    both = (n_pos > 0) & (n_neg > 0)
    auc_values = (positive_rank_sum[both] - n_pos[both] * (n_pos[both] + 1) / 2) / (n_pos[both] * n_neg[both])
    return auc_values, n_all[both]


def _as_arrays(labels, scores):
    labels = np.asarray(labels, dtype=np.float64).ravel()
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if labels.shape != scores.shape:
        raise ValueError(f"labels {labels.shape} and scores {scores.shape} differ in length")
    return labels, scores


def auc(labels, scores) -> float:
    """Area under the ROC curve; nan when only one class is present."""
    labels, scores = _as_arrays(labels, scores)
    values, _ = _grouped_auc(np.zeros(len(labels), np.int64), labels, scores)
    return float(values[0]) if len(values) else float("nan")


def gauc(user_ids, labels, scores) -> float:
    """Per-user AUC weighted by each user's sample count; single-class users skipped; nan if none."""
    labels, scores = _as_arrays(labels, scores)
    values, weights = _grouped_auc(np.asarray(user_ids).ravel(), labels, scores)
    if not len(values):
        return float("nan")
    return float(np.sum(values * weights) / np.sum(weights))


def logloss(labels, probabilities) -> float:
    labels, probabilities = _as_arrays(labels, probabilities)
    clipped = np.clip(probabilities, LOGLOSS_EPSILON, 1.0 - LOGLOSS_EPSILON)
    return float(-np.mean(labels * np.log(clipped) + (1.0 - labels) * np.log(1.0 - clipped)))


def all_metrics(user_ids, labels, probabilities) -> dict[str, float]:
    return {"auc": auc(labels, probabilities), "gauc": gauc(user_ids, labels, probabilities),
            "logloss": logloss(labels, probabilities)}


class PopularityCounter:
    """Counts positive targets per item; the score of an item is its count."""

    def __init__(self, n_items: int):
        self.counts = np.zeros(n_items + 1, dtype=np.int64)

    def add(self, target_items: np.ndarray, labels: np.ndarray) -> None:
        positives = np.asarray(target_items)[np.asarray(labels) > 0.5]
        self.counts += np.bincount(positives, minlength=len(self.counts))[: len(self.counts)]

    def scores(self, target_items: np.ndarray) -> np.ndarray:
        return self.counts[np.asarray(target_items)].astype(np.float64)


def rela_impr(model_auc: float, base_auc: float) -> float | None:
    """RelaImpr (DIN paper eq. 11): (AUC(model) - 0.5) / (AUC(base) - 0.5) - 1; None for a base at 0.5."""
    if base_auc is None or base_auc == 0.5:
        return None
    return (model_auc - 0.5) / (base_auc - 0.5) - 1.0
