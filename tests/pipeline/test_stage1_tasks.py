"""Stage 1 through Luigi on tiny synthetic data: outputs, no-op rerun, staleness, safety."""
import hashlib
import os

import luigi
import pyarrow.parquet as pq
import pytest

from din_common.errors import InputError
from din_common.feature_spec import FeatureSpec
from pipeline import settings as stage1_settings, tfrecord_io
from pipeline.settings import Settings
from pipeline.tasks import shard_steps, stage1
from pipeline.tasks.stage1 import Preprocess, PrepareRaw
from pipeline.tfrecord_io import SAMPLE_COLUMNS, iter_records, decode_prebatch, read_samples_tfrecord
from tests.helpers.luigi_config import TINY_SYNTHETIC, luigi_settings
from tests.helpers.output_digests import digests


def tree_state(root):
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in sorted(root.rglob("*")) if p.is_file()}


def build(**overrides):
    sections = {"raw": dict(TINY_SYNTHETIC), "preprocess": {"maxlen": "6", "num_shards": "3", "prebatch": "64"}}
    for section, values in overrides.items():
        sections.setdefault(section, {}).update(values)
    with luigi_settings(**sections):
        result = luigi.build([Preprocess()], local_scheduler=True, detailed_summary=True, log_level="WARNING")
        settings = Settings.current()
    return result, settings


@pytest.fixture()
def data_dir(tmp_path):
    with luigi_settings(paths={"data_dir": tmp_path / "data"}):
        yield tmp_path / "data"


def test_preprocess_writes_the_whole_tree_and_a_second_build_does_nothing(data_dir):
    result, settings = build()
    assert result.scheduling_succeeded and result.status.name == "SUCCESS"
    spec = FeatureSpec.read(settings.feature_spec)
    assert (spec.maxlen, spec.prebatch, spec.num_shards) == (6, 64, 3)
    for split in ("train", "val", "test"):
        files = spec.splits[split].files
        assert files == tuple(f"{split}/part-{s:05d}.tfrecord" for s in range(3))
        parquet_rows = sum(pq.read_metadata(data_dir / "sequences" / f.replace(".tfrecord", ".parquet")).num_rows
                           for f in files)
        assert spec.samples(split) == parquet_rows > 0
    # TFRecords hold exactly the parquet samples.
    shard = settings.shard_files(settings.tfrecords_dir, 1, ".tfrecord")["val"]
    assert read_samples_tfrecord(shard).equals(pq.read_table(str(shard).replace("tfrecords", "sequences")
                                                             .replace(".tfrecord", ".parquet")))
    assert not [p for p in data_dir.rglob("*") if ".tmp-" in p.name]

    before = tree_state(data_dir)
    again, _ = build()
    assert again.status.name == "SUCCESS"
    assert "Scheduled 1 tasks of which:\n* 1 complete ones were encountered" in again.summary_text
    assert tree_state(data_dir) == before


# sha256 of every TFRecord shard of build()'s default config (generator version 2, samples format 2), in path order, written out on
# the modern stack (numpy 2.4, pandas 3.1, pyarrow 26): the Ascend stack (numpy 1.19,
# pandas 1.3/1.4, pyarrow 12/21) must produce the very same bytes. The parquet files hold
# equal tables too, but their footers name the writing pyarrow version, so not their bytes.
TINY_TFRECORDS_SHA256 = "dd15218ecd9aecb7a8839267c3fd4e43ecc101991780bff5939bfbacda600d57"


def test_the_same_config_gives_the_same_tfrecord_bytes_on_every_stack(data_dir):
    result, settings = build()
    assert result.status.name == "SUCCESS"
    digest = hashlib.sha256()
    for path in sorted(settings.tfrecords_dir.rglob("*.tfrecord")):
        digest.update(path.read_bytes())
    assert digest.hexdigest() == TINY_TFRECORDS_SHA256


def test_changing_a_parameter_rebuilds_downstream_only(data_dir):
    build()
    remap_before = tree_state(data_dir / "remap")
    raw_before = tree_state(data_dir / "raw")
    old_spec = FeatureSpec.read(data_dir / "tfrecords" / "feature_spec.json")
    _, settings = build(preprocess={"maxlen": "3"})
    spec = FeatureSpec.read(settings.feature_spec)
    assert spec.maxlen == 3 and spec.fingerprint != old_spec.fingerprint
    assert tree_state(data_dir / "remap") == remap_before and tree_state(data_dir / "raw") == raw_before
    longest = max(len(h) for h in pq.read_table(data_dir / "sequences/train/part-00000.parquet")
                  .column("hist_item").to_pylist())
    assert longest == 3


def test_fewer_shards_remove_the_extra_shard_files(data_dir):
    build()
    build(preprocess={"num_shards": "2"})
    assert sorted(p.name for p in (data_dir / "tfrecords" / "train").iterdir()) == \
        ["part-00000.tfrecord", "part-00001.tfrecord"]
    assert sorted(p.name for p in (data_dir / "sequences" / "test").iterdir()) == \
        ["part-00000.parquet", "part-00001.parquet"]


def test_rebuild_is_byte_identical(data_dir, tmp_path):
    build()
    first = {p: p.read_bytes() for p in sorted(data_dir.rglob("*")) if p.suffix in (".parquet", ".tfrecord")}
    for stage in ("remap", "sequences", "tfrecords"):
        for p in (data_dir / stage).rglob("*.json"):
            os.remove(p)  # forget completeness: everything downstream of raw reruns
    build()
    assert {p: p.read_bytes() for p in first} == first


def sequences_read_back(monkeypatch) -> list:
    """The sequences/ parquet files stage 1 reads from now on (WriteTFRecords' from-parquet path)."""
    reads = []

    def recording_read_parquet(path, columns=None):
        if "sequences" in path.parts:
            reads.append(str(path.relative_to(path.parents[2])))
        return read_parquet(path, columns)

    read_parquet = shard_steps.read_parquet
    monkeypatch.setattr(shard_steps, "read_parquet", recording_read_parquet)
    return reads


def test_records_written_with_the_sequences_are_the_bytes_written_from_the_parquet(tmp_path, monkeypatch):
    """BuildSequences writes each shard's records from the samples it holds; WriteTFRecords, left to
    do it as it did before, reads them back from the parquet. Every output file is the same."""
    reads = sequences_read_back(monkeypatch)
    with luigi_settings(paths={"data_dir": tmp_path / "fused"}):
        assert build()[0].status.name == "SUCCESS"
    assert reads == []
    with monkeypatch.context() as before, luigi_settings(paths={"data_dir": tmp_path / "from-parquet"}):
        before.setattr(stage1.WriteTFRecords, "write_from_samples", lambda task, tables: None)
        assert build()[0].status.name == "SUCCESS"
    assert len(reads) == 3 * 3  # shards x splits
    assert digests(tmp_path / "fused") == digests(tmp_path / "from-parquet")
    assert any(name.endswith(".tfrecord") for name in digests(tmp_path / "fused"))


@pytest.mark.parametrize("change", ["a-record-file-deleted", "prebatch-changed"])
def test_records_alone_out_of_date_are_rewritten_from_the_parquet(data_dir, monkeypatch, change):
    _, settings = build()
    sequences_before = tree_state(data_dir / "sequences")
    deleted = settings.shard_files(settings.tfrecords_dir, 1, ".tfrecord")["train"]
    deleted_bytes = deleted.read_bytes()
    reads = sequences_read_back(monkeypatch)
    if change == "a-record-file-deleted":
        deleted.unlink()
        result, _ = build()
        assert sorted(reads) == [f"sequences/{split}/part-00001.parquet" for split in ("test", "train", "val")]
        assert deleted.read_bytes() == deleted_bytes
    else:
        result, _ = build(preprocess={"prebatch": "32"})
        assert len(reads) == 3 * 3
        assert FeatureSpec.read(settings.feature_spec).prebatch == 32
    assert result.status.name == "SUCCESS"
    assert tree_state(data_dir / "sequences") == sequences_before


def write_as_the_first_sample_format(monkeypatch):
    """Make stage 1 write what it wrote before hist_gap: old format versions, columns and features.

    Checked when hist_gap came in: build() then writes TFRecords byte-identical to those of the
    code before it (the sha256 that TINY_TFRECORDS_SHA256 was then), on all three stacks.
    """
    monkeypatch.setattr(stage1_settings, "FORMAT_VERSIONS", {"remap": 1, "sequences": 1, "tfrecords": 2})
    monkeypatch.setattr(tfrecord_io, "HISTORY_FIELDS", ("hist_item", "hist_cate"))
    monkeypatch.setattr(tfrecord_io, "SAMPLE_COLUMNS", tuple(c for c in SAMPLE_COLUMNS if c != "hist_gap"))
    monkeypatch.setattr(stage1, "FORMAT_VERSION", 1)


def test_outputs_of_the_format_before_hist_gap_are_rebuilt_not_misread(data_dir, monkeypatch):
    with monkeypatch.context() as old_format:
        write_as_the_first_sample_format(old_format)
        _, settings = build()
    parquet = settings.shard_files(settings.sequences_dir, 0, ".parquet")["train"]
    shard = settings.shard_files(settings.tfrecords_dir, 0, ".tfrecord")["train"]
    assert "hist_gap" not in pq.read_schema(parquet).names
    assert "hist_gap" not in decode_prebatch(next(iter_records(shard)))
    with pytest.raises(InputError, match="has format_version 1, expected 2 or later: its shards predate hist_gap"):
        FeatureSpec.read(settings.feature_spec)
    remap_before = tree_state(data_dir / "remap")

    result, settings = build()
    assert result.status.name == "SUCCESS"
    assert tree_state(data_dir / "remap") == remap_before  # its format did not change
    assert pq.read_schema(parquet).names == list(SAMPLE_COLUMNS)
    assert "hist_gap" in decode_prebatch(next(iter_records(shard)))
    assert read_samples_tfrecord(shard).equals(pq.read_table(parquet))
    spec = FeatureSpec.read(settings.feature_spec)
    assert spec.format_version == 2 and spec.fingerprint == settings.tfrecords_fingerprint()


def test_synthetic_source_never_overwrites_user_pickles(data_dir):
    raw = data_dir / "raw"
    raw.mkdir(parents=True)
    (raw / "reviews.pkl").write_bytes(b"the user's own data")
    result, _ = build()
    assert not result.scheduling_succeeded or result.status.name != "SUCCESS"
    assert (raw / "reviews.pkl").read_bytes() == b"the user's own data"
    assert not (data_dir / "remap").exists()


def test_missing_pickle_source_is_reported(data_dir):
    with luigi_settings(raw={"source": "pickle"}):
        task = PrepareRaw()
        assert not task.complete()
        with pytest.raises(Exception, match="missing .*reviews.pkl: expected the reviews DataFrame pickle"):
            task.run()


@pytest.mark.parametrize("name", ["maxlen", "num_shards", "prebatch"])
def test_non_positive_preprocess_settings_are_rejected(data_dir, name):
    with luigi_settings(preprocess={name: "0"}):
        with pytest.raises(Exception, match=rf"\[preprocess\] {name} must be a positive integer, got 0"):
            Settings.current()


def test_every_split_is_written_and_the_first_failing_split_names_the_error(tmp_path):
    paths = {split: tmp_path / f"{split}.txt" for split in ("train", "val", "test")}

    def write(split, path):
        path.write_text(split)
        if split != "train":
            raise InputError(f"{split} failed")
        return len(split)

    with pytest.raises(InputError, match="^val failed$"):
        shard_steps.for_each_split(write, paths)
    assert {split: path.read_text() for split, path in paths.items()} == {split: split for split in paths}
    assert shard_steps.for_each_split(lambda split, path: split.upper(), paths) == {
        "train": "TRAIN", "val": "VAL", "test": "TEST"}
