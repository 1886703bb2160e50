"""Samples of the reference protocol built from the hand-made users of stage1_fixtures, and of one user."""
import numpy as np

from pipeline.remap import remap_ids
from pipeline.sequences import build_shard_samples
from tests.helpers import stage1_fixtures as fx


def remapped_arrays():
    result = remap_ids(fx.REVIEWS, fx.META)
    columns = {name: result.reviews.column(name).to_numpy() for name in ("user_id", "item_id", "cate_id", "ts")}
    item_cate = np.concatenate([[0], result.items.column("cate_id").to_numpy()]).astype(np.int32)
    return columns, item_cate


def build(maxlen=2, seed=3, num_shards=1, shard=0):
    columns, item_cate = remapped_arrays()
    rows = columns["user_id"] % num_shards == shard  # as stage 1 shards users
    return build_shard_samples(columns["user_id"][rows], columns["item_id"][rows], columns["cate_id"][rows],
                               columns["ts"][rows], item_cate, n_items=5, maxlen=maxlen, seed=seed, shard=shard)


def one_user_samples(ts, maxlen, item_id=(1, 2, 3, 4)):
    """Samples of user 1 who reviewed `item_id` at times `ts` (categories = items), 10 items in all."""
    n = len(ts)
    item_cate = np.arange(11, dtype=np.int32)
    return build_shard_samples(np.ones(n, np.int32), np.asarray(item_id, np.int32), np.asarray(item_id, np.int32),
                               np.asarray(ts, np.int64), item_cate, n_items=10, maxlen=maxlen, seed=1)
