"""Digesting the raw pickles ahead of the first completeness check (pipeline.fingerprint, pipeline.cli.prefetch)."""
from __future__ import annotations

import hashlib

import luigi
import pytest

from pipeline import fingerprint
from pipeline.cli import prefetch


@pytest.fixture
def counted_digests(monkeypatch):
    """Counts the files file_digest reads (each read makes one blake2b object)."""
    monkeypatch.setattr(fingerprint, "_file_digest_cache", {})
    monkeypatch.setattr(fingerprint, "_prefetching", {})
    reads, real_blake2b = [], hashlib.blake2b

    def blake2b(*args, **kwargs):
        reads.append(1)
        return real_blake2b(*args, **kwargs)

    monkeypatch.setattr(fingerprint.hashlib, "blake2b", blake2b)
    return reads


def test_a_prefetched_file_is_read_once_and_digests_as_without(tmp_path, counted_digests):
    path = tmp_path / "reviews.pkl"
    path.write_bytes(b"x" * (3 << 20))
    expected = hashlib.blake2b(path.read_bytes(), digest_size=16).hexdigest()
    counted_digests.clear()

    fingerprint.prefetch_digests([path, tmp_path / "missing.pkl"])
    assert fingerprint.file_digest(path) == expected
    assert fingerprint.file_digest(path) == expected
    assert len(counted_digests) == 1


def test_a_file_changed_after_its_prefetch_is_digested_again(tmp_path, counted_digests):
    path = tmp_path / "meta.pkl"
    path.write_bytes(b"old")
    fingerprint.prefetch_digests([path])
    fingerprint.file_digest(path)
    path.write_bytes(b"new content")
    digest = fingerprint.file_digest(path)
    assert len(counted_digests) == 2
    assert digest == hashlib.blake2b(b"new content", digest_size=16).hexdigest()


@pytest.mark.parametrize("argv, expected", [
    (["--module", "pipeline", "Preprocess"], "from-config"),
    (["--module", "pipeline", "Preprocess", "--paths-data-dir", "/a"], "/a"),
    (["--module", "pipeline", "Preprocess", "--paths-data-dir=/b"], "/b"),
    (["--paths-data-dir", "/a", "--module", "pipeline", "Preprocess", "--paths-data-dir=/b"], "/b"),
])
def test_the_data_dir_is_read_as_luigi_reads_it(argv, expected, monkeypatch):
    settings = luigi.configuration.get_config()
    monkeypatch.setattr(settings, "get", lambda section, option, default=None: (
        "from-config" if (section, option) == ("paths", "data_dir") else default))
    assert prefetch.data_dir_of(argv) == expected
