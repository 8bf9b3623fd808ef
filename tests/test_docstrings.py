"""Numpydoc docstrings on the public API: every public member of LmerFit has one, and every
public function and method with arguments says what they are (Parameters) and what comes
back (Returns); the API reference of the site is generated from them."""
import inspect

import pytest

import pylmem
from pylmem import LmerFit


def _members(cls):
    for name, obj in inspect.getmembers(cls):
        if name.startswith("_"):
            continue
        yield name, obj


def _doc(obj):
    f = obj.fget if isinstance(obj, property) else getattr(obj, "func", obj)
    return inspect.getdoc(f) or ""


@pytest.mark.parametrize("name", [n for n, _ in _members(LmerFit)])
def test_every_public_member_of_the_fit_has_a_docstring(name):
    assert _doc(getattr(LmerFit, name)).strip(), name


@pytest.mark.parametrize("name", [n for n, o in _members(LmerFit)
                                  if callable(o) and not isinstance(o, property)])
def test_methods_have_parameters_and_returns(name):
    obj = getattr(LmerFit, name)
    doc = _doc(obj)
    params = [p for p in inspect.signature(obj).parameters if p != "self"]
    if params:
        assert "Parameters\n----------" in doc, name
    assert "Returns\n-------" in doc, name


@pytest.mark.parametrize("name", [n for n in pylmem.__all__
                                  if inspect.isfunction(getattr(pylmem, n))])
def test_public_functions_have_parameters_and_returns(name):
    doc = _doc(getattr(pylmem, name))
    assert "Parameters\n----------" in doc and "Returns\n-------" in doc, name
