"""Luigi config sections: the public names of every setting.

Each class is a section of luigi.cfg and can be overridden on the command line
the Luigi way (`--paths-data-dir DIR`, `--raw-source pickle`,
`--preprocess-maxlen 20`, `--train-epochs 3`). Defaults live in luigi.cfg; the
values here are the fallbacks when luigi.cfg is absent. This is the one definition of
the settings: each carries its meaning and allowed values (`setting`), which `--help`
and `python -m pipeline.cli.settings` print, and a numeric one its `Bounds`; the checks that
enforce them are where the values are used (pipeline/settings.py, din_model/params.py,
din_model/device/npu_options.py), held to the bounds by tests/pipeline/test_setting_ranges.py.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import luigi

from din_common.errors import InputError

RAW_SOURCES = ("synthetic", "pickle", "amazon-json", "remap-pickle", "parquet")
ENGINES = ("local", "dask")
SEED_RANGE = (0, 2**32 - 1)  # numpy's seeds; the negative-sample hash takes the low 32 bits
MAX_IDS = 2**31 - 1  # ids are int32 in every stage-1 table (0 is padding)


@dataclass(frozen=True)
class Bounds:
    """The numbers a numeric setting takes, declared with it: from `low` to `high` (None: no upper bound), each
    end included unless `low_open` / `high_open`. Never NaN, and finite unless `high` is an included infinity.
    The checks stay where the values are used; tests/pipeline/test_setting_ranges.py holds them to these."""
    low: float
    high: Optional[float] = None
    low_open: bool = False
    high_open: bool = False


POSITIVE = Bounds(1)
SEEDS = Bounds(*SEED_RANGE)


def setting(kind, default, meaning: str, allowed: str, bounds: Optional[Bounds] = None,
            **options) -> luigi.Parameter:
    """One setting: a Luigi parameter of `kind` described by what it does and the values it takes, listed by
    `luigi --module pipeline TASK --help` and, with its luigi.cfg key and default, by
    `python -m pipeline.cli.settings`. `meaning` and `allowed` are single sentences without `%` (argparse
    formats the help text); a numeric setting also declares its `bounds` (`allowed` says them in words)."""
    parameter = kind(default=default, description=f"{meaning} Allowed: {allowed}.", always_in_help=True, **options)
    parameter.bounds = bounds
    return parameter


def explicit_bool(default: bool, meaning: str) -> luigi.BoolParameter:
    """A true/false setting that takes its value on the command line (`--train-use-category false`)."""
    return setting(luigi.BoolParameter, default, meaning, "true or false",
                   parsing=luigi.BoolParameter.EXPLICIT_PARSING)


class paths(luigi.Config):
    data_dir = setting(luigi.Parameter, "data", "Root of the data tree; everything reads and writes under it.",
                       "a directory path (made if missing)")


class raw(luigi.Config):
    # Plain parameters, checked by our code: Luigi's ChoiceParameter answers a typo with a traceback.
    source = setting(luigi.Parameter, "synthetic", "Where raw/reviews.pkl and raw/meta.pkl come from "
                                                   "(README, Your own data).", ", ".join(RAW_SOURCES))
    synthetic_users = setting(luigi.IntParameter, 20000, "Users of the synthetic data.", "an integer >= 1",
                              Bounds(1, MAX_IDS))
    synthetic_items = setting(luigi.IntParameter, 6500, "Items of the synthetic data.",
                              "an integer >= 6 and >= synthetic_categories",
                              Bounds(6, MAX_IDS))
    synthetic_categories = setting(luigi.IntParameter, 300, "Categories of the synthetic data.", "an integer >= 1",
                                   Bounds(1, MAX_IDS))
    synthetic_seed = setting(luigi.IntParameter, 7, "Seed of the synthetic data generator.", "an integer >= 0",
                             SEEDS)
    # The planted model's order signal (pipeline/raw/synthetic.py). Plain text, checked by
    # pipeline.raw.synthetic.check_order_knobs: a FloatParameter answers "abc" with a traceback.
    synthetic_stickiness = setting(luigi.Parameter, "0.5", "P(a review stays in the previous review's category) "
                                                           "right after it.", "a number in [0, 1]",
                                   Bounds(0, 1))
    synthetic_stickiness_half_life_days = setting(luigi.Parameter, "14", "Days of gap that halve the stickiness.",
                                                  "a number >= 0 (0 or inf: constant)",
                                                  Bounds(0, math.inf))
    synthetic_interest_drift = setting(luigi.Parameter, "0.2", "P(one of a user's interest categories is "
                                                               "replaced) before each review.", "a number in [0, 1]",
                                       Bounds(0, 1))
    synthetic_item_locality = setting(luigi.Parameter, "0", "P(a review's item is one of the previous item's "
                                                            "neighbours, when it stays in its category).",
                                      "a number in [0, 1]", Bounds(0, 1))
    # Bounds on reading an Amazon JSON source (pipeline.raw.amazon_json.JsonLimits), which may come from anywhere.
    json_max_line_bytes = setting(luigi.IntParameter, 16 * 2**20, "amazon-json: longest line read (bytes); a longer "
                                                                  "one is refused.", "a positive integer",
                                  POSITIVE)
    json_max_gzip_ratio = setting(luigi.IntParameter, 100, "amazon-json: a .gz file may unpack to at most this many "
                                                           "times its size.", "a positive integer",
                                  POSITIVE)


class preprocess(luigi.Config):
    maxlen = setting(luigi.IntParameter, 40, "History entries kept per sample (the most recent).",
                     "a positive integer", POSITIVE)
    num_shards = setting(luigi.IntParameter, 8, "Shards of the sequences and TFRecords; users go to shard "
                                                "user_id mod num_shards.", "a positive integer", POSITIVE)
    prebatch = setting(luigi.IntParameter, 1024, "Samples per TFRecord record.", "a positive integer", POSITIVE)
    seed = setting(luigi.IntParameter, 1234, "Seed of negative sampling and shard shuffles.", "an integer >= 0",
                   SEEDS)
    engine = setting(luigi.Parameter, "local", "How stage 1 computes: local (in the task's process) or dask (on the "
                                               "[dask] cluster; the same outputs, byte for byte).", "local or dask")


class dask(luigi.Config):
    """The Dask cluster of `[preprocess] engine = dask` (pipeline.dask_engine)."""
    scheduler_address = setting(luigi.Parameter, "", "Address of a running `dask scheduler` whose workers see "
                                                     "[paths] data_dir; empty: a LocalCluster on this machine for "
                                                     "each task.", "empty or tcp://host:8786")
    workers = setting(luigi.IntParameter, 2, "LocalCluster worker processes.", "a positive integer", POSITIVE)
    threads_per_worker = setting(luigi.IntParameter, 1, "LocalCluster threads per worker.", "a positive integer",
                                 POSITIVE)
    memory_limit = setting(luigi.Parameter, "auto", "LocalCluster memory per worker; auto: the machine's memory "
                                                    "shared by the workers.", "auto, 0 (no limit) or a size such as 8GB")


class train(luigi.Config):
    batch_size = setting(luigi.IntParameter, 4096, "Samples per train step (the global batch over all workers "
                                                   "or NPUs).", "a positive integer", POSITIVE)
    epochs = setting(luigi.IntParameter, 8, "Passes over the train split.", "a positive integer", POSITIVE)
    learning_rate = setting(luigi.FloatParameter, 0.01, "Adam's learning rate.", "a positive number",
                            Bounds(0, low_open=True))
    embed_dim = setting(luigi.IntParameter, 32, "Width of the item and category embeddings.", "a positive integer",
                        POSITIVE)
    attention_hidden = setting(luigi.Parameter, "80,40", "Hidden sizes of the attention (activation) unit.",
                               "comma-separated positive integers such as 80,40")
    mlp_hidden = setting(luigi.Parameter, "200,80", "Hidden sizes of the output MLP.",
                         "comma-separated positive integers such as 200,80")
    activation = setting(luigi.Parameter, "prelu", "Activation of the hidden layers.", "dice or prelu")
    attention_softmax = explicit_bool(False, "Softmax over the attention weights (the paper drops it).")
    dropout = setting(luigi.FloatParameter, 0.0, "Dropout rate of the output MLP.", "a number in [0, 1)",
                      Bounds(0, 1, high_open=True))
    l2 = setting(luigi.FloatParameter, 0.0001, "L2 regularisation weight.", "a number >= 0", Bounds(0))
    mini_batch_aware_l2 = explicit_bool(True, "L2 on the embedding rows a batch uses only (the paper's "
                                              "mini-batch aware regularisation).")
    use_category = explicit_bool(True, "Feed the category embeddings besides the items'.")
    device = setting(luigi.Parameter, "auto", "Where to train; auto: the Ascend NPU, else a GPU, else the CPU.",
                     "auto, npu, gpu or cpu")
    precision = setting(luigi.Parameter, "mixed", "Numeric precision (README, On an Ascend host, a GPU or the CPU).",
                        "mixed or fp32")
    seed = setting(luigi.IntParameter, 42, "Seed of the weights' initialisation and the input order.",
                   "an integer from 0 to 4294967295", SEEDS)
    history_layout = setting(luigi.Parameter, "auto", "How the model holds the histories (docs/static_path.md).",
                             "auto, compact, static_compact or dense")
    xla = setting(luigi.Parameter, "auto", "XLA-compiled train steps; auto: on an x86-64 CPU with AVX-512 and "
                                           "TensorFlow >= 2.16 for runs of 512 batches or more (docs/static_path.md).",
                  "auto, on or off")
    model = setting(luigi.Parameter, "din_seq", "din: the paper's order-blind DIN; din_seq: DIN plus the "
                                                "sequence_features (docs/accuracy.md).", "din or din_seq")
    sequence_features = setting(luigi.Parameter, "time_gap,share,category_match", "din_seq's extra inputs.",
                                "comma-separated names out of recency, time_gap, last_item, share, category_match, "
                                "or none")
    patience = setting(luigi.IntParameter, 0, "Stop after this many epochs without a validation AUC gain "
                                              "(0: run every epoch).", "an integer >= 0", Bounds(0))
    restore_best = explicit_bool(True, "Export and evaluate the epoch with the best validation AUC "
                                       "(false: the last epoch).")
    lr_decay_factor = setting(luigi.FloatParameter, 1.0, "Multiply the learning rate by this after lr_decay_patience "
                                                         "epochs without a validation AUC gain (1.0: no decay).",
                              "a number in (0, 1]", Bounds(0, 1, low_open=True))
    lr_decay_patience = setting(luigi.IntParameter, 1, "Epochs without a validation AUC gain before the learning "
                                                       "rate decays.", "a positive integer", POSITIVE)
    deterministic = explicit_bool(False, "Reproducible runs: TensorFlow's op determinism and a fixed input order "
                                         "(README, Reproducible runs).")
    # Not a model setting (current_train_params leaves it out, so it is not in the run id).
    worker_timeout = setting(luigi.FloatParameter, 300.0, "TF_CONFIG clusters: seconds a worker waits for the "
                                                          "others to start.", "a positive number of seconds",
                              Bounds(0, low_open=True))


class tune(luigi.Config):
    """The hyperparameter search of `luigi --module pipeline TuneDIN` (pipeline/tasks/tuning.py)."""
    trials = setting(luigi.IntParameter, 20, "Complete trials (training runs) the search holds; a rerun continues "
                                             "the stored study up to this many.", "a positive integer", POSITIVE)
    seed = setting(luigi.IntParameter, 0, "Seed of the search's sampler (Optuna's TPE).",
                   "an integer from 0 to 4294967295", SEEDS)


class npu(luigi.Config):
    """Options of the Ascend adapter (`npu_device.global_options()`), used when training runs on an NPU.

    Plain text parameters, validated by `din_model.device.npu_options.NpuOptions` (one clear line per mistake).
    docs/ascend.md has the table of what each maps to. Empty means not set.
    """
    precision_mode = setting(luigi.Parameter, "", "Adapter precision_mode; empty: from [train] precision "
                                                  "(mixed: allow_mix_precision, fp32: force_fp32).",
                             "empty or an adapter mode such as allow_mix_precision, force_fp32, "
                             "must_keep_origin_dtype (docs/ascend.md)")
    device_id = setting(luigi.Parameter, "", "NPU to open; empty: ASCEND_DEVICE_ID, else 0.",
                        "empty or a device number 0, 1, ...", Bounds(0))
    modify_mixlist = setting(luigi.Parameter, "", "Mixlist JSON changing which ops run in float16.",
                             "empty or an existing JSON file")
    fusion_switch_file = setting(luigi.Parameter, "", "Fusion switch file turning graph/UB fusions off.",
                                 "empty or an existing file")
    dump_path = setting(luigi.Parameter, "", "Directory for operator data dumps; empty: no data dump.",
                        "empty or a directory")
    dump_step = setting(luigi.Parameter, "", "Steps to dump; empty: every step.", "empty or steps such as 0|5|10-20")
    dump_mode = setting(luigi.Parameter, "output", "Which tensors of an operator the data dump holds.",
                        "input, output or all")
    overflow_dump_path = setting(luigi.Parameter, "", "Directory for overflow dumps; empty: none.",
                                 "empty or a directory")
    dump_debug_mode = setting(luigi.Parameter, "all", "Which overflows the overflow dump records.",
                              "aicore_overflow, atomic_overflow or all")
    profiling_output_dir = setting(luigi.Parameter, "", "Directory for profiling data; empty: no profiling.",
                                   "empty or a directory")
    profiling_options = setting(luigi.Parameter, "", "Profiling switches; empty: training_trace and task_trace on.",
                                'empty or a JSON object of strings such as {"training_trace": "on"}')
    loss_scaling = setting(luigi.Parameter, "dynamic", "dynamic: NpuLossScaleOptimizer when matrix products take "
                                                       "float16; off: no loss scaling.", "dynamic or off")
    devices = setting(luigi.Parameter, "1", "NPUs of this host to train on (one rank process each, on the rank "
                                            "table's device_id of its rank_id).", "1, 2, ..., 8",
                      POSITIVE)
    rank_table_file = setting(luigi.Parameter, "", "The host's HCCL rank table JSON (devices > 1).",
                              "empty or an existing JSON file listing exactly devices NPUs")
    iterations_per_loop = setting(luigi.Parameter, "1", "Train steps the NPU runs per call in one graph "
                                                        "(npu_device.set_npu_loop_size).", "1, 2, ...",
                                  POSITIVE)
    op_compiler_cache_mode = setting(luigi.Parameter, "enable", "Keep compiled operators between runs.",
                                     "enable, disable or force")
    op_compiler_cache_dir = setting(luigi.Parameter, "", "Operator cache directory; empty: "
                                                         "<data_dir>/npu_op_cache.", "empty or a directory")
    hcom_parallel = setting(luigi.Parameter, "", "All-reduce in parallel with the backward pass; empty: the "
                                                 "adapter's default (true).", "empty, true or false")
    op_debug_level = setting(luigi.Parameter, "", "Operator debug builds and overflow checks; empty: off.",
                             "empty or 0, 1, 2, 3, 4", Bounds(0, 4))
    enable_exception_dump = setting(luigi.Parameter, "", "Dump a failing operator's data; empty: the adapter's "
                                                         "default.", "empty or 0, 1, 2 (2: newer adapters)",
                                    Bounds(0, 2))
    graph_run_mode = setting(luigi.Parameter, "", "1 training, 0 online inference; empty: 1.", "empty, 0 or 1",
                             Bounds(0, 1))
    aoe_mode = setting(luigi.Parameter, "", "AOE tuning run: 1 subgraph, 2 operator, 4 gradient split; empty: no "
                                            "tuning.", "empty, 1, 2 or 4", Bounds(1, 4))


# Every section defined here, in definition order (python -m pipeline.cli.settings lists them in this order).
SECTIONS = tuple(value for value in list(globals().values())
                 if isinstance(value, type) and issubclass(value, luigi.Config) and value.__module__ == __name__)


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


def require_in_range(section: str, name: str, value: int, low: int, high: int) -> int:
    """An integer setting in [low, high], or one clear line naming the setting."""
    if not low <= value <= high:
        raise InputError(f"[{section}] {name} must be an integer from {low} to {high}, got {value} "
                         f"(set it in luigi.cfg or with --{section}-{name.replace('_', '-')})")
    return value


def require_seconds(section: str, name: str, value: float) -> float:
    """A positive, finite number of seconds, or one clear line naming the setting."""
    if not 0 < value < float("inf"):  # NaN fails every comparison
        raise InputError(f"[{section}] {name} must be a positive number of seconds, got {value} "
                         f"(set it in luigi.cfg or with --{section}-{name.replace('_', '-')})")
    return value


def refuse_empty_flags() -> None:
    """`--section-name ""` on the command line: Luigi takes an empty value for "not given" and silently uses
    luigi.cfg's (or the default); refuse it instead (an empty value can be set in luigi.cfg)."""
    from luigi.cmdline_parser import CmdlineParser

    parser = CmdlineParser.get_instance()
    if parser is None:  # luigi.build() from Python: no command line
        return
    given = vars(parser.known_args)
    for section in SECTIONS:
        family = section.get_task_family()
        for name, _ in section.get_params():
            if given.get(f"{family}_{name}") == "":
                raise InputError(f"--{family}-{name.replace('_', '-')} was given an empty value, which Luigi would "
                                 f"replace by luigi.cfg's [{family}] {name}: expected a value (to set it empty, "
                                 "do so in luigi.cfg)")


def require_positive(section: str, name: str, value: int) -> int:
    """Config check shared by tasks: one clear line naming the setting."""
    if value <= 0:
        raise InputError(f"[{section}] {name} must be a positive integer, got {value} "
                         f"(set it in luigi.cfg or with --{section}-{name.replace('_', '-')})")
    return value
