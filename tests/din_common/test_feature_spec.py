"""The feature spec: its JSON round trip, one clear line per missing key, and old sample layouts refused."""
import json

import pytest

from din_common.errors import InputError
from din_common.feature_spec import FILE_NAME, FORMAT_VERSION, REQUIRED_KEYS, SPLITS, FeatureSpec, SplitInfo


def written_spec(directory, **changes) -> FeatureSpec:
    splits = {split: SplitInfo(samples=10 * (i + 1), records=i + 1, files=(f"{split}/part-00000.tfrecord",))
              for i, split in enumerate(SPLITS)}
    fields = dict(format_version=FORMAT_VERSION, fingerprint="abc", maxlen=6, prebatch=64, num_shards=1, seed=7,
                  n_items=50, n_cats=5, n_users=20, splits=splits, directory=directory)
    spec = FeatureSpec(**{**fields, **changes})
    spec.write()
    return spec


def test_a_written_spec_reads_back_equal_and_its_json_has_sorted_keys(tmp_path):
    spec = written_spec(tmp_path)
    text = (tmp_path / FILE_NAME).read_text()
    assert FeatureSpec.read(tmp_path / FILE_NAME) == spec
    assert text == spec.to_json()
    assert list(json.loads(text)) == sorted(json.loads(text))
    assert json.loads(text)["splits"]["val"] == {"files": ["val/part-00000.tfrecord"], "records": 2, "samples": 20}
    assert "directory" not in json.loads(text)
    assert spec.samples("test") == 30


def test_a_hand_made_spec_may_leave_out_the_optional_keys(tmp_path):
    spec = written_spec(tmp_path, fingerprint=None, num_shards=None, seed=None)
    assert sorted(json.loads(spec.path.read_text())) == sorted(("format_version",) + REQUIRED_KEYS)
    assert FeatureSpec.read(spec.path) == spec


@pytest.mark.parametrize("key", REQUIRED_KEYS)
def test_every_missing_key_is_one_line_naming_the_file_and_the_key(tmp_path, key):
    content = json.loads(written_spec(tmp_path).path.read_text())
    del content[key]
    (tmp_path / FILE_NAME).write_text(json.dumps(content))
    with pytest.raises(InputError) as error:
        FeatureSpec.read(tmp_path / FILE_NAME)
    assert error.value.message == (f"{tmp_path / FILE_NAME}: feature spec lacks [{key!r}]; "
                                   "expected the keys of data/README.md")


def test_a_split_without_its_files_is_one_line(tmp_path):
    content = json.loads(written_spec(tmp_path).path.read_text())
    del content["splits"]["val"]["files"]
    (tmp_path / FILE_NAME).write_text(json.dumps(content))
    with pytest.raises(InputError, match=r"^.*feature_spec\.json: split 'val' lacks \['files'\]; expected the keys"):
        FeatureSpec.read(tmp_path / FILE_NAME)


@pytest.mark.parametrize("version, found", [(1, "has format_version 1"), (None, "has no format_version"),
                                            (True, "has format_version True")])
def test_a_spec_of_an_older_sample_layout_is_refused(tmp_path, version, found):
    content = json.loads(written_spec(tmp_path).path.read_text())
    content.pop("format_version")
    if version is not None:
        content["format_version"] = version
    (tmp_path / FILE_NAME).write_text(json.dumps(content))
    with pytest.raises(InputError) as error:
        FeatureSpec.read(tmp_path / FILE_NAME)
    assert error.value.message == (
        f"{tmp_path / FILE_NAME} {found}, expected 2 or later: its shards predate hist_gap (each history entry's "
        "time gap to the target); rerun `luigi --module pipeline Preprocess` to rebuild them")


def test_a_later_format_version_is_read(tmp_path):
    assert FeatureSpec.read(written_spec(tmp_path, format_version=FORMAT_VERSION + 1).path).format_version == 3


def test_no_file_and_no_json_are_one_line_each(tmp_path):
    with pytest.raises(InputError, match=r"feature_spec\.json: feature spec not found \(run the preprocessing first"):
        FeatureSpec.read(tmp_path / FILE_NAME)
    (tmp_path / FILE_NAME).write_text("{")
    with pytest.raises(InputError, match=r"feature_spec\.json: not valid JSON \("):
        FeatureSpec.read(tmp_path / FILE_NAME)


def test_files_are_absolute_and_must_exist(tmp_path):
    spec = written_spec(tmp_path)
    with pytest.raises(InputError, match=r"TFRecord shard\(s\) listed in feature_spec.json are missing"):
        spec.files("train")
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "part-00000.tfrecord").write_bytes(b"")
    assert spec.files("train") == [tmp_path / "train" / "part-00000.tfrecord"]
    with pytest.raises(InputError, match=r"feature spec has no split 'eval'; it has \['test', 'train', 'val'\]"):
        spec.files("eval")


def test_shards_of_another_stage1_run_are_refused(tmp_path):
    spec = written_spec(tmp_path)
    (tmp_path / "_shards").mkdir()
    (tmp_path / "_shards" / "part-00000.json").write_text(json.dumps({"fingerprint": "older", "splits": {}}))
    with pytest.raises(InputError, match=r"/(train|val|test)/part-00000\.tfrecord was written by another stage-1 run "
                                         r"\(fingerprint older, feature_spec\.json expects abc\)"):
        FeatureSpec.read(spec.path)


def test_a_spec_without_shards_carries_the_model_sizes_and_no_split():
    spec = FeatureSpec.without_shards(maxlen=5, n_items=40, n_cats=6)
    assert (spec.format_version, spec.maxlen, spec.n_items, spec.n_cats, spec.splits) == (FORMAT_VERSION, 5, 40, 6, {})
    assert FeatureSpec.from_json(spec.to_json(), FILE_NAME) == spec
    with pytest.raises(InputError, match="feature spec has no split 'train'; it has \\[\\]"):
        spec.samples("train")
