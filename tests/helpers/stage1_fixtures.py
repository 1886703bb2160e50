"""Hand-made raw data with every remapped ID and sample written out (used by stage-1 tests)."""
import pandas as pd

# Four reviewers; one review has an asin without meta (dropped); u_a has a tie at ts 20
# (input order kept); u_b reviews i2 twice (both kept); u_c has a single review (no samples).
REVIEWS = pd.DataFrame({
    "reviewerID": ["u_b", "u_a", "u_b", "u_a", "u_a", "u_c", "u_b", "u_a", "u_d", "u_d", "u_d", "u_d", "u_d"],
    "asin":       ["i2",  "i1",  "i1",  "zz",  "i3",  "i3",  "i2",  "i2",  "i4",  "i5",  "i4",  "i5",  "i1"],
    "unixReviewTime": [30, 10, 10, 5, 20, 7, 20, 20, 1, 2, 3, 4, 5],
})
META = pd.DataFrame({
    "asin": ["i3", "i1", "i2", "i9", "i5", "i4"],
    "category": ["Cam", "Audio", "Cam", "Audio", "TV", "TV"],
})

ITEMS = {"i1": (1, 1), "i2": (2, 2), "i3": (3, 2), "i4": (4, 3), "i5": (5, 3)}  # asin -> (item_id, cate_id)
CATEGORIES = ["Audio", "Cam", "TV"]
USERS = ["u_a", "u_b", "u_c", "u_d"]
# (user_id, item_id) in (user_id, ts) order, stable on ties
REMAPPED_REVIEWS = [(1, 1), (1, 3), (1, 2), (2, 1), (2, 2), (2, 2), (3, 3), (4, 4), (4, 5), (4, 4), (4, 5), (4, 1)]
REMAPPED_TS = [10, 20, 20, 10, 20, 30, 7, 1, 2, 3, 4, 5]

# Positives with maxlen = 2: (user_id, history, target_item) per split.
POSITIVES_MAXLEN_2 = {
    "train": {(4, (4,), 5), (4, (4, 5), 4)},
    "val": {(1, (1,), 3), (2, (1,), 2), (4, (5, 4), 5)},
    "test": {(1, (1, 3), 2), (2, (1, 2), 2), (4, (4, 5), 1)},
}
# hist_gap of those samples: seconds from each history review to the target's review.
GAPS_MAXLEN_2 = {
    (4, (4,), 5): (1,), (4, (4, 5), 4): (2, 1),
    (1, (1,), 3): (10,), (2, (1,), 2): (10,), (4, (5, 4), 5): (2, 1),
    (1, (1, 3), 2): (10, 0), (2, (1, 2), 2): (20, 10), (4, (4, 5), 1): (2, 1),
}
REVIEWED = {1: {1, 2, 3}, 2: {1, 2}, 3: {3}, 4: {1, 4, 5}}
