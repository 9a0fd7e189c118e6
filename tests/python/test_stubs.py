"""The typed stub python/nnpress/_core.pyi must list exactly what the built extension exports."""

import ast
from pathlib import Path

import nnpress
from nnpress import _core


def _stub_names(tree: ast.Module) -> dict[str, ast.AST]:
    names = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names[node.name] = node
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names[node.target.id] = node
        elif isinstance(node, ast.Assign):
            for t in node.targets:
                if isinstance(t, ast.Name):
                    names[t.id] = node
    return names


def test_stub_matches_extension():
    stub = Path(nnpress.__file__).with_name("_core.pyi")
    names = _stub_names(ast.parse(stub.read_text()))
    public = {n for n in dir(_core) if not n.startswith("_")}
    stubbed = {n for n in names if not n.startswith("_")}
    assert public - stubbed == set(), f"exported but not in the stub (run scripts/gen_stubs.sh): {public - stubbed}"
    assert stubbed - public == set(), f"in the stub but not exported: {stubbed - public}"
    # classes: methods in the stub exist on the class
    for name, node in names.items():
        if isinstance(node, ast.ClassDef) and hasattr(_core, name):
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and not item.name.startswith("_"):
                    assert hasattr(getattr(_core, name), item.name), f"{name}.{item.name} is stubbed but missing"
