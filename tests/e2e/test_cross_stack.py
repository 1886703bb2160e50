"""A run trained on the Ascend stack (TF 2.6.5, Keras 2) restores, evaluates and serves on the modern stack.

The training half runs in the Ascend stack's interpreter, named by the environment
variable DIN_ASCEND_PYTHON (`.ci/run` sets it to the TF 2.6.5 environment it builds).
Without it the test is skipped, saying so.
"""
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from din_model.compat import KERAS_3
from din_model.params import TrainParams
from din_model.run.loop import evaluate
from tests.helpers.scoring import load_scorer

REPO = Path(__file__).resolve().parents[2]
PARAMS = dict(embed_dim=4, attention_hidden="8,4", mlp_hidden="8,4", batch_size=64, learning_rate=0.01,
              device="cpu", epochs=2, activation="dice", dropout=0.1)
ASCEND_SIDE = """
import json, sys
import numpy as np
from din_model.compat import KERAS_3
from tests.helpers.scoring import load_scorer
from din_model.params import TrainParams
from din_model.run.loop import evaluate, train
from tests.helpers.din_fixtures import write_random_fixture
from tests.e2e.test_cross_stack import scoring_inputs

root, params = sys.argv[1], TrainParams(**json.loads(sys.argv[2]))
assert not KERAS_3, "DIN_ASCEND_PYTHON must run TensorFlow 2.6 (Keras 2)"
spec = write_random_fixture(root, sizes=(("train", 1500), ("val", 300), ("test", 300)), n_items=60, n_cats=6)
train(spec, root + "/run", params)
test_auc = evaluate(spec, root + "/run", params)["test"]["auc"]
probability = load_scorer(root + "/run/saved_model")(**scoring_inputs())["probability"].numpy()
np.savez(root + "/ascend.npz", probability=probability, test_auc=test_auc)
"""


def scoring_inputs():
    rng = np.random.default_rng(5)
    history = rng.integers(0, 61, size=(16, 10)).astype(np.int32)
    history[:, :4] = 0  # padded positions
    return {"hist_item": tf.constant(history), "hist_cate": tf.constant(history % 6 + (history > 0)),
            "target_item": tf.constant(rng.integers(1, 61, size=16).astype(np.int32)),
            "target_cate": tf.constant(rng.integers(1, 7, size=16).astype(np.int32))}


@pytest.mark.slow
def test_a_run_trained_on_the_ascend_stack_evaluates_and_serves_on_the_modern_stack(tmp_path):
    ascend_python = os.environ.get("DIN_ASCEND_PYTHON")
    if not ascend_python:
        pytest.skip("DIN_ASCEND_PYTHON is not set (a Python with TensorFlow 2.6.5; .ci/run sets it)")
    if not KERAS_3:
        pytest.skip("this is the modern-stack half; the Ascend half runs in DIN_ASCEND_PYTHON")
    subprocess.run([ascend_python, "-c", ASCEND_SIDE, str(tmp_path), json.dumps(PARAMS)], check=True, cwd=REPO,
                   env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=600)
    with np.load(tmp_path / "ascend.npz") as ascend:
        ascend_probability, ascend_auc = ascend["probability"], float(ascend["test_auc"])
    # The SavedModel written by TF 2.6.5 serves here with the same scores.
    served = load_scorer(tmp_path / "run" / "saved_model")(**scoring_inputs())["probability"].numpy()
    np.testing.assert_allclose(served, ascend_probability, rtol=1e-5, atol=1e-6)
    # The Keras 2 checkpoint restores into the Keras 3 model (weights/ node): the same test AUC.
    modern = evaluate(tmp_path / "tfrecords" / "feature_spec.json", tmp_path / "run", TrainParams(**PARAMS))
    assert ascend_auc > 0.6
    assert modern["test"]["auc"] == pytest.approx(ascend_auc, abs=1e-6)
