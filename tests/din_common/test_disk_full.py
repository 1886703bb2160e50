"""A full disk, from Python's or TensorFlow's writers, as one line naming what, where, the space needed and free."""
import errno
import os

import pytest

from din_common.disk_full import disk_full_error, is_disk_full, readable_size, reported_disk_full
from din_common.errors import InputError


class OpError(Exception):
    """Shaped like tf.errors.OpError: an error_code and TensorFlow's message with the C library's errno text."""
    error_code = 8

    def __init__(self, message):
        super().__init__(message)


@pytest.mark.parametrize("error, full", [
    (OSError(errno.ENOSPC, "No space left on device"), True),
    (OSError(errno.EDQUOT, "Disk quota exceeded"), True),
    (OSError(errno.EACCES, "Permission denied"), False),
    (OpError(f"ckpt-1_temp/part-00000-of-00001.data-00000-of-00001.tempstate1; {os.strerror(errno.ENOSPC)}"), True),
    (OpError("OOM when allocating tensor with shape[1000000,32]"), False),
    (RuntimeError(os.strerror(errno.ENOSPC)), False),  # neither an OSError nor TensorFlow's
])
def test_what_counts_as_a_full_disk(error, full):
    assert is_disk_full(error) is full


@pytest.mark.parametrize("size, text", [(0, "1 kB"), (1499, "1 kB"), (250_000, "250 kB"), (5_800_000, "5.8 MB"),
                                        (2_000_000_000, "2.0 GB")])
def test_readable_size(size, text):
    assert readable_size(size) == text


def test_the_line_names_what_where_the_space_needed_and_free(tmp_path):
    message = str(disk_full_error("the SavedModel", tmp_path / "not-yet", 420_000, rerun="rerun it"))
    assert message.startswith(f"no space left on the device while writing the SavedModel in {tmp_path / 'not-yet'}: "
                              "it needs about 420 kB there, ")
    assert message.endswith(" free; nothing was left half-written; free some space and rerun it")


def test_a_full_disk_runs_the_cleanup_and_becomes_an_input_error(tmp_path):
    left = tmp_path / "ckpt-1_temp"
    left.mkdir()
    with pytest.raises(InputError, match=r"^no space left on the device while writing the checkpoint of epoch 1 in "):
        with reported_disk_full("the checkpoint of epoch 1", tmp_path, 1000, cleanup=left.rmdir):
            raise OpError(f"{left}/part; {os.strerror(errno.ENOSPC)}")
    assert not left.exists()


def test_other_errors_pass_through_without_cleanup(tmp_path):
    with pytest.raises(OSError, match="Permission denied"):
        with reported_disk_full("x", tmp_path, cleanup=lambda: pytest.fail("cleaned up after another error")):
            raise OSError(errno.EACCES, "Permission denied")
