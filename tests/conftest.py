import pytest
import torch


def pytest_configure(config):
    # Every model under test is tiny: one thread is faster, and two OpenMP threads spin badly when
    # the machine is busy (a shared CI box), turning seconds into minutes.
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
