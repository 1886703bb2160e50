"""The op types of a traced TensorFlow function, nested functions (loop bodies, branches, calls) included.

`graph_op_types(concrete_function)` is what the NPU's graph engine is handed for that function (the adapter
gives GE the function's graph with its library); `din_model.device.npu_ops` checks those types against the ops
Huawei publishes as supported.
"""
from __future__ import annotations


def graph_op_types(concrete_function) -> dict[str, list[str]]:
    """{op type: names of the nodes of that type} over the function's graph and every function it uses.

    Call nodes whose type is the name of a library function (a direct call) are left out: their
    bodies are walked instead.
    """
    graph_def = concrete_function.graph.as_graph_def()
    library = {function.signature.name: function for function in graph_def.library.function}
    found: dict[str, list[str]] = {}

    def add(nodes, where: str) -> None:
        for node in nodes:
            if node.op not in library:
                found.setdefault(node.op, []).append(f"{where}{node.name}")

    add(graph_def.node, "")
    for name, function in library.items():
        add(function.node_def, f"{name}/")
    return found
