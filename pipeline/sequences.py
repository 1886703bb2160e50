"""Samples of the reference DIN protocol, built for one shard at a time.

For a user with reviews p_1..p_n in time order, each i = 2..n gives a positive
(history p_1..p_{i-1}, last `maxlen` kept, target p_i, label 1) and a negative
(same history, a target the user never reviewed, label 0). i = n goes to test,
i = n-1 to val, the rest to train. Users go to shard user_id % num_shards.
Each history entry also carries `hist_gap`: the seconds from its review to the
sample's event (the review p_i; its negative shares that time).

Everything is vectorised over the shard's reviews. Negatives come from a
counter-based hash of (seed, user_id, position, attempt) rather than a stateful
RNG stream, so a user's samples are the same whatever the number of shards and
whichever worker builds them; only the row shuffle depends on the shard.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from din_common.errors import InputError
from din_common.feature_spec import SPLITS
from pipeline.tfrecord_io import samples_table

_MAX_NEGATIVE_ROUNDS = 1000
_MAX_GAP = np.int64(2**31 - 1)  # hist_gap is int32 seconds (~68 years)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _hashed_items(seed: int, user: np.ndarray, position: np.ndarray, attempt: int, n_items: int) -> np.ndarray:
    key = _splitmix64(np.uint64(seed & 0xFFFFFFFF) * np.uint64(0x100000001B3) + user.astype(np.uint64))
    key = _splitmix64(key ^ (position.astype(np.uint64) << np.uint64(20)) ^ np.uint64(attempt))
    return (key % np.uint64(n_items)).astype(np.int32) + 1


def draw_negatives(user: np.ndarray, position: np.ndarray, reviewed_keys: np.ndarray,
                   n_items: int, seed: int) -> np.ndarray:
    """For each (user, position), an item in 1..n_items the user never reviewed.

    `reviewed_keys` is the sorted array of user * (n_items + 1) + item over all
    the users' reviews. Rejected draws are redrawn with the next attempt number.
    """
    negatives = np.zeros(len(user), dtype=np.int32)
    pending = np.arange(len(user))
    stride = np.int64(n_items + 1)
    for attempt in range(_MAX_NEGATIVE_ROUNDS):
        candidates = _hashed_items(seed, user[pending], position[pending], attempt, n_items)
        keys = user[pending].astype(np.int64) * stride + candidates
        found = np.searchsorted(reviewed_keys, keys)
        found = np.minimum(found, len(reviewed_keys) - 1)
        collides = reviewed_keys[found] == keys
        negatives[pending[~collides]] = candidates[~collides]
        pending = pending[collides]
        if len(pending) == 0:
            return negatives
    raise InputError(f"user_id {int(user[pending[0]])} has reviewed (nearly) every one of the {n_items} items: "
                     "no item is left to draw a negative sample from")


def _history_index(sample_rows: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Flat review indices of every sample's history: rows r-L .. r-1 for each sample."""
    # Entry k of sample s is row (sample_rows[s] - lengths[s]) + (k - first entry of s); the
    # per-sample part folds into one offset, sample_rows[s] - cumsum(lengths)[s], so one repeat.
    total = int(lengths.sum())
    return np.arange(total) + np.repeat(sample_rows - np.cumsum(lengths), lengths)


def history_gaps(ts: np.ndarray, event_rows: np.ndarray, lengths: np.ndarray, history: np.ndarray) -> np.ndarray:
    """Seconds from each history review to its sample's event, clipped to int32 [0, 2**31 - 1].

    `history` holds the review indices of the events' histories, `lengths[k]` of them for
    `event_rows[k]`, as `_history_index` lays them out. Reviews sorted by (user_id, ts)
    give gaps >= 0; a hand-made table with decreasing times gets 0, not a negative gap.
    Any two int64 times are allowed: INT64_MAX - INT64_MIN does not fit int64.
    """
    ts = np.asarray(ts, dtype=np.int64)
    event_ts = np.repeat(ts[event_rows], lengths)
    history_ts = ts[history]
    # Subtracting the bit patterns as uint64 is exact modulo 2**64, so exact for every
    # gap in [0, 2**64), which holds every event at or after its history entry.
    gaps = np.minimum(event_ts.view(np.uint64) - history_ts.view(np.uint64), np.uint64(_MAX_GAP))
    gaps[event_ts < history_ts] = 0
    return gaps.astype(np.int32)


def build_shard_samples(user_id: np.ndarray, item_id: np.ndarray, cate_id: np.ndarray, ts: np.ndarray,
                        item_cate: np.ndarray, *, n_items: int, maxlen: int, seed: int,
                        shard: int = 0) -> dict[str, pa.Table]:
    """Samples of one shard's reviews, which must be sorted by (user_id, ts) and hold whole users.

    `ts` is each review's time in int64 seconds. `item_cate[item_id]` is the category
    of an item (index 0 unused).
    Returns one table per split, rows shuffled with a seed derived from (seed, shard, split).
    """
    n = len(user_id)
    new_user = np.ones(n, dtype=bool)
    new_user[1:] = user_id[1:] != user_id[:-1]
    user_start = np.flatnonzero(new_user)
    user_count = np.diff(np.append(user_start, n))
    row_user_start = np.repeat(user_start, user_count)
    position = np.arange(n) - row_user_start            # 0-based index of the review within its user
    remaining = np.repeat(user_count, user_count) - position  # 1 for the last review

    sample_rows = np.flatnonzero(position >= 1)
    split_of_row = np.where(remaining == 1, 2, np.where(remaining == 2, 1, 0))[sample_rows]

    reviewed_keys = np.sort(user_id.astype(np.int64) * (n_items + 1) + item_id)  # duplicates are harmless
    negatives = draw_negatives(user_id[sample_rows], position[sample_rows], reviewed_keys, n_items, seed)

    tables = {}
    for split_index, split in enumerate(SPLITS):
        rows = sample_rows[split_of_row == split_index]
        negs = negatives[split_of_row == split_index]
        lengths = np.minimum(position[rows], maxlen)
        history = _history_index(rows, lengths)
        gaps = history_gaps(ts, rows, lengths, history)
        # Positive and negative of one event share a history; emit both then shuffle.
        both = np.concatenate([np.arange(len(rows)), np.arange(len(rows))])
        targets = np.concatenate([item_id[rows], negs])
        labels = np.concatenate([np.ones(len(rows), np.int32), np.zeros(len(rows), np.int32)])
        order = np.random.default_rng([seed, shard, split_index]).permutation(len(both))
        event = both[order]
        hist_len = lengths[event].astype(np.int32)
        gather = _history_index(np.cumsum(lengths)[event], hist_len)  # positions inside `history`
        tables[split] = samples_table({
            "user_id": user_id[rows][event],
            "hist_len": hist_len,
            "hist_item": item_id[history][gather],
            "hist_cate": cate_id[history][gather],
            "hist_gap": gaps[gather],
            "target_item": targets[order],
            "target_cate": item_cate[targets[order]],
            "label": labels[order],
        })
    return tables
