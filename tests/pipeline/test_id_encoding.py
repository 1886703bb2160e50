"""pipeline.id_encoding: exact codes on small cases, the sort fallback, and ids crafted to collide in Arrow."""
import time

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from pipeline.id_encoding import PREFIX_BYTES, encode_sorted, keyed_hash
from pipeline.remap import remap_ids
from tests.helpers.arrow_collisions import arrow_string_hash_16, colliding_ids

LONG = "x" * (PREFIX_BYTES + 5)
IDS = ["b", "a", "b", "", "ab", "a\x00", "ü", "中文", LONG + "2", LONG + "1", LONG + "1", "a"]


def large(values):
    return pa.array(values, type=pa.large_string())


def expected(values):
    distinct = sorted(set(values), key=lambda text: text.encode("utf-8"))
    return [distinct.index(value) for value in values], distinct


def zero_keys(count):
    return np.zeros(count, dtype=np.uint64)


@pytest.mark.parametrize("keys_for", [None, zero_keys], ids=["keyed", "all-collide-fallback"])
def test_codes_are_ranks_in_byte_order(keys_for):
    kwargs = {} if keys_for is None else {"keys_for": keys_for}
    codes, distinct = encode_sorted(large(IDS), **kwargs)
    want_codes, want_distinct = expected(IDS)
    assert codes.tolist() == want_codes
    assert distinct.to_pylist() == want_distinct


def test_slices_and_empty_arrays():
    sliced = large(["zz"] + IDS)[1:]
    codes, distinct = encode_sorted(sliced)
    assert (codes.tolist(), distinct.to_pylist()) == expected(IDS)
    codes, distinct = encode_sorted(large([]))
    assert len(codes) == 0 and len(distinct) == 0


def test_keyed_hash_depends_on_every_byte_and_the_key():
    values = large(["ab", "ba", "ab", "a", LONG + "1", LONG + "2"])
    hashes = keyed_hash(values)
    assert hashes[0] == hashes[2]
    assert len(set(hashes.tolist())) == 5
    assert not np.array_equal(keyed_hash(values), hashes)   # a new key on every call


@pytest.mark.parametrize("values", [
    ["abcd", "abce", "dcba"],                       # one length: rows of the data buffer as they are
    ["", "a", "ab", "ü", "中文", LONG, LONG + "1"],  # lengths vary, some past PREFIX_BYTES
    ["x" * (PREFIX_BYTES + 3)] * 3,                  # one length, longer than the prefix
], ids=["one-length", "mixed-lengths", "one-long-length"])
def test_keyed_hash_is_the_multilinear_formula(values):
    keys = np.arange(3, 3 + 64, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)

    def formula(text):
        data = text.encode()
        total = int(keys[0]) * len(data) + sum(int(keys[j + 1]) * byte for j, byte in enumerate(data))
        return total % 2**64

    array = large(["zz"] + values)[1:]  # a slice: offsets not starting at 0
    hashes = keyed_hash(array, keys_for=lambda count: keys[:count])
    assert hashes.tolist() == [formula(text) for text in values]


def test_ids_built_to_collide_do_share_one_arrow_hash():
    ids = colliding_ids(2_000)
    assert len(set(ids)) == 2_000
    assert len(set(arrow_string_hash_16([text.encode() for text in ids]).tolist())) == 1
    # The installed Arrow really computes that hash: its unique() goes quadratic on them.
    ordinary = [f"{n:016d}" for n in range(2_000)]

    def unique_seconds(values):
        array = pa.array(values)
        start = time.perf_counter()
        pc.unique(array)
        return time.perf_counter() - start

    assert unique_seconds(ids) > 20 * min(unique_seconds(ordinary) for _ in range(3))


def test_remap_of_100k_colliding_ids_is_fast_and_equals_pandas():
    ids = colliding_ids(100_000)
    users, asins = ids, ids[::-1]
    reviews = pd.DataFrame({"reviewerID": users + users, "asin": asins + asins[1:] + asins[:1],
                            "unixReviewTime": np.arange(200_000, dtype=np.int64)})
    meta = pd.DataFrame({"asin": asins, "category": [f"c{n % 3}" for n in range(100_000)]})

    start = time.perf_counter()
    result = remap_ids(reviews, meta)
    assert time.perf_counter() - start < 15

    # pandas' object path (Python's keyed str hash): its Arrow-backed strings would hash them with Arrow.
    user_codes, user_keys = pd.factorize(np.array(users + users, dtype=object), sort=True)
    item_codes, item_keys = pd.factorize(reviews["asin"].to_numpy(dtype=object), sort=True)
    assert result.users.column("reviewerID").to_pylist() == list(user_keys)
    assert result.items.column("asin").to_pylist() == list(item_keys)
    order = np.lexsort((reviews["unixReviewTime"].to_numpy(), user_codes))
    assert result.reviews.column("user_id").to_numpy().tolist() == (user_codes[order] + 1).tolist()
    assert result.reviews.column("item_id").to_numpy().tolist() == (item_codes[order] + 1).tolist()
    category_of_asin = dict(zip(meta["asin"], meta["category"]))
    categories = sorted(set(meta["category"]))
    assert result.items.column("cate_id").to_pylist() == [
        categories.index(category_of_asin[asin]) + 1 for asin in item_keys]
