"""AUC, GAUC, logloss and the popularity counter against brute-force definitions."""
import itertools

import numpy as np
import pytest

from din_common.metrics import PopularityCounter, auc, gauc, logloss


def pairwise_auc(labels, scores):
    positives = [s for s, y in zip(scores, labels) if y == 1]
    negatives = [s for s, y in zip(scores, labels) if y == 0]
    if not positives or not negatives:
        return None
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(positives, negatives))
    return wins / (len(positives) * len(negatives))


def brute_force_gauc(users, labels, scores):
    total = weight = 0.0
    for user in sorted(set(users)):
        rows = [i for i, u in enumerate(users) if u == user]
        value = pairwise_auc([labels[i] for i in rows], [scores[i] for i in rows])
        if value is not None:
            total += value * len(rows)
            weight += len(rows)
    return total / weight


def test_gauc_hand_made_case_with_ties():
    users = [1, 1, 1, 1, 2, 2, 2, 3, 3, 4, 4, 4, 4, 4]
    labels = [1, 0, 0, 1, 1, 1, 1, 0, 1, 1, 0, 1, 0, 0]
    scores = [0.5, 0.5, 0.2, 0.9, 0.1, 0.3, 0.3, 0.7, 0.7, 0.4, 0.4, 0.4, 0.8, 0.1]
    # user 2 has one class: skipped; users 3 and 4 have ties across classes
    assert gauc(users, labels, scores) == pytest.approx(brute_force_gauc(users, labels, scores), abs=1e-12)
    assert auc(labels, scores) == pytest.approx(pairwise_auc(labels, scores), abs=1e-12)


def test_gauc_and_auc_random_cases_match_brute_force():
    rng = np.random.default_rng(3)
    for _ in range(50):
        n = int(rng.integers(2, 40))
        users = rng.integers(0, 6, n)
        labels = rng.integers(0, 2, n)
        scores = rng.integers(0, 5, n) / 4.0  # many ties
        expected_auc = pairwise_auc(list(labels), list(scores))
        if expected_auc is None:
            assert np.isnan(auc(labels, scores))
            continue
        assert auc(labels, scores) == pytest.approx(expected_auc, abs=1e-12)
        has_two_classes = any(len(set(labels[users == u])) == 2 for u in set(users))
        if has_two_classes:
            expected = brute_force_gauc(list(users), list(labels), list(scores))
            assert gauc(users, labels, scores) == pytest.approx(expected, abs=1e-12)


def test_gauc_is_nan_when_every_user_has_one_class():
    assert np.isnan(gauc([1, 1, 2], [1, 1, 0], [0.1, 0.2, 0.3]))


def test_logloss_matches_definition_and_clips():
    labels = np.array([1, 0, 1])
    probabilities = np.array([0.9, 0.2, 1.0])
    expected = -np.mean([np.log(0.9), np.log(0.8), np.log(1 - 1e-7)])
    assert logloss(labels, probabilities) == pytest.approx(expected)


def test_popularity_counts_positive_targets_only():
    counter = PopularityCounter(n_items=5)
    counter.add(np.array([1, 2, 2, 3, 5]), np.array([1, 1, 1, 0, 1]))
    counter.add(np.array([2]), np.array([0.0]))
    assert counter.scores(np.array([1, 2, 3, 4, 5])).tolist() == [1, 2, 0, 0, 1]
