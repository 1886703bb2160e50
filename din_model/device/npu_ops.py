"""The op types the NPU path may hand Ascend's graph engine (GE), and where each entry comes from.

`unsupported_ops(op_types)` names every op type outside `NPU_OP_TYPES` with the reason; the tests trace
every graph the NPU runs and fail on any (tests/din_model/test_npu_graph.py), and `python -m pipeline.cli.npu_check`
checks the same graphs on a real host, there also against the installed CANN's own list.

Sources (read through Ascend/tensorflow, branch master, commit 085a7b2e7feac20dae2e3371fe08ea34296ea9fc):
- [API list] `convert_tf2npu/v2/TF2.6_api_support_list.xlsx`, sheet 全量API支持度表 ("support of every API"):
  one row per TF 2.6 API with 支持（无需迁移） ("supported, nothing to migrate"),
  不支持（无迁移方案，建议用户不使用） ("not supported, no migration, do not use"), or 分析中 ("under
  analysis"). Rows cited by number.
  Its `tf.raw_ops.<Op>` rows are all "under analysis" (AddV2, MatMul, Const alike), so the list speaks at
  the API level: an op type counts as verified when a supported API emits it. Which op types an API
  emits is TensorFlow 2.6's own implementation (seen in the traced graphs), not part of Huawei's list.
- [adapter] `tf_adapter_2.x/npu_device/core/npu_device.cpp` lines 1302-1339: at `open()` the adapter
  loads the CANN op list `<ASCEND_OPP_PATH>/built-in/framework/tensorflow/npu_supported_ops.json` (older
  layout: `framework/built-in/tensorflow/`), adds `IteratorV2` and `IteratorGetNext` to it, and places
  every op not in it on the CPU (outside the NPU graph). `python -m pipeline.cli.npu_check` reads that file
  on a host; this machine has no CANN, so the file's contents are not checked here.
- [adapter] `tf_adapter_2.x/python/npu_device/train/convert_dropout.py` lines 33-97: `tf.nn.dropout` in a
  graph becomes the NPU ops DropOutGenMask + DropOutDoMask (hccl_ops.py likewise emits the HCCL ops).

What is verified and what is inferred, per table below:
- `FROM_SUPPORTED_API`: verified: each op type is emitted by an API whose row says supported.
- `GRADIENT_OPS`: inferred: emitted only by the gradients (`tf.GradientTape`, row 3604, supported) of
  supported APIs; the list has no row for a gradient op.
- `GRAPH_PLUMBING`: inferred: inputs, constants, control and resource-variable ops of every TF2 function
  graph; the adapter keeps variables on the NPU (they appear in every ModelZoo TF2 graph).
- `ADAPTER_OPS`: verified from the adapter's sources cited above.
- `NOT_SUPPORTED`: verified: emitted only by APIs the list marks not supported; the NPU path must not use them.
Not checked anywhere without a host: CANN's operator list itself (which of these ops run on the AI Core
and which fall back to the AI CPU); `npu_check` reports that from the graph dump.
"""
from __future__ import annotations

from typing import Iterable

API_LIST = "Ascend/tensorflow convert_tf2npu/v2/TF2.6_api_support_list.xlsx"

# op type -> (API marked supported in the API list, its row)
FROM_SUPPORTED_API = {
    "AddN": ("tf.math.add_n", 4578), "AddV2": ("tf.math.add", 4577), "All": ("tf.math.reduce_all", 4655),
    "Any": ("tf.math.reduce_any", 4656), "BatchMatMulV2": ("tf.linalg.matmul", 4476),
    "BiasAdd": ("tf.nn.bias_add", 4826), "Cast": ("tf.cast", 53), "Ceil": ("tf.math.ceil", 4593),
    "ConcatV2": ("tf.concat", 2976), "Cumsum": ("tf.math.cumsum", 4600), "Equal": ("tf.math.equal", 4605),
    "Exp": ("tf.math.exp", 4610), "ExpandDims": ("tf.expand_dims", 3325), "Fill": ("tf.fill", 3591),
    "FloorDiv": ("tf.math.floordiv", 4613), "FloorMod": ("tf.math.floormod", 4614),
    "GatherV2": ("tf.gather", 3597), "Greater": ("tf.math.greater", 4615),
    "GreaterEqual": ("tf.math.greater_equal", 4616), "If": ("tf.cond", 2977), "StatelessIf": ("tf.cond", 2977),
    "IsFinite": ("tf.math.is_finite", 4622), "Less": ("tf.math.less", 4629),
    "LessEqual": ("tf.math.less_equal", 4630), "Log1p": ("tf.math.log1p", 4635),
    "LogicalAnd": ("tf.math.logical_and", 4636), "LogicalNot": ("tf.math.logical_not", 4637),
    "MatMul": ("tf.linalg.matmul", 4476), "Maximum": ("tf.math.maximum", 4640),
    "Mean": ("tf.math.reduce_mean", 4660), "Minimum": ("tf.math.minimum", 4641), "Mul": ("tf.math.multiply", 4643),
    "Neg": ("tf.math.negative", 4646), "NotEqual": ("tf.math.not_equal", 4648), "Pack": ("tf.stack", 6500),
    "Pow": ("tf.math.pow", 4651),
    "Prod": ("tf.math.reduce_prod", 4662), "RandomUniform": ("tf.random.uniform", 5021),
    "Range": ("tf.range", 5025), "RealDiv": ("tf.math.truediv", 4708), "Reciprocal": ("tf.math.reciprocal", 4653),
    "Reshape": ("tf.reshape", 6395), "ResourceApplyAdam": ("tf.keras.optimizers.Adam", 4322),
    "ResourceGather": ("tf.nn.embedding_lookup", 4850), "Rsqrt": ("tf.math.rsqrt", 4668),
    "Select": ("tf.where", 6666), "SelectV2": ("tf.where", 6666), "Shape": ("tf.shape", 6421),
    "Sigmoid": ("tf.math.sigmoid", 4675), "Slice": ("tf.slice", 6459), "Softmax": ("tf.nn.softmax", 4889),
    "Split": ("tf.split", 6496), "Sqrt": ("tf.math.sqrt", 4701), "Square": ("tf.math.square", 4702),
    "SquaredDifference": ("tf.math.squared_difference", 4703), "Squeeze": ("tf.squeeze", 6499),
    "StopGradient": ("tf.stop_gradient", 6501), "StridedSlice": ("tf.strided_slice", 6502),
    "Sub": ("tf.math.subtract", 4704), "Sum": ("tf.math.reduce_sum", 4664), "Tile": ("tf.tile", 6589),
    "Transpose": ("tf.transpose", 6641), "UnsortedSegmentMax": ("tf.math.unsorted_segment_max", 4709),
    "UnsortedSegmentSum": ("tf.math.unsorted_segment_sum", 4714), "ZerosLike": ("tf.zeros_like", 6674),
    "OnesLike": ("tf.ones_like", 4913), "Pad": ("tf.pad", 4939), "PadV2": ("tf.pad", 4939),
    "While": ("tf.while_loop", 6667), "StatelessWhile": ("tf.while_loop", 6667),
}

# op type -> the supported API whose gradient emits it
GRADIENT_OPS = {
    "BiasAddGrad": "tf.nn.bias_add", "BroadcastGradientArgs": "broadcasting element-wise ops (tf.math.add, ...)",
    "ConcatOffset": "tf.concat", "SigmoidGrad": "tf.math.sigmoid", "RsqrtGrad": "tf.math.rsqrt",
    "StridedSliceGrad": "tf.strided_slice", "SqrtGrad": "tf.math.sqrt", "ReciprocalGrad": "tf.math.reciprocal",
}

GRAPH_PLUMBING = frozenset({
    "Placeholder", "Const", "NoOp", "Identity", "IdentityN", "ReadVariableOp", "AssignVariableOp",
    "AssignAddVariableOp", "AssignSubVariableOp", "VarHandleOp",
})

# op type -> adapter source
ADAPTER_OPS = {
    "IteratorV2": "npu_device.cpp LoadSupportedOps (kAddonOps)",
    "IteratorGetNext": "npu_device.cpp LoadSupportedOps (kAddonOps)",
    "DropOutGenMask": "train/convert_dropout.py npu_dropout_v2",
    "DropOutDoMask": "train/convert_dropout.py npu_dropout_v2",
    "HcomAllReduce": "distribute/hccl_ops.py allreduce", "HcomBroadcast": "distribute/hccl_ops.py broadcast",
}

# op type -> why it may sit in the exported SavedModel's signature although no graph the NPU trains or
# evaluates with holds it: the serving function's input checks (tf.debugging.assert_*, din_model/train/export.py).
# A SavedModel is served by TensorFlow on a CPU or GPU host; were it loaded under the adapter, an op outside
# npu_supported_ops.json runs on the host CPU (docs/ascend.md, "Serving").
SERVING_CHECK_OPS = {"Assert": "the SavedModel's input checks (tf.debugging.assert_*), run where it is served"}

# op type -> (the API marked not supported that emits it, its row)
NOT_SUPPORTED = {
    "Einsum": ("tf.einsum", 3221),
    "StatelessRandomUniformV2": ("tf.random.stateless_uniform", 5019),
    "StatelessRandomGetKeyCounterAlg": ("tf.random.stateless_uniform", 5019),
    "StatelessRandomUniform": ("tf.random.stateless_uniform", 5019),
    "StatelessRandomUniformInt": ("tf.random.stateless_uniform", 5019),
    "StatelessRandomUniformFullInt": ("tf.random.stateless_uniform", 5019),
    "StatelessRandomUniformFullIntV2": ("tf.random.stateless_uniform", 5019),
}

NPU_OP_TYPES = frozenset(FROM_SUPPORTED_API) | frozenset(GRADIENT_OPS) | GRAPH_PLUMBING | frozenset(ADAPTER_OPS)


def unsupported_ops(op_types: Iterable[str]) -> dict[str, str]:
    """{op type: why it is not for the NPU} for each of `op_types` outside `NPU_OP_TYPES`."""
    reasons = {}
    for op_type in sorted(set(op_types) - NPU_OP_TYPES):
        if op_type in NOT_SUPPORTED:
            api, row = NOT_SUPPORTED[op_type]
            reasons[op_type] = f"emitted by {api}, 'not supported' in {API_LIST} row {row}"
        else:
            reasons[op_type] = (f"not derived from any supported API of {API_LIST} nor from the adapter "
                                "(din_model/device/npu_ops.py)")
    return reasons
