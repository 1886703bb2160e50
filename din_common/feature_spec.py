"""The feature spec: what stage 1 wrote into `tfrecords/` and stage 2 reads, as one typed value.

`tfrecords/feature_spec.json` is the contract between the stages (its keys: data/README.md,
"feature_spec.json"). This module is the one definition of it: the splits, the fields of
each sample, the sample layout's format version, the shard files and counts of each split.
Stage 1 builds a `FeatureSpec` and `write`s it; stage 2 `read`s it back, which checks the
keys, the format version and each shard's stage-1 manifest, and says what is wrong in one
`InputError` line. numpy-free and TF-free, so both stages import it cheaply.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Dict, Optional, Tuple

from din_common.atomic import write_json_atomic
from din_common.errors import InputError

FILE_NAME = "feature_spec.json"
SPLITS = ("train", "val", "test")
# Order of the features inside each TFRecord Example. Fixed so equal samples give equal bytes.
PER_SAMPLE_FIELDS = ("hist_len", "target_item", "target_cate", "user_id", "label")
HISTORY_FIELDS = ("hist_item", "hist_cate", "hist_gap")
# What the reader hands the model for each sample.
FEATURE_NAMES = ("hist_item", "hist_cate", "hist_gap", "target_item", "target_cate", "user_id")
# The sample layout (these fields) that `format_version` names. 2: histories carry hist_gap.
# Stage 2 reads this version and later ones, and refuses shards of an older layout.
FORMAT_VERSION = 2
# Keys every spec has; a hand-made one may leave out the others (fingerprint, num_shards, seed).
REQUIRED_KEYS = ("maxlen", "prebatch", "n_items", "n_cats", "n_users", "splits")
OPTIONAL_KEYS = ("fingerprint", "num_shards", "seed")
SPLIT_KEYS = ("samples", "files")
# Sizes that must be positive integers: a 0 or a string here would surface as a TensorFlow error much later.
POSITIVE_KEYS = ("maxlen", "prebatch", "n_items", "n_cats", "n_users")
# What stage 1 records per shard (tfrecords/_shards/part-N.json) and the spec must repeat.
SHARD_LAYOUT_KEYS = ("maxlen", "prebatch")
# The vocabulary sizes, and where stage 1 counted them (relative to the data dir holding tfrecords/).
SIZE_KEYS = ("n_items", "n_cats", "n_users")
REMAP_STATS = Path("remap") / "stats.json"


def rewrite_advice(path) -> str:
    """How to get back the spec stage 1 wrote: Preprocess rewrites a removed one from the shards' counts."""
    return f"rm {path} and rerun `luigi --module pipeline Preprocess` to rewrite it"



@dataclasses.dataclass(frozen=True)
class SplitInfo:
    """One split: its sample and record counts and its shard files (relative to the spec's directory)."""
    samples: int
    files: Tuple[str, ...]
    records: Optional[int] = None

    def to_dict(self) -> dict:
        content = {"samples": self.samples, "records": self.records, "files": list(self.files)}
        return {key: value for key, value in content.items() if value is not None}


@dataclasses.dataclass(frozen=True)
class FeatureSpec:
    """The contents of feature_spec.json, and `directory`, where it lies (never written into it)."""
    format_version: int
    maxlen: int
    prebatch: int
    n_items: int
    n_cats: int
    n_users: int
    splits: Dict[str, SplitInfo]
    directory: Path
    fingerprint: Optional[str] = None
    num_shards: Optional[int] = None
    seed: Optional[int] = None

    # --- to and from JSON --------------------------------------------------------------

    @classmethod
    def read(cls, path) -> "FeatureSpec":
        """The spec at `path`, checked: its keys, its format version, and its shards against their manifests."""
        path = Path(path)
        if not path.is_file():
            raise InputError(f"{path}: feature spec not found (run the preprocessing first: Preprocess task)")
        spec = cls.from_json(path.read_text(), path)
        spec.check_paths()
        spec.check_shards()
        return spec

    @classmethod
    def from_json(cls, text: str, source) -> "FeatureSpec":
        """The spec in `text`, read from the file `source` (its directory holds the shards)."""
        try:
            content = json.loads(text)
        except json.JSONDecodeError as error:
            raise InputError(f"{source}: not valid JSON ({error})") from None
        if not isinstance(content, dict):
            raise InputError(f"{source}: expected a JSON object with the keys of data/README.md")
        return cls.from_dict(content, source, Path(source).parent)

    @classmethod
    def from_dict(cls, content: dict, source, directory) -> "FeatureSpec":
        """The spec of parsed JSON `content` (`source` names it in errors; `directory` holds the shards)."""
        missing = [key for key in REQUIRED_KEYS if key not in content]
        if missing:
            raise InputError(f"{source}: feature spec lacks {missing}; expected the keys of data/README.md")
        check_format_version(content.get("format_version"), source)
        advice = rewrite_advice(source)
        bad = [key for key in POSITIVE_KEYS if not _is_count(content[key]) or content[key] < 1]
        if bad:
            raise InputError(f"{source}: {bad[0]} is {content[bad[0]]!r}, expected a positive integer; {advice}")
        if not isinstance(content["splits"], dict):
            raise InputError(f"{source}: splits must be an object of train/val/test; {advice}")
        splits = {}
        for split, info in content["splits"].items():
            lacking = [key for key in SPLIT_KEYS if key not in info]
            if lacking:
                raise InputError(f"{source}: split {split!r} lacks {lacking}; expected the keys of data/README.md")
            if not _is_count(info["samples"]) or not isinstance(info["files"], list) or \
                    not all(isinstance(name, str) for name in info["files"]):
                raise InputError(f"{source}: split {split!r} needs a sample count and a list of file names; {advice}")
            splits[split] = SplitInfo(samples=info["samples"], files=tuple(info["files"]), records=info.get("records"))
        return cls(format_version=content["format_version"], splits=splits, directory=Path(directory),
                   **{key: content[key] for key in REQUIRED_KEYS if key != "splits"},
                   **{key: content.get(key) for key in OPTIONAL_KEYS})

    @classmethod
    def without_shards(cls, *, maxlen: int, n_items: int, n_cats: int, n_users: int = 1) -> "FeatureSpec":
        """A spec of the sizes a model is built for and no shard (a model built without data: npu_check)."""
        return cls(format_version=FORMAT_VERSION, maxlen=maxlen, prebatch=1, n_items=n_items, n_cats=n_cats,
                   n_users=n_users, splits={}, directory=Path("."))

    def to_dict(self) -> dict:
        """The JSON content: every field but `directory`; optional ones only when set."""
        content = {field.name: getattr(self, field.name) for field in dataclasses.fields(self)
                   if field.name not in ("directory", "splits")}
        content["splits"] = {split: info.to_dict() for split, info in self.splits.items()}
        return {key: value for key, value in content.items() if value is not None or key not in OPTIONAL_KEYS}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @property
    def path(self) -> Path:
        return self.directory / FILE_NAME

    def write(self) -> None:
        """Write `directory/feature_spec.json` atomically (keys sorted: equal specs give equal bytes)."""
        write_json_atomic(self.path, self.to_dict())

    # --- what stage 2 asks -------------------------------------------------------------

    def samples(self, split: str) -> int:
        return int(self._split(split).samples)

    def content_fingerprint(self) -> str:
        """A hash of what a model trained on this spec sees: the sizes and each split's files and counts.

        Part of the run id (din_model.params.run_id), so a spec edited by hand never trains under
        the id of the one stage 1 wrote. The directory is left out: a moved data dir keeps its runs.
        """
        content = self.to_dict()
        identity = {key: content[key] for key in POSITIVE_KEYS + ("splits",)}
        return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]

    def files(self, split: str) -> list:
        """Absolute shard paths of `split`; every one must exist and lie inside the spec's directory."""
        self.check_paths()
        files = [self.directory / name for name in self._split(split).files]
        missing = [str(path) for path in files if not path.is_file()]
        if missing:
            raise InputError(f"TFRecord shard(s) listed in feature_spec.json are missing: {missing[:3]}")
        if not files:
            raise InputError(f"feature spec lists no files for split {split!r}")
        return files

    def _split(self, split: str) -> SplitInfo:
        if split not in self.splits:
            raise InputError(f"feature spec has no split {split!r}; it has {sorted(self.splits)}")
        return self.splits[split]

    def check_paths(self) -> None:
        """Every shard must lie inside the spec's directory (tfrecords/), symlinks resolved."""
        inside = self.directory.resolve()
        for split, info in self.splits.items():
            for index, name in enumerate(info.files):
                resolved = (self.directory / name).resolve()
                if Path(name).is_absolute() or inside not in resolved.parents:
                    raise self._edited(f"splits.{split}.files[{index}] = {name!r} lies outside {inside}; a feature "
                                       "spec may name only shards inside its own directory")

    def check_shards(self) -> None:
        """Each shard's stage-1 manifest (tfrecords/_shards/part-N.json) must vouch for the spec's files.

        Catches shards of an older stage-1 run next to a newer feature_spec.json (or the
        reverse): a different fingerprint, or a file whose size is not the one written.
        The spec must also list every shard of its run once, with the counts, maxlen and prebatch
        the manifests record, and the vocabulary sizes of remap/stats.json.
        Data dirs without stage-1 manifests (hand-made shards) are taken as they are.
        """
        manifests = self.directory / "_shards"
        if not manifests.is_dir():
            return
        for split, info in self.splits.items():
            for name in info.files:
                path = self.directory / name
                manifest_path = manifests / (Path(name).stem + ".json")
                try:
                    manifest = json.loads(manifest_path.read_text())
                except (OSError, json.JSONDecodeError):
                    raise InputError(f"{manifest_path}: missing or unreadable, so {path} cannot be matched to "
                                     "feature_spec.json; rerun `luigi --module pipeline Preprocess`") from None
                written = manifest.get("splits", {}).get(split, {}).get("bytes")
                if manifest.get("fingerprint") != self.fingerprint:
                    raise InputError(f"{path} was written by another stage-1 run (fingerprint "
                                     f"{manifest.get('fingerprint')}, feature_spec.json expects {self.fingerprint}); "
                                     "rerun `luigi --module pipeline Preprocess`")
                if written is not None and path.is_file() and path.stat().st_size != written:
                    raise InputError(f"{path} has {path.stat().st_size} bytes but stage 1 wrote {written}: the shard "
                                     "was replaced or cut short; rerun `luigi --module pipeline Preprocess`")
        self._check_against_manifests(self._manifests_of_this_run(manifests))
        self._check_sizes_against_remap()

    def _manifests_of_this_run(self, manifests: Path) -> Dict[str, dict]:
        """The shard manifests (by shard name, part-N) that carry this spec's fingerprint."""
        found = {}
        for path in sorted(manifests.glob("part-*.json")):
            try:
                manifest = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError):
                continue  # a file the spec lists is reported by name in check_shards' loop
            if isinstance(manifest, dict) and manifest.get("fingerprint") == self.fingerprint:
                found[path.stem] = manifest
        return found

    def _check_against_manifests(self, manifests: Dict[str, dict]) -> None:
        """The spec must list each shard stage 1 wrote once, with the counts and layout stage 1 recorded."""
        for key in SHARD_LAYOUT_KEYS:
            recorded = {manifest[key] for manifest in manifests.values() if key in manifest}
            if recorded and recorded != {getattr(self, key)}:
                raise self._edited(f"{key} is {getattr(self, key)!r} but stage 1 wrote the shards with {key} "
                                   f"{sorted(recorded)[0]} ({self.directory / '_shards'})")
        if self.num_shards is not None and manifests and self.num_shards != len(manifests):
            raise self._edited(f"num_shards is {self.num_shards!r} but stage 1 wrote {len(manifests)} shards "
                               f"({self.directory / '_shards'})")
        for split, info in self.splits.items():
            listed = [Path(name).stem for name in info.files]
            unlisted = sorted(set(manifests) - set(listed))
            if unlisted or len(set(listed)) != len(listed):
                problem = (f"leaves out {split}/{unlisted[0]}.tfrecord" if unlisted
                           else "names a shard more than once")
                raise self._edited(f"splits.{split}.files {problem}, but stage 1 wrote {len(manifests)} {split} shards")
            for key in ("samples", "records"):
                counts = [manifests[name].get("splits", {}).get(split, {}).get(key) for name in listed
                          if name in manifests]
                claimed = getattr(info, key)
                if claimed is not None and counts and None not in counts and sum(counts) != claimed:
                    raise self._edited(f"splits.{split}.{key} is {claimed!r} but stage 1 wrote {sum(counts)} "
                                       "in those shards")

    def _check_sizes_against_remap(self) -> None:
        """The vocabulary sizes must be remap/stats.json's (next to tfrecords/ in a stage-1 data dir): a
        larger n_items only wastes memory, a smaller one fails deep in TensorFlow on the first large id."""
        path = self.directory.parent / REMAP_STATS
        try:
            stats = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            return
        for key in SIZE_KEYS:
            if isinstance(stats, dict) and key in stats and stats[key] != getattr(self, key):
                raise self._edited(f"{key} is {getattr(self, key)!r} but {path} says {stats[key]!r}")

    def _edited(self, problem: str) -> InputError:
        """The error for a spec that disagrees with what stage 1 wrote: the problem, and how to undo the edit."""
        return InputError(f"{self.path}: {problem}; {rewrite_advice(self.path)}")


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def check_format_version(version, source) -> None:
    """Shards of an older sample layout lack features the reader parses: refuse them up front."""
    if not isinstance(version, int) or isinstance(version, bool) or version < FORMAT_VERSION:
        found = "has no format_version" if version is None else f"has format_version {version!r}"
        raise InputError(f"{source} {found}, expected {FORMAT_VERSION} or later: its shards predate hist_gap "
                         "(each history entry's time gap to the target); rerun `luigi --module pipeline Preprocess` "
                         "to rebuild them")
