"""Autouse fixture for test modules with many small conv-net calls: run them on one thread.

On this loaded 2-core machine the session's two threads made the small property-CNN
training test 9x slower (45 s vs 5 s); one thread is as fast for these sizes. Import it
into a test module: ``from tests.single_thread import one_thread  # noqa: F401``.
"""
import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
