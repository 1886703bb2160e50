"""Does DIN's attention weight the history by category? A trained run's attention weights on the test split,
against the target's category and, on synthetic data, against the generator's planted interests.

    python benchmarks/attention_categories.py --data-dir DIR --run-dir DIR/runs/<id> [--users 4]

Prints one JSON line: over the test samples whose history holds entries of the target's category and of
others, the mean magnitude of the attention weight of an entry of the target's category and of one of
another category, the share of the summed magnitudes on the target's category against the share of such
entries (what a bag of the history counts), and how many of those weights are negative (DIN's weights are
not normalised: the output MLP reads the sign), for positives and negatives apart. Then, for `--users` test users of the
synthetic generator with two or more planted interests, one JSON line each: the planted interest weights
at the last review, the history's category counts, and the share of the attention weight each history
category gets (magnitudes) with the user's test positive, and with the most reviewed item of each
interest, as the target. Scores
are the unnormalised activation-unit outputs of the exported (best) checkpoint, masked like the model.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import tensorflow as tf  # noqa: E402

from din_model.data.reader import feature_spec_at, make_dataset  # noqa: E402
from din_model.device.selection import select_device  # noqa: E402
from din_model.params import TrainParams  # noqa: E402
from din_model.train.portable_weights import restore_weights  # noqa: E402
from din_model.train.state import TrainingState  # noqa: E402


def load_model(spec, run_dir: Path):
    params = TrainParams.from_dict({**json.loads((run_dir / "params.json").read_text())["params"], "device": "cpu",
                                    "precision": "fp32", "jit_compile": False, "history_layout": "dense"})
    state = TrainingState(params, spec, select_device("cpu", "fp32"), run_dir / "checkpoints")
    restore_weights(state.model, state.checkpoint_to_export(params.restore_best), state.checkpoint)
    return state.model, params


def attention_weights(model, features) -> np.ndarray:
    """[B, L] masked attention weights of the model's activation unit for the batch's targets."""
    target = model.embed(features["target_item"], features["target_cate"])
    mask = features["hist_item"] > 0
    history = model.embed_history(model.history_ids(features, mask))
    unit = model.attention
    hidden = unit.hidden.from_first_projection(unit._first_projection(target, history, mask), valid=mask)
    scores = tf.squeeze(unit.score_layer(hidden), -1)
    return unit._masked_weights(tf.cast(scores, tf.float32), mask).numpy()


def test_batch(spec, params, samples: int) -> tuple[dict, np.ndarray]:
    features, labels = next(iter(make_dataset(spec, "test", samples, shuffle=False, maxlen=params.maxlen,
                                              history_fields=params.history_features)))
    return features, labels.numpy()


def category_summary(features, labels, weights) -> dict:
    hist_cate, mask = features["hist_cate"].numpy(), features["hist_item"].numpy() > 0
    same = (hist_cate == features["target_cate"].numpy()[:, None]) & mask
    other = ~same & mask
    both = same.any(axis=1) & other.any(axis=1)
    summary = {}
    for name, rows in (("positives", both & (labels == 1)), ("negatives", both & (labels == 0))):
        w, s, o = np.abs(weights[rows]), same[rows], other[rows]
        summary[name] = {
            "samples": int(rows.sum()),
            "mean_abs_weight_same_category": round(float(w[s].mean()), 4),
            "mean_abs_weight_other_category": round(float(w[o].mean()), 4),
            "abs_weight_share_same_category": round(float(np.mean((w * s).sum(1) / (w * (s | o)).sum(1))), 4),
            "entry_share_same_category": round(float(np.mean(s.sum(1) / (s | o).sum(1))), 4),
            "negative_weights_same_category": round(float((weights[rows][s] < 0).mean()), 4)}
    return summary


def planted_interests(data_dir: Path) -> pd.DataFrame:
    """user_id and cate_id (the remapped ids) with weight, per planted interest at each user's last review."""
    from pipeline.raw import synthetic

    oracle = json.loads((data_dir / "raw" / "oracle.json").read_text())
    rng = np.random.default_rng([oracle["seed"], 0])  # generate()'s stream: _plant, then _frames' first two codes
    planted = synthetic._plant(rng, oracle["n_users"], oracle["n_items"], oracle["n_categories"],
                               oracle["mean_reviews_per_user"], oracle["knobs"])
    reviewer_ids = synthetic._unique_codes(rng, oracle["n_users"], b"A", 13)
    asins = synthetic._unique_codes(rng, oracle["n_items"], b"B00", 7)
    items = pd.read_parquet(data_dir / "remap" / "items.parquet")
    cate_by_planted = (pd.DataFrame({"asin": asins, "planted": planted.item_cat}).merge(items, on="asin")
                       .groupby("planted")["cate_id"].first())
    users = pd.read_parquet(data_dir / "remap" / "users.parquet").set_index("reviewerID")["user_id"]
    slots = planted.interest_cat >= 0
    user_index, slot = np.nonzero(slots)
    return pd.DataFrame({"user_id": users.loc[reviewer_ids[user_index]].to_numpy(),
                         "cate_id": cate_by_planted.loc[planted.interest_cat[user_index, slot]].to_numpy(),
                         "weight": planted.interest_w[user_index, slot].round(3)})


def user_lines(model, data_dir: Path, features, labels, users: int) -> list[dict]:
    interests = planted_interests(data_dir)
    popular_item = (pd.read_parquet(data_dir / "remap" / "reviews.parquet").groupby(["cate_id", "item_id"]).size()
                    .reset_index().sort_values(0).groupby("cate_id")["item_id"].last())
    several = interests.groupby("user_id").size()
    lines = []
    positives = np.flatnonzero(labels == 1)
    for row in positives:
        user = int(features["user_id"][row])
        if several.get(user, 0) < 2 or len(lines) >= users:
            continue
        mask = features["hist_item"][row].numpy() > 0
        cates = features["hist_cate"][row].numpy()[mask]
        own = interests[interests.user_id == user]
        targets = [(int(features["target_item"][row]), int(features["target_cate"][row]))]
        targets += [(int(popular_item[cate]), int(cate)) for cate in own.cate_id if cate in popular_item.index]
        one = {name: tf.repeat(features[name][row:row + 1], len(targets), axis=0) for name in features}
        one["target_item"] = tf.constant([item for item, _ in targets], one["target_item"].dtype)
        one["target_cate"] = tf.constant([cate for _, cate in targets], one["target_cate"].dtype)
        rows_weights = attention_weights(model, one)[:, mask]

        def shares(w):
            return {int(c): round(float(np.abs(w[cates == c]).sum() / np.abs(w).sum()), 3) for c in np.unique(cates)}
        lines.append({"user_id": user, "planted_interests": dict(zip(own.cate_id.astype(int), own.weight)),
                      "history_category_counts": {int(c): int((cates == c).sum()) for c in np.unique(cates)},
                      "attention_share_by_category": {f"target {item} (cate {cate})": shares(w)
                                                      for (item, cate), w in zip(targets, rows_weights)}})
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--run-dir", type=Path, required=True)
    parser.add_argument("--samples", type=int, default=20000, help="test samples scored")
    parser.add_argument("--users", type=int, default=4, help="users shown against their planted interests")
    args = parser.parse_args()
    spec = feature_spec_at(args.data_dir / "tfrecords" / "feature_spec.json")
    model, params = load_model(spec, args.run_dir)
    features, labels = test_batch(spec, params, args.samples)
    weights = attention_weights(model, features)
    print(json.dumps({"run": str(args.run_dir), **category_summary(features, labels, weights)}), flush=True)
    if (args.data_dir / "raw" / "oracle.json").is_file() and args.users:
        for line in user_lines(model, args.data_dir, features, labels, args.users):
            print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
