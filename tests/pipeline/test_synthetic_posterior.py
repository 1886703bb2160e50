"""The history posterior of pipeline.raw.synthetic_posterior against exact posteriors on small cases."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline.raw.synthetic import generate
from pipeline.raw.synthetic_posterior import interest_posterior

CAT_PROB = np.array([0.4, 0.3, 0.2, 0.1])
INTEREST_PROB = np.array([0.35, 0.3, 0.2, 0.15])
EXPLORE = 0.25
PARTICLES = 20000
TOLERANCE = 0.01   # Monte Carlo error at PARTICLES, a few times its standard deviation


def _likelihood(cat, prev, stickiness, interest):
    """P(category | interest weight of it), the generator's rule (prev None for a first review)."""
    choice = EXPLORE * CAT_PROB[cat] + (1 - EXPLORE) * interest
    return choice if prev is None else stickiness * (cat == prev) + (1 - stickiness) * choice


def _one_slot_exact(history, stickiness, drift):
    """One interest slot: a hidden Markov chain over its category (a drift redraws it from pi)."""
    belief = INTEREST_PROB.copy()
    for t, cat in enumerate(history):
        if t:
            belief = (1 - drift) * belief + drift * INTEREST_PROB
        belief = belief * _likelihood(cat, history[t - 1] if t else None, stickiness[t], np.arange(4) == cat)
        belief /= belief.sum()
    return (1 - drift) * belief + drift * INTEREST_PROB   # the drift before the target


def _knobs(count_probs, drift):
    return {"interest_count_probs": count_probs, "interest_dirichlet_alpha": 1.0, "interest_drift": drift,
            "exploration": EXPLORE}


def test_one_slot_with_drift_matches_the_exact_chain_for_users_of_different_lengths():
    # three users in one call; each history is followed by a row the filter must not read (the target)
    histories = [[2, 2, 3, 2, 1, 3, 3], [1, 1], [0, 3, 3, 3, 3]]
    stickiness = [[0, 0.4, 0.1, 0.0, 0.3, 0.2, 0.5], [0, 0.45], [0, 0.0, 0.3, 0.1, 0.2]]
    rows, sticks, starts = [], [], []
    for history, stick in zip(histories, stickiness):
        starts.append(len(rows))
        rows += history + [0]
        sticks += stick + [0.5]
    got = interest_posterior(np.array(starts), np.array([len(h) for h in histories]), np.array(rows),
                             np.array(sticks, float), np.tile(np.arange(4), (3, 1)), CAT_PROB, INTEREST_PROB,
                             _knobs([1.0], 0.3), PARTICLES, seed=1)
    for user, (history, stick) in enumerate(zip(histories, stickiness)):
        np.testing.assert_allclose(got[user], _one_slot_exact(history, stick, 0.3), atol=TOLERANCE)


def test_two_slots_without_drift_match_the_exact_integral_over_the_weights():
    history, stickiness = [1, 1, 2, 1, 0, 1], [0, 0.5, 0.2, 0.0, 0.1, 0.3]
    grid = (np.arange(4000) + 0.5) / 4000     # w of the first slot; Dirichlet(1, 1) is uniform
    numerator, evidence = np.zeros(4), 0.0
    for first in range(4):
        for second in range(4):
            # a category drawn twice is one slot with all the weight; w(c) is the same either way
            weight = grid[:, None] * (np.arange(4) == first) + (1 - grid[:, None]) * (np.arange(4) == second)
            like = np.ones(grid.size)
            for t, cat in enumerate(history):
                like *= _likelihood(cat, history[t - 1] if t else None, stickiness[t], weight[:, cat])
            mass = INTEREST_PROB[first] * INTEREST_PROB[second] * like
            numerator += (mass[:, None] * weight).sum(axis=0)
            evidence += mass.sum()
    got = interest_posterior(np.array([0]), np.array([len(history)]), np.array(history), np.array(stickiness),
                             np.arange(4)[None, :], CAT_PROB, INTEREST_PROB, _knobs([0.0, 1.0], 0.0), PARTICLES,
                             seed=2)
    np.testing.assert_allclose(got[0], numerator / evidence, atol=TOLERANCE)


def test_the_posterior_sits_between_popularity_and_the_oracle_and_is_only_computed_on_request():
    plain = generate(1500, 800, 40, 3).oracle
    assert "posterior_test_auc" not in plain     # oracle.json is unchanged by default
    oracle = generate(1500, 800, 40, 3, posterior_particles=(200,)).oracle
    posterior = oracle.pop("posterior_test_auc")["200"]
    assert oracle == plain
    assert plain["popularity_test_auc"] < plain["history_bag_test_auc"] < posterior < plain["oracle_test_auc"]


@pytest.mark.parametrize("lengths", [[0], [3, 0]])
def test_a_user_without_history_is_refused(lengths):
    with pytest.raises(ValueError, match="at least one history review"):
        interest_posterior(np.zeros(len(lengths), np.int64), np.array(lengths), np.zeros(3, np.int64),
                           np.zeros(3), np.zeros((len(lengths), 1), np.int64), CAT_PROB, INTEREST_PROB,
                           _knobs([1.0], 0.0), 10, seed=0)
