"""The runnable ``>>>`` examples in the docstrings hold."""

import doctest
import importlib

import pytest

MODULES = ["mtransfer", "mtransfer.strategies", "mtransfer.schedules", "mtransfer.heads", "mtransfer.data",
           "mtransfer.backbones.efficientnet_lite"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
    assert result.attempted > 0
