"""Synthetic Amazon-Electronics-shaped raw data with a planted model, and its oracle AUC.

This module owns `[raw] source = synthetic`: it writes `raw/reviews.pkl`,
`raw/meta.pkl` (the schema of the Amazon pickles the original DIN scripts read)
and `raw/oracle.json` (the AUCs that the planted model allows on the test
protocol). Everything is vectorised with numpy: the generator walks review
*positions* t = 0, 1, ... and draws the t-th review of every user at once.

The planted model (knobs in `KNOBS`):
- categories have Zipf popularity `p_c`; every category owns >= 1 item, the rest
  of the items are spread over categories by (tempered) popularity; within a
  category, items have Zipf popularity `q_i` (a category's `q` sums to 1);
- each user has 1..4 interest slots, each holding a category (drawn by tempered
  popularity) with a Dirichlet weight; `w_u(c)` is the weight of the slots
  holding c. A user writes `5 + Poisson(lognormal)` reviews (mean 8.78 by
  default: ~1.69 M reviews at full Electronics scale, a long tail of heavy users);
- review days come first, before any category is drawn: day-granular, strictly
  increasing within a user, inside 2000-01-01..2014-07-23; each gap between two
  reviews is, with probability `session_gap_share`, a same-session gap of
  1..`session_gap_max_days` days, else a break drawn log-uniformly between
  `break_gap_days` (a week to three years); a user whose breaks would leave the
  window gets them scaled down;
- interest drift: before review t >= 1, with probability `d = interest_drift`,
  one of the user's present slots (uniformly) gets a new category drawn by the
  tempered popularity (its weight is kept), so recent reviews say more about the
  current interests than old ones;
- review t's category: with probability `s_t` (t >= 1) the previous review's
  category, else with probability `e = exploration` a draw from `p_c`, else a
  draw from the user's current interests `w_u`. The stickiness decays with the
  gap `g_t` (days) since the previous review:
    s_t = stickiness * 0.5 ** (g_t / stickiness_half_life_days)
  (a half-life of 0 means a constant `stickiness`);
- the item is drawn from `q` of that category, redrawn while it is one the user
  already reviewed, at most `R = max_item_draws` draws (the last is kept, so a
  user whose category is nearly exhausted reviews an item twice);
- item locality (off by default, `item_locality = l`): when review t's category is
  the previous review's, with probability l its item is drawn instead uniformly
  from the previous item's neighbours, the items of that category within
  `item_locality_width` places of it in a random browsing order of the category
  (the next item close to the last one, in a way popularity does not show),
  redrawn the same way. At 0 no random number is drawn for it, so the
  data are those of generator version 2 byte for byte.

So, with `Q` the q-mass of the items the user already reviewed in category c,
`w_u` the interests the next review is drawn from (after the drift before it)
and `s` its gap's stickiness, the true probability that the next review is the
unreviewed item i of c is
  q_i (1 - Q^R) / (1 - Q) * (s [c == c_prev] + (1 - s) (e p_c + (1 - e) w_u(c))),
and q_i Q^(R-1) * (same category term) for an item already reviewed. With item
locality, an item of the previous review's category has, in place of the q term,
(1 - l) times it plus l times the same form for the uniform draw over the previous
item's neighbours (1 / n in place of q_i, the share of them already reviewed in
place of Q; 0 for an item that is not a neighbour).
Much of the signal is order-free (interests, popularity) and visible in the bag
of history categories; the stickiness term needs the order and the time gap, and
the drift makes the recent history a better guide to `w_u` than the old.

Test protocol (the docs/design.md reference protocol): for each user the last review
is the positive (history = all earlier reviews) and the negative is drawn
uniformly from the items the user never reviewed. The oracle knows the latent
state the last review was drawn from (the final interests, the last gap's
stickiness) and scores a target by the likelihood ratio of the two:
P(next = i) / P(negative = i), i.e. the true probability above times the user's
number of unreviewed items, and +inf for an item already in the history (a
negative never is). Ranking by this ratio is the best any model can do on the
pooled test AUC. `oracle.json` also holds the AUC of item popularity (review
counts without the users' last reviews), of a bag-of-history estimator (smoothed
share of the target's category in the history times the item's empirical
popularity within its category) and of the same estimator over only the last
`RECENT_BAG_LENGTH` history reviews (`recent_bag_test_auc`): how much order matters.
"""
from __future__ import annotations

import dataclasses
import operator
from pathlib import Path

import numpy as np
import pandas as pd

from din_common.atomic import atomic_path, write_json_atomic
from din_common.errors import InputError
from din_common.metrics import auc
from pipeline.compat import RAW_PICKLE_PROTOCOL, text_series
from pipeline.config import MAX_IDS  # the bound [raw] synthetic_* declare
from pipeline.raw.synthetic_posterior import interest_posterior

GENERATOR_VERSION = 2
MIN_REVIEWS_PER_USER = 5
MAX_REVIEWS_PER_USER = 1000
RECENT_BAG_LENGTH = 5   # history reviews the recent-bag estimator looks at

# The planted-model knobs (recorded in oracle.json). The order knobs (stickiness,
# its half-life, the drift) are tuned so that a bag-of-history estimator closes
# clearly less of the popularity-to-oracle gap than the oracle's order-aware
# state allows (docs/accuracy.md; benchmarks/synthetic_signal.py).
KNOBS = {
    "category_zipf": 1.0,            # p_c ∝ rank^-category_zipf
    "item_zipf": 1.0,                # q_i ∝ rank^-item_zipf within a category
    "items_per_category_power": 0.6,  # extra items spread ∝ p_c^power
    "interest_count_probs": [0.35, 0.30, 0.20, 0.15],  # P(1..4 interests)
    "interest_popularity_power": 0.85,  # interest categories drawn ∝ p_c^power
    "interest_dirichlet_alpha": 1.0,
    "stickiness": 0.5,               # P(same category as the previous review) after a 0-day gap
    "stickiness_half_life_days": 14.0,  # the stickiness halves every this many days of gap (0: constant)
    "interest_drift": 0.2,           # P(one interest slot gets a new category) before each review
    "exploration": 0.25,
    "session_gap_share": 0.5,        # P(a gap is a same-session one of 1..session_gap_max_days days)
    "session_gap_max_days": 3,
    "break_gap_days": [7, 1095],     # other gaps: log-uniform from a week to three years
    "max_item_draws": 25,            # draws until an item new to the user (last one kept)
    "item_locality": 0.0,            # P(the item is a neighbour of the previous one | same category as it)
    "item_locality_width": 3,        # neighbours: the category's items within this many places of the browsing order
    "length_lognormal_sigma": 1.25,
    "rating_probs": [0.07, 0.05, 0.10, 0.22, 0.56],  # P(overall = 1..5)
}

_ALNUM = np.frombuffer(b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ", dtype=np.uint8)
_DAY = 86400
_FIRST_DAY = 10957   # 2000-01-01 in days since the epoch
_LAST_DAY = 16274    # 2014-07-23, the last day of the Amazon 2014 dump
_PARENTS = (
    "Computers & Accessories", "Camera & Photo", "Accessories & Supplies",
    "Portable Audio & Video", "Home Audio", "Television & Video", "Car & Vehicle Electronics",
    "Cell Phones & Accessories", "Headphones", "Video Games", "GPS & Navigation",
    "Office Electronics", "Security & Surveillance", "Wearable Technology",
)
_LEAF_ADJECTIVES = (
    "Wireless", "Portable", "USB", "Digital", "Bluetooth", "Smart", "Compact", "Rugged",
    "Outdoor", "Universal", "Magnetic", "Optical", "Mini", "Pro", "Home", "Car",
    "Gaming", "Studio", "Travel", "Solar", "Waterproof", "Dual", "HD", "Network",
    "Rechargeable", "Mounted", "Handheld", "Desktop", "Modular", "Retro",
)
_LEAF_NOUNS = (
    "Cables", "Chargers", "Adapters", "Speakers", "Headsets", "Keyboards", "Mice", "Monitors",
    "Cases", "Tripods", "Lenses", "Filters", "Batteries", "Hubs", "Routers", "Antennas",
    "Receivers", "Amplifiers", "Projectors", "Scanners", "Printers", "Microphones", "Stands",
    "Docks", "Drives", "Memory Cards", "Remotes", "Mounts", "Sensors", "Lights",
)


@dataclasses.dataclass
class SyntheticData:
    """The raw frames (Amazon pickle schema) and the planted-model oracle figures."""
    reviews: pd.DataFrame
    meta: pd.DataFrame
    oracle: dict


# --------------------------------------------------------------------------- checks

def _count(value, setting: str, minimum: int, maximum: int) -> int:
    try:
        if isinstance(value, bool):
            raise TypeError
        number = operator.index(value)
    except TypeError:
        raise InputError(f"[raw] {setting} must be an integer, got {value!r}") from None
    if not minimum <= number <= maximum:
        raise InputError(f"[raw] {setting} must be an integer from {minimum} to {maximum:,}, got {number} "
                         f"(set it in luigi.cfg or with --raw-{setting.replace('_', '-')})")
    return number


# The order knobs that [raw] exposes: knob -> (setting, upper bound).
ORDER_KNOB_SETTINGS = {
    "stickiness": ("synthetic_stickiness", 1.0),
    "stickiness_half_life_days": ("synthetic_stickiness_half_life_days", float("inf")),
    "interest_drift": ("synthetic_interest_drift", 1.0),
    "item_locality": ("synthetic_item_locality", 1.0),
}
# Knobs that generator version 2 did not have, with the value that draws the same data: left out of the
# raw fingerprint at that value, so data made before they existed stays up to date.
KNOBS_OFF = {"item_locality": 0.0}


def fingerprint_knobs(knobs: dict) -> dict:
    """The checked order knobs that identify the data: those at their KNOBS_OFF value left out."""
    return {knob: value for knob, value in knobs.items() if KNOBS_OFF.get(knob) != value}


def check_order_knobs(values: dict) -> dict:
    """The order knobs as floats, each checked with one clear error naming its [raw] setting.

    A half-life of inf means the same as 0 (a constant stickiness) and is stored as 0,
    so the recorded knobs and the raw fingerprint stay plain JSON.
    """
    checked = {}
    for knob, (setting, upper) in ORDER_KNOB_SETTINGS.items():
        value = values[knob]
        try:
            if isinstance(value, bool):
                raise TypeError
            number = float(value)
        except (TypeError, ValueError):
            number = float("nan")
        if not 0.0 <= number <= upper:
            allowed = "a number >= 0 (days; 0 or inf: constant)" if upper == float("inf") else "a number in [0, 1]"
            raise InputError(f"[raw] {setting} must be {allowed}, got {value!r} "
                             f"(set it in luigi.cfg or with --raw-{setting.replace('_', '-')})")
        checked[knob] = 0.0 if number == float("inf") else number
    return checked


def check_sizes(n_users, n_items, n_categories, seed) -> tuple[int, int, int, int]:
    """The [raw] synthetic_* sizes and seed, each checked with one clear error naming its setting."""
    n_users = _count(n_users, "synthetic_users", 1, MAX_IDS)
    n_categories = _count(n_categories, "synthetic_categories", 1, MAX_IDS)
    # every user has >= 5 reviews and must keep at least one never-reviewed item
    # (the negative of the test protocol is drawn from those)
    n_items = _count(n_items, "synthetic_items", MIN_REVIEWS_PER_USER + 1, MAX_IDS)
    if n_items < n_categories:
        raise InputError(f"[raw] synthetic_items ({n_items}) must be >= synthetic_categories "
                         f"({n_categories}): every category needs at least one item")
    seed = _count(seed, "synthetic_seed", 0, 2**32 - 1)
    return n_users, n_items, n_categories, seed


def _check_args(n_users, n_items, n_categories, seed, mean_reviews_per_user):
    n_users, n_items, n_categories, seed = check_sizes(n_users, n_items, n_categories, seed)
    try:
        mean = float(mean_reviews_per_user)
    except (TypeError, ValueError):
        mean = float("nan")
    if not (MIN_REVIEWS_PER_USER <= mean <= 100):
        raise InputError(f"synthetic mean_reviews_per_user must be a number in "
                         f"[{MIN_REVIEWS_PER_USER}, 100], got {mean_reviews_per_user!r}")
    return n_users, n_items, n_categories, seed, mean


# --------------------------------------------------------------------------- helpers

def _zipf(n: int, exponent: float) -> np.ndarray:
    weights = np.arange(1, n + 1, dtype=np.float64) ** -exponent
    return weights / weights.sum()


def _unique_codes(rng, n: int, prefix: bytes, n_random: int) -> np.ndarray:
    """n distinct strings `prefix + n_random uppercase alnum`, as a numpy unicode array."""
    width = len(prefix) + n_random
    head = np.frombuffer(prefix, dtype=np.uint8)
    codes = np.empty((n, width), dtype=np.uint8)
    codes[:, :len(head)] = head
    todo = np.arange(n)
    while todo.size:
        codes[todo, len(head):] = _ALNUM[rng.integers(0, _ALNUM.size, (todo.size, n_random))]
        as_bytes = codes.view(f"S{width}").ravel()
        _, first = np.unique(as_bytes, return_index=True)
        duplicate = np.ones(n, dtype=bool)
        duplicate[first] = False
        todo = np.flatnonzero(duplicate)
    return codes.view(f"S{width}").ravel().astype(f"U{width}")


def _leaf_names(rng, n_categories: int) -> np.ndarray:
    """n distinct leaf names in random order (name order says nothing of popularity)."""
    combos = [f"{a} {b}" for a in _LEAF_ADJECTIVES for b in _LEAF_NOUNS]
    rounds = -(-n_categories // len(combos))
    names = combos + [f"{name} {r}" for r in range(2, rounds + 1) for name in combos]
    return np.array(names, dtype=object)[rng.permutation(len(names))[:n_categories]]



def rank_auc(pos_scores: np.ndarray, neg_scores: np.ndarray) -> float:
    """Pooled AUC of positives vs negatives (ties count half): the evaluation's own `auc`."""
    pos_scores, neg_scores = np.asarray(pos_scores, np.float64), np.asarray(neg_scores, np.float64)
    labels = np.concatenate([np.ones(pos_scores.size), np.zeros(neg_scores.size)])
    return auc(labels, np.concatenate([pos_scores, neg_scores]))


# --------------------------------------------------------------------------- model

@dataclasses.dataclass
class _Planted:
    """Latent state of the planted model (internal indices, 0-based)."""
    cat_prob: np.ndarray        # [C] p_c
    item_cat: np.ndarray        # [N] category of each item
    item_prob: np.ndarray       # [N] q_i within its category
    interest_cat: np.ndarray    # [U, 4] interest categories at the last review (-1 = none)
    interest_cat_start: np.ndarray  # [U, 4] interest categories at the first review
    interest_w: np.ndarray      # [U, 4] interest weights (0 for none), rows sum to 1
    n_reviews: np.ndarray       # [U]
    review_user: np.ndarray     # [R] user of each review, user-major, position order
    review_item: np.ndarray     # [R]
    review_cat: np.ndarray      # [R]
    review_day: np.ndarray      # [R] days since the epoch
    review_stickiness: np.ndarray  # [R] P(same category as the previous review) (0 for a first review)
    review_drift: np.ndarray    # [R] whether an interest slot got a new category just before this review
    offsets: np.ndarray         # [U+1] first review row of each user
    browsing: "_Browsing"       # the items' neighbours (item locality)


def _review_days(rng, n_reviews: np.ndarray, offsets: np.ndarray, knobs) -> tuple:
    """(day of each review, gap in days since the user's previous review; 0 for a first review).

    Gaps mix same-session ones (1..session_gap_max_days) and long breaks
    (log-uniform over break_gap_days); a user whose gaps would not fit into
    2000-01-01..2014-07-23 gets each gap's part above one day scaled down.
    """
    n_users, n_rows = n_reviews.size, int(offsets[-1])
    user = np.repeat(np.arange(n_users), n_reviews)
    session = rng.random(n_rows) < knobs["session_gap_share"]
    session_gap = 1 + rng.integers(0, int(knobs["session_gap_max_days"]), n_rows)
    low, high = np.log(knobs["break_gap_days"][0]), np.log(knobs["break_gap_days"][1])
    break_gap = np.exp(low + (high - low) * rng.random(n_rows)).astype(np.int64)
    gap = np.where(session, session_gap, break_gap)
    gap[offsets[:-1]] = 0
    total_days = _LAST_DAY - _FIRST_DAY
    span = np.bincount(user, gap, minlength=n_users)
    steps = n_reviews - 1
    # every gap keeps >= 1 day (strictly increasing days), the rest shrinks to fit
    scale = np.minimum(1.0, (total_days - steps) / np.maximum(span - steps, 1.0))
    gap = np.where(gap > 0, 1 + np.floor((gap - 1) * scale[user]).astype(np.int64), 0)
    span = np.bincount(user, gap, minlength=n_users).astype(np.int64)
    start = _FIRST_DAY + (rng.random(n_users) * (total_days - span + 1)).astype(np.int64)
    elapsed = np.cumsum(gap)
    elapsed -= elapsed[offsets[:-1]][user]
    return start[user] + elapsed, gap


def _gap_stickiness(gap_days: np.ndarray, knobs) -> np.ndarray:
    """stickiness * 0.5 ** (gap / half-life); constant for a half-life of 0."""
    half_life = knobs["stickiness_half_life_days"]
    if half_life <= 0:
        return np.full(gap_days.shape, float(knobs["stickiness"]))
    return knobs["stickiness"] * 0.5 ** (gap_days / half_life)


@dataclasses.dataclass
class _Browsing:
    """Which items are browsed next to which: each category's items in a random order (not their
    popularity order, so the neighbours say what popularity does not); an item's neighbours are the
    items of its category within `width` places of it in that order, the item itself left out."""
    item_cat: np.ndarray       # [N] category of each item; categories are blocks of consecutive ids
    position: np.ndarray       # [N] place of each item in the browsing order (a permutation within each block)
    item_at: np.ndarray        # [N] the item at each place
    width: int

    @classmethod
    def draw(cls, rng, item_cat: np.ndarray, width: int) -> "_Browsing":
        item_at = np.lexsort((rng.random(item_cat.size), item_cat))
        position = np.empty_like(item_at)
        position[item_at] = np.arange(item_at.size)
        return cls(item_cat, position, item_at, width)

    @classmethod
    def unused(cls, item_cat: np.ndarray, width: int) -> "_Browsing":
        """The identity order, drawing no random number (item locality off)."""
        ids = np.arange(item_cat.size)
        return cls(item_cat, ids, ids, width)

    def window(self, items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(first place, count) of each item's neighbours: places first .. first + count, less its own."""
        places = self.position[items]
        block_start = np.searchsorted(self.item_cat, self.item_cat[items], side="left")
        block_end = np.searchsorted(self.item_cat, self.item_cat[items], side="right")
        first = np.maximum(block_start, places - self.width)
        return first, np.minimum(block_end - 1, places + self.width) - first

    def draw_neighbour(self, items: np.ndarray, uniform: np.ndarray) -> np.ndarray:
        """A neighbour of each item, uniformly (each item must have one)."""
        first, count = self.window(items)
        pick = first + (uniform * count).astype(np.int64)
        return self.item_at[pick + (pick >= self.position[items])]     # step over the item's own place

    def is_neighbour(self, targets: np.ndarray, items: np.ndarray) -> np.ndarray:
        first, count = self.window(items)
        places = self.position[targets]
        return (places >= first) & (places <= first + count) & (targets != items)

    def reviewed_neighbours(self, users: np.ndarray, items: np.ndarray, is_reviewed) -> np.ndarray:
        """How many of each item's neighbours the user reviewed; is_reviewed(users, items) -> bool array."""
        first, count = self.window(items)
        offsets = np.arange(2 * self.width + 1)[None, :]
        places = np.minimum(first[:, None] + offsets, self.item_at.size - 1)
        candidates = self.item_at[places]
        valid = (offsets <= count[:, None]) & (candidates != items[:, None])
        hits = is_reviewed(np.broadcast_to(users[:, None], candidates.shape).ravel(), candidates.ravel())
        return (hits.reshape(candidates.shape) & valid).sum(axis=1)


def _plant(rng, n_users, n_items, n_categories, mean_reviews, knobs) -> _Planted:
    cat_prob = _zipf(n_categories, knobs["category_zipf"])
    # items per category: one each, the rest spread by (tempered) popularity
    spread = cat_prob ** knobs["items_per_category_power"]
    items_per_cat = 1 + rng.multinomial(n_items - n_categories, spread / spread.sum())
    item_cat = np.repeat(np.arange(n_categories), items_per_cat)
    cat_start = np.concatenate([[0], np.cumsum(items_per_cat)[:-1]])
    rank_in_cat = np.arange(n_items) - cat_start[item_cat] + 1
    item_weight = rank_in_cat.astype(np.float64) ** -knobs["item_zipf"]
    item_prob = item_weight / np.bincount(item_cat, item_weight, n_categories)[item_cat]
    # a global cumulative of q, block c spanning [c, c + 1): draw(c) = searchsorted(c + u)
    item_cum = np.cumsum(item_prob)
    item_cum[cat_start[1:] - 1] = np.arange(1, n_categories)   # exact block ends
    item_cum[-1] = n_categories

    # interests: 1..4 categories by tempered popularity, Dirichlet weights
    interest_pop_cum = np.cumsum(_interest_prob(cat_prob, knobs))

    def draw_interest(size):
        return np.minimum(np.searchsorted(interest_pop_cum, rng.random(size), side="right"), n_categories - 1)

    k_max = len(knobs["interest_count_probs"])
    n_interests = 1 + rng.choice(k_max, size=n_users, p=knobs["interest_count_probs"])
    interest_cat = draw_interest((n_users, k_max))
    raw_w = rng.gamma(knobs["interest_dirichlet_alpha"], size=(n_users, k_max))
    present = np.arange(k_max)[None, :] < n_interests[:, None]
    # a category drawn twice keeps only its first slot (its weight adds up there)
    for j in range(1, k_max):
        for i in range(j):
            same = present[:, j] & (interest_cat[:, j] == interest_cat[:, i])
            raw_w[same, i] += raw_w[same, j]
            present[same, j] = False
    # present slots first, so the drift can pick slot floor(u * n_present)
    order = np.argsort(~present, axis=1, kind="stable")
    present = np.take_along_axis(present, order, axis=1)
    interest_cat = np.take_along_axis(interest_cat, order, axis=1)
    raw_w = np.take_along_axis(raw_w, order, axis=1)
    n_present = present.sum(axis=1)
    raw_w[~present] = 0.0
    interest_cat[~present] = -1
    interest_w = raw_w / raw_w.sum(axis=1, keepdims=True)
    interest_cum = np.cumsum(interest_w, axis=1)
    # slot = #(cum <= u); +inf from the last present slot on, so rounding never picks an absent slot
    interest_cum[np.arange(k_max)[None, :] >= n_present[:, None] - 1] = np.inf

    # review counts: 5 + Poisson(lognormal) with the requested mean, long tail
    sigma = knobs["length_lognormal_sigma"]
    extra_mean = mean_reviews - MIN_REVIEWS_PER_USER
    if extra_mean > 0:
        rate = rng.lognormal(np.log(extra_mean) - sigma ** 2 / 2, sigma, n_users)
        extra = rng.poisson(rate)
    else:
        extra = np.zeros(n_users, dtype=np.int64)
    n_reviews = np.minimum(MIN_REVIEWS_PER_USER + extra,
                           min(MAX_REVIEWS_PER_USER, n_items - 1)).astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum(n_reviews)])
    # the days come before the walk: the stickiness of a review depends on its gap
    review_day, gap = _review_days(rng, n_reviews, offsets, knobs)
    review_stickiness = _gap_stickiness(gap, knobs)
    review_stickiness[offsets[:-1]] = 0.0

    # walk positions; users sorted by length so the active ones are a prefix
    by_length = np.argsort(-n_reviews, kind="stable")
    sorted_len = n_reviews[by_length]
    max_len = int(sorted_len[0])
    active_at = np.searchsorted(-sorted_len, -np.arange(max_len), side="left")  # users with len > t
    row_start = offsets[by_length]           # rows are user-major in user-index order
    cum_cat = np.cumsum(cat_prob)
    cum_cat[-1] = np.inf
    s_cum_interest = interest_cum[by_length]
    s_interest_cat = interest_cat[by_length]     # a copy: the drift changes it in place
    s_n_present = n_present[by_length]
    explore, drift = knobs["exploration"], knobs["interest_drift"]
    max_draws = int(knobs["max_item_draws"])
    locality, width = float(knobs["item_locality"]), int(knobs["item_locality_width"])
    # drawn only with locality on, so that off leaves every later draw as generator version 2 made it
    browsing = _Browsing.draw(rng, item_cat, width) if locality > 0 else _Browsing.unused(item_cat, width)

    def draw_item(cat, uniform):
        return np.minimum(np.searchsorted(item_cum, cat + uniform, side="right"), n_items - 1)

    review_cat = np.empty(offsets[-1], dtype=np.int64)
    review_item = np.empty(offsets[-1], dtype=np.int64)
    review_drift = np.zeros(offsets[-1], dtype=bool)
    prev = None
    for t in range(max_len):
        k = int(active_at[t])
        rows = row_start[:k] + t
        if t and drift > 0:
            moved = np.flatnonzero(rng.random(k) < drift)
            slot = (rng.random(moved.size) * s_n_present[moved]).astype(np.int64)
            s_interest_cat[moved, slot] = draw_interest(moved.size)
            review_drift[rows[moved]] = True
        u_kind, u_cat, u_item = rng.random(k), rng.random(k), rng.random(k)
        slot = (u_cat[:, None] >= s_cum_interest[:k]).sum(axis=1)
        cat = s_interest_cat[np.arange(k), slot]
        from_global = np.searchsorted(cum_cat, u_cat, side="right")
        if prev is None:
            cat = np.where(u_kind < explore, from_global, cat)
        else:
            stick = review_stickiness[rows]
            cat = np.where(u_kind < stick, prev[:k],
                           np.where(u_kind < stick + (1 - stick) * explore, from_global, cat))
        item = draw_item(cat, u_item)
        near = np.zeros(k, dtype=bool)      # rows whose item is drawn among the previous item's neighbours
        if t and locality > 0:
            prev_item = review_item[rows - 1]
            near = (cat == prev[:k]) & (rng.random(k) < locality) & (browsing.window(prev_item)[1] > 0)
            item[near] = browsing.draw_neighbour(prev_item[near], u_item[near])
        # an item the user already reviewed is drawn again (from the same distribution), up to
        # max_item_draws tries in all (the last try is kept: a nearly exhausted category repeats)
        redo = np.arange(k) if t else np.arange(0)
        for _ in range(max_draws - 1):
            if not redo.size:
                break
            seen = review_item[row_start[redo, None] + np.arange(t)[None, :]]
            redo = redo[(seen == item[redo, None]).any(axis=1)]
            uniform = rng.random(redo.size)
            item[redo] = draw_item(cat[redo], uniform)
            again = near[redo]
            if again.any():
                item[redo[again]] = browsing.draw_neighbour(prev_item[redo[again]], uniform[again])
        review_cat[rows] = cat
        review_item[rows] = item
        prev = cat

    final_interest_cat = np.empty_like(interest_cat)
    final_interest_cat[by_length] = s_interest_cat
    review_user = np.repeat(np.arange(n_users), n_reviews)
    return _Planted(cat_prob, item_cat, item_prob, final_interest_cat, interest_cat, interest_w, n_reviews,
                    review_user, review_item, review_cat, review_day, review_stickiness, review_drift, offsets,
                    browsing)


def _sorted_unique(values: np.ndarray) -> np.ndarray:
    """np.unique for int64 keys via a sort (numpy's hash-based unique is slow here)."""
    ordered = np.sort(values)
    keep = np.ones(ordered.size, dtype=bool)
    keep[1:] = ordered[1:] != ordered[:-1]
    return ordered[keep]


def _lookup(sorted_keys: np.ndarray, keys: np.ndarray):
    """(found mask, position) of keys in a sorted unique key array."""
    if sorted_keys.size == 0:
        return np.zeros(keys.size, dtype=bool), np.zeros(keys.size, dtype=np.int64)
    at = np.minimum(np.searchsorted(sorted_keys, keys), sorted_keys.size - 1)
    return sorted_keys[at] == keys, at


def _interest_prob(cat_prob: np.ndarray, knobs) -> np.ndarray:
    """pi_c: the tempered popularity interest slots (and drifted ones) draw their category from."""
    interest_pop = cat_prob ** knobs["interest_popularity_power"]
    return interest_pop / interest_pop.sum()


def _interest_weight(planted: _Planted, users: np.ndarray, cats: np.ndarray) -> np.ndarray:
    return (planted.interest_w[users] * (planted.interest_cat[users] == cats[:, None])).sum(axis=1)


def _true_next_prob(planted, knobs, users, prev_cats, stickiness, targets, reviewed_mass, target_seen,
                    prev_items=None, reviewed_near=None, interest_weight=None):
    """P(next review = target | latent state, previous category, reviewed items).

    The latent state is the users' interests at their last review
    (`planted.interest_cat`) and `stickiness`, that of the next review's gap.
    reviewed_mass: the q-mass of the distinct items the user reviewed in the
    target's category; target_seen: whether the user reviewed the target before.
    With R = max_item_draws tries, an unreviewed item has probability
    q (1 - Q^R) / (1 - Q) within its category, a reviewed one q Q^(R-1).
    With item locality on, prev_items (the previous review's item) and reviewed_near (how many
    of its neighbours the user reviewed) give the neighbour draw's share of the same-category term.
    interest_weight: w_u of the targets' categories in place of the latent one (the posterior's estimate).
    """
    cats = planted.item_cat[targets]
    s, e = stickiness, knobs["exploration"]
    draws = int(knobs["max_item_draws"])
    if interest_weight is None:
        interest_weight = _interest_weight(planted, users, cats)
    cat_term = s * (cats == prev_cats) + (1 - s) * (e * planted.cat_prob[cats] + (1 - e) * interest_weight)
    within = planted.item_prob[targets] * _redrawn(np.clip(reviewed_mass, 0.0, 1.0), target_seen, draws)
    locality = float(knobs["item_locality"])
    if locality > 0:
        count = planted.browsing.window(prev_items)[1]
        local = (cats == prev_cats) & (count > 0)
        is_neighbour = local & planted.browsing.is_neighbour(targets, prev_items)
        share = reviewed_near / np.maximum(count, 1)
        near = np.where(is_neighbour, _redrawn(share, target_seen, draws) / np.maximum(count, 1), 0.0)
        within = np.where(local, (1 - locality) * within + locality * near, within)
    return within * cat_term


def _redrawn(mass, seen, draws):
    """P(an item is the one kept) over P(it is drawn once), with up to `draws` tries redrawn while the
    item is one already reviewed, `mass` the probability of drawing one of those: 1 + Q + ... + Q^(R-1)
    for an item not reviewed, Q^(R-1) for a reviewed one."""
    fresh = np.where(mass < 1.0, (1.0 - mass ** draws) / np.maximum(1.0 - mass, 1e-300), float(draws))
    return np.where(seen, mass ** (draws - 1), fresh)


def _evaluate(planted: _Planted, knobs, n_items: int, n_categories: int, seed: int,
              posterior_particles: tuple[int, ...] = ()) -> dict:
    """Oracle, item-popularity, bag-of-history and recent-bag AUCs on the test protocol; with
    posterior_particles, the history posterior's AUC for each particle count (`synthetic_posterior`)."""
    rng = np.random.default_rng([seed, 1])
    users = np.flatnonzero(planted.n_reviews >= 2)
    last = planted.offsets[users + 1] - 1
    pos = planted.review_item[last]
    prev_cat = planted.review_cat[last - 1]
    last_stickiness = planted.review_stickiness[last]
    is_last = np.zeros(planted.review_user.size, dtype=bool)
    is_last[last] = True
    hist_user = planted.review_user[~is_last]
    hist_item = planted.review_item[~is_last]
    hist_cat = planted.review_cat[~is_last]
    # 0 = the most recent history review of its user
    hist_from_end = (planted.offsets[hist_user + 1] - 2) - np.flatnonzero(~is_last)

    # negatives: uniform over the items the user never reviewed (history or target)
    reviewed = _sorted_unique(planted.review_user * n_items + planted.review_item)
    n_distinct = np.bincount(reviewed // n_items, minlength=planted.n_reviews.size)
    neg = rng.integers(0, n_items, users.size)
    todo = np.arange(users.size)
    while todo.size:
        todo = todo[_lookup(reviewed, users[todo] * n_items + neg[todo])[0]]
        neg[todo] = rng.integers(0, n_items, todo.size)

    # oracle: likelihood ratio P(next = i) / P(negative = i); the latter is
    # 1 / #unreviewed for an unreviewed item and 0 for a reviewed one
    hist_pairs = _sorted_unique(hist_user * n_items + hist_item)
    pair_item = hist_pairs % n_items
    pair_key = (hist_pairs // n_items) * n_categories + planted.item_cat[pair_item]
    mass_keys = _sorted_unique(pair_key)         # (user, category) with reviewed items
    mass = np.bincount(np.searchsorted(mass_keys, pair_key), planted.item_prob[pair_item],
                       minlength=mass_keys.size)

    def reviewed_mass(targets):
        found, at = _lookup(mass_keys, users * n_categories + planted.item_cat[targets])
        return np.where(found, mass[at], 0.0)

    pos_seen = _lookup(hist_pairs, users * n_items + pos)[0]
    no_seen = np.zeros(users.size, dtype=bool)
    unreviewed = (n_items - n_distinct[users]).astype(np.float64)
    prev_item = planted.review_item[last - 1]
    reviewed_near = (planted.browsing.reviewed_neighbours(users, prev_item,
                                                          lambda u, i: _lookup(hist_pairs, u * n_items + i)[0])
                     if knobs["item_locality"] > 0 else None)  # only the neighbour draw needs it

    def next_probs(interest_weights=(None, None)):
        """P(next = positive), P(next = negative) of every test user, the latent interests or the given ones."""
        return tuple(_true_next_prob(planted, knobs, users, prev_cat, last_stickiness, targets,
                                     reviewed_mass(targets), seen, prev_item, reviewed_near, weight)
                     for targets, seen, weight in ((pos, pos_seen, interest_weights[0]),
                                                   (neg, no_seen, interest_weights[1])))

    def ratio_auc(prob_pos, prob_neg):
        """AUC of the likelihood ratio P(next = i) / P(negative = i) (+inf for a positive already reviewed)."""
        return rank_auc(np.where(pos_seen, np.inf, prob_pos * unreviewed), prob_neg * unreviewed)

    prob_pos, prob_neg = next_probs()
    posterior = {}
    for particles in posterior_particles:
        weights = interest_posterior(planted.offsets[users], planted.n_reviews[users] - 1, planted.review_cat,
                                     planted.review_stickiness, planted.item_cat[np.stack([pos, neg], axis=1)],
                                     planted.cat_prob, _interest_prob(planted.cat_prob, knobs), knobs,
                                     int(particles), seed)
        posterior[str(particles)] = ratio_auc(*next_probs((weights[:, 0], weights[:, 1])))

    # item popularity: review counts without each user's last review
    item_count = np.bincount(hist_item, minlength=n_items).astype(np.float64)

    # bag of history: smoothed share of the target's category in the history times
    # the item's (empirical, smoothed) popularity within its category
    item_cat = planted.item_cat
    cat_count = np.bincount(item_cat, item_count, minlength=n_categories)
    cat_items = np.bincount(item_cat, minlength=n_categories)
    within = (item_count + 1.0) / (cat_count[item_cat] + cat_items[item_cat])
    cat_share = (cat_count + 1.0) / (cat_count.sum() + n_categories)
    user_cat = hist_user * n_categories + hist_cat
    user_cat_keys = _sorted_unique(user_cat)
    user_cat_row = np.searchsorted(user_cat_keys, user_cat)
    smoothing = 1.0

    def bag_auc(counted):
        """AUC of the bag estimator counting each history review with weight `counted` (1 or 0)."""
        user_cat_count = np.bincount(user_cat_row, counted, minlength=user_cat_keys.size)
        hist_len = np.bincount(hist_user, counted, minlength=planted.n_reviews.size)[users]

        def score(targets):
            cats = item_cat[targets]
            found, at = _lookup(user_cat_keys, users * n_categories + cats)
            count = np.where(found, user_cat_count[at], 0.0)
            return (count + smoothing * cat_share[cats]) / (hist_len + smoothing) * within[targets]
        return rank_auc(score(pos), score(neg))

    return {
        "oracle_test_auc": ratio_auc(prob_pos, prob_neg),
        "oracle_prob_only_test_auc": rank_auc(prob_pos, prob_neg),
        "popularity_test_auc": rank_auc(item_count[pos], item_count[neg]),
        "history_bag_test_auc": bag_auc(np.ones(hist_user.size)),
        "recent_bag_test_auc": bag_auc((hist_from_end < RECENT_BAG_LENGTH).astype(np.float64)),
        "recent_bag_length": RECENT_BAG_LENGTH,
        "test_positive_in_history_rate": float(pos_seen.mean()) if users.size else 0.0,
        "n_test_users": int(users.size),
        **({"posterior_test_auc": posterior} if posterior else {}),
    }


# --------------------------------------------------------------------------- frames

def _frames(rng, planted: _Planted, n_items: int, n_categories: int, knobs):
    n_users = planted.n_reviews.size
    n_reviews = planted.review_user.size
    reviewer_ids = _unique_codes(rng, n_users, b"A", 13)
    asins = _unique_codes(rng, n_items, b"B00", 7)     # random: asin order is not popularity

    user = planted.review_user
    day = planted.review_day
    unix_time = day * _DAY

    # reviewTime as in the Amazon dump: month padded, day not ('09 7, 2012')
    dates = pd.to_datetime(np.arange(_FIRST_DAY, _LAST_DAY + 1) * _DAY, unit="s")
    day_text = np.array([f"{m:02d} {d}, {y}" for m, d, y in zip(dates.month, dates.day, dates.year)])
    day_index = day - _FIRST_DAY
    overall = (1 + rng.choice(5, size=n_reviews, p=knobs["rating_probs"])).astype(np.float64)

    # rows grouped by asin like the Amazon dump (stable: users, then time, inside an asin)
    asin_rank = np.empty(n_items, dtype=np.int64)
    asin_rank[np.argsort(asins)] = np.arange(n_items)
    rows = np.argsort(asin_rank[planted.review_item], kind="stable")
    reviews = pd.DataFrame({
        "reviewerID": text_series(reviewer_ids, user[rows]),
        "asin": text_series(asins, planted.review_item[rows]),
        "unixReviewTime": unix_time[rows].astype(np.int64),
        "overall": overall[rows],
        "reviewTime": text_series(day_text, day_index[rows]),
    })

    leaves = _leaf_names(rng, n_categories)
    parents = np.array(_PARENTS, dtype=object)[rng.integers(0, len(_PARENTS), n_categories)]
    meta_order = rng.permutation(n_items)
    item_cat = planted.item_cat[meta_order]
    item_leaf, item_parent = leaves[item_cat], parents[item_cat]
    categories = [[["Electronics", parent, leaf]] for parent, leaf in zip(item_parent, item_leaf)]
    model_no = rng.integers(100, 10000, n_items)
    titles = np.array([f"{leaf} Model {k}" for leaf, k in zip(item_leaf, model_no)], dtype=object)
    meta = pd.DataFrame({
        "asin": text_series(asins, meta_order),
        "title": text_series(titles.astype(str)),
        "categories": pd.Series(categories, dtype=object),
    })
    return reviews, meta


# --------------------------------------------------------------------------- API

def generate(n_users: int, n_items: int, n_categories: int, seed: int,
             mean_reviews_per_user: float = 8.78, knobs: dict | None = None,
             posterior_particles: tuple[int, ...] = ()) -> SyntheticData:
    """Generate raw frames and the oracle figures. Same arguments -> identical output.

    posterior_particles: also the AUC of the best use of the history (`synthetic_posterior`), under
    `posterior_test_auc`, for each particle count (an analysis: seconds to minutes; no stage reads it).
    """
    n_users, n_items, n_categories, seed, mean = _check_args(
        n_users, n_items, n_categories, seed, mean_reviews_per_user)
    knobs = {**KNOBS, **(knobs or {})}
    knobs.update(check_order_knobs(knobs))
    rng = np.random.default_rng([seed, 0])
    planted = _plant(rng, n_users, n_items, n_categories, mean, knobs)
    reviews, meta = _frames(rng, planted, n_items, n_categories, knobs)
    oracle = {
        **_evaluate(planted, knobs, n_items, n_categories, seed, posterior_particles),
        "n_users": n_users, "n_items": n_items, "n_categories": n_categories,
        "n_reviews": int(len(reviews)), "seed": seed,
        "mean_reviews_per_user": mean,
        "generator_version": GENERATOR_VERSION,
        "knobs": knobs,
    }
    return SyntheticData(reviews=reviews, meta=meta, oracle=oracle)


def write_raw(raw_dir, n_users: int, n_items: int, n_categories: int, seed: int,
              knobs: dict | None = None) -> dict:
    """Write raw_dir/reviews.pkl, meta.pkl and oracle.json atomically; return the oracle.

    knobs: changes to `KNOBS` (the [raw] order knobs), recorded in oracle.json.
    """
    data = generate(n_users, n_items, n_categories, seed, knobs=knobs)
    raw_dir = Path(raw_dir)
    raw_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(raw_dir / "reviews.pkl") as tmp:
        data.reviews.to_pickle(tmp, protocol=RAW_PICKLE_PROTOCOL)
    with atomic_path(raw_dir / "meta.pkl") as tmp:
        data.meta.to_pickle(tmp, protocol=RAW_PICKLE_PROTOCOL)
    write_json_atomic(raw_dir / "oracle.json", data.oracle)
    return data.oracle
