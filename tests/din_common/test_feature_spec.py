"""The feature spec: its JSON round trip, one clear line per missing key, and old sample layouts refused."""
import dataclasses
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


def spec_with_manifests(directory, shards=2, **manifest_changes) -> FeatureSpec:
    """A spec of `shards` shards as stage 1 writes it: the files, and a manifest per shard vouching for them."""
    (directory / "_shards").mkdir()
    splits = {}
    for index, split in enumerate(SPLITS):
        names = tuple(f"{split}/part-{shard:05d}.tfrecord" for shard in range(shards))
        for name in names:
            (directory / split).mkdir(exist_ok=True)
            (directory / name).write_bytes(b"x" * (index + 1))
        splits[split] = SplitInfo(samples=10 * shards, records=shards, files=names)
    for shard in range(shards):
        counts = {split: {"samples": 10, "records": 1, "bytes": index + 1} for index, split in enumerate(SPLITS)}
        manifest = {"fingerprint": "abc", "shard": shard, "splits": counts, "maxlen": 6, "prebatch": 64,
                    **manifest_changes}
        (directory / "_shards" / f"part-{shard:05d}.json").write_text(json.dumps(manifest))
    return written_spec(directory, splits=splits, num_shards=shards)


def edited(spec: FeatureSpec, edit) -> None:
    content = json.loads(spec.path.read_text())
    edit(content)
    spec.path.write_text(json.dumps(content))


def test_a_spec_that_matches_its_shard_manifests_is_read(tmp_path):
    spec = spec_with_manifests(tmp_path)
    assert FeatureSpec.read(spec.path) == spec
    assert len(spec.files("train")) == 2


@pytest.mark.parametrize("edit, message", [
    (lambda c: c.update(maxlen=5), r"feature_spec\.json: maxlen is 5 but stage 1 wrote the shards with maxlen 6 "),
    (lambda c: c.update(maxlen=0), r"feature_spec\.json: maxlen is 0, expected a positive integer; rm "),
    (lambda c: c.update(maxlen="40"), r"feature_spec\.json: maxlen is '40', expected a positive integer"),
    (lambda c: c.update(prebatch=32), r"feature_spec\.json: prebatch is 32 but stage 1 wrote the shards with "),
    (lambda c: c.update(n_items=0), r"feature_spec\.json: n_items is 0, expected a positive integer"),
    (lambda c: c.update(num_shards=1), r"feature_spec\.json: num_shards is 1 but stage 1 wrote 2 shards"),
    (lambda c: c["splits"]["train"]["files"].pop(), r"feature_spec\.json: splits\.train\.files leaves out "
                                                    r"train/part-00001\.tfrecord, but stage 1 wrote 2 train shards; rm "),
    (lambda c: c["splits"]["val"]["files"].append("val/part-00000.tfrecord"),
     r"feature_spec\.json: splits\.val\.files names a shard more than once"),
    (lambda c: c["splits"]["test"].update(samples=21), r"feature_spec\.json: splits\.test\.samples is 21 but stage 1 "
                                                        r"wrote 20 in those shards; rm "),
    (lambda c: c["splits"]["test"].update(records=3), r"splits\.test\.records is 3 but stage 1 wrote 2"),
    (lambda c: c["splits"]["test"].update(files="test/part-00000.tfrecord"),
     r"feature_spec\.json: split 'test' needs a sample count and a list of file names"),
])
def test_an_edited_spec_is_refused_against_the_shard_manifests(tmp_path, edit, message):
    spec = spec_with_manifests(tmp_path)
    edited(spec, edit)
    with pytest.raises(InputError, match=message) as error:
        FeatureSpec.read(spec.path)
    assert "\n" not in error.value.message and error.value.message.startswith(str(spec.path))


def outside_files(tmp_path):
    other = tmp_path / "other" / "tfrecords"
    other.mkdir(parents=True)
    (other / "x.tfrecord").write_bytes(b"x")
    inside = tmp_path / "data" / "tfrecords"
    inside.mkdir(parents=True)
    (inside / "train").mkdir()
    (inside / "train" / "link.tfrecord").symlink_to(other / "x.tfrecord")
    return inside, {"relative": "../../other/tfrecords/x.tfrecord", "absolute": str(other / "x.tfrecord"),
                    "symlink": "train/link.tfrecord"}


@pytest.mark.parametrize("kind", ["relative", "absolute", "symlink"])
def test_a_shard_outside_the_spec_directory_is_refused_naming_the_file_and_key(tmp_path, kind):
    inside, names = outside_files(tmp_path)
    spec = written_spec(inside, splits={"train": SplitInfo(samples=1, files=(names[kind],))})
    with pytest.raises(InputError) as error:
        FeatureSpec.read(spec.path)
    assert error.value.message.startswith(f"{spec.path}: splits.train.files[0] = {names[kind]!r} lies outside "
                                          f"{inside.resolve()}; a feature spec may name only shards inside")
    with pytest.raises(InputError, match="lies outside"):
        spec.files("train")


def test_the_content_fingerprint_follows_what_is_trained_on_and_nothing_else(tmp_path):
    spec = spec_with_manifests(tmp_path)
    assert FeatureSpec.read(spec.path).content_fingerprint() == spec.content_fingerprint()
    elsewhere = dataclasses.replace(spec, directory=tmp_path / "moved", seed=1, fingerprint="other")
    assert elsewhere.content_fingerprint() == spec.content_fingerprint()
    for change in ({"maxlen": 5}, {"n_items": 49},
                   {"splits": {**spec.splits, "train": dataclasses.replace(spec.splits["train"], samples=10)}},
                   {"splits": {**spec.splits, "train": dataclasses.replace(spec.splits["train"],
                                                                           files=spec.splits["train"].files[:1])}}):
        assert dataclasses.replace(spec, **change).content_fingerprint() != spec.content_fingerprint(), change


@pytest.mark.parametrize("key", ["n_items", "n_cats", "n_users"])
def test_vocabulary_sizes_other_than_the_remap_stats_are_refused(tmp_path, key):
    tfrecords = tmp_path / "tfrecords"
    tfrecords.mkdir()
    spec = spec_with_manifests(tfrecords)
    (tmp_path / "remap").mkdir()
    (tmp_path / "remap" / "stats.json").write_text(json.dumps({"n_items": 50, "n_cats": 5, "n_users": 20}))
    assert FeatureSpec.read(spec.path) == spec
    edited(spec, lambda content: content.update({key: content[key] * 2}))
    with pytest.raises(InputError) as error:
        FeatureSpec.read(spec.path)
    assert error.value.message == (f"{spec.path}: {key} is {2 * getattr(spec, key)} but {tmp_path / 'remap/stats.json'} "
                                   f"says {getattr(spec, key)}; rm {spec.path} and rerun `luigi --module "
                                   "pipeline Preprocess` to rewrite it")
