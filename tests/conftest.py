"""Fixtures shared by the test files.

``one_thread``: one BLAS thread for a whole test file (on a shared 2-core machine two threads
wait on each other). A file opts in with ``pytestmark = pytest.mark.usefixtures("one_thread")``.
"""

import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
