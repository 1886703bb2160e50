"""TFRecord layout: our writer's bytes parse back with TensorFlow into exactly the samples."""
import numpy as np
import pyarrow as pa
import pytest

from din_common.errors import InputError
from pipeline.tfrecord_io import SAMPLE_COLUMNS, read_samples_tfrecord, write_samples_tfrecord
from tests.helpers.samples import build


@pytest.fixture(scope="module")
def table():
    return build(maxlen=3)["train"].slice(0)  # 4 rows


def test_round_trip_through_our_reader(tmp_path, table):
    path = tmp_path / "part.tfrecord"
    assert write_samples_tfrecord(path, table, prebatch=3) == 2
    read = read_samples_tfrecord(path)
    assert read.column_names == list(SAMPLE_COLUMNS)
    assert read.equals(table)
    # user 4's train samples (times 1, 2, 3): hist_gap survives, aligned with hist_item
    assert sorted(zip(map(tuple, read.column("hist_item").to_pylist()), map(tuple, read.column("hist_gap").to_pylist()),
                      read.column("label").to_pylist())) == [((4,), (1,), 0), ((4,), (1,), 1),
                                                            ((4, 5), (2, 1), 0), ((4, 5), (2, 1), 1)]


def test_history_columns_of_different_lengths_are_refused(tmp_path, table):
    gaps = pa.array([row[:-1] for row in table.column("hist_gap").to_pylist()], pa.list_(pa.int32()))
    broken = table.set_column(table.column_names.index("hist_gap"), "hist_gap", gaps)
    with pytest.raises(ValueError, match="hist_item and hist_gap have different lengths"):
        write_samples_tfrecord(tmp_path / "part.tfrecord", broken, prebatch=3)


def test_tensorflow_parses_the_records_into_the_same_samples(tmp_path, table):
    tf = pytest.importorskip("tensorflow")
    path = tmp_path / "part.tfrecord"
    write_samples_tfrecord(path, table, prebatch=3)
    spec = {"size": tf.io.FixedLenFeature([1], tf.int64)}
    spec.update({name: tf.io.FixedLenFeature([], tf.string) for name in
                 ("hist_len", "hist_item", "hist_cate", "hist_gap", "target_item", "target_cate", "user_id", "label")})
    sizes, rows = [], []
    for record in tf.data.TFRecordDataset(str(path)):
        parsed = tf.io.parse_single_example(record, spec)
        decoded = {k: tf.io.decode_raw(v, tf.int32).numpy() for k, v in parsed.items() if k != "size"}
        sizes.append(int(parsed["size"][0]))
        offsets = np.concatenate([[0], np.cumsum(decoded["hist_len"])])
        for i in range(sizes[-1]):
            rows.append({"user_id": decoded["user_id"][i],
                         "hist_item": decoded["hist_item"][offsets[i]:offsets[i + 1]].tolist(),
                         "hist_cate": decoded["hist_cate"][offsets[i]:offsets[i + 1]].tolist(),
                         "hist_gap": decoded["hist_gap"][offsets[i]:offsets[i + 1]].tolist(),
                         "target_item": decoded["target_item"][i], "target_cate": decoded["target_cate"][i],
                         "label": decoded["label"][i]})
    assert sizes == [3, 1]
    assert rows == table.to_pylist()


def test_truncated_file_is_reported_by_name(tmp_path, table):
    path = tmp_path / "part.tfrecord"
    write_samples_tfrecord(path, table, prebatch=3)
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(InputError, match="part.tfrecord: truncated"):
        read_samples_tfrecord(path)


def test_flipped_byte_is_reported_as_corrupt(tmp_path, table):
    path = tmp_path / "part.tfrecord"
    write_samples_tfrecord(path, table, prebatch=3)
    data = bytearray(path.read_bytes())
    data[30] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match="corrupt TFRecord"):
        read_samples_tfrecord(path)


def test_range_check_names_the_first_bad_row_of_a_ragged_column():
    from pipeline.tfrecord_io import check_sample_ranges

    table = pa.table({"user_id": [1, 1, 2], "hist_item": [[1], [2, 3], [3, 4, 1]], "hist_cate": [[1], [1, 2], [2, 2, 1]],
                      "hist_gap": [[0], [5, 0], [9, 4, 0]], "target_item": [2, 3, 2], "target_cate": [1, 2, 1],
                      "label": [1, 1, 0]}).slice(1)  # a slice: offsets that do not start at 0
    check_sample_ranges(table, "s.parquet", n_items=4, n_cats=2, vocabulary="stats.json")
    with pytest.raises(InputError, match=r"^s\.parquet column hist_item row 1 holds 4: expected values from 1 to 3 "
                                         r"\(n_items in stats\.json\)"):
        check_sample_ranges(table, "s.parquet", n_items=3, n_cats=2, vocabulary="stats.json")
