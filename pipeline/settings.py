"""Stage-1 paths, settings and fingerprints, shared by the Luigi tasks.

One place that knows where each stage-1 output lives under `[paths] data_dir`
and what fingerprint it must carry to count as current. Fingerprints chain
raw -> remap -> sequences -> tfrecords and are computable before anything
runs, so Luigi's completeness checks see stale outputs as incomplete.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from din_common.errors import InputError
from din_common.feature_spec import FILE_NAME as FEATURE_SPEC_FILE, SPLITS
from pipeline import config
from pipeline.fingerprint import combine, file_digest
from pipeline.raw.amazon_json import JsonLimits

# Bump when a stage's output format or algorithm changes, so old outputs rebuild.
# sequences 2 / tfrecords 3: samples carry hist_gap (din_common.feature_spec.FORMAT_VERSION 2).
FORMAT_VERSIONS = {"remap": 1, "sequences": 2, "tfrecords": 3}
GENERATED_SOURCES = ("synthetic", "amazon-json", "remap-pickle")


@dataclass(frozen=True)
class Settings:
    """The validated `[raw]` and `[preprocess]` settings of this run."""
    data_dir: Path
    source: str
    synthetic: dict     # users, items, categories, seed; with source synthetic also knobs (the order knobs)
    maxlen: int
    num_shards: int
    prebatch: int
    seed: int
    json_limits: JsonLimits = JsonLimits()
    engine: str = "local"
    dask: dict = field(default_factory=dict)  # scheduler_address, workers, threads_per_worker, memory_limit

    @classmethod
    def current(cls) -> "Settings":
        """Every `[paths]`, `[raw]` and `[preprocess]` setting checked, before any task runs (exit 35)."""
        config.refuse_empty_flags()
        raw, prep = config.raw(), config.preprocess()
        for name in ("maxlen", "num_shards", "prebatch"):
            config.require_positive("preprocess", name, getattr(prep, name))
        config.require_in_range("preprocess", "seed", prep.seed, *config.SEED_RANGE)
        if raw.source not in config.RAW_SOURCES:
            raise InputError(f"[raw] source must be one of {', '.join(config.RAW_SOURCES)}, got {raw.source!r} "
                             "(set it in luigi.cfg or with --raw-source)")
        for name in ("json_max_line_bytes", "json_max_gzip_ratio"):
            config.require_positive("raw", name, getattr(raw, name))
        synthetic = {"users": raw.synthetic_users, "items": raw.synthetic_items,
                     "categories": raw.synthetic_categories, "seed": raw.synthetic_seed}
        if raw.source == "synthetic":
            from pipeline.raw.synthetic import ORDER_KNOB_SETTINGS, check_order_knobs, check_sizes, fingerprint_knobs
            check_sizes(raw.synthetic_users, raw.synthetic_items, raw.synthetic_categories, raw.synthetic_seed)
            synthetic["knobs"] = fingerprint_knobs(check_order_knobs({knob: getattr(raw, setting)
                                                                      for knob, (setting, _) in ORDER_KNOB_SETTINGS.items()}))
        if prep.engine not in config.ENGINES:
            raise InputError(f"[preprocess] engine must be one of {', '.join(config.ENGINES)}, got {prep.engine!r} "
                             "(set it in luigi.cfg or with --preprocess-engine)")
        return cls(
            engine=prep.engine, dask=_dask_settings() if prep.engine == "dask" else {},
            data_dir=checked_data_dir(Path(config.paths().data_dir)),
            source=raw.source,
            synthetic=synthetic,
            maxlen=prep.maxlen, num_shards=prep.num_shards, prebatch=prep.prebatch, seed=prep.seed,
            json_limits=JsonLimits(max_line_bytes=raw.json_max_line_bytes, max_gzip_ratio=raw.json_max_gzip_ratio),
        )

    # --- paths -----------------------------------------------------------
    @property
    def raw_dir(self) -> Path:
        return self.data_dir / "raw"

    @property
    def raw_pickles(self) -> dict[str, Path]:
        return {"reviews": self.raw_dir / "reviews.pkl", "meta": self.raw_dir / "meta.pkl"}

    @property
    def raw_manifest(self) -> Path:
        return self.raw_dir / "manifest.json"

    @property
    def remap_dir(self) -> Path:
        return self.data_dir / "remap"

    def remap_tables(self) -> dict[str, Path]:
        return {name: self.remap_dir / f"{name}.parquet" for name in ("items", "categories", "users", "reviews")}

    @property
    def sequences_dir(self) -> Path:
        return self.data_dir / "sequences"

    @property
    def tfrecords_dir(self) -> Path:
        return self.data_dir / "tfrecords"

    @property
    def feature_spec(self) -> Path:
        return self.tfrecords_dir / FEATURE_SPEC_FILE

    @staticmethod
    def part_name(shard: int) -> str:
        return f"part-{shard:05d}"

    def shard_files(self, stage_dir: Path, shard: int, suffix: str) -> dict[str, Path]:
        return {split: stage_dir / split / f"{self.part_name(shard)}{suffix}" for split in SPLITS}

    def shard_manifest(self, stage_dir: Path, shard: int) -> Path:
        return stage_dir / "_shards" / f"{self.part_name(shard)}.json"

    # --- fingerprints ----------------------------------------------------
    def source_inputs(self) -> dict[str, Path]:
        """The files the raw pickles come from, for sources that convert a file."""
        if self.source == "pickle":
            return dict(self.raw_pickles)
        if self.source == "remap-pickle":
            return {"remap": self.raw_dir / "remap.pkl"}
        if self.source == "parquet":
            from pipeline.raw.parquet_files import input_files
            return input_files(self.raw_dir)
        if self.source == "amazon-json":
            found = sorted(p for p in self.raw_dir.glob("*.json*") if p.name.startswith(("reviews_", "meta_")))
            return {p.name: p for p in found}
        return {}

    def raw_fingerprint(self) -> str | None:
        """What the raw pickles must be made of; None when a source file is missing."""
        if self.source == "synthetic":
            from pipeline.raw.synthetic import GENERATOR_VERSION
            return combine(source="synthetic", generator=GENERATOR_VERSION, **self.synthetic)
        inputs = self.source_inputs()
        if not inputs or not all(p.is_file() for p in inputs.values()):
            return None
        return combine(source=self.source, files={name: file_digest(p) for name, p in inputs.items()})

    def remap_fingerprint(self) -> str | None:
        raw = self.raw_fingerprint()
        return raw and combine(stage="remap", version=FORMAT_VERSIONS["remap"], raw=raw)

    def sequences_fingerprint(self) -> str | None:
        remap = self.remap_fingerprint()
        return remap and combine(stage="sequences", version=FORMAT_VERSIONS["sequences"], remap=remap,
                                 maxlen=self.maxlen, num_shards=self.num_shards, seed=self.seed)

    def tfrecords_fingerprint(self) -> str | None:
        sequences = self.sequences_fingerprint()
        return sequences and combine(stage="tfrecords", version=FORMAT_VERSIONS["tfrecords"],
                                     sequences=sequences, prebatch=self.prebatch)


def checked_data_dir(data_dir: Path) -> Path:
    """`[paths] data_dir`, refused with one line when it is a file or cannot be looked into.

    Whether it can be written is found out by the first write (the task lock, pipeline.tasks.base):
    a no-op run needs no write access.
    """
    try:
        if data_dir.exists() and not data_dir.is_dir():
            raise InputError(f"[paths] data_dir {data_dir} is a file: expected a directory for the pipeline's "
                             "data, or a path where one can be made (set it in luigi.cfg or with --paths-data-dir)")
        if data_dir.is_dir():
            os.listdir(data_dir)
    except PermissionError as error:
        raise InputError(f"[paths] data_dir {data_dir} cannot be opened ({error.strerror}: {error.filename}): "
                         "expected a directory this user may read and write (set it in luigi.cfg or with "
                         "--paths-data-dir)") from None
    return data_dir


MEMORY_LIMIT = re.compile(r"auto|0|[0-9]+(\.[0-9]+)? ?([kMGT]i?B|B)?", re.IGNORECASE)


def _dask_settings() -> dict:
    section = config.dask()
    for name in ("workers", "threads_per_worker"):
        config.require_positive("dask", name, getattr(section, name))
    if not MEMORY_LIMIT.fullmatch(section.memory_limit.strip()):
        raise InputError(f"[dask] memory_limit must be auto, 0 (no limit) or a size such as 8GB or 7.5GiB, got "
                         f"{section.memory_limit!r} (set it in luigi.cfg or with --dask-memory-limit)")
    return {"scheduler_address": section.scheduler_address.strip(), "workers": section.workers,
            "threads_per_worker": section.threads_per_worker, "memory_limit": section.memory_limit.strip()}


def missing_input_error(path: Path, what: str) -> InputError:
    return InputError(f"missing {path}: expected {what}")
