"""Luigi config sections: the public names of every setting.

Each class is a section of luigi.cfg and can be overridden on the command line
the Luigi way (`--paths-data-dir DIR`, `--raw-source pickle`,
`--preprocess-maxlen 20`, `--train-epochs 3`). Defaults live in luigi.cfg; the
values here are the fallbacks when luigi.cfg is absent.
"""
from __future__ import annotations

import luigi

from din_common.errors import InputError

RAW_SOURCES = ("synthetic", "pickle", "amazon-json", "remap-pickle")


class paths(luigi.Config):
    data_dir = luigi.Parameter(default="data", description="Root of the data tree; everything reads and writes under it.")


class raw(luigi.Config):
    # Plain parameters, checked by our code: Luigi's ChoiceParameter answers a typo with a traceback.
    source = luigi.Parameter(default="synthetic", description=f"Where raw/reviews.pkl and raw/meta.pkl come from: "
                                                              f"one of {', '.join(RAW_SOURCES)}.")
    synthetic_users = luigi.IntParameter(default=20000)
    synthetic_items = luigi.IntParameter(default=6500)
    synthetic_categories = luigi.IntParameter(default=300)
    synthetic_seed = luigi.IntParameter(default=7)
    # The planted model's order signal (pipeline/raw/synthetic.py). Plain text, checked by
    # pipeline.raw.synthetic.check_order_knobs: a FloatParameter answers "abc" with a traceback.
    synthetic_stickiness = luigi.Parameter(default="0.5", description="P(a review stays in the previous review's "
                                                                      "category) right after it; in [0, 1].")
    synthetic_stickiness_half_life_days = luigi.Parameter(default="14", description="Days of gap that halve the "
                                                                                    "stickiness; 0 or inf: "
                                                                                    "constant.")
    synthetic_interest_drift = luigi.Parameter(default="0.2", description="P(one of a user's interest categories "
                                                                          "is replaced) before each review; "
                                                                          "in [0, 1].")


class preprocess(luigi.Config):
    maxlen = luigi.IntParameter(default=40, description="History entries kept per sample (most recent).")
    num_shards = luigi.IntParameter(default=8, description="Users go to shard user_id % num_shards.")
    prebatch = luigi.IntParameter(default=1024, description="Samples per TFRecord record.")
    seed = luigi.IntParameter(default=1234, description="Seed of negative sampling and shard shuffles.")


class train(luigi.Config):
    batch_size = luigi.IntParameter(default=4096)
    epochs = luigi.IntParameter(default=8)
    learning_rate = luigi.FloatParameter(default=0.01)
    embed_dim = luigi.IntParameter(default=32)
    attention_hidden = luigi.Parameter(default="80,40", description="Comma-separated hidden sizes of the activation unit.")
    mlp_hidden = luigi.Parameter(default="200,80", description="Comma-separated hidden sizes of the output MLP.")
    activation = luigi.Parameter(default="prelu", description="dice or prelu")
    attention_softmax = luigi.BoolParameter(default=False, parsing=luigi.BoolParameter.EXPLICIT_PARSING)
    dropout = luigi.FloatParameter(default=0.0)
    l2 = luigi.FloatParameter(default=0.0001)
    mini_batch_aware_l2 = luigi.BoolParameter(default=True, parsing=luigi.BoolParameter.EXPLICIT_PARSING)
    use_category = luigi.BoolParameter(default=True, parsing=luigi.BoolParameter.EXPLICIT_PARSING)
    device = luigi.Parameter(default="auto", description="auto, npu, gpu or cpu")
    precision = luigi.Parameter(default="mixed", description="mixed or fp32")
    seed = luigi.IntParameter(default=42)
    history_layout = luigi.Parameter(default="auto", description="auto, compact, static_compact or dense "
                                                                 "(docs/static_path.md)")
    xla = luigi.Parameter(default="auto", description="auto (XLA-compiled steps on a CPU with TensorFlow >= 2.16 for "
                                                      "runs of 512 batches or more), on or off (docs/static_path.md)")
    model = luigi.Parameter(default="din", description="din (the paper's order-blind DIN) or din_seq (DIN plus "
                                                       "the sequence_features; docs/accuracy.md)")
    sequence_features = luigi.Parameter(default="time_gap",
                                        description="din_seq's order-aware inputs, comma-separated: recency, "
                                                    "time_gap, last_item (or none)")
    patience = luigi.IntParameter(default=0, description="Stop after this many epochs without a validation AUC gain "
                                                         "(0: run every epoch).")
    restore_best = luigi.BoolParameter(default=True, parsing=luigi.BoolParameter.EXPLICIT_PARSING,
                                       description="Export and evaluate the epoch with the best validation AUC "
                                                   "(false: the last epoch).")
    # Not a model setting (current_train_params leaves it out, so it is not in the run id).
    worker_timeout = luigi.FloatParameter(default=300.0, description="TF_CONFIG clusters: seconds a worker waits "
                                                                     "for the others to start.")


class npu(luigi.Config):
    """Options of the Ascend adapter (`npu_device.global_options()`), used when training runs on an NPU.

    Plain text parameters, validated by `din_model.device.npu_options.NpuOptions` (one clear line per mistake).
    docs/ascend.md has the table of what each maps to.
    """
    precision_mode = luigi.Parameter(default="", description="Adapter precision_mode; empty: from [train] precision "
                                                             "(mixed: allow_mix_precision, fp32: "
                                                             "force_fp32).")
    device_id = luigi.Parameter(default="", description="NPU to open; empty: ASCEND_DEVICE_ID, else 0.")
    modify_mixlist = luigi.Parameter(default="", description="Mixlist JSON changing which ops run in float16.")
    fusion_switch_file = luigi.Parameter(default="", description="Fusion switch file turning graph/UB fusions off.")
    dump_path = luigi.Parameter(default="", description="Directory for operator data dumps; empty: no data dump.")
    dump_step = luigi.Parameter(default="", description='Steps to dump, e.g. "0|5|10-20"; empty: every step.')
    dump_mode = luigi.Parameter(default="output", description="input, output or all.")
    overflow_dump_path = luigi.Parameter(default="", description="Directory for overflow dumps; empty: none.")
    dump_debug_mode = luigi.Parameter(default="all", description="aicore_overflow, atomic_overflow or all.")
    profiling_output_dir = luigi.Parameter(default="", description="Directory for profiling data; empty: no "
                                                                   "profiling.")
    profiling_options = luigi.Parameter(default="", description='Profiling switches as JSON, e.g. '
                                                                '{"training_trace": "on", "task_trace": "on"} '
                                                                '(the default).')
    loss_scaling = luigi.Parameter(default="dynamic", description="dynamic: NpuLossScaleOptimizer when matrix "
                                                                  "products take float16; off: no loss scaling.")
    devices = luigi.Parameter(default="1", description="NPUs of this host to train on (one rank process each, on "
                                                       "the rank table's device_id of its rank_id).")
    rank_table_file = luigi.Parameter(default="", description="The host's HCCL rank table JSON (devices > 1).")
    iterations_per_loop = luigi.Parameter(default="1", description="Train steps the NPU runs per call in one graph "
                                                                   "(npu_device.set_npu_loop_size); 1: one step per "
                                                                   "call.")
    op_compiler_cache_mode = luigi.Parameter(default="enable", description="enable, disable or force: cache "
                                                                           "compiled operators between runs.")
    op_compiler_cache_dir = luigi.Parameter(default="", description="Operator cache directory; empty: "
                                                                    "<data_dir>/npu_op_cache.")
    hcom_parallel = luigi.Parameter(default="", description="true/false: all-reduce in parallel with the backward "
                                                            "pass; empty: the adapter's default (true).")
    op_debug_level = luigi.Parameter(default="", description="0-4: operator debug (overflow check, debug "
                                                             "builds); empty: off.")
    enable_exception_dump = luigi.Parameter(default="", description="0/1 (2 on newer adapters): dump a failing "
                                                                    "operator's data; empty: adapter default.")
    graph_run_mode = luigi.Parameter(default="", description="1 training, 0 online inference; empty: 1.")
    aoe_mode = luigi.Parameter(default="", description="AOE tuning: 1 subgraph, 2 operator, 4 gradient split; "
                                                       "empty: no tuning.")


def section_values(section: luigi.Config) -> dict:
    """{name: value} of a section's settings, plus any key luigi.cfg has in it that is no setting (Luigi would
    ignore such a key silently; the section's validator names it instead)."""
    names = [name for name, _ in section.get_params()]
    values = {name: getattr(section, name) for name in names}
    cfg = luigi.configuration.get_config()
    family = section.get_task_family()
    if cfg.has_section(family):
        values.update({key: value for key, value in cfg.items(family) if key.replace("-", "_") not in names})
    return values


def require_positive(section: str, name: str, value: int) -> int:
    """Config check shared by tasks: one clear line naming the setting."""
    if value <= 0:
        raise InputError(f"[{section}] {name} must be a positive integer, got {value} "
                         f"(set it in luigi.cfg or with --{section}-{name.replace('_', '-')})")
    return value
