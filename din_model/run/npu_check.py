"""First-host check of the NPU path, one verdict line per check (the user command: `python -m pipeline.cli.npu_check`).

Run it once on a new Ascend host before training. It opens the NPU as training does (the `[npu]` settings
of luigi.cfg), with the graph engine's graph dump on, and checks:
- open: the adapter opens the device with the run's options;
- op list: the graphs the NPU runs (train step, sunk step loop, predict step) hold only the op types of
  din_model/device/npu_ops.py (Huawei's published support);
- CANN op list: every one of those op types is in the installed CANN's `npu_supported_ops.json`, which
  the adapter reads at open (tf_adapter_2.x/npu_device/core/npu_device.cpp lines 1302-1339; an op not in
  it is run on the CPU, outside the NPU graph);
- train step, step loop, predict step: one train step, a sunk loop of 2 steps, one predict step on a
  synthetic batch, with finite losses and probabilities in [0, 1];
- AI CPU: the ops the graph engine placed on the AI CPU, from the GE graph dump (see `_GE_DUMP`);
- all-reduce: two rank processes (the rank table of `[npu] rank_table_file` or `--rank-table`) sum a
  known tensor with the adapter's HCCL all-reduce and compare with the expected sum.

Verdicts: OK, FAIL (exit status 1), WARN (works, but slower than it could), SKIP / UNKNOWN (not checkable
here, with the reason). On a machine without an NPU it runs against whatever `npu_device` is importable
(the tests' stand-in); without one, "open" fails and the rest is skipped.

Assumed, not verified without a host (docs/ascend.md): the graph dump switches are CANN's environment
variables DUMP_GE_GRAPH=2, DUMP_GRAPH_LEVEL=3 and DUMP_GRAPH_PATH (read when the graph engine starts, so
set before the device opens), the dump files are ge_proto_*.txt in protobuf text form, and each op's
engine is its `_ge_attr_op_kernel_lib_name` attribute ("AIcpuEngine" / "aicpu_*_kernel" = AI CPU).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Callable, Optional

import numpy as np

ALL_REDUCE_INPUT = [1.0, 2.0, 3.0]
RANKS = 2
_GE_DUMP = {"DUMP_GE_GRAPH": "2", "DUMP_GRAPH_LEVEL": "3"}
_SUPPORTED_OPS_JSON = ("built-in/framework/tensorflow/npu_supported_ops.json",
                       "framework/built-in/tensorflow/npu_supported_ops.json")
_OP_BLOCK = re.compile(r'\bop\s*\{\s*name:\s*"(?P<name>[^"]*)"\s*type:\s*"(?P<type>[^"]*)"')
_KERNEL_LIB = re.compile(r'key:\s*"_ge_attr_op_kernel_lib_name"\s*value\s*\{\s*s:\s*"(?P<lib>[^"]*)"')


class Verdicts:
    """The check lines printed so far; `failed` if any said FAIL."""

    def __init__(self, echo: Callable[[str], None] = print):
        self.echo = echo
        self.lines: list[tuple[str, str, str]] = []

    def say(self, check: str, verdict: str, detail: str) -> None:
        self.lines.append((check, verdict, detail))
        self.echo(f"[npu_check] {check}: {verdict} ({detail})")

    @property
    def failed(self) -> bool:
        return any(verdict == "FAIL" for _, verdict, _ in self.lines)


def cann_supported_ops(opp_path: str) -> Optional[set]:
    """The op types of the installed CANN's npu_supported_ops.json (None: not found under `opp_path`)."""
    for relative in _SUPPORTED_OPS_JSON:
        path = Path(opp_path) / relative
        if path.is_file():
            return set(json.loads(path.read_text())) | {"IteratorV2", "IteratorGetNext"}  # the adapter adds these
    return None


def ai_cpu_ops(dump_dir: Path) -> Optional[dict]:
    """{op type: engine} of the ops a GE graph dump places on the AI CPU (None: no dump file found)."""
    files = sorted(Path(dump_dir).rglob("ge_proto_*.txt"))
    if not files:
        return None
    found = {}
    for path in files:
        text = path.read_text(errors="replace")
        starts = [match for match in _OP_BLOCK.finditer(text)]
        for index, match in enumerate(starts):
            end = starts[index + 1].start() if index + 1 < len(starts) else len(text)
            engine = _KERNEL_LIB.search(text, match.end(), end)
            if engine and "aicpu" in engine.group("lib").lower():
                found[match.group("type")] = engine.group("lib")
    return found


def _synthetic_batch(params, maxlen: int, n_items: int, n_cats: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    rows = params.batch_size
    lengths = rng.integers(0, maxlen + 1, rows)
    history = np.where(np.arange(maxlen)[None, :] >= maxlen - lengths[:, None],
                       rng.integers(1, n_items, (rows, maxlen)), 0).astype(np.int32)
    features = {"hist_item": history, "hist_cate": np.where(history > 0, history % (n_cats - 1) + 1, 0),
                "hist_gap": np.where(history > 0, rng.integers(0, 10 ** 8, (rows, maxlen)), 0),
                "target_item": rng.integers(1, n_items, rows), "target_cate": rng.integers(1, n_cats, rows),
                "user_id": np.arange(rows)}
    return ({name: values.astype(np.int32) for name, values in features.items()},
            rng.integers(0, 2, rows).astype(np.float32))


def check_graphs(verdicts: Verdicts, device, params, opp_path: str) -> None:
    """Build the model on the opened NPU, check its graphs' op types, run the steps."""
    import tensorflow as tf

    from din_common.feature_spec import FeatureSpec
    from din_model import compat
    from din_model.device.graph_ops import graph_op_types
    from din_model.model.history_capacity import HistoryCapacity
    from din_model.model.network import build_model
    from din_model.device.npu_ops import unsupported_ops
    from din_model.train.optimizer import FusedAdam
    from din_model.data.reader import batch_signature
    from din_model.train.steps import make_predict_step, make_step_loop, make_train_step

    maxlen, n_items, n_cats = 20, 1000, 20
    spec = FeatureSpec.without_shards(maxlen=maxlen, n_items=n_items, n_cats=n_cats)
    model = build_model(params, spec, device.dtype_policy, True, HistoryCapacity(maxlen / 2, maxlen / 4, maxlen),
                        on_npu=True)
    optimizer = device.wrap_optimizer(FusedAdam(learning_rate=params.learning_rate))
    compat.build_optimizer(optimizer, model.trainable_variables)
    signature = batch_signature(maxlen, params.batch_size, params.history_features)
    features, labels = _synthetic_batch(params, maxlen, n_items, n_cats)
    features = {name: tf.constant(values) for name, values in features.items() if name in signature[0]}
    labels = tf.constant(labels)
    train_step = make_train_step(model, optimizer, False, signature)
    loop = make_step_loop(train_step, 2, sunk=True)
    predict_step = make_predict_step(model, signature)

    loss = float(train_step(features, labels))
    verdicts.say("train step", "OK" if np.isfinite(loss) else "FAIL", f"loss {loss:.4f}")
    device.set_loop_size(2)
    losses = loop(iter(tf.data.Dataset.from_tensors((features, labels)).repeat()), 2)
    verdicts.say("step loop", "OK" if np.all(np.isfinite(losses)) else "FAIL",
                 f"2 steps in one call, losses {', '.join(f'{value:.4f}' for value in losses)}")
    probabilities = predict_step(features).numpy()
    good = probabilities.shape == (params.batch_size,) and np.all((probabilities >= 0) & (probabilities <= 1))
    verdicts.say("predict step", "OK" if good else "FAIL", f"{probabilities.shape[0]} probabilities")

    graphs = {"train step": train_step.get_concrete_function(), "step loop": loop.loop.get_concrete_function(
        iter(tf.data.Dataset.from_tensors((features, labels)).repeat()), tf.constant(2)),
              "predict step": predict_step.get_concrete_function()}
    op_types = set().union(*(graph_op_types(graph) for graph in graphs.values()))
    outside = unsupported_ops(op_types)
    verdicts.say("op list", "FAIL" if outside else "OK",
                 "; ".join(f"{op}: {why}" for op, why in outside.items()) if outside else
                 f"{len(op_types)} op types in the train step, step loop and predict step, all in din_model/device/npu_ops.py")
    cann = cann_supported_ops(opp_path) if opp_path else None
    if cann is None:
        verdicts.say("CANN op list", "SKIP", f"no npu_supported_ops.json under ASCEND_OPP_PATH={opp_path!r} (source "
                                             "CANN's set_env.sh)")
    else:
        on_cpu = sorted(op_types - cann)
        verdicts.say("CANN op list", "WARN" if on_cpu else "OK",
                     f"the adapter runs these on the host CPU: {', '.join(on_cpu)}" if on_cpu else
                     f"all {len(op_types)} op types are in the installed CANN's list")


def check_ai_cpu(verdicts: Verdicts, dump_dir: Path) -> None:
    placed = ai_cpu_ops(dump_dir)
    if placed is None:
        verdicts.say("AI CPU", "UNKNOWN", f"no GE graph dump (ge_proto_*.txt) in {dump_dir}: the graph engine did "
                                          "not run here (no NPU) or this CANN dumps elsewhere")
    elif placed:
        verdicts.say("AI CPU", "WARN", "placed on the AI CPU: " + ", ".join(f"{op} ({lib})" for op, lib in
                                                                           sorted(placed.items())))
    else:
        verdicts.say("AI CPU", "OK", f"no op placed on the AI CPU in {dump_dir}")


def check_all_reduce(verdicts: Verdicts, rank_table: str, timeout: float) -> None:
    from din_common.errors import InputError
    from din_model.parallel.npu_ranks import rank_environment
    from din_model.device.rank_table import read_rank_table

    if not rank_table:
        verdicts.say("all-reduce", "SKIP", "no rank table: set [npu] rank_table_file or pass --rank-table")
        return
    try:
        table = read_rank_table(rank_table, RANKS)  # each rank on the table's device_id for its rank_id
    except InputError as error:
        verdicts.say("all-reduce", "FAIL", str(error))
        return
    expected = [value * RANKS for value in ALL_REDUCE_INPUT]
    processes = [subprocess.Popen([sys.executable, "-m", "din_model.run.npu_check", "--all-reduce-rank"],
                                  env={**os.environ, **rank_environment(rank, table, sync_dir="")},
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                 for rank in range(RANKS)]
    results = []
    for rank, process in enumerate(processes):
        try:
            output, _ = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for other in processes:
                other.kill()
            verdicts.say("all-reduce", "FAIL", f"rank {rank} did not finish within {timeout:g} s (HCCL waiting for "
                                               "a rank that never came? check the rank table)")
            return
        lines = [line for line in output.splitlines() if line.startswith("{")]
        if process.returncode or not lines:
            verdicts.say("all-reduce", "FAIL", f"rank {rank} exited {process.returncode}: "
                                               f"{output.strip().splitlines()[-1:] or 'no output'}")
            return
        results.append(json.loads(lines[-1])["sum"])
    wrong = [rank for rank, got in enumerate(results) if not np.allclose(got, expected)]
    verdicts.say("all-reduce", "FAIL" if wrong else "OK",
                 f"sum over {RANKS} ranks of {ALL_REDUCE_INPUT}: expected {expected}, got {results}")


def _all_reduce_rank() -> int:
    """One rank of the all-reduce check (RANK_ID, RANK_SIZE, RANK_TABLE_FILE, ASCEND_DEVICE_ID set)."""
    import tensorflow as tf
    import npu_device

    npu_device.open().as_default()
    (summed,) = npu_device.distribute.all_reduce([tf.constant(ALL_REDUCE_INPUT)], "sum")
    print(json.dumps({"rank": os.environ.get("RANK_ID"), "sum": [float(value) for value in summed.numpy()]}))
    return 0


def run_checks(options, *, dump_dir: Path, rank_table: str, timeout: float = 600.0,
               echo: Callable[[str], None] = print) -> Verdicts:
    from din_common.errors import InputError
    from din_model.device.selection import select_device
    from din_model.params import TrainParams

    verdicts = Verdicts(echo)
    os.environ.update({**_GE_DUMP, "DUMP_GRAPH_PATH": str(dump_dir)})  # read when the graph engine starts
    params = TrainParams(device="npu", batch_size=64, dropout=0.1)
    try:
        device = select_device("npu", params.precision, npu_options=options)
    except (InputError, RuntimeError) as error:
        verdicts.say("open", "FAIL", str(error))
        return verdicts
    verdicts.say("open", "OK", f"device {options.resolved_device_id()}, precision_mode "
                               f"{options.resolved_precision_mode(params.precision)}, GE graph dump in {dump_dir}")
    check_graphs(verdicts, device, params, os.environ.get("ASCEND_OPP_PATH", ""))
    check_ai_cpu(verdicts, dump_dir)
    check_all_reduce(verdicts, rank_table, timeout)
    return verdicts


def main(argv=None) -> int:
    """The rank side of the all-reduce check, started by `check_all_reduce`; the user command that runs
    every check with luigi.cfg's `[npu]` settings is `python -m pipeline.cli.npu_check`."""
    parser = argparse.ArgumentParser(prog="python -m din_model.run.npu_check")
    parser.add_argument("--all-reduce-rank", action="store_true", required=True)
    parser.parse_args(argv)
    return _all_reduce_rank()


if __name__ == "__main__":
    sys.exit(main())
