"""The package's layers import only from the layers before them (core → formats / integer → models
→ io → ptq / qat / mirrors → demo / plotting / CLI), and the models import no quantization code."""
import ast
import importlib
import os

import pytest

import refquant

PKG = os.path.dirname(refquant.__file__)
RANK = {"_version": 0, "core": 0, "formats": 1, "integer": 1, "models": 2, "io": 3, "ptq": 4, "qat": 4, "mirrors": 4,
        "plotting": 5, "demo": 6, "llm": 6, "llm_compare": 6.2, "llm_export": 6.2, "cli_mixed": 6.2, "cli_quantize": 6.5, "__main__": 7, "__init__": 8}


def _modules():
    for root, _, files in os.walk(PKG):
        for f in files:
            if f.endswith(".py"):
                rel = os.path.relpath(os.path.join(root, f), PKG)[:-3].split(os.sep)
                yield rel


def _imports(rel):
    """Top-level refquant parts (subpackage or top module) that the module ``rel`` imports."""
    with open(os.path.join(PKG, *rel) + ".py") as f:
        tree = ast.parse(f.read())
    pkg = rel[:-1] if rel[-1] != "__init__" else rel[:-1]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg[: len(pkg) - (node.level - 1)] if node.level > 1 else pkg
                parts = base + (node.module.split(".") if node.module else [])
                if not parts:  # `from . import x` at the top level
                    parts = [a.name for a in node.names]
                    out.update(parts)
                    continue
                out.add(parts[0])
            elif node.module and node.module.split(".")[0] == "refquant":
                out.add(node.module.split(".")[1] if "." in node.module else "__init__")
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "refquant":
                    out.add(a.name.split(".")[1] if "." in a.name else "__init__")
    return out


MODULES = sorted(_modules())


def test_every_part_has_a_rank():
    assert {m[0] for m in MODULES} <= set(RANK), {m[0] for m in MODULES} - set(RANK)


@pytest.mark.parametrize("rel", MODULES, ids=lambda r: "/".join(r))
def test_imports_flow_one_way(rel):
    me = rel[0]
    for dep in _imports(rel):
        if dep == me:
            continue
        assert RANK[dep] < RANK[me], f"refquant/{'/'.join(rel)}.py imports {dep} (rank {RANK[dep]} >= {RANK[me]})"


def test_models_import_no_quantization_code():
    for rel in MODULES:
        if rel[0] == "models":
            assert _imports(rel) <= {"models"}, rel


def test_the_checker_sees_imports():
    # the test above must be able to fail: ptq.recipes imports models and core
    assert {"models", "core"} <= _imports(["ptq", "recipes"])


@pytest.mark.parametrize("name", ["onnx_ops", "torch_ops", "ggml_ops"])
def test_mirror_module_paths(name):
    mod = importlib.import_module(f"refquant.{name}")
    assert mod is getattr(refquant, name)


def test_public_names_importable_from_top():
    for name in refquant.__all__:
        assert getattr(refquant, name) is not None


def _unannotated(rel):
    """Public top-level functions of module ``rel`` with a parameter or the return unannotated."""
    with open(os.path.join(PKG, *rel) + ".py") as f:
        tree = ast.parse(f.read())
    out = []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and not node.name.startswith("_"):
            a = node.args
            params = a.posonlyargs + a.args + a.kwonlyargs + [p for p in (a.vararg, a.kwarg) if p is not None]
            if node.returns is None or any(p.annotation is None for p in params):
                out.append(node.name)
    return out


@pytest.mark.parametrize("rel", MODULES, ids=lambda r: "/".join(r))
def test_public_functions_are_annotated(rel):
    assert _unannotated(rel) == [], f"refquant/{'/'.join(rel)}.py: unannotated public functions"


def test_the_annotation_checker_can_fail(tmp_path):
    (tmp_path / "m.py").write_text("def f(x) -> int:\n    return 1\n\ndef g(x: int):\n    return 1\n\n"
                                   "def _h(x):\n    return 1\n\ndef k(x: int, *a: int, **kw: int) -> int:\n    return 1\n")
    global PKG
    saved, PKG = PKG, str(tmp_path)
    try:
        assert _unannotated(["m"]) == ["f", "g"]
    finally:
        PKG = saved
