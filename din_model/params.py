"""Training parameters: the `[train]` settings as a validated dataclass, and the run id.

`TrainParams` mirrors the `train` section of pipeline/config.py name for name, plus `maxlen`,
`jit_compile` and the reference-model options (attention_activation ... l2_weights), which have
no config entry: benchmarks/train.py's `reference` preset uses them to build the reference DIN's
model function. `validate()` raises
`InputError` naming the setting the way a user writes it (`[train] batch_size`).
`run_id` hashes every parameter together with the TFRecord fingerprint, the feature spec's content (and,
on the NPU, the `[npu]` settings that change the numbers), so a changed parameter, changed shards or an
edited feature_spec.json give a new run directory.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from typing import Any

from din_common.errors import InputError

ACTIVATIONS = ("dice", "prelu")
L2_WEIGHTS = ("all", "embeddings")
HISTORY_LAYOUTS = ("auto", "dense", "compact", "static_compact")
DEVICES = ("auto", "npu", "gpu", "cpu")
PRECISIONS = ("mixed", "fp32")
# XLA-compiled train steps: "auto" = where they measured faster (din_model/train/policies.py).
XLA_MODES = ("auto", "on", "off")
# "din": the paper's model, whose attention pools the history as a set; "din_seq": DIN plus the
# order-aware inputs named in `sequence_features` (din_model/model/network.py, docs/accuracy.md).
MODELS = ("din", "din_seq")
SEQUENCE_FEATURES = ("recency", "time_gap", "last_item", "share", "category_match")
# The sequence features that read each history entry's time gap (`hist_gap`).
GAP_FEATURES = ("time_gap", "category_match")


@dataclasses.dataclass(frozen=True)
class TrainParams:
    batch_size: int = 4096
    epochs: int = 8
    learning_rate: float = 0.01
    embed_dim: int = 32
    attention_hidden: str = "80,40"
    mlp_hidden: str = "200,80"
    activation: str = "prelu"
    attention_softmax: bool = False
    dropout: float = 0.0
    l2: float = 0.0001
    mini_batch_aware_l2: bool = True
    use_category: bool = True
    device: str = "auto"
    precision: str = "mixed"
    seed: int = 42
    maxlen: int | None = None
    # Whether the train step is XLA-compiled: set from `xla` once the device is known
    # (din_model/train/policies.py); the benchmarks set it directly.
    jit_compile: bool = False
    # Activation of the attention MLP; "dice"/"prelu" follow `activation`, "sigmoid" is the reference DIN code's.
    attention_activation: str = "sigmoid"
    sum_pooled_history: bool = False
    # BatchNormalization on the output MLP's input, as the reference DIN code has it.
    mlp_input_batch_norm: bool = False
    # One dropout after the last hidden layer of the output MLP (the reference) instead of one per layer.
    dropout_last_only: bool = False
    # The weights the plain L2 (mini_batch_aware_l2 off) covers: "all" trainable weights, or the
    # embedding tables only (the reference's embeddings_regularizer).
    l2_weights: str = "all"
    # History layout (din_model/model/network.py): "auto" picks static_compact for static shapes or XLA,
    # else compact; "dense", "compact" and "static_compact" force one.
    history_layout: str = "auto"
    xla: str = "auto"
    model: str = "din"
    # Comma-separated subset of SEQUENCE_FEATURES, used when model is din_seq; the default is the
    # best set measured (docs/accuracy.md, "Order-aware inputs").
    sequence_features: str = "time_gap"
    # Early stopping (din_model/train/best_epoch.py): stop after `patience` epochs without a validation AUC
    # gain (0: run every epoch); `restore_best` exports and evaluates the best epoch's weights, not the last.
    patience: int = 0
    restore_best: bool = True
    # Learning-rate decay on a plateau (din_model/train/best_epoch.py): the rate is multiplied by `lr_decay_factor`
    # after `lr_decay_patience` epochs without a validation AUC gain (1.0: no decay).
    lr_decay_factor: float = 1.0
    lr_decay_patience: int = 1
    # Reproducible runs (din_model/compat.py enable_op_determinism, the reader's fixed order, the NPU's option).
    deterministic: bool = False

    def __post_init__(self) -> None:
        self.validate()

    @property
    def attention_units(self) -> tuple[int, ...]:
        return parse_hidden_sizes("attention_hidden", self.attention_hidden)

    @property
    def mlp_units(self) -> tuple[int, ...]:
        return parse_hidden_sizes("mlp_hidden", self.mlp_hidden)

    @property
    def history_features(self) -> tuple[str, ...]:
        """The `[B, L]` history features the model reads (the reader decodes only these)."""
        features = self.active_sequence_features
        return history_features(reads_categories(self.use_category, features), reads_gaps(features))

    @property
    def active_sequence_features(self) -> tuple[str, ...]:
        """The order-aware inputs the model gets: none for plain DIN."""
        if self.model == "din":
            return ()
        return parse_sequence_features(self.sequence_features)

    def validate(self) -> None:
        for name in ("batch_size", "epochs", "embed_dim"):
            _require(isinstance(getattr(self, name), int) and getattr(self, name) > 0, name,
                     "a positive integer", getattr(self, name))
        _require(isinstance(self.patience, int) and not isinstance(self.patience, bool) and self.patience >= 0,
                 "patience", "an integer >= 0 (0: no early stopping)", self.patience)
        _require(isinstance(self.lr_decay_patience, int) and not isinstance(self.lr_decay_patience, bool)
                 and self.lr_decay_patience > 0, "lr_decay_patience", "a positive integer", self.lr_decay_patience)
        _require(0.0 < self.lr_decay_factor <= 1.0, "lr_decay_factor", "a number in (0, 1] (1: no decay)",
                 self.lr_decay_factor)
        _require(isinstance(self.seed, int) and not isinstance(self.seed, bool) and 0 <= self.seed <= 2**32 - 1,
                 "seed", "an integer from 0 to 4294967295 (numpy's seed range)", self.seed)
        # Comparisons refuse NaN; an infinite rate or weight would turn the first step's weights into NaN.
        _require(0.0 < self.learning_rate < math.inf, "learning_rate", "a positive number (finite)",
                 self.learning_rate)
        _require(0.0 <= self.dropout < 1.0, "dropout", "a number in [0, 1)", self.dropout)
        _require(0.0 <= self.l2 < math.inf, "l2", "a number >= 0 (finite)", self.l2)
        _require(self.activation in ACTIVATIONS, "activation", f"one of {ACTIVATIONS}", self.activation)
        _require(self.attention_activation in ACTIVATIONS + ("sigmoid",), "attention_activation",
                 "one of dice, prelu, sigmoid", self.attention_activation)
        _require(self.l2_weights in L2_WEIGHTS, "l2_weights", f"one of {L2_WEIGHTS}", self.l2_weights)
        _require(self.history_layout in HISTORY_LAYOUTS, "history_layout", f"one of {HISTORY_LAYOUTS}",
                 self.history_layout)
        _require(self.device in DEVICES, "device", f"one of {DEVICES}", self.device)
        _require(self.precision in PRECISIONS, "precision", f"one of {PRECISIONS}", self.precision)
        _require(self.maxlen is None or (isinstance(self.maxlen, int) and self.maxlen > 0), "maxlen",
                 "empty or a positive integer", self.maxlen)
        _require(self.model in MODELS, "model", f"one of {MODELS}", self.model)
        _require(self.xla in XLA_MODES, "xla", f"one of {XLA_MODES}", self.xla)
        self.attention_units  # noqa: B018  (parsing validates)
        self.mlp_units  # noqa: B018
        parse_sequence_features(self.sequence_features)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainParams":
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise InputError(f"[train] unknown setting(s) {unknown}; known: {sorted(known)}")
        return cls(**values)


def _require(condition: bool, name: str, expected: str, value: Any) -> None:
    if not condition:
        raise InputError(f"[train] {name} must be {expected}, got {value!r} "
                         f"(set it in luigi.cfg or with --train-{name.replace('_', '-')})")


def parse_hidden_sizes(name: str, text: str) -> tuple[int, ...]:
    """'80,40' -> (80, 40); an empty string means no hidden layer."""
    parts = [part.strip() for part in str(text).split(",") if part.strip()]
    try:
        sizes = tuple(int(part) for part in parts)
    except ValueError:
        sizes = ()
        parts = None
    _require(parts is not None and all(size > 0 for size in sizes), name,
             "comma-separated positive integers such as 80,40", text)
    return sizes


def history_features(categories: bool, gaps: bool) -> tuple[str, ...]:
    """The `[B, L]` history features a model reading these reads."""
    return ("hist_item",) + (("hist_cate",) if categories else ()) + (("hist_gap",) if gaps else ())


def reads_gaps(sequence_features: tuple[str, ...]) -> bool:
    return any(name in GAP_FEATURES for name in sequence_features)


def reads_categories(use_category: bool, sequence_features: tuple[str, ...]) -> bool:
    """Whether the model reads `hist_cate`: for the category embeddings, or for category_match's counts alone."""
    return use_category or "category_match" in sequence_features


def parse_sequence_features(text: str) -> tuple[str, ...]:
    """'recency,last_item' (or 'recency+last_item') -> ('recency', 'last_item'); empty or 'none' means none."""
    parts = str(text).replace("+", ",").split(",")
    names = tuple(part.strip() for part in parts if part.strip() and part.strip() != "none")
    unknown = [name for name in names if name not in SEQUENCE_FEATURES]
    _require(not unknown and len(set(names)) == len(names), "sequence_features",
             f"comma-separated names out of {', '.join(SEQUENCE_FEATURES)} (or none), each once", text)
    return names


def run_id(params: TrainParams, tfrecord_fingerprint: str, npu_numerics: dict | None = None,
           spec_content: str | None = None) -> str:
    """Short stable hash of every training parameter, the shards' fingerprint, the feature spec's content
    (`FeatureSpec.content_fingerprint`: sizes, files, counts; None before stage 1 wrote the spec) and, for a
    run on the NPU, the `[npu]` settings that change the numbers (`NpuOptions.numerics`); without the last
    two the id is what it always was. The learning-rate decay settings count only when the decay is on, and
    `deterministic` only when true, so runs from before they existed keep their ids."""
    identity = {"params": _identity_params(params), "tfrecords": tfrecord_fingerprint}
    if npu_numerics:
        identity["npu"] = npu_numerics
    if spec_content:
        identity["spec"] = spec_content
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]


def _identity_params(params: TrainParams) -> dict[str, Any]:
    values = params.to_dict()
    if params.lr_decay_factor == 1.0:
        del values["lr_decay_factor"], values["lr_decay_patience"]
    if not params.deterministic:
        del values["deterministic"]
    return values
