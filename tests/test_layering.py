"""The package map of docs/design.md, enforced on the import graph.

Every module of `din_common`, `din_model` and `pipeline` sits on one layer of `LAYERS`; a module
may import its own layer and lower ones, never a higher one, and the module graph has no cycle.
Imports inside functions count (they still tie the modules together); imports under
`if TYPE_CHECKING:` do not. The graph is read with `ast`, so nothing here imports TensorFlow.
"""
import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("din_common", "din_model", "pipeline")

# Low to high. An entry names one module exactly, or ends in `.*` for a package and everything
# under it; the most specific entry wins (an exact name beats a package, a longer package a shorter).
LAYERS = (
    ("din_common.errors",),
    ("din_common.*",),
    ("din_model", "din_model.compat", "din_model.params",
     "din_model.device.cpu_kernels", "din_model.device.quiet_start"),
    ("din_model.device.*", "din_model.data.*"),
    ("din_model.model.*",),
    ("din_model.train.*",),
    ("din_model.parallel.*",),
    ("din_model.run.*",),
    ("pipeline.compat", "pipeline.config", "pipeline.fingerprint", "pipeline.console"),
    ("pipeline.untrusted.*", "pipeline.id_encoding", "pipeline.tfrecord_io", "pipeline.remap", "pipeline.sequences",
     "pipeline.inspect"),
    ("pipeline.raw.*",),
    ("pipeline.settings",),
    ("pipeline.tasks", "pipeline.tasks.base"),
    ("pipeline.tasks.shard_steps", "pipeline.dask_engine.*"),
    ("pipeline.tasks.stage1",),
    ("pipeline.tasks.stage2", "pipeline.tasks.tuning"),
    ("pipeline", "pipeline.tasks.all", "pipeline.cli.*"),
)

# What each package keeps out: din_common is numpy-only, din_model runs without Luigi, stage 1
# (everything below the stage-2 tasks) never loads TensorFlow.
FORBIDDEN = {
    "din_common": ("pipeline", "din_model", "tensorflow", "luigi", "pandas", "pyarrow"),
    "din_model": ("pipeline", "luigi"),
}
STAGE_ONE_FORBIDDEN = ("din_model", "tensorflow", "keras")
STAGE_TWO_TASKS = "pipeline.tasks.stage2"


def module_names(root, packages):
    """{dotted module name: source path} for every .py file of `packages` under `root`."""
    modules = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path
    return modules


def _type_checking_block(node):
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_nodes(tree):
    """Import statements at any depth, except those guarded by `if TYPE_CHECKING:`;
    each with whether it sits inside a function."""
    def walk(node, in_function):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _type_checking_block(child):
                for orelse in child.orelse:
                    yield from walk(orelse, in_function)
                continue
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                yield child, in_function
            nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            yield from walk(child, nested)
    yield from walk(tree, False)


def imports_of(module, path, modules):
    """[(line, imported dotted name, inside a function)] of one module. `from pkg import name`
    resolves to `pkg.name` when that is a module; relative imports are resolved."""
    found = []
    tree = ast.parse(path.read_text(), str(path))
    is_package = path.name == "__init__.py"
    for node, in_function in _import_nodes(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name, in_function) for alias in node.names)
            continue
        base = node.module or ""
        if node.level:
            anchor = module.split(".")
            anchor = anchor if is_package else anchor[:-1]
            anchor = anchor[:len(anchor) - (node.level - 1)]
            base = ".".join(anchor + ([base] if base else []))
        for alias in node.names:
            candidate = f"{base}.{alias.name}"
            found.append((node.lineno, candidate if candidate in modules else base, in_function))
    return found


def layer_of(module, layers=LAYERS):
    """Index of the layer that holds `module`, or None when no entry names it."""
    best = None  # (specificity, layer)
    for index, entries in enumerate(layers):
        for entry in entries:
            if entry.endswith(".*"):
                package = entry[:-2]
                if module == package or module.startswith(package + "."):
                    specificity = (0, len(package))
                else:
                    continue
            elif module == entry:
                specificity = (1, len(entry))
            else:
                continue
            if best is None or specificity > best[0]:
                best = (specificity, index)
    return None if best is None else best[1]


def internal_edges(root, packages):
    """[(source module, line, target module, inside a function)] between modules of `packages`."""
    modules = module_names(root, packages)
    edges = []
    for module, path in modules.items():
        for line, target, in_function in imports_of(module, path, modules):
            while target and target not in modules and "." in target:
                target = target.rsplit(".", 1)[0]  # `import a.b.name_in_b` names module a.b
            if target in modules and target != module:
                edges.append((module, line, target, in_function))
    return edges


def upward_imports(root, packages, layers=LAYERS):
    """Lines naming every import that goes up a layer, and every module no layer holds."""
    problems = []
    for module in module_names(root, packages):
        if layer_of(module, layers) is None:
            problems.append(f"{module}: on no layer of LAYERS (add it to the map in docs/design.md and here)")
    for source, line, target, _ in internal_edges(root, packages):
        source_layer, target_layer = layer_of(source, layers), layer_of(target, layers)
        if None not in (source_layer, target_layer) and target_layer > source_layer:
            problems.append(f"{source.replace('.', '/')}.py:{line} {source} -> {target} "
                            f"(L{source_layer} < L{target_layer})")
    return problems


def cycles(graph):
    """Strongly connected components with more than one node (Tarjan, iterative), sorted."""
    index, low, on_stack, stack, found = {}, {}, set(), [], []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            advanced = False
            for successor in successors:
                if successor not in index:
                    index[successor] = low[successor] = counter
                    counter += 1
                    stack.append(successor)
                    on_stack.add(successor)
                    work.append((successor, iter(sorted(graph.get(successor, ())))))
                    advanced = True
                    break
                if successor in on_stack:
                    low[node] = min(low[node], index[successor])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return sorted(found)


def module_graph(root, packages):
    graph = {module: set() for module in module_names(root, packages)}
    for source, _, target, _ in internal_edges(root, packages):
        graph[source].add(target)
    return graph


def package_graph(root, packages):
    """The module graph collapsed to the top-level packages."""
    graph = {package: set() for package in packages}
    for source, _, target, _ in internal_edges(root, packages):
        source_package, target_package = source.split(".")[0], target.split(".")[0]
        if source_package != target_package:
            graph[source_package].add(target_package)
    return graph


def forbidden_imports(root):
    """Lines naming every import that breaks a package's stage rule."""
    problems = []
    modules = module_names(root, PACKAGES)
    stage_two = layer_of(STAGE_TWO_TASKS)
    for module, path in modules.items():
        package = module.split(".")[0]
        banned = FORBIDDEN.get(package, ())
        below_stage_two = package == "pipeline" and layer_of(module) is not None and layer_of(module) < stage_two
        for line, target, in_function in imports_of(module, path, modules):
            top = target.split(".")[0]
            where = f"{path.relative_to(root)}:{line} imports {target}"
            if top in banned:
                problems.append(f"{where}: {package} may not import {top}")
            if below_stage_two and top in STAGE_ONE_FORBIDDEN:
                problems.append(f"{where}: stage 1 stays free of {top}")
            if module == STAGE_TWO_TASKS and top in STAGE_ONE_FORBIDDEN and not in_function:
                problems.append(f"{where}: at module level (TensorFlow loads only when a stage-2 task runs)")
    return problems


def test_no_import_goes_up():
    problems = upward_imports(REPO, PACKAGES)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("graph", [module_graph, package_graph])
def test_no_cycles(graph):
    found = cycles(graph(REPO, PACKAGES))
    assert not found, "\n".join(" <-> ".join(cycle) for cycle in found)


def test_stage_rules():
    problems = forbidden_imports(REPO)
    assert not problems, "\n".join(problems)


def test_the_checks_catch_an_upward_import_a_cycle_and_an_unmapped_module(tmp_path):
    tree = {
        "low/__init__.py": "",
        "low/base.py": "from low import helper\n",          # base -> helper -> base: a cycle
        "low/helper.py": "def f():\n    import low.base\n",  # a function-level import counts
        "high/__init__.py": "",
        "high/top.py": "import low.base\n",
        "high/leaf.py": "",
        "high/stray.py": "",
    }
    tree["low/base.py"] += "from high.leaf import something\n"  # up a layer
    for name, text in tree.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    layers = (("low.*",), ("high", "high.top", "high.leaf"))
    problems = upward_imports(tmp_path, ("low", "high"), layers)
    assert problems == [
        "high.stray: on no layer of LAYERS (add it to the map in docs/design.md and here)",
        "low/base.py:2 low.base -> high.leaf (L0 < L1)",
    ]
    assert cycles(module_graph(tmp_path, ("low", "high"))) == [["low.base", "low.helper"]]
    assert cycles(package_graph(tmp_path, ("low", "high"))) == [["high", "low"]]


def test_a_type_checking_import_is_not_an_edge(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg/__init__.py").write_text("")
    (tmp_path / "pkg/a.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import b\n")
    (tmp_path / "pkg/b.py").write_text("from pkg import a\n")
    assert internal_edges(tmp_path, ("pkg",)) == [("pkg.b", 1, "pkg.a", False)]


@pytest.mark.parametrize("module, layer", [
    ("din_common.errors", 0), ("din_common.metrics", 1), ("din_model", 2),
    ("din_model.device.cpu_kernels", 2), ("din_model.device.selection", 3), ("pipeline", 16),
    ("pipeline.tasks.stage2", 15), ("pipeline.cli.summary", 16), ("pipeline.nowhere", None),
])
def test_the_most_specific_entry_wins(module, layer):
    assert layer_of(module) == layer
