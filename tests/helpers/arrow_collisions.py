"""16-byte ASCII ids that all share one Arrow string hash (pyarrow's util/hashing.h).

For 9..16 bytes Arrow's ComputeStringHash<0> is
    n ^ bswap(M0 * last8) ^ bswap(M1 * first8)      (little-endian 64-bit loads, mod 2^64)
so two 16-byte ids collide when M0 * x ^ M1 * y is the same (x = bytes 8..15, y = bytes 0..7).
Byte j of x = M0^-1 * (T ^ M1 * y) depends only on bytes 0..j of y, so the ids are built
one byte at a time: every y byte whose matching x byte is also alphanumeric is kept.
"""
from __future__ import annotations

import numpy as np

ARROW_MULTIPLIERS = (11400714785074694791, 14029467366897019727)
ALPHANUMERIC = np.frombuffer(b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz", np.uint8)


def _inverse_mod_2_64(odd: int) -> int:
    inverse = odd
    for _ in range(6):  # Newton's iteration doubles the correct low bits each step
        inverse = inverse * (2 - odd * inverse) % 2**64
    return inverse


def arrow_string_hash_16(ids: list[bytes]) -> np.ndarray:
    """Arrow's hash of 16-byte ids, as hashing.h computes it (to check the construction)."""
    words = np.frombuffer(b"".join(ids), dtype="<u8").reshape(-1, 2)
    m0, m1 = (np.uint64(m) for m in ARROW_MULTIPLIERS)
    mixed = (m0 * words[:, 1]) ^ (m1 * words[:, 0])
    return mixed.byteswap() ^ np.uint64(16)


def colliding_ids(count: int, target: int = 0x5EED, cap: int = 20_000) -> list[str]:
    """`count` distinct 16-char alphanumeric ids with one Arrow string hash."""
    m0_inverse = np.uint64(_inverse_mod_2_64(ARROW_MULTIPLIERS[0]))
    m1, target_word = np.uint64(ARROW_MULTIPLIERS[1]), np.uint64(target)
    prefixes = np.zeros(1, dtype=np.uint64)
    for byte in range(8):
        keep = cap if byte < 7 else count
        y = (prefixes[:, None] | (ALPHANUMERIC.astype(np.uint64) << np.uint64(8 * byte))[None, :]).ravel()
        x = m0_inverse * (target_word ^ (m1 * y))
        x_byte = ((x >> np.uint64(8 * byte)) & np.uint64(0xFF)).astype(np.uint8)
        prefixes = y[np.isin(x_byte, ALPHANUMERIC)][:keep]
    if len(prefixes) < count:
        raise ValueError(f"only {len(prefixes)} colliding ids at cap {cap}")
    x = m0_inverse * (target_word ^ (m1 * prefixes))
    raw = np.stack([prefixes, x], axis=1).astype("<u8").tobytes()
    return [raw[i:i + 16].decode("ascii") for i in range(0, len(raw), 16)]
