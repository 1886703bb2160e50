"""tf.data reader of the pre-batched TFRecord shards (layout: data/README.md).

Owns: turning a split's shard files into a dataset of `(features, label)` batches, and
mapping corrupt shards to `InputError`. The feature spec itself (its keys, checks and
files) is `din_common.feature_spec.FeatureSpec`, which this package's modules take as it is.

Pipeline: shard files (shuffled when training) -> parallel interleave of
`TFRecordDataset`s -> record shuffle -> groups of records -> one parse per group
(`parse_example`, the byte strings of the group joined and decoded once, ragged ->
dense `[B, L]`, keeping the last `maxlen` entries) -> `rebatch(batch_size)` ->
prefetch. No step works sample by sample and no split is held in memory.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterator

import tensorflow as tf

from din_common.errors import InputError
from din_common.feature_spec import FEATURE_NAMES, HISTORY_FIELDS, PER_SAMPLE_FIELDS, FeatureSpec
from din_model.compat import options_without_autotune, rebatch

# Decoding errors a damaged shard raises while it is read.
SHARD_ERRORS = (tf.errors.DataLossError, tf.errors.InvalidArgumentError)


def feature_spec_at(spec: str | Path | FeatureSpec) -> FeatureSpec:
    """`spec` itself, or the checked `FeatureSpec` read from the feature_spec.json at that path."""
    return spec if isinstance(spec, FeatureSpec) else FeatureSpec.read(spec)


def split_files(spec: FeatureSpec, split: str) -> list[str]:
    """Absolute shard paths of `split` as strings (as tf.data and messages take them); every one must exist."""
    return [str(path) for path in spec.files(split)]


def effective_maxlen(spec: FeatureSpec, maxlen: int | None) -> int:
    if maxlen is None:
        return spec.maxlen
    if not 0 < maxlen <= spec.maxlen:
        raise InputError(f"[train] maxlen must be between 1 and the shards' maxlen {spec.maxlen}, got {maxlen}")
    return int(maxlen)


def _parse_description() -> dict[str, tf.io.FixedLenFeature]:
    description = {name: tf.io.FixedLenFeature([], tf.string) for name in PER_SAMPLE_FIELDS + HISTORY_FIELDS}
    description["size"] = tf.io.FixedLenFeature([1], tf.int64)
    return description


def _decode_joined(serialized: tf.Tensor) -> tf.Tensor:
    """Raw little-endian int32 bytes of several records -> one flat int32 vector, records in order."""
    return tf.io.decode_raw(tf.strings.reduce_join(serialized), tf.int32, little_endian=True)


def _last_entries(flat: tf.Tensor, lengths: tf.Tensor, maxlen: int) -> tf.RaggedTensor:
    """Ragged rows of `flat` split by `lengths`, each cut to its last `maxlen` entries."""
    ends = tf.cumsum(lengths)
    kept = tf.minimum(lengths, maxlen)
    positions = tf.ragged.range(ends - kept, ends)
    return tf.RaggedTensor.from_row_lengths(tf.gather(flat, positions.flat_values), kept)


def make_record_parser(maxlen: int, stored_maxlen: int, history_fields: tuple[str, ...] = HISTORY_FIELDS):
    """A function: vector of serialized records -> (features, label) with `[B, maxlen]` histories
    of `history_fields` (the others are not decoded: a model without time gaps does not pay for them)."""
    description = _parse_description()

    def parse(serialized: tf.Tensor):
        parsed = tf.io.parse_example(serialized, description)
        columns = {name: _decode_joined(parsed[name]) for name in PER_SAMPLE_FIELDS}
        lengths = columns["hist_len"]
        features = {name: columns[name] for name in ("target_item", "target_cate", "user_id")}
        for name in history_fields:
            flat = _decode_joined(parsed[name])
            if maxlen < stored_maxlen:
                rows = _last_entries(flat, lengths, maxlen)
            else:
                rows = tf.RaggedTensor.from_row_lengths(flat, lengths)
            features[name] = rows.to_tensor(default_value=0, shape=[None, maxlen])
        return features, tf.cast(columns["label"], tf.float32)

    return parse


def make_dataset(spec: str | Path | FeatureSpec, split: str, batch_size: int, *, shuffle: bool = False,
                 seed: int = 0, drop_remainder: bool = False, maxlen: int | None = None,
                 file_shard: tuple[int, int] | None = None, repeat: bool = False,
                 records_per_parse: int | None = None,
                 history_fields: tuple[str, ...] = HISTORY_FIELDS, ordered: bool = False) -> tf.data.Dataset:
    """Batches `(features, label)` of `split`: features hist_item/hist_cate/hist_gap `[B, L]`,
    target_item, target_cate, user_id `[B]` (int32), label `[B]` float32.

    `file_shard=(index, count)` keeps every count-th file (one worker's part).
    `maxlen` below the shards' maxlen keeps the most recent entries.
    A shuffled split is read in whatever order the parallel reads finish, unless `ordered` (`[train]
    deterministic`): then the seeded shuffles alone decide the order.
    """
    spec = feature_spec_at(spec)
    if batch_size <= 0:
        raise InputError(f"[train] batch_size must be a positive integer, got {batch_size}")
    length = effective_maxlen(spec, maxlen)
    files = split_files(spec, split)
    if file_shard is not None:
        index, count = file_shard
        files = files[index::count]
        if not files:
            raise InputError(f"file_shard {file_shard} leaves no {split} file (only {len(spec.splits[split].files)})")
    prebatch = spec.prebatch
    if records_per_parse is None:
        records_per_parse = max(1, math.ceil(batch_size / prebatch))

    dataset = tf.data.Dataset.from_tensor_slices(files)
    if shuffle:
        dataset = dataset.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        dataset = dataset.repeat()
    in_order = ordered or not shuffle
    dataset = dataset.interleave(tf.data.TFRecordDataset, cycle_length=min(len(files), 4),
                                 num_parallel_calls=tf.data.AUTOTUNE, deterministic=in_order)
    if shuffle:
        dataset = dataset.shuffle(max(8, 4 * records_per_parse), seed=seed + 1, reshuffle_each_iteration=True)
    dataset = dataset.batch(records_per_parse)
    dataset = dataset.map(make_record_parser(length, spec.maxlen, history_fields),
                          num_parallel_calls=tf.data.AUTOTUNE, deterministic=in_order)
    dataset = rebatch(dataset, batch_size, drop_remainder)
    return dataset.prefetch(tf.data.AUTOTUNE).with_options(_options_without_autotune())


def _options_without_autotune() -> tf.data.Options:
    """tf.data options with the autotune model switched off; AUTOTUNE then means min(16, cores).

    With it on, the end of an iteration could wait for the model thread's next wake-up
    (its period doubles from 10 ms to 10.24 s), so under `luigi ... AllTasks` epochs took
    5.2 or 10.3 s whatever their work (first epochs 22.3 k samples/s, 3 of 3 runs); with it
    off, 25-26 k (the first epoch traces the step), later ones 47-50 k.
    """
    return options_without_autotune()


def batches_with_rows(dataset: tf.data.Dataset, pad_to: int | None = None) -> tf.data.Dataset:
    """`(features, label, rows)`: each batch with its number of real rows. `pad_to`: every tensor has exactly
    that many rows, a shorter batch (a split's last) padded with zeros (id 0 is padding, label 0) in tf.data,
    so a device that compiles one graph per shape (the NPU) sees one static shape and no row is dropped."""
    if pad_to is None:
        return dataset.map(lambda features, label: (features, label, tf.shape(label)[0]))

    def padded(tensor, rows):
        paddings = [[0, pad_to - rows]] + [[0, 0]] * (tensor.shape.rank - 1)
        return tf.ensure_shape(tf.pad(tensor, paddings), tf.TensorShape([pad_to]).concatenate(tensor.shape[1:]))

    def pad(features, label):
        rows = tf.shape(label)[0]
        return {name: padded(value, rows) for name, value in features.items()}, padded(label, rows), rows

    return dataset.map(pad)


def batch_signature(maxlen: int, batch_size: int | None = None, history_fields: tuple[str, ...] = HISTORY_FIELDS
                    ) -> tuple[dict[str, tf.TensorSpec], tf.TensorSpec]:
    """The `(features, label)` TensorSpecs of a `make_dataset` batch; batch_size None: any size."""
    history = tf.TensorSpec([batch_size, maxlen], tf.int32)
    per_sample = tf.TensorSpec([batch_size], tf.int32)
    features = {name: history if name in HISTORY_FIELDS else per_sample for name in FEATURE_NAMES
                if name in history_fields or name not in HISTORY_FIELDS}
    return features, tf.TensorSpec([batch_size], tf.float32)


def iterate_checked(dataset: tf.data.Dataset, files: list[str]) -> Iterator[Any]:
    """Iterate `dataset`; a damaged shard ends the iteration with `InputError` naming it."""
    iterator = iter(dataset)
    while True:
        try:
            element = next(iterator)
        except StopIteration:
            return
        except SHARD_ERRORS as error:
            raise shard_error(files, error) from None
        yield element


def _check_records(serialized: tf.Tensor) -> None:
    """Decode every field of some records, raising what a damaged record raises."""
    parsed = tf.io.parse_example(serialized, _parse_description())
    lengths = _decode_joined(parsed["hist_len"])
    for name in PER_SAMPLE_FIELDS[1:]:
        tf.debugging.assert_equal(tf.size(_decode_joined(parsed[name])), tf.size(lengths), f"{name} length")
    for name in HISTORY_FIELDS:
        tf.RaggedTensor.from_row_lengths(_decode_joined(parsed[name]), lengths)


def damaged_shard(files: list[str]) -> InputError | None:
    """The `InputError` naming the first of `files` that fails to read alone, or None if all read."""
    for path in files:
        try:
            for records in tf.data.TFRecordDataset(path).batch(64):
                _check_records(records)
        except SHARD_ERRORS as file_error:
            return InputError(f"{path}: corrupt or truncated TFRecord shard ({_first_line(file_error)}); "
                              "rerun the preprocessing (Preprocess task) to rewrite it")
    return None


def shard_error(files: list[str], error: Exception) -> InputError:
    """The `InputError` for a read failure: find which shard is damaged by reading each alone."""
    return damaged_shard(files) or InputError(
        f"reading TFRecord shards failed: {_first_line(error)} (files: {files[:3]}...)")


def _first_line(error: Exception) -> str:
    message = getattr(error, "message", None) or str(error)
    return message.strip().splitlines()[0][:300]
