"""The examples in the docstrings run and print what they claim."""

import doctest
import importlib

import pytest

MODULES = ["slim_distill.losses", "slim_distill.config", "slim_distill.hooks", "slim_distill.distiller"]


@pytest.mark.parametrize("name", MODULES, ids=[m.split(".")[-1] for m in MODULES])
def test_docstring_examples_run(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
