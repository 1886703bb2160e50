"""Luigi config sections: the public names of every setting.

Each class is a section of luigi.cfg and can be overridden on the command line
the Luigi way (`--paths-data-dir DIR`, `--raw-source pickle`,
`--preprocess-maxlen 20`, `--train-epochs 3`). Defaults live in luigi.cfg; the
values here are the fallbacks when luigi.cfg is absent.
"""
from __future__ import annotations

from pathlib import Path

import luigi

from din_common.errors import InputError

RAW_SOURCES = ("synthetic", "pickle", "amazon-json", "remap-pickle")


class paths(luigi.Config):
    data_dir = luigi.Parameter(default="data", description="Root of the data tree; everything reads and writes under it.")

    @property
    def root(self) -> Path:
        return Path(self.data_dir)


class raw(luigi.Config):
    # Plain parameters, checked by our code: Luigi's ChoiceParameter answers a typo with a traceback.
    source = luigi.Parameter(default="synthetic", description=f"Where raw/reviews.pkl and raw/meta.pkl come from: "
                                                              f"one of {', '.join(RAW_SOURCES)}.")
    synthetic_users = luigi.IntParameter(default=20000)
    synthetic_items = luigi.IntParameter(default=6500)
    synthetic_categories = luigi.IntParameter(default=300)
    synthetic_seed = luigi.IntParameter(default=7)


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


def require_positive(section: str, name: str, value: int) -> int:
    """Config check shared by tasks: one clear line naming the setting."""
    if value <= 0:
        raise InputError(f"[{section}] {name} must be a positive integer, got {value} "
                         f"(set it in luigi.cfg or with --{section}-{name.replace('_', '-')})")
    return value
