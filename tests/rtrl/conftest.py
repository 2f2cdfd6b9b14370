import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    """Per-step tensors are tiny: intra-op threads only add synchronisation, and on a
    shared or oversubscribed machine their spin-waits cost more than the work."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
