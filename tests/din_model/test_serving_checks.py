"""The exported SavedModel refuses bad requests, naming the input: ids out of the vocabulary (negative
ones would be read from the end of the table), histories wider than maxlen, rows that disagree.

TensorFlow wraps the project's message in lines of its own (`Graph execution error:`, the node, the
values): the project's message is the first bracketed item of TensorFlow's `assertion failed: [...]`
line, and is held whole, one line starting with the input's name."""
import re

import numpy as np
import pytest
import tensorflow as tf

from din_model.model.network import build_model
from din_model.params import TrainParams
from din_model.train.export import export_saved_model
from tests.helpers.din_fixtures import sizes_spec
from tests.helpers.scoring import load_scorer

MAXLEN, N_ITEMS, N_CATS = 5, 40, 6


@pytest.fixture(scope="module", params=["din", "din_seq"])
def scorer(request, tmp_path_factory):
    params = TrainParams(embed_dim=4, attention_hidden="8", mlp_hidden="8", model=request.param)
    model = build_model(params, sizes_spec(n_items=N_ITEMS, n_cats=N_CATS, maxlen=MAXLEN))
    return load_scorer(export_saved_model(model, MAXLEN, tmp_path_factory.mktemp("export") / "saved_model"))


def request_of(scorer, **changes):
    names = scorer.structured_input_signature[1]
    good = {"hist_item": np.array([[3, 7, 0, 0, 0]] * 2), "hist_cate": np.array([[4, 2, 0, 0, 0]] * 2),
            "hist_gap": np.array([[900, 60, 0, 0, 0]] * 2), "target_item": np.array([N_ITEMS, 1]),
            "target_cate": np.array([N_CATS, 1])}
    return {name: tf.constant(changes.get(name, good[name]), tf.int32) for name in names}


def test_a_good_request_at_the_vocabulary_edges_is_scored(scorer):
    probability = scorer(**request_of(scorer))["probability"].numpy()
    assert probability.shape == (2,) and np.all((probability > 0) & (probability < 1))


# TensorFlow's line carrying a failed tf.debugging assertion: `assertion failed: [<message>] [Condition ...] ...`
# (TensorFlow 2.6 starts the line with a space).
ASSERTION_LINE = re.compile(r"^ ?assertion failed: \[(?P<message>[^\]\n]*)\]", re.MULTILINE)


def refusal_message(error: tf.errors.InvalidArgumentError) -> str:
    """The project's own message in TensorFlow's error: its one assertion line's first item, without the
    `.  ` that tf.debugging.assert_non_negative appends to it."""
    (message,) = ASSERTION_LINE.findall(error.message)
    return message.rstrip(". ")


def negative(name: str) -> str:
    return rf"{name}: ids must be >= 0 \(0 = padding\)"


def beyond_vocabulary(name: str, size: int) -> str:
    return rf"{name}: ids must be < {size + 1} \(the vocabulary of the model: 1\.\.\.{size}, 0 = padding\)"


def not_maxlen_columns(name: str) -> str:
    return rf"{name}: expected exactly {MAXLEN} columns \(the maxlen of the model; pad with 0\)"


@pytest.mark.parametrize("name, value, message", [
    ("target_item", [-1, 1], negative("target_item")),
    ("target_cate", [1, -3], negative("target_cate")),
    ("hist_item", [[3, -1, 0, 0, 0]] * 2, negative("hist_item")),
    ("target_item", [N_ITEMS + 1, 1], beyond_vocabulary("target_item", N_ITEMS)),
    ("hist_cate", [[N_CATS + 1, 0, 0, 0, 0]] * 2, beyond_vocabulary("hist_cate", N_CATS)),
    ("hist_item", [[3, 7, 0, 0, 0, 9]] * 2, not_maxlen_columns("hist_item")),
    ("hist_item", [[3] * 100] * 2, not_maxlen_columns("hist_item")),
    ("hist_cate", [[3, 7, 0, 0]] * 2, not_maxlen_columns("hist_cate")),
    # three targets against two-row histories: the first history is the input that disagrees
    ("target_item", [1, 2, 3], r"hist_item: expected as many rows as target_item"),
])
def test_a_bad_request_is_refused_in_one_line_naming_the_input(scorer, name, value, message):
    with pytest.raises(tf.errors.InvalidArgumentError) as refused:
        scorer(**request_of(scorer, **{name: value}))
    assert re.fullmatch(message, refusal_message(refused.value)), refused.value.message
