"""Dense codes for untrusted string ids, in byte order, through no hash a file can steer.

Arrow's string hash (and so `dictionary_encode`, `unique`, `is_in`, `index_in`) is
unkeyed: ids crafted to share one hash make its hash table quadratic. Here each id is
first reduced to a 64-bit value with a multilinear hash whose keys are drawn from
`os.urandom` on every call (`keyed_hash`): for two ids of one length that differ in
some byte the chance of equal values is at most 2^-56 whatever the ids are (a byte
difference is below 2^8), because the file was written before the keys existed. Only those values are hashed by Arrow, so
the input cannot choose what collides. Equal values are then checked to be equal
ids byte for byte; if two different ids ever share a value, the column is encoded
by Arrow's sort instead (O(n log n) compares whatever the values). Either way the
result depends only on the ids: code i is the i-th smallest distinct id in byte
order (which for UTF-8 is code point order, Python's `sorted` on str).
"""
from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# Bytes hashed one position at a time across all ids; longer ids hash their tails
# in one flat pass, so a single huge id costs its size, not a Python step per byte.
PREFIX_BYTES = 24


def random_keys(count: int) -> np.ndarray:
    """`count` uniformly random 64-bit keys from the OS (new on every call)."""
    return np.frombuffer(os.urandom(8 * count), dtype=np.uint64).copy()


def _offsets_and_data(values: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(start offset per id plus the end, byte buffer) of a large_string array, zero-copy."""
    _, offsets_buffer, data_buffer = values.buffers()
    offsets = np.frombuffer(offsets_buffer, dtype=np.int64)[values.offset:values.offset + len(values) + 1]
    data = np.frombuffer(data_buffer, dtype=np.uint8) if data_buffer is not None else np.zeros(0, np.uint8)
    return offsets, data


def keyed_hash(values: pa.Array, keys_for=random_keys) -> np.ndarray:
    """sum_j key[j + 1] * byte[j] + key[0] * length (mod 2^64) for each id of a large_string array."""
    offsets, data = _offsets_and_data(values)
    starts, lengths = offsets[:-1], np.diff(offsets)
    longest = int(lengths.max()) if len(lengths) else 0
    keys = keys_for(longest + 1)
    hashes = _prefix_hashes(data, offsets, lengths, keys[1:min(longest, PREFIX_BYTES) + 1])
    hashes += lengths.astype(np.uint64) * keys[0]
    long_rows = np.flatnonzero(lengths > PREFIX_BYTES)
    if len(long_rows):
        tail_starts = starts[long_rows] + PREFIX_BYTES
        tail_lengths = lengths[long_rows] - PREFIX_BYTES
        tail_begin = np.cumsum(tail_lengths) - tail_lengths
        byte_row = np.repeat(np.arange(len(long_rows)), tail_lengths)
        position = np.arange(len(byte_row)) - tail_begin[byte_row]
        terms = keys[PREFIX_BYTES + 1 + position] * data[tail_starts[byte_row] + position].astype(np.uint64)
        hashes[long_rows] += np.add.reduceat(terms, tail_begin)
    return hashes


# Rows of the byte matrix per matrix product: its uint64 copy (ROWS x PREFIX_BYTES x 8 bytes) stays in cache.
_HASH_ROWS = 1 << 15


def _prefix_hashes(data: np.ndarray, offsets: np.ndarray, lengths: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """sum_j keys[j] * byte[j] over each id's first len(keys) bytes (bytes past its end count as 0), mod 2^64.

    One matrix product per block of ids (numpy's integer matmul wraps mod 2^64, as the sum does)
    instead of a pass over all ids per byte position. Ids of one length are rows of the data
    buffer as it is; otherwise each id's row is copied from a sliding window and cut at its length.
    """
    count, width = len(lengths), len(keys)
    hashes = np.zeros(count, dtype=np.uint64)
    if count == 0 or width == 0:
        return hashes
    same_length = bool((lengths == lengths[0]).all()) and int(lengths[0]) == width
    if same_length:
        rows = data[offsets[0]:offsets[0] + count * width].reshape(count, width)
    else:
        # Padded so that a window starting at any id's first byte exists; the padding is cut off below.
        padded = np.concatenate([data[offsets[0]:offsets[-1]], np.zeros(width, dtype=np.uint8)])
        # as_strided, not sliding_window_view: the Ascend stack's numpy 1.19 predates the latter (1.20)
        step = padded.strides[0]
        windows = np.lib.stride_tricks.as_strided(padded, shape=(len(padded) - width + 1, width),
                                                  strides=(step, step), writeable=False)
        starts = offsets[:-1] - offsets[0]
        beyond = np.arange(width)
    for low in range(0, count, _HASH_ROWS):
        high = min(low + _HASH_ROWS, count)
        if same_length:
            block = rows[low:high].astype(np.uint64)
        else:
            block = windows[starts[low:high]].astype(np.uint64)
            block[lengths[low:high, None] <= beyond] = 0
        np.matmul(block, keys, out=hashes[low:high])
    return hashes


def _rank(order: np.ndarray) -> np.ndarray:
    """Inverse permutation: rank[order[i]] = i."""
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    return rank


def _sort_encode(values: pa.Array) -> tuple[np.ndarray, pa.Array]:
    """encode_sorted by one sort of all rows (no hashing at all)."""
    order = pc.sort_indices(values).to_numpy()
    in_order = values.take(pa.array(order))
    starts_run = np.ones(len(values), dtype=bool)
    starts_run[1:] = pc.not_equal(in_order[1:], in_order[:-1]).to_numpy(zero_copy_only=False)
    codes = np.empty(len(values), dtype=np.int64)
    codes[order] = np.cumsum(starts_run) - 1
    return codes, in_order.filter(pa.array(starts_run))


def encode_sorted(values: pa.Array, keys_for=random_keys) -> tuple[np.ndarray, pa.Array]:
    """(code per row, distinct values in byte order) of a large_string array without nulls.

    `values.take(codes)` equals `values`; code i is the i-th smallest distinct value.
    """
    if len(values) == 0:
        return np.zeros(0, dtype=np.int64), values
    encoded = pc.dictionary_encode(pa.array(keyed_hash(values, keys_for)))
    codes = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    some_row_of_code = np.empty(len(encoded.dictionary), dtype=np.int64)
    some_row_of_code[codes] = np.arange(len(codes))
    distinct = values.take(pa.array(some_row_of_code))
    if not pc.all(pc.equal(values, distinct.take(pa.array(codes)))).as_py():
        return _sort_encode(values)
    order = pc.sort_indices(distinct).to_numpy()
    return _rank(order)[codes], distinct.take(pa.array(order))
