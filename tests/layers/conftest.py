"""Fixtures of the layer tests."""
import functools

import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """The ODConv layers here are tiny: a second thread only adds synchronisation, which
    costs up to a second per float64 convolution when the cores are busy with other work."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def layer_fixture(fixture):
    """``layer_fixture(name)``: a reference output of the official ODConv layer (cached)."""
    return functools.lru_cache(maxsize=None)(lambda name: fixture("odconv", name))
