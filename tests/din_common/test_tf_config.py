"""TF_CONFIG: who trains in the cluster, this process's task, and the worker name its Luigi locks carry."""
import json

import pytest

from din_common import tf_config
from din_common.errors import InputError

TWO_WORKERS = {"cluster": {"worker": ["a:1", "b:2"]}}


def environ(config) -> dict:
    return {"TF_CONFIG": config if isinstance(config, str) else json.dumps(config)}


def test_the_chief_and_worker_tasks_train_and_other_task_types_do_not():
    assert tf_config.count_workers({"cluster": {"chief": ["a:1"], "worker": ["b:2", "c:3"], "ps": ["d:4"]}}) == 3
    assert tf_config.count_workers(None) == 0


def test_unset_or_empty_is_no_cluster_and_a_malformed_one_is_one_input_error():
    assert tf_config.read({}) is None and tf_config.read(environ(" ")) is None
    with pytest.raises(InputError, match=r"^TF_CONFIG is not valid JSON \(.*\); expected \{\"cluster\""):
        tf_config.read(environ("{cluster"))
    with pytest.raises(InputError, match=r"^TF_CONFIG must be a JSON object with a \"cluster\" object, got \[1\]$"):
        tf_config.read(environ("[1]"))


def test_the_task_must_be_a_chief_or_worker_at_a_position_of_its_list():
    assert tf_config.task_of({**TWO_WORKERS, "task": {"type": "worker", "index": 1}}) == ("worker", 1)
    with pytest.raises(InputError, match="names a cluster but no task"):
        tf_config.task_of(TWO_WORKERS)
    with pytest.raises(InputError, match=r"task index 2 is not a position in its cluster's 'worker' list"):
        tf_config.task_of({**TWO_WORKERS, "task": {"type": "worker", "index": 2}})
    with pytest.raises(InputError, match=r"task type 'ps' is not supported.*; the cluster also names \['ps'\]$"):
        tf_config.task_of({"cluster": {**TWO_WORKERS["cluster"], "ps": ["c:3"]}, "task": {"type": "ps"}})


def test_the_worker_name_tells_the_workers_of_a_cluster_apart():
    assert tf_config.worker_name(environ({**TWO_WORKERS, "task": {"type": "worker", "index": 1}})) == "worker-1"
    chief = {"cluster": {"chief": ["a:1"], "worker": ["b:2"]}, "task": {"type": "chief", "index": 0}}
    assert tf_config.worker_name(environ(chief)) == "chief-0"
    assert tf_config.worker_name(environ({"cluster": {"worker": ["a:1"]}, "task": {"type": "worker"}})) == ""
    assert tf_config.worker_name({}) == ""


@pytest.mark.parametrize("malformed", ["{cluster", "[1]", json.dumps(TWO_WORKERS),
                                       json.dumps({**TWO_WORKERS, "task": {"type": "worker", "index": 5}})])
def test_a_malformed_tf_config_gives_no_worker_name(malformed):
    assert tf_config.worker_name(environ(malformed)) == ""
