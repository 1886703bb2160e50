"""Stage-1 Luigi tasks: thin shells over the pure functions of `pipeline/`.

PrepareRaw -> RemapIds -> BuildSequences(shard) -> WriteTFRecords(shard) -> Preprocess.
With the local engine BuildSequences writes the shard's TFRecords too, from the samples it
holds, under WriteTFRecords' lock and with its manifest (the same bytes WriteTFRecords writes
from the parquet); WriteTFRecords then finds itself complete, and rewrites from the parquet
only when its outputs alone are missing or stale (e.g. `[preprocess] prebatch` changed).
Every task reads its settings from the config sections (pipeline.config), writes
its data files atomically, and writes its manifest (with the fingerprint of what
shaped it) last, after deleting the old one first (pipeline.tasks.base.ManifestTask).
Stage 1 never imports stage 2: `AllTasks` (pipeline.tasks.all) joins them.
The raw-input readers and the remap are imported by the tasks that run them, not here: they
import pandas, which the `luigi` command's process (scheduling, the shard tasks) never needs,
and RemapIds starts the pickle sandbox before importing it (docs/performance.md, "Stage 1").
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import luigi
import pyarrow.parquet as pq

from din_common.atomic import remove_stale_temporaries, write_json_atomic
from din_common.errors import InputError
from din_common.feature_spec import FORMAT_VERSION, SPLITS, FeatureSpec, SplitInfo
from pipeline.console import count, split_counts, task_line
from pipeline.raw.manifest import check_files, file_records
from pipeline.settings import GENERATED_SOURCES, Settings, missing_input_error
from pipeline.tasks.base import ManifestTask, write_parquet_atomic
from pipeline.tasks.shard_steps import build_sequences, shard_samples, write_sequences, write_tfrecords

if TYPE_CHECKING:
    import pandas as pd


USER_SOURCES = ("pickle", "parquet")  # the user's own raw files, read where they are


class PrepareRaw(ManifestTask):
    """Make raw/reviews.pkl and raw/meta.pkl from `[raw] source` (or check they exist)."""

    def settings(self) -> Settings:
        return Settings.current()

    def manifest_path(self) -> Path:
        return self.settings().raw_manifest

    def expected_fingerprint(self) -> str | None:
        return self.settings().raw_fingerprint()

    def data_files(self) -> list[Path]:
        settings = self.settings()
        return list((settings.source_inputs() if settings.source == "parquet" else settings.raw_pickles).values())

    def complete(self) -> bool:
        settings = self.settings()
        if settings.source in USER_SOURCES:  # the user's own files: present is current
            return all(path.is_file() for path in self.data_files()) and bool(self.data_files())
        if not super().complete():
            return False
        self.check_integrity()
        return True

    def check_integrity(self) -> None:
        """Raise if raw pickles the pipeline made differ from what it recorded (pipeline.raw.manifest)."""
        settings = self.settings()
        if settings.source in GENERATED_SOURCES and all(path.is_file() for path in self.data_files()):
            check_files(settings.raw_pickles, self.read_manifest().get("files"), settings.raw_manifest)

    def build(self) -> None:
        from pipeline.raw.parquet_files import FOLDERS as PARQUET_FOLDERS, parquet_files

        settings = self.settings()
        if settings.source == "pickle":
            for name, path in settings.raw_pickles.items():
                if not path.is_file():
                    raise missing_input_error(path, f"the {name} DataFrame pickle ([raw] source = pickle)")
        if settings.source == "parquet":
            for folder in PARQUET_FOLDERS:
                if not parquet_files(settings.raw_dir, folder):
                    raise missing_input_error(settings.raw_dir / folder / "*.parquet",
                                              f"the {folder} parquet files ([raw] source = parquet)")
        self._refuse_to_overwrite_user_files(settings)
        self.invalidate()
        # Claim the pickles before writing them: if this run is killed half-way, the next
        # one must still know the pipeline made them (and may replace them).
        write_json_atomic(self.manifest_path(), {"fingerprint": None, "source": settings.source,
                                                 "state": "writing"})
        self.report(f"preparing raw data from {settings.source}", 0)
        if settings.source == "synthetic":
            from pipeline.raw.synthetic import write_raw

            s = settings.synthetic
            details = write_raw(settings.raw_dir, s["users"], s["items"], s["categories"], s["seed"],
                                knobs=s["knobs"])
        else:
            inputs = settings.source_inputs()
            if not inputs or not all(p.is_file() for p in inputs.values()):
                raise missing_input_error(settings.raw_dir / ("remap.pkl" if settings.source == "remap-pickle"
                                                              else "reviews_*.json[.gz]"),
                                          f"the input of [raw] source = {settings.source}")
            if settings.source == "amazon-json":
                from pipeline.raw.amazon_json import convert_amazon_json

                details = convert_amazon_json(settings.raw_dir, settings.json_limits)
            else:
                from pipeline.raw.remap_pickle import convert_remap_pickle

                details = convert_remap_pickle(settings.raw_dir)
        self.write_manifest(source=settings.source, details=details, files=file_records(settings.raw_pickles))
        self.report("raw data ready", 100)

    def wrote(self) -> str:
        settings = self.settings()
        sizes = ", ".join(f"{p.name} {p.stat().st_size / 1e6:.1f} MB" for p in settings.raw_pickles.values())
        return f"raw data from [raw] source = {settings.source}: {sizes} -> {settings.raw_dir}"

    @staticmethod
    def _refuse_to_overwrite_user_files(settings: Settings) -> None:
        """Generated sources replace raw pickles only if a generated source made them."""
        existing = [p for p in settings.raw_pickles.values() if p.exists()]
        if not existing:
            return
        try:
            made_by = json.loads(settings.raw_manifest.read_text()).get("source")
        except (OSError, ValueError):
            made_by = None
        if made_by not in GENERATED_SOURCES:
            raise InputError(f"{existing[0]} exists and was not made by the pipeline; refusing to overwrite it "
                             f"with [raw] source = {settings.source}. To use it, run with --raw-source pickle; "
                             "otherwise choose another --paths-data-dir")


class RemapIds(ManifestTask):
    """Raw pickles -> remap/{items,categories,users,reviews}.parquet + stats.json."""

    def requires(self):
        return PrepareRaw()

    def manifest_path(self) -> Path:
        return Settings.current().remap_dir / "stats.json"

    def expected_fingerprint(self) -> str | None:
        return Settings.current().remap_fingerprint()

    def data_files(self) -> list[Path]:
        return list(Settings.current().remap_tables().values())

    def build(self) -> None:
        settings = Settings.current()
        self.invalidate()
        if settings.source == "parquet":
            self._build_from_parquet(settings)
            return
        # pandas-free up to the sandbox's start: the sandbox imports pandas here while its child starts.
        from pipeline.raw.pickles import load_raw_pickles

        self.report("loading raw pickles", 5)
        (reviews, review_info), (meta, meta_info) = load_raw_pickles(
            settings.raw_pickles["reviews"], settings.raw_pickles["meta"]
        )
        self.report(f"remapping ids ({settings.engine} engine)", 40)
        source = str(settings.raw_pickles["reviews"])
        if settings.engine == "dask":
            from pipeline.dask_engine.remap import remap_frames_on_cluster
            stats = remap_frames_on_cluster(settings, reviews, meta, source)
        else:
            stats = self._remap_locally(settings, reviews, meta, source)
        self.write_manifest(**stats, reviews_file=review_info, meta_file=meta_info)

    def _build_from_parquet(self, settings: Settings) -> None:
        """`[raw] source = parquet`: the dask engine reads each review file as a partition on a worker."""
        from pipeline.raw.parquet_files import parquet_files, read_meta, read_review_file

        files = parquet_files(settings.raw_dir, "reviews")
        meta, meta_info = read_meta(settings.raw_dir)
        source = str(settings.raw_dir / "reviews" / "*.parquet")
        self.report(f"remapping ids of {count(len(files), 'review file')} ({settings.engine} engine)", 10)
        if settings.engine == "dask":
            from pipeline.dask_engine.remap import remap_files_on_cluster
            stats = remap_files_on_cluster(settings, files, meta, source)
        else:
            import pandas as pd

            stats = self._remap_locally(settings, pd.concat([read_review_file(path) for path in files],
                                                            ignore_index=True), meta, source)
        self.write_manifest(**stats, reviews_file={"rows": stats["reviews_in"], "files": len(files)},
                            meta_file=meta_info)

    def _remap_locally(self, settings: Settings, reviews: pd.DataFrame, meta: pd.DataFrame, source: str) -> dict:
        from pipeline.remap import remap_ids_within, remap_time_limit

        result = remap_ids_within(remap_time_limit(len(reviews)), reviews, meta, source=source)
        del reviews, meta
        self.report("writing remap tables", 70)
        for name, path in settings.remap_tables().items():
            write_parquet_atomic(getattr(result, name), path)
        return result.stats

    def wrote(self) -> str:
        stats = self.read_manifest()
        return (f"{count(stats['reviews_kept'], 'review')} of {count(stats['n_users'], 'user')}, "
                f"{count(stats['n_items'], 'item')}, {count(stats['n_cats'], 'category', 'categories')} "
                f"-> {Settings.current().remap_dir}")


class ShardTask(ManifestTask):
    shard = luigi.IntParameter()

    def stage_dir(self, settings: Settings) -> Path:
        raise NotImplementedError

    suffix = ""

    def manifest_path(self) -> Path:
        settings = Settings.current()
        return settings.shard_manifest(self.stage_dir(settings), self.shard)

    def output_dir(self) -> Path:
        return self.stage_dir(Settings.current())

    def files(self) -> dict[str, Path]:
        settings = Settings.current()
        return settings.shard_files(self.stage_dir(settings), self.shard, self.suffix)

    def data_files(self) -> list[Path]:
        return list(self.files().values())

    def display_name(self) -> str:
        return f"{self.get_task_family()} {self.shard + 1}/{Settings.current().num_shards}"

    def build(self) -> None:
        settings = Settings.current()
        if settings.engine == "dask":
            # Every pending shard of the stage at once on the cluster (pipeline.dask_engine.shards).
            from pipeline.dask_engine.shards import run_shard_steps
            pending = [task for task in (type(self)(shard=shard) for shard in range(settings.num_shards))
                       if task.shard == self.shard or (not task.complete() and task.requires().complete())]
            for task in pending:
                task.invalidate()
            self.report(f"{self.get_task_family()} of {count(len(pending), 'shard')} on the dask cluster", 10)
            run_shard_steps(settings, type(self).step, [task.shard for task in pending], self.expected_fingerprint())
        else:
            self.invalidate()
            self.report(f"{self.get_task_family()} of shard {self.shard}", 10)
            self.build_locally(settings)

    def build_locally(self, settings: Settings) -> None:
        type(self).step(settings, self.shard, self.expected_fingerprint())

    def files_pattern(self) -> str:
        settings = Settings.current()
        return str(self.stage_dir(settings) / "{train,val,test}" / f"{settings.part_name(self.shard)}{self.suffix}")


class BuildSequences(ShardTask):
    """One shard's samples -> sequences/{train,val,test}/part-NNNNN.parquet."""
    suffix = ".parquet"
    step = staticmethod(build_sequences)

    def requires(self):
        return RemapIds()

    def stage_dir(self, settings: Settings) -> Path:
        return settings.sequences_dir

    def expected_fingerprint(self) -> str | None:
        return Settings.current().sequences_fingerprint()

    def build_locally(self, settings: Settings) -> None:
        # The samples are in memory now: writing the records from them saves WriteTFRecords
        # reading the parquet back (docs/performance.md, "Stage 1"). Sequences first, manifest
        # included, so a run killed while writing records leaves BuildSequences complete.
        tables = shard_samples(settings, self.shard)
        write_sequences(settings, self.shard, self.expected_fingerprint(), tables)
        self.report(f"writing the TFRecords of shard {self.shard}", 60)
        WriteTFRecords(shard=self.shard).write_from_samples(tables)

    def wrote(self) -> str:
        samples = self.read_manifest()["samples"]
        return f"{split_counts(samples)} samples -> {self.files_pattern()}"


class WriteTFRecords(ShardTask):
    """One shard's parquet samples -> tfrecords/{train,val,test}/part-NNNNN.tfrecord."""
    suffix = ".tfrecord"
    step = staticmethod(write_tfrecords)

    def requires(self):
        return BuildSequences(shard=self.shard)

    def stage_dir(self, settings: Settings) -> Path:
        return settings.tfrecords_dir

    def expected_fingerprint(self) -> str | None:
        return Settings.current().tfrecords_fingerprint()

    def write_from_samples(self, tables: dict) -> None:
        """What build() writes, from the shard's sample `tables` (BuildSequences holds them), under this task's lock."""
        with self.locked():
            if not self.complete():
                self.invalidate()
                write_tfrecords(Settings.current(), self.shard, self.expected_fingerprint(), tables)

    def found_complete(self) -> None:
        # Luigi scheduled this task before BuildSequences ran, and with the local engine BuildSequences
        # wrote its outputs (write_from_samples). With the dask engine the stage's first shard task
        # wrote them on the cluster, and says so itself.
        if Settings.current().engine == "local":
            task_line(self.display_name(), f"{self.wrote()}, written with the shard's sequences", 0.0)

    def wrote(self) -> str:
        splits = self.read_manifest()["splits"]
        records = sum(info["records"] for info in splits.values())
        samples = {split: info["samples"] for split, info in splits.items()}
        return f"{split_counts(samples)} samples in {count(records, 'record')} -> {self.files_pattern()}"


class Preprocess(ManifestTask):
    """All of stage 1; writes tfrecords/feature_spec.json, the contract with stage 2."""

    def requires(self):
        return [WriteTFRecords(shard=shard) for shard in range(Settings.current().num_shards)]

    def manifest_path(self) -> Path:
        return Settings.current().feature_spec

    def expected_fingerprint(self) -> str | None:
        return Settings.current().tfrecords_fingerprint()

    def complete(self) -> bool:
        # Luigi looks no further upstream than a complete task: check the raw data here too, so a
        # damaged raw pickle is reported even when everything built from it is up to date.
        PrepareRaw().check_integrity()
        return super().complete() and all(task.complete() for task in self.requires())

    def build(self) -> None:
        settings = Settings.current()
        self.invalidate()
        # Counts come from parquet footers, never from manifests: another run on the same
        # data dir may be replacing a manifest right now, while data files are always whole.
        splits = {split: {"samples": 0, "records": 0, "files": []} for split in SPLITS}
        for shard in range(settings.num_shards):
            sources = settings.shard_files(settings.sequences_dir, shard, ".parquet")
            for split, path in settings.shard_files(settings.tfrecords_dir, shard, ".tfrecord").items():
                samples = pq.read_metadata(sources[split]).num_rows
                splits[split]["samples"] += samples
                splits[split]["records"] += -(-samples // settings.prebatch)
                splits[split]["files"].append(str(path.relative_to(settings.tfrecords_dir)))
        n_rows = {name: pq.read_metadata(path).num_rows for name, path in settings.remap_tables().items()}
        self._remove_outputs_of_other_shard_counts(settings)
        self.written_spec = FeatureSpec(
            format_version=FORMAT_VERSION, fingerprint=self.expected_fingerprint(), maxlen=settings.maxlen,
            prebatch=settings.prebatch, num_shards=settings.num_shards, seed=settings.seed, n_items=n_rows["items"],
            n_cats=n_rows["categories"], n_users=n_rows["users"], directory=settings.tfrecords_dir,
            splits={split: SplitInfo(samples=info["samples"], records=info["records"], files=tuple(info["files"]))
                    for split, info in splits.items()})
        self.written_spec.write()

    def wrote(self) -> str:
        samples = {split: self.written_spec.samples(split) for split in self.written_spec.splits}
        return (f"stage 1 done: {split_counts(samples)} samples in {count(self.written_spec.num_shards, 'shard')} "
                f"-> {self.written_spec.path}")

    @staticmethod
    def _remove_outputs_of_other_shard_counts(settings: Settings) -> None:
        """Shard files beyond num_shards belong to an earlier setting; they would mislead a glob."""
        for stage_dir in (settings.sequences_dir, settings.tfrecords_dir):
            for path in stage_dir.glob("**/part-*"):
                index = path.name.split(".")[0][len("part-"):]  # the glob guarantees the prefix
                if index.isdigit() and int(index) >= settings.num_shards:
                    path.unlink()
            remove_stale_temporaries(stage_dir)
