"""Bad input through Luigi: one clear message naming the file/column/row/setting, no task output."""
import gzip
import json
import os
import pickle
import shutil

import luigi
import numpy as np
import pandas as pd
import pytest

from din_common.errors import InputError, RunFailed
from din_common.feature_spec import FeatureSpec
from pipeline.cli.errors import unparsable_task_flag
from pipeline.tasks.stage1 import Preprocess
from tests.helpers.cli_capture import assert_one_clear_line, build_and_capture

GOOD_REVIEWS = {
    "reviewerID": ["A1", "A1", "A2", "A2", "A2"],
    "asin": ["B1", "B2", "B1", "B3", "B2"],
    "unixReviewTime": np.array([10, 20, 10, 20, 30], dtype=np.int64),
}
GOOD_META = {"asin": ["B1", "B2", "B3", "B4"],
             "categories": [[["E", "Cam"]], [["E", "TV"]], [["E", "Cam"]], [["E", "TV"]]]}


class Payload:
    """Unpickling this would create the marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def pickles(reviews=None, meta=None):
    def write(raw):
        for name, columns, default in (("reviews", reviews, GOOD_REVIEWS), ("meta", meta, GOOD_META)):
            frame = columns if isinstance(columns, pd.DataFrame) else pd.DataFrame({**default, **(columns or {})})
            frame.to_pickle(raw / f"{name}.pkl")
    return write


def reviews_without(column):
    return pickles(reviews=pd.DataFrame({k: v for k, v in GOOD_REVIEWS.items() if k != column}))


def raw_bytes(name, content):
    def write(raw):
        pickles()(raw)
        (raw / name).write_bytes(content(raw) if callable(content) else content)
    return write


def truncated(raw):
    pd.DataFrame(GOOD_REVIEWS).to_pickle(raw / "full.pkl")
    data = (raw / "full.pkl").read_bytes()
    (raw / "full.pkl").unlink()
    return data[: len(data) // 2]


def meta_categories(value):
    categories = list(GOOD_META["categories"])
    categories[1] = value
    return pickles(meta=pd.DataFrame({"asin": GOOD_META["asin"], "categories": pd.Series(categories, dtype=object)}))


def amazon_json(review_lines, meta_lines, gz=False):
    def write(raw):
        opener = gzip.open if gz else open
        suffix = ".json.gz" if gz else ".json"
        with opener(raw / f"reviews_Test{suffix}", "wt") as handle:
            handle.write("\n".join(review_lines) + "\n")
        with opener(raw / f"meta_Test{suffix}", "wt") as handle:
            handle.write("\n".join(meta_lines) + "\n")
    return write


GOOD_REVIEW_LINES = [json.dumps({"reviewerID": r, "asin": a, "unixReviewTime": int(t)})
                     for r, a, t in zip(*GOOD_REVIEWS.values())]
GOOD_META_LINES = [repr({"asin": a, "categories": c}) for a, c in zip(*GOOD_META.values())]


def bad_gzip(raw):
    amazon_json(GOOD_REVIEW_LINES, GOOD_META_LINES, gz=True)(raw)
    path = raw / "reviews_Test.json.gz"
    data = path.read_bytes()
    path.write_bytes(data[:20] + b"\x00garbage" + data[28:])


def remap_pickle_out_of_range(raw):
    reviews = pd.DataFrame({"reviewerID": [0, 0, 1], "asin": [0, 5, 1], "unixReviewTime": [1, 2, 3]})
    with open(raw / "remap.pkl", "wb") as handle:
        pickle.dump(reviews, handle)
        pickle.dump(np.array([0, 1]), handle)
        pickle.dump((2, 2, 2, 3), handle)
        pickle.dump((["B1", "B2"], ["Cam", "TV"], ["A1", "A2"]), handle)


# (id, raw source, how to make data/raw, config overrides, expected message regex)
CASES = [
    ("missing-reviews", "pickle", lambda raw: None, {}, r"missing .*raw/reviews\.pkl: expected the reviews DataFrame"),
    ("missing-meta", "pickle", lambda raw: pd.DataFrame(GOOD_REVIEWS).to_pickle(raw / "reviews.pkl"), {},
     r"missing .*raw/meta\.pkl: expected the meta DataFrame"),
    ("not-a-pickle", "pickle", raw_bytes("reviews.pkl", b"reviewerID,asin\nA1,B1\n"), {}, r"reviews\.pkl.*not a pickle"),
    ("truncated-pickle", "pickle", raw_bytes("reviews.pkl", truncated), {}, r"reviews\.pkl.*truncated"),
    ("malicious-pickle", "pickle", raw_bytes("reviews.pkl", lambda raw: pickle.dumps(Payload(raw / "PWNED"))), {},
     r"refusing to load .*reviews\.pkl: it asks for (os|posix)\.system"),
    ("no-reviewerID", "pickle", reviews_without("reviewerID"), {}, r"reviews\.pkl.*reviewerID"),
    ("no-asin", "pickle", reviews_without("asin"), {}, r"reviews\.pkl.*asin"),
    ("no-unixReviewTime", "pickle", reviews_without("unixReviewTime"), {}, r"reviews\.pkl.*unixReviewTime"),
    ("string-timestamps", "pickle", pickles(reviews={"unixReviewTime": ["10", "20", "10", "20", "30"]}), {},
     r"reviews\.pkl column unixReviewTime .*expected .*integer"),
    ("float-ids", "pickle", pickles(reviews={"reviewerID": [1.0, 1.0, 2.0, 2.0, 2.0]}), {},
     r"reviews\.pkl column reviewerID .*expected .*str"),
    ("nan-id", "pickle", pickles(reviews={"asin": ["B1", None, "B1", "B3", "B2"]}), {},
     r"reviews\.pkl column asin .*row 1"),
    ("nan-timestamp", "pickle", pickles(reviews={"unixReviewTime": [10.0, np.nan, 10.0, 20.0, 30.0]}), {},
     r"reviews\.pkl column unixReviewTime"),
    ("empty-reviews", "pickle", pickles(reviews=pd.DataFrame({k: pd.Series([], dtype=pd.Series(v).dtype)
                                                              for k, v in GOOD_REVIEWS.items()})), {},
     r"reviews\.pkl has no rows: expected at least one row"),
    ("no-user-with-2-reviews", "pickle", pickles(reviews={"reviewerID": ["A1", "A2", "A3", "A4", "A5"]}), {},
     r"no user has 2 or more reviews"),
    ("every-asin-unknown", "pickle", pickles(meta={"asin": ["X1", "X2", "X3", "X4"]}), {},
     r"none of the 5 reviews has an asin that appears in meta"),
    ("categories-empty", "pickle", meta_categories([]), {}, r"meta\.pkl column categories row 1 .*empty list"),
    ("categories-not-list", "pickle", meta_categories(7), {}, r"meta\.pkl column categories row 1 .*not a list"),
    ("categories-string", "pickle", meta_categories("Cameras"), {}, r"meta\.pkl column categories row 1 .*plain string"),
    ("meta-no-categories", "pickle", pickles(meta=pd.DataFrame({"asin": GOOD_META["asin"]})), {},
     r"meta\.pkl.*categories"),
    ("json-malformed-line", "amazon-json", amazon_json(GOOD_REVIEW_LINES[:2] + ["{not json"], GOOD_META_LINES), {},
     r"reviews_Test\.json line 3"),
    ("json-bad-gzip", "amazon-json", bad_gzip, {}, r"reviews_Test\.json\.gz"),
    ("json-missing", "amazon-json", lambda raw: None, {}, r"missing .*reviews_\*\.json"),
    ("remap-pickle-bad-id", "remap-pickle", remap_pickle_out_of_range, {}, r"remap\.pkl.*asin"),
    ("maxlen-zero", "synthetic", lambda raw: None, {"maxlen": "0"}, r"\[preprocess\] maxlen must be a positive integer, got 0"),
    ("num-shards-negative", "synthetic", lambda raw: None, {"num_shards": "-1"},
     r"\[preprocess\] num_shards must be a positive integer, got -1"),
    ("prebatch-zero", "synthetic", lambda raw: None, {"prebatch": "0"},
     r"\[preprocess\] prebatch must be a positive integer, got 0"),
]


@pytest.mark.parametrize("case_id, source, make_raw, preprocess, message", CASES, ids=[c[0] for c in CASES])
def test_bad_input_gives_one_clear_message_and_no_output(tmp_path, case_id, source, make_raw, preprocess, message):
    data_dir = tmp_path / "data"
    raw = data_dir / "raw"
    raw.mkdir(parents=True)
    make_raw(raw)
    before = sorted(p.name for p in raw.iterdir())
    ok, lines = build_and_capture(Preprocess(), paths={"data_dir": data_dir},
                                  raw={"source": source, "synthetic_users": 50, "synthetic_items": 60,
                                       "synthetic_categories": 5},
                                  preprocess=preprocess)
    assert not ok
    assert_one_clear_line(lines, message)
    for stage in ("remap", "sequences", "tfrecords"):
        assert not (data_dir / stage).exists() or not any((data_dir / stage).rglob("*.*"))
    leftovers = [p.name for p in raw.iterdir() if p.name not in before]
    assert all(name == "manifest.json" for name in leftovers) or not leftovers, leftovers
    assert not (raw / "PWNED").exists()


TINY = {"raw": {"synthetic_users": 60, "synthetic_items": 80, "synthetic_categories": 5},
        "preprocess": {"num_shards": 2, "maxlen": 4, "prebatch": 32}}


@pytest.fixture()
def stage1_done(tmp_path):
    data_dir = tmp_path / "data"
    ok, lines = build_and_capture(Preprocess(), paths={"data_dir": data_dir}, **TINY)
    assert ok, lines
    return data_dir


@pytest.mark.parametrize("setting, value, message", [
    ("batch_size", "0", r"\[train\] batch_size must be a positive integer, got 0"),
    ("device", "tpu", r"\[train\] device must be one of .*got 'tpu'"),
    ("precision", "fp8", r"\[train\] precision must be one of .*got 'fp8'"),
    ("activation", "relu", r"\[train\] activation must be one of .*got 'relu'"),
    ("learning_rate", "-1", r"\[train\] learning_rate must be a positive number"),
])
def test_bad_training_settings_are_one_clear_line(stage1_done, setting, value, message):
    from pipeline.tasks.stage2 import TrainDIN
    ok, lines = build_and_capture(TrainDIN(), paths={"data_dir": stage1_done}, train={setting: value}, **TINY)
    assert not ok
    assert_one_clear_line(lines, message)
    assert not (stage1_done / "runs").exists()


def test_raw_source_typo_is_one_clear_line(tmp_path):
    ok, lines = build_and_capture(Preprocess(), paths={"data_dir": tmp_path / "data"}, raw={"source": "csv"})
    assert not ok
    assert_one_clear_line(lines, r"\[raw\] source must be one of synthetic, pickle, amazon-json, remap-pickle, parquet, got 'csv'")


class StopsInRun(luigi.Task):
    def run(self):
        raise RunFailed("training diverged: loss is nan at epoch 2 step 5; last good checkpoint kept at ckpt-1")


class StopsInComplete(luigi.Task):
    def complete(self):
        raise RunFailed("NPU rank 1 of 2 failed (exit code 1); the other ranks were stopped")


@pytest.mark.parametrize("task, message", [
    (StopsInRun(), r"^training diverged: loss is nan at epoch 2 step 5; last good checkpoint kept at ckpt-1$"),
    (StopsInComplete(), r"^NPU rank 1 of 2 failed \(exit code 1\); the other ranks were stopped$"),
])
def test_a_failed_run_is_one_clear_line_too(task, message):
    ok, lines = build_and_capture(task)
    assert not ok
    assert_one_clear_line(lines, message)


def test_shards_of_an_older_run_are_refused_by_the_reader_and_rebuilt_by_luigi(stage1_done, tmp_path):
    old = tmp_path / "old-tfrecords"
    shutil.copytree(stage1_done / "tfrecords", old)
    newer = {**TINY, "preprocess": {**TINY["preprocess"], "maxlen": 3}}
    ok, lines = build_and_capture(Preprocess(), paths={"data_dir": stage1_done}, **newer)
    assert ok, lines
    for part in ("train/part-00001.tfrecord", "_shards/part-00001.json"):
        shutil.copy(old / part, stage1_done / "tfrecords" / part)
    with pytest.raises(InputError, match=r"/part-00001\.tfrecord was written by another stage-1 run"):
        FeatureSpec.read(stage1_done / "tfrecords" / "feature_spec.json")
    # Through Luigi the stale shard task is incomplete, so it is simply rebuilt.
    ok, lines = build_and_capture(Preprocess(), paths={"data_dir": stage1_done}, **newer)
    assert ok, lines
    assert FeatureSpec.read(stage1_done / "tfrecords" / "feature_spec.json").maxlen == 3


def test_a_cut_short_shard_is_named(stage1_done):
    shard = stage1_done / "tfrecords" / "val" / "part-00000.tfrecord"
    shard.write_bytes(shard.read_bytes()[:-7])
    with pytest.raises(InputError, match=r"val/part-00000\.tfrecord has \d+ bytes but stage 1 wrote \d+"):
        FeatureSpec.read(stage1_done / "tfrecords" / "feature_spec.json")


@pytest.mark.parametrize("argv, flag", [
    (["--module", "pipeline", "BuildSequences", "--shard", "abc"], "--shard"),
    (["--module", "pipeline", "BuildSequences", "--shard=abc"], "--shard"),
    (["--module", "pipeline", "BuildSequences", "--BuildSequences-shard", "1.5"], "--BuildSequences-shard"),
    (["--module", "pipeline", "BuildSequences", "--shard", "3"], None),
    (["--module", "pipeline", "Preprocess", "--preprocess-maxlen", "abc"], None),  # a setting, not a task parameter
])
def test_the_task_flag_luigi_cannot_parse_is_found_from_the_command_line(argv, flag):
    assert unparsable_task_flag(argv) == flag
