"""The best any model of the history can do on synthetic data: the planted model's posterior, by particles.

The oracle of `pipeline.raw.synthetic` knows each user's latent interests; a model sees only the
history. Given everything else the generator used (category popularity `p_c`, the interest draw's
tempered popularity `pi_c`, the knobs, each review's stickiness from its gap), the probability that
the next review falls in category c is

    s [c == previous category] + (1 - s) (e p_c + (1 - e) E[w_T(c) | history])

and the item term within the category needs no latent state at all. So ranking by this posterior
predictive is the Bayes-optimal use of the history (Neyman-Pearson: the test's negatives are
uniform over unreviewed items), and its AUC bounds what DIN or any other model of these features can
reach. This module estimates `E[w_T(c) | history]`, the posterior mean of a user's interest weight in c
after the drift before the target review, with a particle filter over the interest slots:

- a particle is a draw of the generator's latent start (1..4 slots, each a category, Dirichlet weights;
  a category drawn twice merged into its first slot, as the generator does), then of each drift (one
  present slot, uniformly, gets a new category);
- slot and drift categories are proposed from a mix of the user's own history categories and `pi`, and
  weighted by `pi / proposal` (exact importance weights: a particle from `pi` alone would rarely hold
  the user's categories);
- each history review multiplies a particle's weight by its category's likelihood; the particles are
  resampled (systematic, per user) when the effective sample size falls below half;
- the drift before the target is averaged exactly: E[w'(c)] = w(c) (1 - d / n) + d pi_c / n.

All users of a chunk move together, one history position at a time (the generator's own walk);
no per-user Python. A finite particle count can only blur the posterior, so the AUC it gives
approaches the bound from below as the count grows (benchmarks/synthetic_signal.py reports several).
"""
from __future__ import annotations

import math

import numpy as np

PROPOSAL_OWN_SHARE = 0.5   # P(a proposed category is drawn from the user's own history categories)
CHUNK_SLOTS = 1 << 22      # users x particles x slots held at once (memory ~ 20 arrays of this size)


def interest_posterior(starts: np.ndarray, lengths: np.ndarray, hist_cat: np.ndarray, hist_stickiness: np.ndarray,
                       query_cat: np.ndarray, cat_prob: np.ndarray, interest_prob: np.ndarray, knobs: dict,
                       particles: int, seed: int) -> np.ndarray:
    """E[w_T(c) | history] for each user and query category.

    starts, lengths: each user's history, rows starts .. starts + lengths - 1 of hist_cat / hist_stickiness
    (position order, >= 1 row);
    hist_stickiness: each review's P(same category as the previous one) (a user's first is not used);
    query_cat: [U, Q] categories to score; cat_prob: p_c; interest_prob: pi_c (sums to 1);
    knobs: the generator's (interest_count_probs, interest_dirichlet_alpha, interest_drift, exploration).
    Returns [U, Q].
    """
    starts, lengths = np.asarray(starts, np.int64), np.asarray(lengths, np.int64)
    query_cat = np.asarray(query_cat, np.int64)
    if (lengths < 1).any():
        raise ValueError("every user needs at least one history review")
    n_slots = len(knobs["interest_count_probs"])
    order = np.argsort(-lengths, kind="stable")   # longest first: a chunk's active users are a prefix
    chunk = max(1, CHUNK_SLOTS // (particles * n_slots))
    result = np.empty(query_cat.shape, np.float64)
    rng = np.random.default_rng(seed)
    for start in range(0, order.size, chunk):
        users = order[start:start + chunk]
        filt = _Filter(rng, starts[users], lengths[users], hist_cat, cat_prob, interest_prob, knobs, particles)
        for t in range(int(lengths[users[0]])):
            filt.observe(t, hist_cat, hist_stickiness)
        result[users] = filt.predict(query_cat[users])
    return result


class _Filter:
    """Particles of one chunk of users: slots [B, P, K] (category, weight), log importance weights [B, P]."""

    def __init__(self, rng, starts, lengths, hist_cat, cat_prob, interest_prob, knobs, particles):
        self.rng, self.starts, self.lengths = rng, starts, lengths
        self.cat_prob, self.interest_prob = cat_prob, interest_prob
        self.drift, self.explore = float(knobs["interest_drift"]), float(knobs["exploration"])
        n_users, n_cats = starts.size, cat_prob.size
        self.n_cats = n_cats
        self.own = _OwnCategories(starts, lengths, hist_cat, n_cats)
        probs = np.asarray(knobs["interest_count_probs"], np.float64)
        k = probs.size
        shape = (n_users, particles, k)
        count = 1 + rng.choice(k, size=shape[:2], p=probs / probs.sum())
        user = np.arange(n_users)[:, None, None]
        cats, log_ratio = self._propose(user, shape)
        present = np.arange(k) < count[..., None]
        self.log_w = np.where(present, log_ratio, 0.0).sum(axis=2)
        # A category drawn twice keeps only its first slot, its weights added: the kept slots' weights are
        # Dirichlet with alpha times each one's multiplicity.
        multiplicity = present.astype(np.float64)
        for j in range(1, k):
            for i in range(j):
                same = present[..., j] & (cats[..., j] == cats[..., i])
                multiplicity[..., i] += same
                present[..., j] &= ~same
        prior_shape = float(knobs["interest_dirichlet_alpha"]) * multiplicity
        # proposed from Dirichlet(prior + the history's reviews in each slot's category), near the posterior
        proposal_shape = prior_shape + np.where(present, self.own.reviews_in(np.broadcast_to(user, shape), cats), 0)
        weights = np.where(present, rng.gamma(np.where(present, proposal_shape, 1.0)), 0.0)
        weights /= weights.sum(axis=2, keepdims=True)
        self.log_w += _dirichlet_log_ratio(weights, prior_shape, proposal_shape, present)
        # present slots first, so a drift can pick slot floor(u * n_present) as the generator does
        slot_order = np.argsort(~present, axis=2, kind="stable")
        present = np.take_along_axis(present, slot_order, axis=2)
        self.cats = np.where(present, np.take_along_axis(cats, slot_order, axis=2), -1)
        self.weights = np.where(present, np.take_along_axis(weights, slot_order, axis=2), 0.0)
        self.n_present = present.sum(axis=2)
        self.prev_cat = np.full(n_users, -1, np.int64)

    def _propose(self, user, shape):
        """Categories from PROPOSAL_OWN_SHARE * (uniform over the user's history categories) + the rest * pi,
        and log(pi / proposal) of each."""
        rng = self.rng
        own_draw = self.own.draw(np.broadcast_to(user, shape), rng.random(shape))
        pi_draw = np.minimum(np.searchsorted(np.cumsum(self.interest_prob), rng.random(shape), side="right"),
                             self.n_cats - 1)
        cats = np.where(rng.random(shape) < PROPOSAL_OWN_SHARE, own_draw, pi_draw)
        own_prob = self.own.contains(np.broadcast_to(user, shape), cats) / self.own.count[user]
        proposal = PROPOSAL_OWN_SHARE * own_prob + (1 - PROPOSAL_OWN_SHARE) * self.interest_prob[cats]
        return cats, np.log(self.interest_prob[cats]) - np.log(proposal)

    def observe(self, t: int, hist_cat, hist_stickiness) -> None:
        """History review t of every user that has one: the drift before it, then its category's likelihood."""
        active = int(np.searchsorted(-self.lengths, -t, side="left"))   # lengths > t: a prefix
        rows = self.starts[:active] + t
        cat = hist_cat[rows]
        cats, weights, log_w = self.cats[:active], self.weights[:active], self.log_w[:active]
        if t and self.drift > 0:
            moved_user, moved_particle = np.nonzero(self.rng.random(log_w.shape) < self.drift)
            slot = (self.rng.random(moved_user.size) * self.n_present[moved_user, moved_particle]).astype(np.int64)
            new_cat, log_ratio = self._propose(moved_user, moved_user.shape)
            cats[moved_user, moved_particle, slot] = new_cat
            np.add.at(log_w, (moved_user, moved_particle), log_ratio)
        interest = (weights * (cats == cat[:, None, None])).sum(axis=2)
        choice = self.explore * self.cat_prob[cat][:, None] + (1 - self.explore) * interest
        if t:
            stick = hist_stickiness[rows][:, None]
            choice = stick * (cat == self.prev_cat[:active])[:, None] + (1 - stick) * choice
        log_w += np.log(choice)
        self.prev_cat[:active] = cat
        self._resample(active)

    def _resample(self, active: int) -> None:
        """Systematic resampling of the users whose effective sample size fell below half the particles."""
        log_w = self.log_w[:active]
        w = np.exp(log_w - log_w.max(axis=1, keepdims=True))
        w /= w.sum(axis=1, keepdims=True)
        particles = w.shape[1]
        users = np.flatnonzero(1.0 / (w * w).sum(axis=1) < particles / 2)
        if not users.size:
            return
        # one flat search for all of them: user k's cumulative weights live in [k, k + 1)
        cum = np.cumsum(w[users], axis=1)
        cum[:, -1] = 1.0
        cum += np.arange(users.size)[:, None]
        points = (self.rng.random(users.size)[:, None] + np.arange(particles)) / particles
        points += np.arange(users.size)[:, None]
        picked = np.searchsorted(cum.ravel(), points.ravel(), side="right").reshape(cum.shape)
        picked -= (np.arange(users.size) * particles)[:, None]
        picked = np.minimum(picked, particles - 1)
        rows = users[:, None]
        self.cats[users] = self.cats[rows, picked]
        self.weights[users] = self.weights[rows, picked]
        self.n_present[users] = self.n_present[rows, picked]
        self.log_w[users] = 0.0

    def predict(self, query_cat: np.ndarray) -> np.ndarray:
        """E[w_T(c)] for each user's query categories [B, Q], the drift before the target averaged exactly."""
        w = np.exp(self.log_w - self.log_w.max(axis=1, keepdims=True))
        w /= w.sum(axis=1, keepdims=True)
        held = (self.weights[:, :, None, :] * (self.cats[:, :, None, :] == query_cat[:, None, :, None])).sum(axis=3)
        keep = 1.0 - self.drift / self.n_present
        after_drift = held * keep[..., None] + (self.drift / self.n_present)[..., None] * self.interest_prob[query_cat][:, None, :]
        return (w[..., None] * after_drift).sum(axis=1)


def _dirichlet_log_ratio(weights, prior_shape, proposal_shape, present):
    """log Dirichlet(weights; prior_shape) - log Dirichlet(weights; proposal_shape) over the present slots."""
    def log_normaliser(shape):
        return _lgamma(np.where(present, shape, 1.0).sum(axis=2) - (~present).sum(axis=2)) - np.where(
            present, _lgamma(np.where(present, shape, 1.0)), 0.0).sum(axis=2)
    log_weights = np.log(np.where(present, weights, 1.0))
    return (log_normaliser(prior_shape) - log_normaliser(proposal_shape)
            + ((prior_shape - proposal_shape) * log_weights).sum(axis=2))


def _lgamma(values: np.ndarray) -> np.ndarray:
    # numpy has no log-gamma; the shapes here take few distinct values
    distinct, inverse = np.unique(values, return_inverse=True)
    return np.array([math.lgamma(value) for value in distinct])[inverse].reshape(values.shape)


class _OwnCategories:
    """Each user's distinct history categories: uniform draws from them, membership, and review counts."""

    def __init__(self, starts, lengths, hist_cat, n_cats):
        user = np.repeat(np.arange(starts.size), lengths)
        rows = np.repeat(starts - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths) + np.arange(lengths.sum())
        self.keys, self.reviews = np.unique(user * n_cats + hist_cat[rows], return_counts=True)
        self.n_cats = n_cats
        self.count = np.bincount(self.keys // n_cats, minlength=starts.size)
        self.first = np.concatenate([[0], np.cumsum(self.count)[:-1]])

    def draw(self, user, uniform):
        return self.keys[self.first[user] + (uniform * self.count[user]).astype(np.int64)] % self.n_cats

    def contains(self, user, cats):
        return self._find(user, cats)[0]

    def reviews_in(self, user, cats):
        """How many of the user's history reviews are in each category."""
        found, at = self._find(user, cats)
        return np.where(found, self.reviews[at], 0)

    def _find(self, user, cats):
        key = user * self.n_cats + cats
        at = np.minimum(np.searchsorted(self.keys, key), self.keys.size - 1)
        return self.keys[at] == key, at
