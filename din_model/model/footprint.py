"""The memory a training run's weights need, estimated from the settings and the data's sizes before
anything is built, and the check that refuses a run that cannot fit.

The estimate counts every weight (the item and category tables, the order-aware inputs' tables,
the attention and output MLPs) in float32, three times: the weight and Adam's two slots. It leaves
out activations and the input pipeline, so it is a floor: a run refused here could never train,
and one let through may still be tight. TensorFlow-free, so the check runs when the task is
scheduled.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from din_common.errors import InputError
from din_model.params import TrainParams

BYTES_PER_WEIGHT = 4 * 3  # float32 weight + Adam's first and second moments
TIME_GAP_BUCKETS = 16  # din_model.model.network.TIME_GAP_BUCKETS, repeated here to stay TensorFlow-free
CATEGORY_MATCH_INPUTS = 3 + TIME_GAP_BUCKETS  # din_model.model.network.CATEGORY_MATCH_INPUTS, likewise
CGROUP_LIMITS = (Path("/sys/fs/cgroup/memory.max"), Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"))


def dense_weights(inputs: int, units: tuple[int, ...]) -> int:
    """Kernels and biases of a stack of dense layers ending in one output unit."""
    total = 0
    for width in units + (1,):
        total += inputs * width + width
        inputs = width
    return total


# The settings that size the weights; the one named is the one whose default shrinks them most.
SIZING_SETTINGS = ("embed_dim", "attention_hidden", "mlp_hidden")
DEFAULTS = {field.name: field.default for field in dataclasses.fields(TrainParams)}


def weight_counts(params: TrainParams, n_items: int, n_cats: int, maxlen: int) -> dict[str, int]:
    """Weights per part of the model: the embedding `tables`, the `attention` MLP and the output `mlp`."""
    width = params.embed_dim * (2 if params.use_category else 1)
    tables = (n_items + 1) * params.embed_dim + ((n_cats + 1) * params.embed_dim if params.use_category else 0)
    features = params.active_sequence_features
    tables += width * ((maxlen if "recency" in features else 0) + (TIME_GAP_BUCKETS if "time_gap" in features else 0))
    mlp_inputs = ((2 + ("last_item" in features) + ("share" in features)) * width + ("share" in features)
                  + CATEGORY_MATCH_INPUTS * ("category_match" in features))
    return {"tables": tables, "attention": dense_weights(4 * width, params.attention_units),
            "mlp": dense_weights(mlp_inputs, params.mlp_units)}


def available_memory() -> int | None:
    """Bytes of memory this process may use: the machine's, or the cgroup limit when that is lower."""
    try:
        physical = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        physical = None
    limits = [physical] if physical else []
    for path in CGROUP_LIMITS:
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            limits.append(int(text))
    return min(limits) if limits else None


def gigabytes(count: int) -> str:
    return f"{count / 2 ** 30:.1f} GiB"


def check_fits_in_memory(params: TrainParams, n_items: int, n_cats: int, maxlen: int,
                         available: int | None = None) -> None:
    """Refuse, naming the setting that makes it grow, settings whose weights alone exceed the memory."""
    available = available_memory() if available is None else available
    needed = weight_bytes(params, n_items, n_cats, maxlen)
    if available is None or needed <= available:
        return
    setting = min(SIZING_SETTINGS, key=lambda name: weight_bytes(
        dataclasses.replace(params, **{name: DEFAULTS[name]}), n_items, n_cats, maxlen))
    value = getattr(params, setting)
    raise InputError(f"[train] {setting} = {value!r} needs about {gigabytes(needed)} for the weights of a model of "
                     f"{n_items:,} items and {n_cats:,} categories with Adam's two slots, more than the "
                     f"{gigabytes(available)} of memory available; lower it (in luigi.cfg or with "
                     f"--train-{setting.replace('_', '-')})")


def weight_bytes(params: TrainParams, n_items: int, n_cats: int, maxlen: int) -> int:
    return BYTES_PER_WEIGHT * sum(weight_counts(params, n_items, n_cats, maxlen).values())
