"""TFRecord files of pre-batched samples, written and read without TensorFlow.

Stage 1 must not pay TensorFlow's multi-second import, and the format is small:
a TFRecord file is a sequence of frames `uint64 length | uint32 masked crc32c of
length | data | uint32 masked crc32c of data`, and each `data` here is a
`tf.train.Example` whose features are fixed by data/README.md. This module owns
that byte layout: encoding a pre-batch into an Example, framing, and the inverse
(used by tests, `pipeline.inspect` and the round-trip check).
"""
from __future__ import annotations

import struct
from pathlib import Path
from typing import Iterator

import google_crc32c
import numpy as np
import pyarrow as pa

from din_common.errors import InputError
from din_common.feature_spec import HISTORY_FIELDS, PER_SAMPLE_FIELDS

# The columns of a sample table; with the Example features (din_common.feature_spec) the sample layout
# that feature_spec.json's `format_version` names.
SAMPLE_COLUMNS = ("user_id", "hist_item", "hist_cate", "hist_gap", "target_item", "target_cate", "label")

_LENGTH = struct.Struct("<Q")
_CRC = struct.Struct("<I")
_MASK_DELTA = 0xA282EAD8


def masked_crc32c(data: bytes) -> int:
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def frame_record(data: bytes) -> bytes:
    length = _LENGTH.pack(len(data))
    return b"".join((length, _CRC.pack(masked_crc32c(length)), data, _CRC.pack(masked_crc32c(data))))


# --- protobuf wire format, just the parts tf.train.Example needs -------------

def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _length_delimited(field_number: int, payload: bytes) -> bytes:
    return _varint((field_number << 3) | 2) + _varint(len(payload)) + payload


def _bytes_feature(payload: bytes) -> bytes:
    return _length_delimited(1, _length_delimited(1, payload))  # Feature.bytes_list.value


def _int64_feature(values: list[int]) -> bytes:
    packed = b"".join(_varint(v) for v in values)
    return _length_delimited(3, _length_delimited(1, packed))  # Feature.int64_list.value (packed)


def encode_example(features: dict[str, bytes]) -> bytes:
    """Encode already-serialised `Feature` messages as a `tf.train.Example`."""
    entries = b"".join(
        _length_delimited(1, _length_delimited(1, name.encode()) + _length_delimited(2, feature))
        for name, feature in features.items()
    )
    return _length_delimited(1, entries)


def encode_prebatch(columns: dict[str, np.ndarray]) -> bytes:
    """One Example for one pre-batch; `columns` holds int32 arrays named as in data/README.md."""
    size = len(columns["hist_len"])
    features = {"size": _int64_feature([size])}
    for name in PER_SAMPLE_FIELDS + HISTORY_FIELDS:
        features[name] = _bytes_feature(np.ascontiguousarray(columns[name], dtype="<i4").tobytes())
    return encode_example(features)


# --- writing -----------------------------------------------------------------

def _int32_column(table: pa.Table, name: str) -> np.ndarray:
    return table.column(name).combine_chunks().to_numpy(zero_copy_only=False).astype(np.int32, copy=False)


def history_arrays(table: pa.Table, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(offsets, flat values) of a list<int32> column, offsets rebased to 0."""
    array = table.column(name).combine_chunks()
    offsets = array.offsets.to_numpy().astype(np.int64)
    values = array.values.to_numpy().astype(np.int32, copy=False)
    return offsets - offsets[0], values[offsets[0]:offsets[-1]]


def iter_prebatches(table: pa.Table, prebatch: int) -> Iterator[bytes]:
    """Serialised Examples of `prebatch` consecutive rows each (the last may be short)."""
    per_sample = {name: _int32_column(table, name) for name in PER_SAMPLE_FIELDS[1:]}
    hist_offsets, history = None, {}
    for name in HISTORY_FIELDS:
        offsets, history[name] = history_arrays(table, name)
        if hist_offsets is None:
            hist_offsets = offsets
        elif not np.array_equal(hist_offsets, offsets):
            raise ValueError(f"{HISTORY_FIELDS[0]} and {name} have different lengths in some row")
    per_sample["hist_len"] = np.diff(hist_offsets).astype(np.int32)
    for start in range(0, table.num_rows, prebatch):
        stop = min(start + prebatch, table.num_rows)
        lo, hi = hist_offsets[start], hist_offsets[stop]
        columns = {name: values[start:stop] for name, values in per_sample.items()}
        columns.update({name: values[lo:hi] for name, values in history.items()})
        yield encode_prebatch(columns)


def check_sample_ranges(table: pa.Table, source: str | Path, n_items: int, n_cats: int, vocabulary: str) -> None:
    """Ids within the remap's vocabulary (1..n_items, 1..n_cats) and gaps >= 0, else one InputError naming
    `source`, the column and the first bad row. numpy min/max per column; the first bad row only on failure.

    Stage 2 looks ids up in tables of that size: an id outside it fails there naming no file. A gap
    beyond the model's last time-gap bucket is valid (that bucket is open-ended).
    """
    bounds = {"target_item": (1, n_items, "n_items"), "hist_item": (1, n_items, "n_items"),
              "target_cate": (1, n_cats, "n_cats"), "hist_cate": (1, n_cats, "n_cats"),
              "hist_gap": (0, None, None)}
    for column, (low, high, size) in bounds.items():
        if column not in table.column_names:  # the sample layout before hist_gap (feature_spec format 1)
            continue
        array = table.column(column).combine_chunks()
        ragged = pa.types.is_list(array.type)
        values = (array.flatten() if ragged else array).to_numpy(zero_copy_only=False)
        if not len(values) or (values.min() >= low and (high is None or values.max() <= high)):
            continue
        bad = values < low
        if high is not None:
            bad |= values > high
        first = row = int(np.argmax(bad))
        if ragged:
            offsets = array.offsets.to_numpy()
            row = int(np.searchsorted(offsets - offsets[0], first, side="right") - 1)
        expected = f"from {low} to {high} ({size} in {vocabulary})" if high is not None else f">= {low}"
        raise InputError(f"{source} column {column} row {row} holds {int(values[first])}: expected values "
                         f"{expected}; delete the file and rerun the same command to rebuild it")


def write_samples_tfrecord(path: str | Path, table: pa.Table, prebatch: int) -> int:
    """Write `table` (sample schema) to `path` as pre-batched records; return the record count."""
    records = 0
    with open(path, "wb") as handle:
        for example in iter_prebatches(table, prebatch):
            handle.write(frame_record(example))
            records += 1
    return records


# --- reading (tests, inspection) ---------------------------------------------

def iter_records(path: str | Path) -> Iterator[bytes]:
    """Payloads of a TFRecord file, checking both CRCs of every frame."""
    path = Path(path)
    data = path.read_bytes()
    position = 0
    while position < len(data):
        header = data[position:position + 12]
        if len(header) < 12:
            raise InputError(f"{path}: truncated TFRecord frame header at byte {position}")
        (length,) = _LENGTH.unpack_from(header)
        if _CRC.unpack_from(header, 8)[0] != masked_crc32c(header[:8]):
            raise InputError(f"{path}: corrupt TFRecord length at byte {position}")
        payload = data[position + 12:position + 12 + length]
        footer = data[position + 12 + length:position + 16 + length]
        if len(payload) < length or len(footer) < 4:
            raise InputError(f"{path}: truncated TFRecord at byte {position} (the file was cut short)")
        if _CRC.unpack(footer)[0] != masked_crc32c(payload):
            raise InputError(f"{path}: corrupt TFRecord data at byte {position} (checksum mismatch)")
        yield payload
        position += 16 + length


def _read_varint(buffer: bytes, position: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = buffer[position]
        position += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return result, position


def _fields(buffer: bytes) -> Iterator[tuple[int, bytes]]:
    """(field number, payload) of the length-delimited fields of one message."""
    position = 0
    while position < len(buffer):
        key, position = _read_varint(buffer, position)
        if key & 7 != 2:
            raise ValueError(f"unexpected wire type {key & 7} in Example")
        length, position = _read_varint(buffer, position)
        yield key >> 3, buffer[position:position + length]
        position += length


def decode_prebatch(example: bytes) -> dict[str, np.ndarray]:
    """Inverse of `encode_prebatch`: feature name -> int32 array (`size` as a 1-element array)."""
    (_, entries), = _fields(example)
    decoded = {}
    for _, entry in _fields(entries):
        parts = dict(_fields(entry))
        name = parts[1].decode()
        kind, body = next(_fields(parts[2]))
        (_, value), = _fields(body)
        if kind == 3:
            ints, position = [], 0
            while position < len(value):
                number, position = _read_varint(value, position)
                ints.append(number)
            decoded[name] = np.asarray(ints, dtype=np.int64)
        else:
            decoded[name] = np.frombuffer(value, dtype="<i4")
    return decoded


def read_samples_tfrecord(path: str | Path) -> pa.Table:
    """All samples of a TFRecord file as a table with the parquet sample schema."""
    batches = [decode_prebatch(payload) for payload in iter_records(path)]
    if not batches:
        return samples_table({name: np.zeros(0, np.int32) for name in PER_SAMPLE_FIELDS + HISTORY_FIELDS})
    merged = {name: np.concatenate([batch[name] for batch in batches]) for name in PER_SAMPLE_FIELDS + HISTORY_FIELDS}
    return samples_table(merged)


def samples_table(columns: dict[str, np.ndarray]) -> pa.Table:
    """Build the sample table (parquet schema) from flat arrays plus `hist_len`."""
    offsets = np.zeros(len(columns["hist_len"]) + 1, dtype=np.int32)
    np.cumsum(columns["hist_len"], out=offsets[1:])
    history = {name: pa.ListArray.from_arrays(pa.array(offsets), pa.array(columns[name], pa.int32()))
               for name in HISTORY_FIELDS}
    return pa.table({name: history[name] if name in history else pa.array(columns[name], pa.int32())
                     for name in SAMPLE_COLUMNS})
