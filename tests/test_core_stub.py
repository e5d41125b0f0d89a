"""vectordb/_core.pyi against the built extension: the stub declares exactly the public functions,
classes, methods and constants the module exports, each call with the parameters its docstring names."""
import ast
import re
from pathlib import Path
from typing import Dict, List

import pytest

from vectordb import _core

STUB_PATH = Path(_core.__file__).with_name("_core.pyi")


def _stub() -> ast.Module:
    return ast.parse(STUB_PATH.read_text(encoding="utf-8"))


def _params(fn: ast.FunctionDef) -> List[str]:
    names = [a.arg for a in fn.args.posonlyargs + fn.args.args + fn.args.kwonlyargs]
    return [n for n in names if n != "self"]


def _public(names: List[str]) -> List[str]:
    """Names a user of the module sees: not dunders (the module's and types' own machinery)."""
    return sorted(n for n in names if not (n.startswith("__") and n.endswith("__")))


def _stub_module_names(tree: ast.Module) -> List[str]:
    out = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            out.append(node.name)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            out.append(node.target.id)
    return _public([n for n in out if n != "_F32"])  # _F32: the stub's own type alias


def _stub_functions(body: List[ast.stmt]) -> Dict[str, ast.FunctionDef]:
    return {n.name: n for n in body if isinstance(n, ast.FunctionDef)}


def _doc_params(doc: str) -> List[str]:
    """Parameter names of a docstring that opens with a call, e.g. 'query(queries, k, ids=None) -> ...'."""
    m = re.match(r"\s*\w+\((.*?)\)", doc)
    assert m, f"docstring {doc!r} does not open with its call"
    return [re.split(r"[:=]", p)[0].strip() for p in m.group(1).split(",") if p.strip()]


def test_stub_declares_every_public_name_of_the_module() -> None:
    module_names = _public(dir(_core))
    assert _stub_module_names(_stub()) == module_names


@pytest.mark.parametrize("cls", ["Collection", "Filter"])
def test_stub_declares_every_member_of_the_engine_types(cls: str) -> None:
    node = next(n for n in _stub().body if isinstance(n, ast.ClassDef) and n.name == cls)
    stub_members = _public([n.name for n in node.body if isinstance(n, ast.FunctionDef)])
    type_members = _public([n for n in vars(getattr(_core, cls))])
    assert stub_members == type_members


def _calls():
    tree = _stub()
    for name, fn in _stub_functions(tree.body).items():
        if not name.startswith("_"):
            yield pytest.param(getattr(_core, name), fn, id=name)
    coll = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Collection")
    for name, fn in _stub_functions(coll.body).items():
        if not name.startswith("_") and not any(
            isinstance(d, ast.Name) and d.id == "property" for d in fn.decorator_list
        ):
            yield pytest.param(getattr(_core.Collection, name), fn, id=f"Collection.{name}")


@pytest.mark.parametrize("obj,fn", list(_calls()))
def test_stub_parameters_match_the_docstrings(obj: object, fn: ast.FunctionDef) -> None:
    assert _params(fn) == _doc_params(obj.__doc__ or "")
