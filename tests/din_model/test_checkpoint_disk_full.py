"""A checkpoint save that fills the disk: TensorFlow's ResourceExhaustedError becomes one line naming the folder
and the checkpoint's size, and what the save left (its temporary folder, partial files, the manager's temporary
state file) is removed, keeping the last complete checkpoint for the rerun to resume from."""
import errno
import os

import pytest
import tensorflow as tf

from din_common.errors import InputError
from din_model.device.selection import select_device
from din_model.model.footprint import weight_bytes
from din_model.params import TrainParams
from din_model.train.state import TrainingState
from tests.helpers.din_fixtures import sizes_spec


def test_a_full_disk_while_checkpointing_leaves_the_last_complete_checkpoint(tmp_path):
    params, spec = TrainParams(embed_dim=4, attention_hidden="8", mlp_hidden="8", device="cpu"), sizes_spec()
    state = TrainingState(params, spec, select_device("cpu"), tmp_path)
    state.save(1)
    kept = sorted(path.name for path in tmp_path.iterdir())

    def fill_the_disk(checkpoint_number):
        (tmp_path / "ckpt-2_temp").mkdir()
        (tmp_path / "ckpt-2_temp" / "part-00000-of-00001.data-00000-of-00001.tempstate1").write_bytes(b"partial")
        (tmp_path / "ckpt-2.index.tempstate2").write_bytes(b"partial")
        (tmp_path / "checkpoint.tmp0a1b").write_bytes(b"partial")
        raise tf.errors.ResourceExhaustedError(None, None, f"{tmp_path}/ckpt-2_temp/part; {os.strerror(errno.ENOSPC)}")

    state.manager.save = fill_the_disk
    with pytest.raises(InputError) as raised:
        state.save(2)
    size = weight_bytes(params, spec.n_items, spec.n_cats, spec.maxlen)
    assert str(raised.value).startswith(f"no space left on the device while writing the checkpoint of epoch 2 in "
                                        f"{tmp_path}: it needs about {round(size / 1000)} kB there, ")
    assert str(raised.value).endswith("; nothing was left half-written; free some space and rerun the same command "
                                      "(it resumes after epoch 1)")
    assert sorted(path.name for path in tmp_path.iterdir()) == kept
    assert state.checkpointed == 1 and tf.train.latest_checkpoint(str(tmp_path)).endswith("ckpt-1")
