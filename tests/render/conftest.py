"""Renderer tests run torch on one thread: on a busy 2-core machine two threads make small ops wait on
each other (measured 10-50x slower), and the tests are small enough not to need more."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
